"""A DataTable whose rows have stable keys: refreshing keeps the cursor on the same row."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from textual.coordinate import Coordinate
from textual.widgets import DataTable


class KeyedTable(DataTable):
    """``set_rows([(key, cells), ...])`` rebuilds only when the keys change, else updates changed cells.

    Subclasses name their ``COLUMNS``; rows given before the table is mounted wait until it is.
    """

    COLUMNS: tuple[str, ...] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("cursor_type", "row")
        kwargs.setdefault("zebra_stripes", False)
        super().__init__(*args, **kwargs)
        self._keys: list[str] = []
        self._cells: dict[str, list[Any]] = {}
        self._pending: Sequence[tuple[str, list[Any]]] | None = None
        self._ready = False

    def on_mount(self) -> None:
        self.add_columns(*self.COLUMNS)
        self._ready = True
        if self._pending is not None:
            rows, self._pending = self._pending, None
            self.set_rows(rows)

    # Textual measures new or changed cells when the table goes idle, but keeps the lines it cached
    # before at the old column widths (its cache key has no widths): under load a first paint falls
    # in between and names stay cut ("prepa") until something else invalidates them.
    def _update_dimensions(self, new_rows: Any) -> None:
        super()._update_dimensions(new_rows)
        self._invalidate_lines()

    def _update_column_widths(self, updated_cells: Any) -> None:
        super()._update_column_widths(updated_cells)
        self._invalidate_lines()

    def _invalidate_lines(self) -> None:
        self._update_count += 1  # part of every render-cache key of DataTable
        self.refresh()

    @property
    def current_key(self) -> str | None:
        """The key of the row under the cursor."""
        if self.row_count == 0:
            return None
        try:
            return self.coordinate_to_cell_key(Coordinate(self.cursor_row, 0)).row_key.value
        except Exception:
            return None

    def set_rows(self, rows: Sequence[tuple[str, list[Any]]]) -> bool:
        """Show ``rows``; returns True when anything changed."""
        if not self._ready:  # no columns yet: cells added now would never be measured
            self._pending = rows
            return True
        keys = [k for k, _ in rows]
        changed = False
        if keys != self._keys:
            cur = self.current_key
            self.clear()
            for k, cells in rows:
                self.add_row(*cells, key=k)
            self._keys = keys
            if cur in keys:
                self.move_cursor(row=keys.index(cur), animate=False)
            changed = True
        else:
            cols = list(self.columns.keys())
            for k, cells in rows:
                old = self._cells.get(k)
                if old == cells:
                    continue
                for i, (col, new) in enumerate(zip(cols, cells, strict=False)):
                    if old is None or i >= len(old) or old[i] != new:
                        self.update_cell(k, col, new, update_width=True)
                changed = True
        self._cells = {k: list(cells) for k, cells in rows}
        return changed

    def select_key(self, key: str) -> bool:
        """Move the cursor to the row ``key``."""
        if key in self._keys:
            self.move_cursor(row=self._keys.index(key), animate=False)
            return True
        return False
