"""The main screen: pipeline, artifacts, jobs and GPUs at once, with the actions on each."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header

from llmctl.core.gpu import GpuSnapshot
from llmctl.tui.screens.base import numbered
from llmctl.tui.state import WorkspaceState
from llmctl.tui.widgets.artifacts import ArtifactsTable, artifact_summary
from llmctl.tui.widgets.gpu_panel import GpuPanel
from llmctl.tui.widgets.jobs import JobsTable
from llmctl.tui.widgets.pipeline import PipelineTable, stage_summary
from llmctl.tui.widgets.text import TextBox

if TYPE_CHECKING:
    from llmctl.tui.app import LlmctlApp


def summary_line(state: WorkspaceState | None, gpu: GpuSnapshot | None) -> Text:
    """One line saying what is going on: stages ready to run, jobs running, GPUs."""
    if state is None:
        return Text("reading the workspace…", style="dim")
    out = Text()
    if state.error:
        out.append(f"workspace problem: {state.error}   ", style="bold red")
    counts: dict[str, int] = {}
    for s in state.stages:
        counts[s.state] = counts.get(s.state, 0) + 1
    running = state.running
    out.append(f"▶ {len(running)} job(s) running" if running else "no job running",
               style="bold yellow" if running else "dim")
    for key, style in (("done", "green"), ("can run", "cyan"), ("stale", "magenta"), ("stopped", "magenta"),
                       ("failed", "red"),
                       ("waiting", "dim"), ("not built", "dim")):
        if counts.get(key):
            out.append(f" · {counts[key]} {key}", style=style)
    if gpu is not None:
        out.append(" · ")
        out.append(gpu.status_line if gpu.available or gpu.time else "GPU: …",
                   style="" if gpu.available else "yellow")
    return out


class MainScreen(Screen):
    """Everything at a glance; Enter acts on the highlighted row of the focused panel."""

    BINDINGS = [
        Binding("s", "start_stage", "Start stage"),
        Binding("p", "preview", "Preview"),
        Binding("o", "open_job", "Open job"),
        Binding("c", "cancel_job", "Cancel job"),
        Binding("r", "rerun_job", "Re-run"),
        Binding("h", "history", "History"),
        Binding("g", "playground", "Sample"),
        Binding("e", "evals", "Evals"),
        *numbered("focus", "Pipeline", "Artifacts", "Jobs", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._stale_state = False
        self._stale_gpu = False

    @property
    def lapp(self) -> LlmctlApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Header()
        yield TextBox(summary_line(None, None), id="summary")
        with Horizontal(id="main-grid"):
            with Vertical(id="left"):
                yield PipelineTable(id="pipeline")
                yield TextBox("", id="stage-detail", classes="detail")
                yield ArtifactsTable(id="artifacts")
                yield TextBox("", id="artifact-detail", classes="detail")
            with Vertical(id="right"):
                yield JobsTable(id="jobs")
                yield TextBox("", id="job-detail", classes="detail")
                yield GpuPanel(history=lambda i: self.lapp.gpu.history(i), id="gpus")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = str(self.lapp.root)
        self.query_one("#pipeline").focus()
        self.lapp.state_signal.subscribe(self, self.show_state)
        self.lapp.gpu_signal.subscribe(self, self.show_gpu)
        if self.lapp.state is not None:
            self.show_state(self.lapp.state)
        self.show_gpu(self.lapp.gpu_snapshot)

    # -- data ------------------------------------------------------------------------------------
    def on_screen_resume(self) -> None:
        if self._stale_state and self.lapp.state is not None:
            self.show_state(self.lapp.state)
        if self._stale_gpu:
            self.show_gpu(self.lapp.gpu_snapshot)

    def show_state(self, state: WorkspaceState) -> None:
        if not self.is_current:  # covered by another screen: draw when it comes back
            self._stale_state = True
            return
        self._stale_state = False
        self.query_one(PipelineTable).show(state)
        self.query_one(ArtifactsTable).show(state)
        self.query_one(JobsTable).show(state)
        self._details()
        self._summary(summary_line(state, self.lapp.gpu_snapshot))

    def show_gpu(self, snap: GpuSnapshot) -> None:
        if not self.is_current:
            self._stale_gpu = True
            return
        self._stale_gpu = False
        self.query_one(GpuPanel).show(snap)
        self._summary(summary_line(self.lapp.state, snap))

    def _summary(self, text: Text) -> None:
        self.query_one("#summary", TextBox).show(text)

    def _details(self) -> None:
        state = self.lapp.state
        st = self.query_one(PipelineTable).current_key
        self.query_one("#stage-detail", TextBox).show(stage_summary(st, state) if st else "")
        art = self.query_one(ArtifactsTable).current_key
        self.query_one("#artifact-detail", TextBox).show(artifact_summary(art, state) if art else "")
        self.query_one("#job-detail", TextBox).show(self._job_detail())

    def _job_detail(self) -> Text:
        key = self.query_one(JobsTable).current_key
        state = self.lapp.state
        if not key or state is None:
            return Text("no jobs yet: pick a stage and press s to start one", style="dim")
        j = state.job(key)
        if j is None:
            return Text("")
        out = Text(f"{j.key}", style="bold")
        out.append(f"  {j.run_dir}", style="dim")
        if j.gpus:
            out.append(f"  GPUs {','.join(map(str, j.gpus))}")
        if j.error:
            out.append(f"\n{j.error}", style="red")
        return out

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._details()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        table_id = event.data_table.id
        if table_id == "pipeline":
            self.action_start_stage()
        elif table_id == "artifacts":
            self.action_preview()
        elif table_id == "jobs":
            self.action_open_job()

    # -- actions ---------------------------------------------------------------------------------
    def action_focus(self, panel: str) -> None:
        self.query_one(f"#{panel}").focus()

    def _stage(self) -> str | None:
        return self.query_one(PipelineTable).current_key

    def _job(self) -> str | None:
        return self.query_one(JobsTable).current_key

    def _on_highlighted(self, key: str | None, act: Callable[[str], object], missing: str = "") -> None:
        """``act(key)`` for the highlighted row's key; with none, the warning ``missing`` (if any)."""
        if key:
            act(key)
        elif missing:
            self.notify(missing, severity="warning")

    def action_start_stage(self) -> None:
        self._on_highlighted(self._stage(), self.lapp.open_launch)

    def action_preview(self) -> None:
        self._on_highlighted(self.query_one(ArtifactsTable).current_key, self.lapp.open_preview)

    def action_open_job(self) -> None:
        self._on_highlighted(self._job(), self.lapp.open_job, "no job selected")

    def action_cancel_job(self) -> None:
        self._on_highlighted(self._job(), self.lapp.cancel_job)

    def action_rerun_job(self) -> None:
        self._on_highlighted(self._job(), self.lapp.rerun_job)

    def action_history(self) -> None:
        focused = self.focused
        stage = self._stage()
        if isinstance(focused, JobsTable) and self._job():
            stage = self._job().split("/", 1)[0]  # type: ignore[union-attr]
        if stage:
            self.lapp.open_history(stage)

    def action_playground(self) -> None:
        self.lapp.open_playground()

    def action_evals(self) -> None:
        self.lapp.open_evals()
