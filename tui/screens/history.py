"""Run history: past runs of a stage side by side, curves overlaid, parameters and throughput compared."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Footer, Header, Static

from llmctl.core import runs as core_runs
from llmctl.core.stages import STAGE_BY_NAME
from llmctl.tui.screens.base import RELOAD, SubScreen
from llmctl.tui.state import fmt_duration, fmt_num, short_run, style_for
from llmctl.tui.widgets.curves import CurvesView

DEFAULT_MARKED = 3


@dataclass
class RunSummary:
    run_id: str
    state: str
    started: float | None
    duration: float | None
    params: dict[str, Any]
    points: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    latest: dict[str, float] = field(default_factory=dict)
    last_step: int | None = None


def load_runs(runs_dir: Any, stage: str) -> list[RunSummary]:
    """Every run of ``stage`` with its params (provenance.json) and downsampled metrics."""
    from llmctl.core.jobs import refresh
    from llmctl.core.metrics_index import MetricsIndex

    out = []
    for r in core_runs.list_runs(runs_dir, stage):
        job = refresh(r.job)
        params: dict[str, Any] = {}
        try:
            prov = json.loads((r.path / core_runs.PROVENANCE_FILE).read_text(encoding="utf-8"))
            params = prov.get("params") or {}
        except (OSError, ValueError):
            pass
        idx = MetricsIndex(r.path / core_runs.METRICS_FILE, buckets=512)
        idx.update()
        started, ended = job.get("started"), job.get("ended")
        out.append(RunSummary(r.run_id, job.get("state", "?"), started,
                              (ended - started) if started and ended else None, params,
                              {k: s.points() for k, s in idx.series.items()},
                              {k: s.last_value for k, s in idx.series.items() if s.last_value is not None},
                              idx.last_step))
    out.sort(key=lambda s: s.started or 0, reverse=True)
    return out


def _latest(s: RunSummary, suffix: str) -> float | None:
    for k, v in s.latest.items():
        if k == suffix or k.endswith("/" + suffix):
            return v
    return None


def params_table(runs: list[RunSummary]) -> Table | Text:
    """Parameters that differ between the marked runs (all of them when only one is marked)."""
    if not runs:
        return Text("mark runs with space to compare them", style="dim")
    keys = sorted({k for r in runs for k in r.params})
    if len(runs) > 1:
        keys = [k for k in keys if len({json.dumps(r.params.get(k), default=str) for r in runs}) > 1]
    if not keys:
        return Text("the marked runs have the same parameters", style="dim")
    t = Table(box=None, padding=(0, 1), title="parameters" + (" that differ" if len(runs) > 1 else ""),
              title_justify="left")
    t.add_column("param", style="bold")
    for r in runs:
        t.add_column(short_run(r.run_id))
    for k in keys:
        t.add_row(k, *[fmt_num(r.params.get(k)) if k in r.params else "-" for r in runs])
    return t


class HistoryScreen(SubScreen):
    """Runs of one stage; space marks runs to overlay; the metric list picks what is drawn."""

    BINDINGS = [
        Binding("space", "mark", "Mark run"),
        Binding("m", "next_metric", "Next metric"),
        RELOAD,
    ]

    def __init__(self, stage: str) -> None:
        super().__init__()
        self.stage = stage
        self.runs: list[RunSummary] = []
        self.marked: list[str] = []

    def compose(self) -> ComposeResult:
        yield Header()
        st = STAGE_BY_NAME.get(self.stage)
        yield Static(Text(f"{self.stage} — runs", style="bold") + Text(f"  {st.help if st else ''}", style="italic"),
                     id="hist-head")
        with Horizontal(id="hist-main"):
            with Vertical(id="hist-left"):
                yield DataTable(cursor_type="row", id="hist-runs")
                with VerticalScroll(id="hist-params"):
                    yield Static("loading runs…", id="hist-params-text")
            yield CurvesView(id="hist-curves")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = f"history {self.stage}"
        self.query_one("#hist-runs", DataTable).add_columns("", "run", "state", "time", "steps", "loss",
                                                            "tokens/s", "mfu")
        self.action_reload()

    def action_reload(self) -> None:
        self.load()

    @work(thread=True, exclusive=True, group="history", exit_on_error=False)
    def load(self) -> None:
        runs = load_runs(self.app.runs_dir, self.stage)  # type: ignore[attr-defined]
        self.app.call_from_thread(self._loaded, runs)

    def _loaded(self, runs: list[RunSummary]) -> None:
        self.runs = runs
        if not self.marked:
            self.marked = [r.run_id for r in runs[:DEFAULT_MARKED]]
        keys = sorted({k for r in runs for k in r.points})
        self.query_one(CurvesView).set_keys(keys)
        self._table()
        self._draw()
        if not runs:
            self.query_one("#hist-params-text", Static).update(Text(f"no runs of {self.stage} yet", style="dim"))

    def _table(self) -> None:
        t = self.query_one("#hist-runs", DataTable)
        cur = t.cursor_row
        t.clear()
        for r in self.runs:
            loss = _latest(r, "loss")
            tps, mfu = _latest(r, "tokens_per_s"), _latest(r, "mfu")
            t.add_row("●" if r.run_id in self.marked else "○", r.run_id, Text(r.state, style=style_for(r.state)),
                      fmt_duration(r.duration), fmt_num(r.last_step), fmt_num(loss), fmt_num(tps),
                      "-" if mfu is None else (f"{mfu:.1%}" if mfu <= 1 else fmt_num(mfu)), key=r.run_id)
        if 0 <= cur < t.row_count:
            t.move_cursor(row=cur, animate=False)

    def _draw(self) -> None:
        view = self.query_one(CurvesView)
        keys = view.selected
        marked = [r for r in self.runs if r.run_id in self.marked]
        series = []
        for r in marked:
            for k in keys:
                if k in r.points:
                    label = short_run(r.run_id) + ("" if len(keys) == 1 else f" {k}")
                    series.append((label, *r.points[k]))
        stats = Text()
        for r in marked:
            tps, mfu = _latest(r, "tokens_per_s"), _latest(r, "mfu")
            stats.append(f"{short_run(r.run_id)}: ", style="bold")
            stats.append(f"tokens/s {fmt_num(tps)}  mfu {'-' if mfu is None else f'{mfu:.1%}'}   ", style="cyan")
        view.draw(series, title=f"{', '.join(keys) or 'pick a metric'} · {len(marked)} run(s)", stats=stats)
        self.query_one("#hist-params-text", Static).update(params_table(marked))

    def on_curves_view_metrics_changed(self, message: CurvesView.MetricsChanged) -> None:
        self._draw()

    def action_mark(self) -> None:
        t = self.query_one("#hist-runs", DataTable)
        if not self.runs or not 0 <= t.cursor_row < len(self.runs):
            return
        rid = self.runs[t.cursor_row].run_id
        if rid in self.marked:
            self.marked.remove(rid)
        else:
            self.marked.append(rid)
        self._table()
        self._draw()

    def action_next_metric(self) -> None:
        view = self.query_one(CurvesView)
        keys = view._keys
        if not keys:
            return
        cur = view.selected
        i = (keys.index(cur[0]) + 1) % len(keys) if cur and cur[0] in keys else 0
        view.select([keys[i]])
        self._draw()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if 0 <= event.cursor_row < len(self.runs):
            self.app.open_job(f"{self.stage}/{self.runs[event.cursor_row].run_id}")  # type: ignore[attr-defined]
