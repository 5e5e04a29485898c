"""One job: live curves, its log streaming, RL rollouts as they happen, and its run folder's files.

A thread worker follows the run folder: job.json for the state, log.txt and samples.jsonl by byte
offset, metrics.jsonl through a bounded :class:`MetricsIndex` (a sampled first look for huge
files, then the full index, then only new lines). It posts what changed; the screen draws.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import DataTable, Footer, Header, TabbedContent, TabPane
from textual.worker import get_current_worker

from llmctl.core import jobs as core_jobs
from llmctl.core import runs as core_runs
from llmctl.core.metrics import JsonlTail
from llmctl.core.stages import STAGE_BY_NAME
from llmctl.tui.screens.base import SubScreen, numbered
from llmctl.tui.state import TextTail, fmt_bytes, fmt_duration, fmt_num, run_files, style_for
from llmctl.tui.widgets.curves import CurvesView
from llmctl.tui.widgets.log_view import LogView
from llmctl.tui.widgets.preview_view import PreviewView
from llmctl.tui.widgets.rollouts import RolloutsView
from llmctl.tui.widgets.text import TextBox

if TYPE_CHECKING:
    from llmctl.tui.app import LlmctlApp

SAMPLE_ABOVE = 8 << 20  # metrics files bigger than this get a sampled first look
INDEX_STEP = 32 << 20  # bytes folded per step while building the full index
POLL_S = 0.5
THROUGHPUT_KEYS = ("tokens_per_s", "mfu")


@dataclass
class Curves:
    """Every metric's downsampled points, ready to draw."""

    points: dict[str, tuple[Any, Any]]
    latest: dict[str, float]
    rows: int
    last_step: int | None
    note: str = ""


@dataclass
class JobUpdate:
    job: dict[str, Any]
    log_lines: list[str] = field(default_factory=list)
    log_skipped: int = 0
    rollouts: list[dict[str, Any]] = field(default_factory=list)
    curves: Curves | None = None
    files: list[tuple[str, int, float]] | None = None


class JobUpdated(Message):
    def __init__(self, update: JobUpdate) -> None:
        super().__init__()
        self.update = update


def curves_of(index: Any, note: str = "") -> Curves:
    pts = {k: s.points() for k, s in index.series.items()}
    latest = {k: s.last_value for k, s in index.series.items() if s.last_value is not None}
    return Curves(pts, latest, index.rows, index.last_step, note)


def find_key(keys: Any, suffix: str) -> str | None:
    for k in keys:
        if k == suffix or k.endswith("/" + suffix):
            return k
    return None


