"""A Static that repaints only when its text changes, and re-lays out only when its line count does."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import Static


def _lines(content: Any) -> int:
    if isinstance(content, Text):
        return content.plain.count("\n") + 1
    if isinstance(content, str):
        return content.count("\n") + 1
    return -1  # tables and other renderables: always re-lay out


class TextBox(Static):
    """``show(text)``: a no-op when unchanged; a cheap repaint when only the words change.

    A layout pass is the expensive part of a Textual refresh; live figures (elapsed time, GPU
    load) change words, not shape, several times a second.
    """

    def __init__(self, content: Any = "", **kw: Any) -> None:
        super().__init__(content, **kw)
        self._shown: Any = content
        self._n = _lines(content)

    def show(self, content: Any) -> None:
        if content == self._shown and type(content) is type(self._shown):
            return
        n = _lines(content)
        self.update(content, layout=n < 0 or n != self._n)
        self._shown, self._n = content, n
