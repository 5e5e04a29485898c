"""Sampling playground: generate from any checkpoint with ``llmctl sample`` run as a subprocess.

The app never imports the model code: the sample command runs in its own process and its output
streams into the screen line by line.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Footer, Header, Input, Label, RichLog, Select, Static, Switch
from textual.worker import get_current_worker

from llmctl.core.jobs import cli_argv
from llmctl.tui.screens.base import SubScreen
from llmctl.tui.state import ready_checkpoints


def sample_argv(root: Path, ckpt: str, prompt: str, chat: bool, extra: str) -> list[str]:
    """``llmctl sample CKPT --prompt … [--chat] [extra args]`` as an argv for this Python."""
    argv = cli_argv("sample", ckpt, "--prompt", prompt)
    if chat:
        argv.append("--chat")
    argv += shlex.split(extra)
    argv += ["--workspace", str(root)]
    return argv


class PlaygroundScreen(SubScreen):
    """Pick a checkpoint, type a prompt, generate; the output streams below."""

    BINDINGS = [
        Binding("ctrl+g", "generate", "Generate"),
        Binding("ctrl+x", "stop", "Stop"),
    ]

    def __init__(self, checkpoint: str | None = None) -> None:
        super().__init__()
        self.initial = checkpoint
        self.proc: subprocess.Popen | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="play-form"):
            with Horizontal(classes="play-row"):
                yield Label("checkpoint", classes="param-name")
                yield Select([], id="play-ckpt", prompt="loading checkpoints…", allow_blank=True)
            with Horizontal(classes="play-row"):
                yield Label("prompt", classes="param-name")
                yield Input(placeholder="What is 12 + 30?", id="play-prompt")
            with Horizontal(classes="play-row"):
                yield Label("chat template", classes="param-name")
                yield Switch(value=True, id="play-chat")
                yield Label("extra args", classes="param-name")
                yield Input(placeholder="e.g. --max-new-tokens 64 --temperature 0.8", id="play-extra")
                yield Button("Generate", id="play-go", variant="success")
        yield Static("", id="play-status")
        yield RichLog(id="play-out", wrap=True, max_lines=2000, markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "sampling playground"
        self.load_checkpoints()

    @work(thread=True, exclusive=True, group="play-ckpts", exit_on_error=False)
    def load_checkpoints(self) -> None:
        ckpts = ready_checkpoints(self.app.root)  # type: ignore[attr-defined]
        self.app.call_from_thread(self._set_checkpoints, ckpts)

    def _set_checkpoints(self, ckpts: list[Path]) -> None:
        sel = self.query_one("#play-ckpt", Select)
        root = self.app.root  # type: ignore[attr-defined]
        opts = []
        for p in ckpts:
            try:
                label = str(p.relative_to(root))
            except ValueError:
                label = str(p)
            opts.append((label, str(p)))
        sel.set_options(opts)
        if self.initial:
            sel.value = self.initial
        elif opts:
            sel.value = opts[0][1]
        status = self.query_one("#play-status", Static)
        if not opts:
            status.update(Text("no ready checkpoint yet: train a stage first (checkpoints/<stage>/<run>/step_N)",
                               style="yellow"))
        else:
            status.update(Text(f"{len(opts)} checkpoint(s); ctrl+g generates", style="dim"))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "play-go":
            self.action_generate()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_generate()

    def action_generate(self) -> None:
        sel = self.query_one("#play-ckpt", Select)
        prompt = self.query_one("#play-prompt", Input).value
        status = self.query_one("#play-status", Static)
        if sel.value is Select.BLANK or not isinstance(sel.value, str):
            status.update(Text("pick a checkpoint first", style="bold red"))
            return
        if not prompt.strip():
            status.update(Text("type a prompt first", style="bold red"))
            return
        try:
            argv = sample_argv(self.app.root, sel.value, prompt, self.query_one("#play-chat", Switch).value,  # type: ignore[attr-defined]
                               self.query_one("#play-extra", Input).value)
        except ValueError as e:
            status.update(Text(f"extra args: {e}", style="bold red"))
            return
        out = self.query_one("#play-out", RichLog)
        out.write(Text(f"\n> {prompt}", style="bold cyan"))
        status.update(Text("generating… (ctrl+x stops)", style="yellow"))
        self.run_sample(argv)

    @work(thread=True, exclusive=True, group="play-run", exit_on_error=False)
    def run_sample(self, argv: list[str]) -> None:
        worker = get_current_worker()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        try:
            self.proc = proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, text=True, env=env)
        except OSError as e:
            self.app.call_from_thread(self._finished, None, f"cannot start: {e}")
            return
        assert proc.stdout is not None
        for line in proc.stdout:
            if worker.is_cancelled:
                proc.terminate()
                break
            self.app.call_from_thread(self._line, line.rstrip("\n"))
        code = proc.wait()
        self.app.call_from_thread(self._finished, code, "")

    def _line(self, line: str) -> None:
        self.query_one("#play-out", RichLog).write(line)

    def _finished(self, code: int | None, err: str) -> None:
        self.proc = None
        status = self.query_one("#play-status", Static)
        if err:
            status.update(Text(err, style="bold red"))
        elif code == 0:
            status.update(Text("done", style="green"))
        else:
            status.update(Text(f"llmctl sample exited with code {code} (see the output above)", style="bold red"))

    def action_stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()

    def on_unmount(self) -> None:
        self.action_stop()
