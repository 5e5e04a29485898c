"""Jobs: running and finished, with stage, elapsed time, progress and exit state."""

from __future__ import annotations

from typing import Any

from rich.text import Text

from llmctl.tui.state import JobRow, WorkspaceState, fmt_duration, style_for
from llmctl.tui.widgets.table import KeyedTable


def progress_bar(job: JobRow, width: int = 6) -> Text:
    """``████░░░░ 120/200`` (or just the step when max steps is unknown)."""
    p = job.progress
    if p is None:
        return Text(job.progress_label(), style="dim")
    full = int(round(p * width))
    out = Text("█" * full, style="green" if job.state == "done" else "yellow")
    out.append("░" * (width - full), style="dim")
    out.append(f" {job.step:,}/{job.max_steps:,}")
    return out


class JobsTable(KeyedTable):
    """Jobs, running first; the row key is ``<stage>/<run_id>``."""

    COLUMNS = ("stage", "run", "state", "elapsed", "progress")
    BORDER_TITLE = "Jobs"

    def show(self, state: WorkspaceState) -> bool:
        rows: list[tuple[str, list[Any]]] = []
        for j in state.jobs:
            st = Text(("▶ " if j.active else "") + j.state_label(), style=style_for(j.state))
            rows.append((j.key, [Text(j.stage, style="bold"), j.short_id, st, fmt_duration(j.elapsed(state.time)),
                                 progress_bar(j)]))
        return self.set_rows(rows)
