"""RL rollouts as they happen (samples.jsonl): prompt, completion, extracted answer, gold, reward parts."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import DataTable, Static

from llmctl.core.previews import cell

MAX_ROLLOUTS = 1000
TEXT_KEYS = ("prompt", "completion", "response", "extracted", "gold", "step", "data_source")


def reward_parts(rec: dict[str, Any]) -> dict[str, float]:
    """Every reward component of a sample: ``reward*`` numbers and ``rewards``/``reward_parts`` dicts."""
    parts: dict[str, float] = {}
    for k, v in rec.items():
        if isinstance(v, dict) and k in ("rewards", "reward_parts", "parts", "scores"):
            for kk, vv in v.items():
                if isinstance(vv, int | float) and not isinstance(vv, bool):
                    parts[kk] = float(vv)
        elif (k.startswith("reward") or k.startswith("score") or k in ("correct", "format", "kl", "advantage", "length", "truncated")) \
                and isinstance(v, int | float | bool):
            parts[k] = float(v)
    return parts


def rollout_cells(rec: dict[str, Any]) -> list[Any]:
    parts = reward_parts(rec)
    total = parts.get("reward", parts.get("score"))
    style = "green" if total and total > 0 else ("red" if total is not None else "")
    others = " ".join(f"{k}={v:g}" for k, v in parts.items() if k not in ("reward", "score"))
    return [str(rec.get("step", "-")), Text("-" if total is None else f"{total:g}", style=style),
            cell(rec.get("extracted"), 24), cell(rec.get("gold"), 24), Text(others, style="dim"),
            cell(rec.get("prompt"), 60), cell(rec.get("completion", rec.get("response")), 80)]


def rollout_detail(rec: dict[str, Any]) -> Text:
    out = Text()
    prompt = rec.get("prompt")
    out.append("prompt\n", style="bold")
    if isinstance(prompt, list):
        for m in prompt:
            if isinstance(m, dict):
                out.append(f"{m.get('role', '?')}: ", style="cyan")
                out.append(f"{m.get('content', '')}\n")
    else:
        out.append(f"{prompt}\n")
    out.append("completion\n", style="bold")
    out.append(f"{rec.get('completion', rec.get('response', ''))}\n")
    out.append("extracted ", style="bold")
    out.append(f"{rec.get('extracted')!s}   ")
    out.append("gold ", style="bold")
    out.append(f"{rec.get('gold')!s}\n")
    parts = reward_parts(rec)
    if parts:
        out.append("reward parts ", style="bold")
        out.append("  ".join(f"{k}={v:g}" for k, v in parts.items()))
    return out


class RolloutsView(Vertical):
    """A table of rollouts (newest followed) and the full text of the highlighted one."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.records: list[dict[str, Any]] = []
        self._keys: list[str] = []
        self._n = 0

    def compose(self) -> ComposeResult:
        t: DataTable = DataTable(cursor_type="row", classes="rollout-table")
        t.add_columns("step", "reward", "extracted", "gold", "parts", "prompt", "completion")
        yield t
        with VerticalScroll(classes="rollout-detail"):
            yield Static("no rollouts yet (RL jobs write samples.jsonl)", classes="rollout-text")

    def append(self, recs: list[dict[str, Any]]) -> None:
        t = self.query_one(DataTable)
        follow = t.row_count == 0 or t.cursor_row >= t.row_count - 1
        for r in recs:
            if not isinstance(r, dict):
                continue
            self.records.append(r)
            self._keys.append(str(self._n))
            t.add_row(*rollout_cells(r), key=self._keys[-1])
            self._n += 1
        while len(self.records) > MAX_ROLLOUTS:
            self.records.pop(0)
            t.remove_row(self._keys.pop(0))
        if follow and t.row_count:
            t.move_cursor(row=t.row_count - 1, animate=False)
            self._show(len(self.records) - 1)

    def follow_latest(self) -> None:
        """Put the cursor (and the view) on the newest rollout."""
        t = self.query_one(DataTable)
        if t.row_count:
            t.move_cursor(row=t.row_count - 1, animate=False)
            t.scroll_end(animate=False)

    def _show(self, i: int) -> None:
        if 0 <= i < len(self.records):
            self.query_one(".rollout-text", Static).update(rollout_detail(self.records[i]))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self._show(event.cursor_row)
