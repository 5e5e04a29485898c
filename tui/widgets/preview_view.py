"""Shows a core ``Preview``: metadata beside a table page, a token text or a file list."""

from __future__ import annotations

import json

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Static

from llmctl.core.previews import Preview, flatten_meta


def meta_text(pv: Preview) -> Text:
    """Metadata grouped by its top-level key (attributes, datasets, manifest, …), wrapped."""
    if not pv.meta:
        return Text("no manifest or attributes", style="dim")
    out = Text()
    for group, value in pv.meta.items():
        if out:
            out.append("\n")
        out.append(f"{group}\n", style="bold underline")
        pairs = flatten_meta(value, limit=300) if isinstance(value, dict) else [("", str(value))]
        for k, v in pairs[:300]:
            if k:
                out.append(f"{k}: ", style="bold")
            out.append(f"{v}\n")
    return out


def record_text(rec: object) -> Text:
    """A full record, pretty: chat messages as role: content, the rest as indented JSON."""
    if not isinstance(rec, dict):
        return Text(json.dumps(rec, indent=2, ensure_ascii=False, default=str))
    out = Text()
    for k, v in rec.items():
        out.append(f"{k}: ", style="bold")
        if isinstance(v, list) and v and all(isinstance(m, dict) and "content" in m for m in v):
            out.append("\n")
            for m in v:
                out.append(f"  {m.get('role', '?')}: ", style="cyan")
                out.append(f"{m.get('content', '')}\n")
        elif isinstance(v, str):
            out.append(v + "\n")
        else:
            out.append(json.dumps(v, indent=2, ensure_ascii=False, default=str) + "\n")
    return out


class PreviewView(Vertical):
    """Title line, metadata panel and the page body of an artifact preview."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.preview: Preview | None = None

    def compose(self) -> ComposeResult:
        yield Static("", classes="preview-title")
        with Horizontal(classes="preview-main"):
            with VerticalScroll(classes="preview-meta") as meta:
                meta.border_title = "manifest / attributes"
                yield Static("", classes="preview-meta-text")
            with Vertical(classes="preview-body"):
                yield DataTable(cursor_type="row", classes="preview-files")
                yield DataTable(cursor_type="row", classes="preview-table")
                with VerticalScroll(classes="preview-detail") as det:
                    det.border_title = "row"
                    yield Static("", classes="preview-detail-text")
                with VerticalScroll(classes="preview-text") as tx:
                    tx.border_title = "content"
                    yield Static("", classes="preview-text-body")

    def show(self, pv: Preview) -> None:
        self.preview = pv
        title = Text(pv.title, style="bold")
        if pv.range_label and pv.kind not in ("checkpoint", "dir", "eval"):
            title.append(f"   {pv.range_label}", style="cyan")
        if pv.note:
            title.append(f"\n{pv.note}", style="dim italic")
        title.append(f"\n{pv.path}", style="dim")
        self.query_one(".preview-title", Static).update(title)
        self.query_one(".preview-meta-text", Static).update(meta_text(pv))
        table = self.query_one(".preview-table", DataTable)
        has_table = bool(pv.columns and pv.rows is not None)
        table.display = has_table
        self.query_one(".preview-detail").display = has_table
        if has_table:
            table.clear(columns=True)
            table.add_columns(*pv.columns)
            for r in pv.rows or []:
                table.add_row(*[c if len(c) <= 60 else c[:59] + "…" for c in r])
            self._detail(0)
        self.query_one(".preview-text").display = pv.text is not None
        if pv.text is not None:
            self.query_one(".preview-text-body", Static).update(pv.text)
            self.query_one(".preview-text", VerticalScroll).scroll_home(animate=False)
        files = self.query_one(".preview-files", DataTable)
        files.display = bool(pv.files)
        files.set_class(has_table, "compact")
        if pv.files:
            files.clear(columns=True)
            files.add_columns("file", "bytes")
            for name, size in pv.files:
                files.add_row(name, f"{size:,}")

    def _detail(self, i: int) -> None:
        pv = self.preview
        if pv is None or not pv.records or not 0 <= i < len(pv.records):
            return
        self.query_one(".preview-detail-text", Static).update(record_text(pv.records[i]))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.has_class("preview-table"):
            event.stop()
            self._detail(event.cursor_row)
