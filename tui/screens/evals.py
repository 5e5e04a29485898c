"""Evaluation browser: eval runs (results.json) and their per-example files, example by example,
and the held-out tables of GRPO/PPO runs (before their first step and after their last) side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Footer, Header, Static

from llmctl.core import heldout
from llmctl.core.previews import cell, flatten_meta
from llmctl.tui.screens.base import RELOAD, SubScreen
from llmctl.tui.widgets.preview_view import record_text

MAX_EXAMPLES = 5000
ALIASES = {
    "prompt": ("prompt", "question", "input", "problem"),
    "output": ("output", "completion", "response", "generation", "prediction"),
    "parsed": ("parsed", "extracted", "pred", "parsed_answer", "answer_parsed"),
    "gold": ("gold", "target", "ground_truth", "reference", "expected"),
    "score": ("score", "correct", "reward", "accuracy", "is_correct"),
}
FILTERS = ("all", "correct", "wrong")


def pick(rec: dict[str, Any], field: str) -> Any:
    for k in ALIASES[field]:
        if k in rec:
            return rec[k]
    return None


def score_of(rec: dict[str, Any]) -> float | None:
    v = pick(rec, "score")
    if isinstance(v, bool):
        return 1.0 if v else 0.0
    return float(v) if isinstance(v, int | float) else None


def eval_runs(runs_dir: Path) -> list[tuple[str, dict[str, Any], list[str]]]:
    """(run id, results.json, per-example .jsonl files) of every eval run, newest first."""
    base = runs_dir / "eval"
    out = []
    if base.is_dir():
        for d in sorted(base.iterdir(), reverse=True):
            res = d / "results.json"
            if not res.is_file():
                continue
            try:
                data = json.loads(res.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                data = {"error": str(e)}
            files = sorted(str(p.relative_to(d)) for p in d.rglob("*.jsonl") if p.name != "metrics.jsonl"
                           and p.name != "samples.jsonl")
            out.append((d.name, data if isinstance(data, dict) else {"value": data}, files))
    for stage in ("grpo", "ppo"):
        base = runs_dir / stage
        for d in sorted(base.iterdir(), reverse=True) if base.is_dir() else []:
            held = heldout.read(d / heldout.FILE)
            if held:
                out.append((f"{stage}/{d.name}", {"heldout": {"before": held["before"], "after": held["after"]}}, []))
    return out


def results_text(data: dict[str, Any]) -> Text:
    """An eval run's results: its held-out table(s) side by side (when it has them), then every value."""
    out = Text()
    tables = data.get("heldout")
    if isinstance(tables, dict) and tables and all(isinstance(t, dict) and "all" in t for t in tables.values()):
        rows = heldout.side_by_side(tables)
        width = max(len(r[0]) for r in rows)
        for i, r in enumerate(rows):
            out.append(r[0].ljust(width) + " " + " ".join(c.rjust(6) for c in r[1:]) + "\n",
                       style="bold" if i == 0 else "")
        out.append("\n")
    rest = {k: v for k, v in data.items() if k != "heldout"}
    out.append("\n".join(f"{k}: {v}" for k, v in flatten_meta(rest)) or ("" if tables else "empty results.json"))
    return out


def load_examples(path: Path, limit: int = MAX_EXAMPLES) -> tuple[list[dict[str, Any]], int]:
    from llmctl.core.previews import read_jsonl_rows

    recs, total = read_jsonl_rows(path, 0, limit)
    return [r if isinstance(r, dict) else {"value": r} for r in recs], total


