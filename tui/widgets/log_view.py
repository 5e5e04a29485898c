"""A job's log streaming live: a Log that keeps at most ``max_lines`` lines (never freezes).

Long lines wrap at the widget's width (continuations indented by ``CONTINUATION``), so an error line
and the hint at its end are both on screen; a new width re-wraps the kept lines.
"""

from __future__ import annotations

import textwrap
from collections import deque

from textual import events
from textual.widgets import Log

MAX_LOG_LINES = 5000
CONTINUATION = "  ↳ "


def wrap_line(line: str, width: int) -> list[str]:
    """``line`` cut into pieces of at most ``width`` cells, at spaces where it can (one piece when
    it fits or ``width`` is too small to wrap)."""
    line = line.expandtabs(4)
    if width <= len(CONTINUATION) + 8 or len(line) <= width:
        return [line]
    return textwrap.wrap(line, width, subsequent_indent=CONTINUATION, drop_whitespace=False,
                         replace_whitespace=False, break_on_hyphens=False) or [line]


class LogView(Log):
    """Lines appended as they arrive, wrapped to the width; older lines are dropped past
    ``MAX_LOG_LINES``."""

    BORDER_TITLE = "log"

    def __init__(self, **kw) -> None:
        kw.setdefault("max_lines", MAX_LOG_LINES)
        kw.setdefault("highlight", False)
        super().__init__(**kw)
        self.total_lines = 0
        self.raw: deque[str] = deque(maxlen=kw["max_lines"])
        self._wrap_width = 0

    def _cols(self) -> int:
        """Cells a line may take: the widget's width less a vertical scrollbar's (0 while hidden)."""
        return max(0, self.size.width - self.styles.scrollbar_size_vertical)

    def append(self, lines: list[str], skipped_bytes: int = 0) -> None:
        """Add ``lines`` (and, before the first, a note of ``skipped_bytes`` not shown)."""
        new: list[str] = []
        if skipped_bytes and self.total_lines == 0:
            new.append(f"… {skipped_bytes:,} earlier bytes not shown (see the Files tab for the whole log)")
        new += lines
        if not new:
            return
        self.raw.extend(new)
        self.total_lines += len(lines)
        width = self._cols()
        if width != self._wrap_width and width > 0:
            self._rewrap()
            return
        self.write_lines([piece for line in new for piece in wrap_line(line, width)])

    def _rewrap(self) -> None:
        width = self._cols()
        self._wrap_width = width
        follow = self.is_vertical_scroll_end
        self.clear()
        self.write_lines([piece for line in self.raw for piece in wrap_line(line, width)], scroll_end=follow)

    def on_resize(self, event: events.Resize) -> None:
        if self._cols() != self._wrap_width and self._cols() > 0 and self.raw:
            self._rewrap()
