"""Artifact preview: decoded tokens, packed SFT rows, JSONL/Parquet pages, manifests and attributes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Static

from llmctl.core.previews import Preview, preview, resolve_target
from llmctl.core.workspace import Workspace
from llmctl.tui.screens.base import SubScreen
from llmctl.tui.widgets.preview_view import PreviewView


class PreviewScreen(SubScreen):
    """One artifact (by name) or file (by path), page by page; read in a thread worker."""

    BINDINGS = [
        Binding("n,pagedown", "page(1)", "Next page"),
        Binding("b,pageup", "page(-1)", "Prev page"),
        Binding("home", "first", "First", show=False),
        Binding("end", "last", "Last", show=False),
    ]

    def __init__(self, target: str | Path, start: int = 0) -> None:
        super().__init__()
        self.target = str(target)
        self.start = start
        self.pv: Preview | None = None
        self.page_size = 1

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(Text(f"loading {self.target}…", style="dim"), id="preview-status")
        yield PreviewView(id="preview")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = f"preview {self.target}"
        self.query_one(PreviewView).display = False
        self.load(self.start)

    @work(thread=True, exclusive=True, group="preview", exit_on_error=False)
    def load(self, start: int) -> None:
        root = self.app.root  # type: ignore[attr-defined]
        try:
            ws = Workspace.open(root, create=False)
            path = resolve_target(ws, self.target)
            tok = ws.tokenizer() if path.suffix in (".h5", ".hdf5") else None
            pv = preview(path, start=start, tokenizer=tok)
        except Exception as e:
            self.app.call_from_thread(self._failed, f"{type(e).__name__}: {e}")
            return
        self.app.call_from_thread(self._show, pv)

    def _failed(self, msg: str) -> None:
        self.query_one("#preview-status", Static).update(Text(f"cannot preview {self.target}: {msg}", style="red"))

    def _show(self, pv: Preview) -> None:
        self.pv = pv
        self.start = pv.start
        self.page_size = max(self.page_size, pv.count)
        status = self.query_one("#preview-status", Static)
        status.update(Text(f"{pv.kind}", style="dim"))
        status.display = False
        view = self.query_one(PreviewView)
        view.display = True
        view.show(pv)

    def _page_size(self) -> int:
        return self.page_size

    def action_page(self, direction: int) -> None:
        pv = self.pv
        if pv is None or pv.total is None:
            return
        new = max(0, min(pv.total - 1, pv.start + direction * self._page_size()))
        if new != pv.start:
            self.load(new)

    def action_first(self) -> None:
        if self.pv is not None and self.pv.start:
            self.load(0)

    def action_last(self) -> None:
        pv = self.pv
        if pv is not None and pv.total:
            self.load(max(0, pv.total - self._page_size()))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        pv = self.pv
        if pv is None or not event.data_table.has_class("preview-files") or not pv.files:
            return
        name = pv.files[event.cursor_row][0]
        self.app.push_screen(PreviewScreen(pv.path / name))

    @property
    def preview_state(self) -> dict[str, Any]:
        pv = self.pv
        return {} if pv is None else {"kind": pv.kind, "start": pv.start, "count": pv.count, "total": pv.total}