class JobScreen(SubScreen):
    """Curves, log, rollouts and files of one run folder, following it while it runs."""

    BINDINGS = [
        Binding("c", "cancel", "Cancel job"),
        Binding("k", "kill", "Kill now"),
        Binding("r", "rerun", "Re-run"),
        Binding("h", "history", "History"),
        *numbered("tab", "Curves", "Log", "Rollouts", "Files"),
    ]

    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.stage = self.run_dir.parent.name
        self.job: dict[str, Any] = {}
        self.curves: Curves | None = None
        self.updates = 0
        self.files: list[tuple[str, int, float]] = []
        self._drawn = threading.Event()  # set once the latest curves have been painted

    @property
    def lapp(self) -> LlmctlApp:
        return self.app  # type: ignore[return-value]

    @property
    def key(self) -> str:
        return f"{self.stage}/{self.run_dir.name}"

    def compose(self) -> ComposeResult:
        yield Header()
        yield TextBox(Text(self.key, style="bold"), id="job-head")
        # training jobs open on their curves, data preparation (no metrics) on its log
        st = STAGE_BY_NAME.get(self.stage)
        trains = st.trains if st is not None else False
        first = "curves" if trains or (self.run_dir / core_runs.METRICS_FILE).exists() else "log"
        with TabbedContent(initial=first, id="job-tabs"):
            with TabPane("Curves", id="curves"):
                yield CurvesView(id="curves-view")
            with TabPane("Log", id="log"):
                yield LogView(id="log-view")
            with TabPane("Rollouts", id="rollouts"):
                yield RolloutsView(id="rollouts-view")
            with TabPane("Files", id="files"):
                with Horizontal(id="files-pane"):
                    yield DataTable(cursor_type="row", id="files-table")
                    yield PreviewView(id="file-preview")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = self.key
        self.query_one("#files-table", DataTable).add_columns("file", "size", "modified")
        self.query_one("#file-preview", PreviewView).display = False
        self.follow()

    # -- the worker ------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="job-follow", exit_on_error=False)
    def follow(self) -> None:
        from llmctl.core.metrics_index import MetricsIndex, sample_index

        worker = get_current_worker()
        log = TextTail(self.run_dir / core_runs.LOG_FILE)
        samples = JsonlTail(self.run_dir / core_runs.SAMPLES_FILE)
        mpath = self.run_dir / core_runs.METRICS_FILE
        index: MetricsIndex | None = None
        files_at = 0.0
        idle = 0
        while not worker.is_cancelled:
            up = JobUpdate(job=core_jobs.job_state(self.run_dir))
            up.log_lines = log.read_new()
            up.log_skipped = log.skipped
            up.rollouts = samples.read_new()
            if index is None and mpath.exists():
                index = MetricsIndex(mpath)
                size = index.size
                if size > SAMPLE_ABOVE:
                    quick = sample_index(mpath)
                    self._drawn.clear()
                    self.post_message(JobUpdated(JobUpdate(job=up.job, curves=curves_of(
                        quick, f"sampled {quick.rows:,} lines; indexing {fmt_bytes(size)}…"))))
                    self._drawn.wait(timeout=3.0)  # let the shape reach the screen before the heavy read
                    while index.offset < size and not worker.is_cancelled:
                        index.update(max_bytes=INDEX_STEP)
                    if worker.is_cancelled:
                        return
                else:
                    index.update()
                up.curves = curves_of(index)
            elif index is not None and (index.update() or index.reset):
                up.curves = curves_of(index)
            now = time.monotonic()
            if now - files_at > 3.0:
                up.files = run_files(self.run_dir)
                files_at = now
            busy = up.job.get("state") in ("starting", "running")
            if up.log_lines or up.rollouts or up.curves or up.files is not None or busy:
                self.post_message(JobUpdated(up))
            idle = 0 if (up.log_lines or up.curves or busy) else idle + 1
            time.sleep(POLL_S if idle < 10 else 2.0)

    def on_job_updated(self, message: JobUpdated) -> None:
        up = message.update
        self.updates += 1
        self.job = up.job
        if up.log_lines or (up.log_skipped and self.query_one(LogView).total_lines == 0):
            self.query_one(LogView).append(up.log_lines, up.log_skipped)
        if up.rollouts:
            self.query_one(RolloutsView).append(up.rollouts)
        if up.curves is not None:
            self.curves = up.curves
            self._drawn.clear()  # until these curves are on screen
            view = self.query_one(CurvesView)
            view.set_keys(sorted(up.curves.points))
            self._draw()
            self.call_after_refresh(self._drawn.set)
        if up.files is not None and up.files != self.files:
            self.files = up.files
            self._files()
        self._head()

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        """Widgets filled while hidden scroll to their newest line when shown."""
        pane = event.pane.id
        if pane == "log":
            self.query_one(LogView).scroll_end(animate=False)
        elif pane == "rollouts":
            self.query_one(RolloutsView).follow_latest()

    # -- drawing ---------------------------------------------------------------------------------
    def _head(self) -> None:
        j = self.job
        state = j.get("state", "unknown")
        out = Text(self.key, style="bold")
        out.append(f"  {state}", style=style_for(state))
        if j.get("exit_code") is not None:
            out.append(f" (exit {j['exit_code']})")
        started = j.get("started")
        if started:
            end = j.get("ended") if state not in ("starting", "running") and j.get("ended") else self.lapp.clock()
            out.append(f"  elapsed {fmt_duration(end - started)}")
        if self.curves and self.curves.last_step is not None:
            out.append(f"  step {self.curves.last_step:,}")
            row = self.lapp.state.job(self.key) if self.lapp.state else None
            if row and row.max_steps:
                out.append(f"/{row.max_steps:,}")
        row = self.lapp.state.job(self.key) if self.lapp.state else None
        if row is not None and row.stopped:
            out.append(f"  {row.stopped}", style="magenta")
        if j.get("gpus"):
            out.append(f"  GPUs {','.join(map(str, j['gpus']))}")
        if j.get("cancel_requested") and state in ("starting", "running"):
            out.append("  stopping…", style="magenta")
        if j.get("error"):
            out.append(f"\n{j['error']}", style="red")
        cmd = j.get("command") or []
        if cmd:
            out.append("\n$ " + " ".join(str(c) for c in cmd), style="dim")
        self.query_one("#job-head", TextBox).show(out)

    def _draw(self) -> None:
        c = self.curves
        if c is None:
            return
        view = self.query_one(CurvesView)
        keys = view.selected
        series = [(k, *c.points[k]) for k in keys if k in c.points]
        stats = Text()
        if c.last_step is not None:
            stats.append(f"step {c.last_step:,}  ", style="bold")
        for k in keys:
            if k in c.latest:
                stats.append(f"{k} {fmt_num(c.latest[k])}  ")
        for want in THROUGHPUT_KEYS:
            k = find_key(c.latest, want)
            if k:
                v = c.latest[k]
                stats.append(f"{k} {v:.1%}  " if want == "mfu" and v <= 1 else f"{k} {fmt_num(v)}  ", style="cyan")
        stats.append(f"{c.rows:,} rows", style="dim")
        if c.note:
            stats.append(f"  {c.note}", style="yellow")
        view.draw(series, title=", ".join(keys) or "pick a metric", stats=stats)

    def on_curves_view_metrics_changed(self, message: CurvesView.MetricsChanged) -> None:
        self._draw()

    def _files(self) -> None:
        t = self.query_one("#files-table", DataTable)
        cur = t.cursor_row
        t.clear()
        for name, size, mtime in self.files:
            t.add_row(name, fmt_bytes(size), time.strftime("%H:%M:%S", time.localtime(mtime)), key=name)
        if 0 <= cur < t.row_count:
            t.move_cursor(row=cur, animate=False)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "files-table" and 0 <= event.cursor_row < len(self.files):
            self.view_file(self.run_dir / self.files[event.cursor_row][0])

    @work(thread=True, exclusive=True, group="job-file", exit_on_error=False)
    def view_file(self, path: Path) -> None:
        from llmctl.core.previews import preview

        try:
            pv = preview(path, count=200 if path.suffix not in (".jsonl",) else 50)
        except Exception as e:
            self.app.call_from_thread(self.notify, f"cannot show {path.name}: {e}", severity="error")
            return
        self.app.call_from_thread(self._show_file, pv)

    def _show_file(self, pv: Any) -> None:
        view = self.query_one("#file-preview", PreviewView)
        view.display = True
        view.show(pv)

    # -- actions ---------------------------------------------------------------------------------
    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab

    def action_cancel(self) -> None:
        self.lapp.cancel_job(str(self.run_dir))

    def action_kill(self) -> None:
        self.lapp.cancel_job(str(self.run_dir), force=True)

    def action_rerun(self) -> None:
        new = self.lapp.rerun_job(str(self.run_dir))
        if new is not None:
            self.app.switch_screen(JobScreen(new))

    def action_history(self) -> None:
        self.lapp.open_history(self.stage)
