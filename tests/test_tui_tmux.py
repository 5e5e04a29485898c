"""End to end as a person uses it: ``llmctl`` in a real terminal (tmux), keys typed, the screen read.

Starts a real stage (prepare rl on the local GSM8K copy) from the launch form, watches it finish,
previews what it made and quits. Needs tmux (``apt-get install -y tmux``; .ci/run installs it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
import uuid

import pytest
from tui_support import build_workspace

from llmctl.core.stages import get_stage

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


class Terminal:
    """A tmux session running one command, driven by send-keys and read by capture-pane."""

    def __init__(self, command: list[str], env: dict[str, str], width: int = 150, height: int = 45) -> None:
        self.name = f"llmctl-test-{uuid.uuid4().hex[:8]}"
        envs = [f"{k}={v}" for k, v in env.items()]
        subprocess.run(["tmux", "new-session", "-d", "-s", self.name, "-x", str(width), "-y", str(height),
                        "env", "-u", "COLUMNS", "-u", "LINES", *envs, *command], check=True)
        # a tmux server started by someone else may impose its own size: pin this window's
        subprocess.run(["tmux", "set-option", "-t", self.name, "window-size", "manual"], capture_output=True)
        subprocess.run(["tmux", "resize-window", "-t", self.name, "-x", str(width), "-y", str(height)],
                       capture_output=True)

    def keys(self, *keys: str, literal: bool = False) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, *(["-l"] if literal else []), *keys], check=True)

    def type(self, text: str) -> None:
        self.keys(text, literal=True)

    def screen(self) -> str:
        out = subprocess.run(["tmux", "capture-pane", "-p", "-t", self.name], capture_output=True, text=True)
        return out.stdout

    def alive(self) -> bool:
        return subprocess.run(["tmux", "has-session", "-t", self.name], capture_output=True).returncode == 0

    def wait_for(self, *needles: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.screen()
            if all(n in text for n in needles):
                return text
            time.sleep(0.2)
        raise AssertionError(f"{needles} not on screen after {timeout}s:\n{text}")

    def field(self, label: str) -> str | None:
        """The value in a launch-form row (label column 20 wide, then a 26-wide input)."""
        for line in self.screen().splitlines():
            i = line.find(f"█ {label} ")
            if i >= 0:
                return line[i + 22:i + 48].strip()
        return None

    def fill(self, label: str, text: str) -> None:
        """Clear the focused input, then type ``text``, waiting for the screen after each: keys that
        are bindings (ctrl+a, ctrl+k) run as actions after plain characters already queued."""
        self.keys("C-a", "C-k")
        self._until(lambda: self.field(label) == "")
        self.type(text)
        self._until(lambda: self.field(label) == text)

    def _until(self, cond, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not cond() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert cond(), self.screen()

    def until_re(self, pattern: str, timeout: float = 60.0) -> None:
        """Wait until a line of the screen matches ``pattern``."""
        rx = re.compile(pattern)
        self._until(lambda: any(rx.search(x) for x in self.screen().splitlines()), timeout)

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)


def test_person_runs_a_stage_and_looks_at_its_output(workspace, shared_data, tokenizer):
    if not get_stage("prepare-rl").built:
        pytest.skip("prepare-rl is not built yet")
    build_workspace(workspace, shared_data, tokenizer)
    # the person pointed the RL prompts at their local GSM8K copy once, in llmctl.toml
    workspace.config["stages"]["prepare-rl"]["gsm8k"] = str(shared_data / "gsm8k")
    workspace.save_config()
    env = {"LLMCTL_TIKTOKEN_FILE": os.environ["LLMCTL_TIKTOKEN_FILE"], "TERM": "xterm-256color",
           "PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    term = Terminal([sys.executable, "-m", "llmctl.core.cli", "--workspace", str(workspace.root)], env)
    try:
        term.wait_for("Pipeline", "Artifacts", "Jobs", "GPU", "prepare-rl")
        term.keys("Down", "Down", "Down")  # prepare-pretrain -> prepare-sft -> prepare-prefs -> prepare-rl
        term.wait_for("GSM8K gold answers")
        term.keys("s")
        term.wait_for("start prepare-rl", "gsm8k", "arithmetic_n")
        gsm8k = str(shared_data / "gsm8k")
        shown = term.field("gsm8k")  # a long path scrolls in its input: the tail is what shows
        assert shown and gsm8k.endswith(shown), (shown, gsm8k)  # prefilled from llmctl.toml
        time.sleep(0.5)  # a person reads the form before typing
        term.keys("Tab", "Tab", "Tab")  # gsm8k -> gsm8k_train -> gsm8k_test -> max_examples
        term.fill("max_examples", "12")
        term.keys("Tab")  # -> arithmetic_n
        term.fill("arithmetic_n", "4")
        assert term.field("gsm8k") == shown
        term.keys("C-l")
        term.wait_for("prepare-rl/", "Curves", "Log", timeout=60)  # the job screen, on its log
        term.wait_for("done (exit 0)", "rl prompts", timeout=120)  # the job's own summary line, streamed
        saved = tomllib.loads((workspace.root / "llmctl.toml").read_text())["stages"]["prepare-rl"]
        assert saved["gsm8k"] == gsm8k and saved["max_examples"] == 12, saved  # the whole path, not its tail
        term.keys("Escape")
        term.wait_for("Pipeline", "Artifacts")
        term.until_re(r"│ prepare-rl +✓ done")  # the pipeline row, once the app has re-read the run folder
        for _ in range(5):  # focus the artifacts panel; its detail strip follows the cursor
            term.keys("2")
            time.sleep(0.3)  # "2" runs as an action after keys already queued: a person's pace
            term.keys("Down")
            try:
                term.wait_for("held-out tokens", timeout=5)  # pile_dev: the cursor moved in artifacts
                break
            except AssertionError:
                term.keys("Up")
        for _ in range(6):  # pile_dev ... arithmetic_prompts
            term.keys("Down")
        term.wait_for("arithmetic curriculum")
        term.until_re(r"│ arithmetic_prompts +✓ ready")
        term.keys("p")
        term.wait_for("arithmetic_prompts.jsonl", "What is", "rows 0–19 of")
        term.keys("n")
        term.wait_for("rows 20–")
        term.keys("Escape")
        term.wait_for("Pipeline")
        term.keys("q")
        deadline = time.monotonic() + 20
        while term.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not term.alive(), "q quits the app"
    finally:
        term.close()
