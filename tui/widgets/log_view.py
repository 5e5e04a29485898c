"""A job's log streaming live: a Log that keeps at most ``max_lines`` lines (never freezes)."""

from __future__ import annotations

from textual.widgets import Log

MAX_LOG_LINES = 5000


class LogView(Log):
    """Lines appended as they arrive; older lines are dropped past ``MAX_LOG_LINES``."""

    BORDER_TITLE = "log"

    def __init__(self, **kw) -> None:
        kw.setdefault("max_lines", MAX_LOG_LINES)
        kw.setdefault("highlight", False)
        super().__init__(**kw)
        self.total_lines = 0

    def append(self, lines: list[str], skipped_bytes: int = 0) -> None:
        if skipped_bytes and self.total_lines == 0:
            self.write_line(f"… {skipped_bytes:,} earlier bytes not shown (see the Files tab for the whole log)")
        if lines:
            self.write_lines(lines)
            self.total_lines += len(lines)