class EvalScreen(SubScreen):
    """Runs on the left, examples on the right; ``f`` filters correct / wrong."""

    BINDINGS = [
        Binding("f", "filter", "Filter"),
        RELOAD,
    ]

    def __init__(self) -> None:
        super().__init__()
        self.runs: list[tuple[str, dict[str, Any], list[str]]] = []
        self.examples: list[dict[str, Any]] = []
        self.shown: list[int] = []
        self.filter = "all"
        self.total = 0
        self.current: tuple[str, str] | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="eval-main"):
            with Vertical(id="eval-left"):
                yield DataTable(cursor_type="row", id="eval-runs")
                yield DataTable(cursor_type="row", id="eval-files")
                with VerticalScroll(id="eval-results"):
                    yield Static("", id="eval-results-text")
            with Vertical(id="eval-right"):
                yield Static("", id="eval-status")
                yield DataTable(cursor_type="row", id="eval-examples")
                with VerticalScroll(id="eval-detail"):
                    yield Static("", id="eval-detail-text")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "evaluation results"
        self.query_one("#eval-runs", DataTable).add_columns("run", "results")
        self.query_one("#eval-files", DataTable).add_columns("per-example file")
        self.query_one("#eval-examples", DataTable).add_columns("#", "score", "parsed", "gold", "prompt", "output")
        self.action_reload()

    def action_reload(self) -> None:
        self.load_runs()

    @work(thread=True, exclusive=True, group="eval-runs", exit_on_error=False)
    def load_runs(self) -> None:
        runs = eval_runs(self.app.runs_dir)  # type: ignore[attr-defined]
        self.app.call_from_thread(self._runs_loaded, runs)

    def _runs_loaded(self, runs: list[tuple[str, dict[str, Any], list[str]]]) -> None:
        self.runs = runs
        t = self.query_one("#eval-runs", DataTable)
        t.clear()
        for rid, data, _ in runs:
            held = data.get("heldout") or {}
            nums = (heldout.change_lines(held["before"], held["after"], ("pass@1",))[0].removeprefix("held-out ")
                    if "before" in held and "pass@1" in held["before"].get("all", {}) else
                    ", ".join(f"{k} {v}" for k, v in flatten_meta(data) if _is_num(v))[:60])
            t.add_row(rid, nums, key=rid)
        if not runs:
            self.query_one("#eval-status", Static).update(
                Text("no evaluation results yet: run the eval stage (runs/eval/<run>/results.json)", style="yellow"))
        else:
            self._select_run(0)

    def _select_run(self, i: int) -> None:
        if not 0 <= i < len(self.runs):
            return
        rid, data, files = self.runs[i]
        self.query_one("#eval-results-text", Static).update(results_text(data))
        ft = self.query_one("#eval-files", DataTable)
        ft.clear()
        for f in files:
            ft.add_row(f, key=f)
        if files:
            self.load_examples(rid, files[0])
        else:
            self.examples, self.shown = [], []
            self.query_one("#eval-examples", DataTable).clear()
            self.query_one("#eval-status", Static).update(Text(f"{rid}: no per-example files", style="dim"))

    @work(thread=True, exclusive=True, group="eval-examples", exit_on_error=False)
    def load_examples(self, rid: str, name: str) -> None:
        path = self.app.runs_dir / (rid if "/" in rid else f"eval/{rid}") / name  # type: ignore[attr-defined]
        try:
            recs, total = load_examples(path)
        except OSError as e:
            self.app.call_from_thread(self.notify, f"cannot read {name}: {e}", severity="error")
            return
        self.app.call_from_thread(self._examples_loaded, rid, name, recs, total)

    def _examples_loaded(self, rid: str, name: str, recs: list[dict[str, Any]], total: int) -> None:
        self.current = (rid, name)
        self.examples = recs
        self.total = total
        self._fill()
        scores = [s for s in (score_of(r) for r in recs) if s is not None]
        acc = f"  mean score {sum(scores) / len(scores):.3f} over {len(scores)}" if scores else ""
        more = f" (first {len(recs):,} of {total:,})" if total > len(recs) else ""
        self.query_one("#eval-status", Static).update(
            Text(f"{rid}/{name}: {total:,} examples{more}{acc}  · {self.filter}: {len(self.shown)} shown (f filters)",
                 style="bold"))

    def _fill(self) -> None:
        t = self.query_one("#eval-examples", DataTable)
        t.clear()
        self.shown = []
        for i, r in enumerate(self.examples):
            s = score_of(r)
            if self.filter == "correct" and not (s is not None and s > 0):
                continue
            if self.filter == "wrong" and not (s is not None and s <= 0):
                continue
            self.shown.append(i)
            st = Text("-" if s is None else f"{s:g}", style="green" if s and s > 0 else "red")
            t.add_row(str(i), st, cell(pick(r, "parsed"), 20), cell(pick(r, "gold"), 20), cell(pick(r, "prompt"), 50),
                      cell(pick(r, "output"), 60))
        self._detail(0)

    def _detail(self, row: int) -> None:
        text = self.query_one("#eval-detail-text", Static)
        if 0 <= row < len(self.shown):
            text.update(record_text(self.examples[self.shown[row]]))
        else:
            text.update("")

    def action_filter(self) -> None:
        self.filter = FILTERS[(FILTERS.index(self.filter) + 1) % len(FILTERS)]
        if self.current:
            self._examples_loaded(self.current[0], self.current[1], self.examples, self.total)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        tid = event.data_table.id
        if tid == "eval-examples":
            self._detail(event.cursor_row)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        tid = event.data_table.id
        if tid == "eval-runs":
            self._select_run(event.cursor_row)
        elif tid == "eval-files" and self.current:
            rid = self.current[0]
            files = next((f for r, _, f in self.runs if r == rid), [])
            if 0 <= event.cursor_row < len(files):
                self.load_examples(rid, files[event.cursor_row])


def _is_num(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True
