"""Start a stage: see and edit its parameters (saved to llmctl.toml), pick GPUs and processes, launch."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, SelectionList, Static, Switch
from textual.widgets.selection_list import Selection

from llmctl.core.data.preflight import Problem, stage_problems
from llmctl.core.gpu import gpus_in_use
from llmctl.core.params import field_default
from llmctl.core.stages import (
    ParamError,
    Stage,
    StageNotBuilt,
    field_type,
    get_stage,
    params_dict,
    resolve_params,
)
from llmctl.core.workspace import Workspace
from llmctl.tui.state import fmt_bytes, style_for

if TYPE_CHECKING:
    from llmctl.tui.app import LlmctlApp


def _show_value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, list | tuple):
        return ",".join(str(x) for x in v)
    return str(v)


class LaunchScreen(ModalScreen[Path | None]):
    """A form of the stage's parameters, prefilled from llmctl.toml; Launch starts it as a job."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "save", "Save params"),
        Binding("ctrl+l", "launch", "Launch"),
    ]

    def __init__(self, stage: str) -> None:
        super().__init__()
        self.stage: Stage = get_stage(stage)
        self.fields: list[dataclasses.Field] = []
        self.cls: type | None = None
        self.values: dict[str, Any] = {}
        self.load_error = ""
        self._confirmed_gpu_clash = False
        self.problems: list[Problem] | None = None  # missing prerequisites, once checked
        try:
            ws = Workspace.open(self._root, create=False)
            self.cls = self.stage.load_params_class()
            self.fields = list(dataclasses.fields(self.cls))
            try:
                self.values = params_dict(resolve_params(self.stage, ws.stage_config(stage), {}))
            except ParamError as e:
                self.load_error = str(e)
                self.values = {**{f.name: field_default(f) for f in self.fields}, **ws.stage_config(stage)}
        except StageNotBuilt as e:
            self.load_error = str(e)
        except Exception as e:
            self.load_error = f"{type(e).__name__}: {e}"

    @property
    def lapp(self) -> LlmctlApp:
        return self.app  # type: ignore[return-value]

    @property
    def _root(self) -> Path:
        return self.app.root  # type: ignore[attr-defined]

    @property
    def built(self) -> bool:
        return self.cls is not None and self.stage.built

    def compose(self) -> ComposeResult:
        st = self.stage
        with Vertical(id="launch-box") as box:
            box.border_title = f"start {st.name}"
            head = Text(st.name, style="bold")
            head.append(f"  {st.help}", style="italic")
            head.append(f"\n$ llmctl {' '.join(st.command)} --workspace {self._root}", style="dim")
            yield Static(head, id="launch-head")
            yield Static(self._status_text(), id="launch-status")
            yield Static("", id="launch-prereq")
            with VerticalScroll(id="param-form", can_focus=False):
                if st.trains and self.built:
                    yield from self._gpu_rows()
                    yield Static(Text("parameters (saved to llmctl.toml)", style="bold"), classes="param-section")
                for f in self.fields:
                    yield from self._field_row(f)
            yield Static("", id="launch-error")
            with Horizontal(id="launch-buttons"):
                yield Static("ctrl+l launch · ctrl+s save · esc cancel", id="launch-keys")
                yield Button("Launch", id="launch", variant="success", disabled=not self.built)
                yield Button("Save params", id="save", disabled=not self.built)
                yield Button("Defaults", id="defaults", disabled=not self.built)
                yield Button("Cancel", id="cancel", variant="error")

    def on_mount(self) -> None:
        """Typing goes to the first parameter straight away; prerequisites are checked meanwhile."""
        if self.fields:
            self.query_one(f"#p-{self.fields[0].name}").focus()
        else:
            self.query_one("#cancel", Button).focus()
        self.query_one("#launch-prereq", Static).display = False
        if self.built:
            self.check_prerequisites(dict(self.values))

    @work(thread=True, exclusive=True, group="launch-prereq", exit_on_error=False)
    def check_prerequisites(self, values: dict[str, Any]) -> None:
        """Tokenizer, inputs and sources of the stage (a network probe may take a few seconds)."""
        try:
            ws = Workspace.open(self._root, create=False)
            try:
                params = resolve_params(self.stage, {k: v for k, v in values.items() if v is not None}, {})
            except ParamError:
                params = None
            problems = stage_problems(ws, self.stage, params)
        except Exception as e:  # a check that cannot run must not block the form
            problems = [Problem(f"prerequisites not checked ({type(e).__name__}: {e})", "-")]
        self.app.call_from_thread(self._show_prerequisites, problems)

    def _show_prerequisites(self, problems: list[Problem]) -> None:
        self.problems = problems
        box = self.query_one("#launch-prereq", Static)
        box.display = bool(problems)
        out = Text("before it can run:", style="bold yellow")
        for p in problems:
            out.append("\n✗ ", style="bold red")
            out.append(p.what)
            out.append("\n  fix: ", style="bold")
            out.append(p.fix, style="green")
        box.update(out)

    def _status_text(self) -> Text:
        state = self.lapp.state
        s = state.stage(self.stage.name) if state else None
        out = Text()
        if s is not None:
            out.append(s.state, style=style_for(s.state))
            if s.detail:
                out.append(f": {s.detail}", style=style_for(s.state))
            if s.state == "waiting":
                out.append("  (the job will fail until its inputs exist)", style="dim")
        if self.load_error:
            out.append(("\n" if out else "") + self.load_error, style="red")
        return out

    def _field_row(self, f: dataclasses.Field) -> ComposeResult:
        typ, is_list = field_type(f, self.cls)  # type: ignore[arg-type]
        value = self.values.get(f.name)
        with Horizontal(classes="param-row"):
            yield Label(f.name, classes="param-name")
            if typ is bool and not is_list:
                yield Switch(value=bool(value), id=f"p-{f.name}", classes="param-input")
            else:
                kind = "integer" if typ is int and not is_list else ("number" if typ is float and not is_list else "text")
                yield Input(_show_value(value), id=f"p-{f.name}", type=kind, classes="param-input",
                            placeholder="(none)" if value is None else "")
            yield Static(f.metadata.get("help", ""), classes="param-help")

    def _gpu_rows(self) -> ComposeResult:
        snap = self.lapp.gpu_snapshot
        yield Static(Text("GPUs and processes (torchrun)", style="bold"), classes="param-section")
        if not snap.available:
            yield Static(Text(f"GPU unavailable: {snap.reason} — the job runs on the CPU", style="yellow"))
            sel: SelectionList[int] = SelectionList(id="gpu-select")
            sel.display = False
            yield sel
        else:
            used = gpus_in_use(snap, self.lapp.runs_dir)
            options = []
            for g in snap.gpus:
                mem = "n/a" if g.mem_used is None else f"{fmt_bytes(g.mem_used)}/{fmt_bytes(g.mem_total)}"
                label = Text(f"GPU {g.index} {g.name or 'n/a'} · {_pct(g.util)} · {mem}")
                if g.index in used:
                    label.append(f"  ⚠ in use by {used[g.index]}", style="bold yellow")
                options.append(Selection(label, g.index, g.index not in used))
            yield SelectionList(*options, id="gpu-select")
        with Horizontal(classes="param-row"):
            yield Label("nproc", classes="param-name")
            yield Input("1", id="nproc", type="integer", classes="param-input")
            yield Static("processes under torchrun (1 = plain python)", classes="param-help")

    # -- reading the form ------------------------------------------------------------------------
    def form_values(self) -> dict[str, Any]:
        """The form as a ``[stages.<name>]`` table (empty optional fields left out)."""
        out: dict[str, Any] = {}
        for f in self.fields:
            w = self.query_one(f"#p-{f.name}")
            if isinstance(w, Switch):
                out[f.name] = w.value
            else:
                raw = w.value.strip()  # type: ignore[attr-defined]
                if raw == "":
                    continue
                out[f.name] = raw
        return out

    def _validated(self) -> dict[str, Any] | None:
        err = self.query_one("#launch-error", Static)
        try:
            params = resolve_params(self.stage, self.form_values(), {})
        except ParamError as e:
            err.update(Text(str(e), style="bold red"))
            return None
        err.update("")
        return {k: v for k, v in params_dict(params).items() if v is not None}

    def _save(self, table: dict[str, Any]) -> None:
        ws = Workspace.open(self._root, create=False)
        ws.config.setdefault("stages", {})[self.stage.name] = table
        ws.save_config()

    def _gpu_choice(self) -> tuple[int, list[int] | None] | None:
        if not self.stage.trains:
            return 1, None
        err = self.query_one("#launch-error", Static)
        try:
            nproc = int(self.query_one("#nproc", Input).value or "1")
        except ValueError:
            err.update(Text("nproc must be a whole number", style="bold red"))
            return None
        if nproc < 1:
            err.update(Text("nproc must be >= 1", style="bold red"))
            return None
        snap = self.lapp.gpu_snapshot
        if not snap.available:
            return nproc, None
        chosen = list(self.query_one("#gpu-select", SelectionList).selected)
        if chosen and nproc > len(chosen):
            err.update(Text(f"nproc {nproc} is more than the {len(chosen)} GPU(s) chosen", style="bold red"))
            return None
        used = gpus_in_use(snap, self.lapp.runs_dir)
        clash = [g for g in chosen if g in used]
        if clash and not self._confirmed_gpu_clash:
            self._confirmed_gpu_clash = True
            names = ", ".join(f"GPU {g} ({used[g]})" for g in clash)
            err.update(Text(f"⚠ {names} already in use by a running job; Launch again to start anyway",
                            style="bold yellow"))
            return None
        return nproc, (chosen or None)

    # -- actions ---------------------------------------------------------------------------------
    def on_button_pressed(self, event: Button.Pressed) -> None:
        {"launch": self.action_launch, "save": self.action_save, "defaults": self.action_defaults,
         "cancel": self.action_cancel}[event.button.id or "cancel"]()

    def action_cancel(self) -> None:
        self.dismiss(None)

    def action_save(self) -> None:
        if not self.built:
            return
        table = self._validated()
        if table is not None:
            self._save(table)
            self.notify(f"saved [stages.{self.stage.name}] to llmctl.toml")
            self.check_prerequisites(table)

    def action_defaults(self) -> None:
        for f in self.fields:
            w = self.query_one(f"#p-{f.name}")
            v = field_default(f)
            if isinstance(w, Switch):
                w.value = bool(v)
            else:
                w.value = _show_value(v)  # type: ignore[attr-defined]

    def action_launch(self) -> None:
        if not self.built:
            return
        table = self._validated()
        if table is None:
            return
        choice = self._gpu_choice()
        if choice is None:
            return
        nproc, gpus = choice
        self._save(table)
        try:
            run_dir = self.lapp.start_stage_job(self.stage.name, nproc=nproc, gpus=gpus)
        except Exception as e:
            self.query_one("#launch-error", Static).update(Text(f"could not start: {e}", style="bold red"))
            return
        self.dismiss(run_dir)




def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.0f}%"
