"""Headless previews of workspace artifacts, shared by ``llmctl preview`` and the TUI.

A preview is data plus rich renderables, never textual widgets: HDF5 token files decoded back to
text window by window, packed SFT rows token by token with the trained (loss-masked) span
highlighted, JSONL and Parquet rows as paged tables, and manifests / HDF5 attributes as
key-value metadata. Pages are read directly (HDF5 slices, a newline index over a memory map,
Parquet row groups), so previewing a large artifact never loads it whole.
"""

from __future__ import annotations

import json
import mmap
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from llmctl.core.artifacts import newest_checkpoint, read_manifest
from llmctl.core.stages import ARTIFACT_BY_NAME, ARTIFACTS
from llmctl.core.tokenizer import Tokenizer
from llmctl.core.workspace import Workspace

EOT_ID = 50256
TOKEN_WINDOW = 256  # tokens per window of a flat token file
CELL_CHARS = 120  # a table cell is cut to this many characters

# Styles of the token view: trained tokens alternate two shades so token boundaries show.
TRAINED_STYLES = ("bold black on #8fd18f", "bold black on #b9e6b9")
CONTEXT_STYLES = ("#9a9a9a", "#c8c8c8")
PAD_STYLE = "dim"
EOT_STYLE = "bold magenta"


@dataclass
class Preview:
    """One page of an artifact: metadata, and a table, a token text or a file list."""

    path: Path
    kind: str  # tokens-h5 | sft-h5 | jsonl | parquet | parquet-dir | checkpoint | eval | json | text | dir
    title: str
    meta: dict[str, Any] = field(default_factory=dict)
    start: int = 0  # first row / window shown
    count: int = 0  # rows / windows shown
    total: int | None = None  # rows / windows in the whole artifact
    unit: str = "rows"
    columns: list[str] | None = None
    rows: list[list[str]] | None = None
    records: list[Any] | None = None  # the full records behind ``rows`` (for a detail view)
    text: Text | None = None
    files: list[tuple[str, int]] | None = None  # (relative path, bytes) for folders
    note: str = ""

    @property
    def range_label(self) -> str:
        if self.total is None:
            return ""
        if self.count == 0:
            return f"0 of {self.total:,} {self.unit}"
        return f"{self.unit} {self.start:,}–{self.start + self.count - 1:,} of {self.total:,}"


# ---- finding the file behind an artifact name ---------------------------------------------------

def resolve_target(ws: Workspace | None, ref: str) -> Path:
    """The path behind ``ref``: an artifact name (ARTIFACTS), a workspace-relative or absolute path."""
    spec = ARTIFACT_BY_NAME.get(ref)
    if spec is not None:
        p = ws.path(spec.path) if ws is not None else Path(spec.path)
        if spec.kind == "checkpoint":
            ck = newest_checkpoint(p)
            if ck is None:
                raise FileNotFoundError(f"artifact {ref}: no ready checkpoint under {p}")
            return ck
        if spec.kind == "eval":
            results = sorted(p.glob("*/results.json"), key=lambda q: q.stat().st_mtime) if p.is_dir() else []
            if not results:
                raise FileNotFoundError(f"artifact {ref}: no evaluation results under {p}")
            return results[-1].parent
        if not p.exists():
            raise FileNotFoundError(f"artifact {ref} is not built yet ({p} is missing)")
        return p
    p = Path(ref).expanduser()
    if not p.is_absolute() and ws is not None and not p.exists():
        p = ws.path(ref)
    if not p.exists():
        names = ", ".join(a.name for a in ARTIFACTS)
        raise FileNotFoundError(f"{ref}: no such artifact or file (artifacts: {names})")
    return p


def detect_kind(path: str | os.PathLike[str]) -> str:
    """What kind of preview fits ``path``."""
    p = Path(path)
    if p.is_dir():
        if (p / "results.json").is_file():
            return "eval"
        if p.name.startswith("step_") or any(p.glob("*.safetensors")) or any(p.glob("*.pt")):
            return "checkpoint"
        if any(p.rglob("*.parquet")):
            return "parquet-dir"
        return "dir"
    suffix = p.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        import h5py

        with h5py.File(p, "r") as f:
            return "sft-h5" if "loss_mask" in f else "tokens-h5"
    if suffix == ".jsonl":
        return "jsonl"
    if suffix == ".parquet":
        return "parquet"
    if suffix == ".json":
        return "json"
    return "text"


def preview(path: str | os.PathLike[str], *, kind: str | None = None, start: int = 0, count: int | None = None,
            tokenizer: Tokenizer | None = None, window: int = TOKEN_WINDOW) -> Preview:
    """A page of the artifact at ``path``, starting at row (or token window) ``start``."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    kind = kind or detect_kind(p)
    start = max(0, int(start))
    if kind in ("tokens-h5", "sft-h5") and tokenizer is None:
        raise ValueError(f"{p.name}: decoding tokens needs the workspace's tokenizer (ws.tokenizer())")
    if kind == "tokens-h5":
        return preview_tokens_h5(p, start, count or 2, tokenizer, window)
    if kind == "sft-h5":
        return preview_sft_h5(p, start, count or 1, tokenizer)
    if kind == "jsonl":
        return preview_jsonl(p, start, count or 20)
    if kind == "parquet":
        return preview_parquet(p, start, count or 20)
    if kind == "parquet-dir":
        return preview_parquet_dir(p, start, count or 20)
    if kind in ("checkpoint", "dir", "eval"):
        return preview_folder(p, kind)
    if kind == "json":
        return preview_json(p)
    return preview_text(p, start, count or 40)


# ---- metadata ----------------------------------------------------------------------------------

def _plain(v: Any) -> Any:
    """HDF5 / numpy attribute values as plain JSON-able values (JSON strings decoded)."""
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    if hasattr(v, "tolist"):
        v = v.tolist()
    if isinstance(v, str) and v[:1] in "{[":
        try:
            return json.loads(v)
        except ValueError:
            return v
    return v


def used_params_first(man: dict[str, Any]) -> dict[str, Any]:
    """A manifest as a preview shows it: what made the artifact first (stage, counts, the params
    the run used). The config file's values (``config_params``) appear only where the run used
    another value, beside it (``0.0005 (llmctl.toml: 0.001)``), and those params come first."""
    used, config = man.get("params"), man.get("config_params")
    if not (isinstance(used, dict) and isinstance(config, dict)):
        return man
    changed = [k for k in used if k in config and config[k] != used[k]]
    params: dict[str, Any] = {k: f"{_shown(used[k])}  (llmctl.toml: {_shown(config[k])})" for k in changed}
    params.update((k, v) for k, v in used.items() if k not in params)
    out: dict[str, Any] = {k: man[k] for k in ("stage", "counts") if k in man}
    out["params"] = params
    out.update((k, v) for k, v in man.items() if k not in out and k != "config_params")
    return out


def _shown(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, default=str, ensure_ascii=False)


def _manifest_meta(path: Path) -> dict[str, Any]:
    man = read_manifest(path)
    if not man:
        return {}
    man = used_params_first(man)
    out: dict[str, Any] = {}
    for k in ("stage", "counts", "params", "tokenizer", "job"):
        if man.get(k):
            out[k] = man[k]
    if man.get("created"):
        out["created"] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(man["created"]))
    if man.get("inputs"):
        out["inputs"] = sorted(man["inputs"])
    extra = {k: v for k, v in man.items() if k not in out and k not in ("artifact", "created", "inputs")}
    out.update(extra)
    return {"manifest": out}


def flatten_meta(meta: dict[str, Any], prefix: str = "", limit: int = 160) -> list[tuple[str, str]]:
    """Nested metadata as ``(dotted.key, value)`` pairs, long values cut."""
    out: list[tuple[str, str]] = []
    for k, v in meta.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.extend(flatten_meta(v, key + ".", limit))
        else:
            s = v if isinstance(v, str) else json.dumps(v, default=str, ensure_ascii=False)
            out.append((key, s if len(s) <= limit else s[: limit - 1] + "…"))
    return out


def _h5_meta(f: Any) -> dict[str, Any]:
    attrs = {k: _plain(v) for k, v in f.attrs.items()}
    dsets = {name: f"{d.dtype} {tuple(d.shape)}" for name, d in f.items() if hasattr(d, "shape")}
    return {"attributes": attrs, "datasets": dsets}


# ---- token files ---------------------------------------------------------------------------------

def token_text(ids: Any, tokenizer: Any) -> Text:
    """Decoded text of a token window, with end-of-text tokens shown as a marker."""
    out = Text()
    seg: list[int] = []
    for t in (int(x) for x in ids):
        if t == EOT_ID:
            if seg:
                out.append(tokenizer.decode(seg))
                seg = []
            out.append("<|endoftext|>", style=EOT_STYLE)
            out.append("\n")
        else:
            seg.append(t)
    if seg:
        out.append(tokenizer.decode(seg))
    return out


def preview_tokens_h5(path: Path, start: int, count: int, tok: Tokenizer, window: int = TOKEN_WINDOW) -> Preview:
    """Flat token file: windows of ``window`` tokens decoded to text."""
    import h5py

    with h5py.File(path, "r") as f:
        meta = _h5_meta(f)
        d = f["tokens"]
        n = int(d.shape[0])
        total = (n + window - 1) // window
        start = min(start, max(0, total - 1))
        stop = min(total, start + count)
        text = Text()
        for w in range(start, stop):
            a, b = w * window, min(n, (w + 1) * window)
            ids = d[a:b]
            text.append(f"── window {w:,} · tokens {a:,}–{b - 1:,} ", style="bold cyan")
            text.append("─" * 20 + "\n", style="cyan")
            text.append_text(token_text(ids, tok))
            text.append("\n")
    meta.update(_manifest_meta(path))
    return Preview(path, "tokens-h5", f"{path.name}: {n:,} tokens", meta, start, stop - start, total,
                   "windows", text=text, note=f"{window} tokens per window; <|endoftext|> separates documents")


def token_pieces(ids: Any, tokenizer: Any) -> list[tuple[int, int, str]]:
    """``(first, last, text)`` per displayed piece: one token, or a few whose bytes make one character."""
    ref = getattr(tokenizer, "reference", None)
    out: list[tuple[int, int, str]] = []
    buf, first = b"", 0
    ids = [int(t) for t in ids]
    for i, t in enumerate(ids):
        if ref is None or t >= 50257:
            if buf:
                out.append((first, i - 1, buf.decode("utf-8", "replace")))
                buf = b""
            out.append((i, i, tokenizer.decode_tokens([t])[0] if ref is None else "<pad>"))
            continue
        if not buf:
            first = i
        buf += ref.decode_single_token_bytes(t)
        try:
            text = buf.decode("utf-8")
        except UnicodeDecodeError as e:
            if e.reason == "unexpected end of data" and i - first < 4:
                continue  # a character split across tokens: wait for its other bytes
            text = buf.decode("utf-8", "replace")
        out.append((first, i, text))
        buf = b""
    if buf:
        out.append((first, len(ids) - 1, buf.decode("utf-8", "replace")))
    return out


def sft_row_text(tokens: Any, mask: Any, example_ids: Any, tokenizer: Any) -> Text:
    """One packed row token by token: trained tokens (loss_mask=1) highlighted, padding dimmed."""
    out = Text()
    prev_ex = None
    for n, (i, _j, s) in enumerate(token_pieces(tokens, tokenizer)):
        ex = int(example_ids[i]) if example_ids is not None else 0
        m = int(mask[i])
        if ex < 0:
            out.append("·", style=PAD_STYLE)
            continue
        if prev_ex is not None and ex != prev_ex:
            out.append(f"\n── example {ex} ──\n", style="bold cyan")
        prev_ex = ex
        if int(tokens[i]) == EOT_ID:
            out.append("<|endoftext|>", style=EOT_STYLE + (" underline" if m else ""))
            continue
        out.append(s, style=TRAINED_STYLES[n % 2] if m else CONTEXT_STYLES[n % 2])
    return out


def preview_sft_h5(path: Path, start: int, count: int, tok: Tokenizer) -> Preview:
    """Packed SFT rows: each row token by token, the loss-masked (trained) span highlighted."""
    import h5py
    import numpy as np

    with h5py.File(path, "r") as f:
        meta = _h5_meta(f)
        toks = f["tokens"]
        n_rows, seq_len = int(toks.shape[0]), int(toks.shape[1])
        start = min(start, max(0, n_rows - 1))
        stop = min(n_rows, start + count)
        rows = toks[start:stop]
        masks = f["loss_mask"][start:stop] if "loss_mask" in f else np.ones_like(rows)
        exs = f["example_ids"][start:stop] if "example_ids" in f else None
    text = Text()
    for j, r in enumerate(range(start, stop)):
        ex = exs[j] if exs is not None else None
        used = int((ex >= 0).sum()) if ex is not None else seq_len
        n_ex = len({int(x) for x in ex if x >= 0}) if ex is not None else 1
        trained = int(masks[j].sum())
        text.append(f"── row {r:,} · {used}/{seq_len} tokens used · {n_ex} example(s) · {trained} trained ",
                    style="bold cyan")
        text.append("─" * 8 + "\n", style="cyan")
        text.append_text(sft_row_text(rows[j], masks[j], ex, tok))
        text.append("\n")
    meta.update(_manifest_meta(path))
    legend = "highlighted tokens are trained (loss_mask=1); grey is prompt context; · is padding"
    return Preview(path, "sft-h5", f"{path.name}: {n_rows:,} rows × {seq_len} tokens", meta, start,
                   stop - start, n_rows, "rows", text=text, note=legend)


# ---- tables --------------------------------------------------------------------------------------

def cell(v: Any, limit: int = CELL_CHARS) -> str:
    """A value as one short line: chat messages as ``role: content``, the rest as compact JSON."""
    if isinstance(v, list) and v and all(isinstance(m, dict) and "content" in m for m in v):
        s = " | ".join(f"{m.get('role', '?')}: {m.get('content', '')}" for m in v)
    elif isinstance(v, dict) and "content" in v and "role" in v:
        s = f"{v['role']}: {v['content']}"
    elif isinstance(v, str):
        s = v
    elif v is None:
        s = "∅"
    elif isinstance(v, float):
        s = f"{v:.6g}"
    else:
        s = json.dumps(v, ensure_ascii=False, default=str)
    s = " ".join(s.split()) if "\n" in s or "\t" in s else s
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _table(records: list[Any], start: int) -> tuple[list[str], list[list[str]]]:
    cols: list[str] = []
    for r in records:
        if isinstance(r, dict):
            for k in r:
                if k not in cols:
                    cols.append(k)
    if not cols:
        cols = ["value"]
    rows = []
    for i, r in enumerate(records):
        if isinstance(r, dict):
            rows.append([str(start + i)] + [cell(r.get(c)) if c in r else "" for c in cols])
        else:
            rows.append([str(start + i), cell(r)])
    return ["#", *cols], rows


class LineIndex:
    """Byte offsets of the lines of a text file (built once with numpy over a memory map)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import numpy as np

        self.path = Path(path)
        size = self.path.stat().st_size
        self.size = size
        if size == 0:
            self.starts = np.zeros(0, dtype=np.int64)
            return
        with open(self.path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            nl = np.flatnonzero(np.frombuffer(mm, dtype=np.uint8) == 10)
        starts = np.concatenate([[0], nl + 1]).astype(np.int64)
        self.starts = starts[starts < size]

    def __len__(self) -> int:
        return int(self.starts.shape[0])

    def lines(self, start: int, count: int) -> list[bytes]:
        """Raw lines ``start`` .. ``start+count`` (without newlines)."""
        n = len(self)
        start, stop = max(0, start), min(n, start + count)
        if start >= stop:
            return []
        a = int(self.starts[start])
        b = int(self.starts[stop]) if stop < n else self.size
        with open(self.path, "rb") as f:
            f.seek(a)
            data = f.read(b - a)
        return data.rstrip(b"\n").split(b"\n")


_INDEX_CACHE: dict[tuple[str, int, int], LineIndex] = {}


def line_index(path: Path) -> LineIndex:
    """A cached :class:`LineIndex` (rebuilt when the file's size or mtime changes)."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    idx = _INDEX_CACHE.get(key)
    if idx is None:
        if len(_INDEX_CACHE) > 16:
            _INDEX_CACHE.clear()
        idx = _INDEX_CACHE[key] = LineIndex(path)
    return idx


def read_jsonl_rows(path: str | os.PathLike[str], start: int, count: int) -> tuple[list[Any], int]:
    """Parsed records ``start``..``start+count`` of a JSONL file and its total line count."""
    idx = line_index(Path(path))
    out: list[Any] = []
    for i, line in enumerate(idx.lines(start, count)):
        try:
            out.append(orjson.loads(line))
        except ValueError as e:
            out.append({"_error": f"line {start + i + 1}: not JSON ({e})"})
    return out, len(idx)


def preview_jsonl(path: Path, start: int, count: int) -> Preview:
    """JSONL rows as a table page."""
    recs, total = read_jsonl_rows(path, start, count)
    if start >= total and total:
        start = max(0, total - count)
        recs, total = read_jsonl_rows(path, start, count)
    cols, rows = _table(recs, start)
    meta = _manifest_meta(path)
    meta["file"] = {"bytes": path.stat().st_size, "rows": total}
    return Preview(path, "jsonl", f"{path.name}: {total:,} rows", meta, start, len(recs), total, "rows",
                   columns=cols, rows=rows, records=recs)


def read_parquet_rows(path: str | os.PathLike[str], start: int, count: int) -> tuple[list[dict[str, Any]], int, Any]:
    """Rows ``start``..``start+count`` of a Parquet file (only the row groups needed), the total, the schema."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    total = pf.metadata.num_rows
    out: list[dict[str, Any]] = []
    base = 0
    for g in range(pf.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        lo, hi = max(start, base), min(start + count, base + n)
        if lo < hi:
            tbl = pf.read_row_group(g).slice(lo - base, hi - lo)
            out.extend(tbl.to_pylist())
        base += n
        if base >= start + count:
            break
    return out, total, pf.schema_arrow


def preview_parquet(path: Path, start: int, count: int) -> Preview:
    """Parquet rows as a table page, with the schema in the metadata."""
    recs, total, schema = read_parquet_rows(path, start, count)
    if start >= total and total:
        start = max(0, total - count)
        recs, total, schema = read_parquet_rows(path, start, count)
    cols, rows = _table(recs, start)
    meta = {"schema": {f.name: str(f.type) for f in schema}, "file": {"bytes": path.stat().st_size, "rows": total}}
    return Preview(path, "parquet", f"{path.name}: {total:,} rows", meta, start, len(recs), total, "rows",
                   columns=cols, rows=rows, records=recs)


def _files(root: Path, limit: int = 500) -> list[tuple[str, int]]:
    out = []
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out.append((str(p.relative_to(root)), p.stat().st_size))
            if len(out) >= limit:
                break
    return out


def preview_parquet_dir(path: Path, start: int, count: int) -> Preview:
    """A folder of Parquet files: the file list, and the first file's rows."""
    files = [f for f in _files(path) if f[0].endswith(".parquet")]
    first = path / files[0][0] if files else None
    pv = preview_parquet(first, start, count) if first else Preview(path, "parquet-dir", path.name)
    pv.meta = {**_manifest_meta(path), **pv.meta}
    pv.path, pv.kind, pv.files = path, "parquet-dir", files
    pv.title = f"{path.name}/: {len(files)} parquet file(s); showing {files[0][0] if files else '-'}"
    return pv


def preview_folder(path: Path, kind: str) -> Preview:
    """A checkpoint, eval or other folder: its manifest / results and its files."""
    meta: dict[str, Any] = {}
    man = path / "manifest.json"
    if man.is_file():
        try:
            m = json.loads(man.read_text(encoding="utf-8"))
            if isinstance(m, dict) and isinstance(m.get("created"), int | float):
                m["created"] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(m["created"]))
            meta["manifest"] = used_params_first(m) if isinstance(m, dict) else m
        except (OSError, ValueError) as e:
            meta["manifest"] = f"unreadable: {e}"
    res = path / "results.json"
    if res.is_file():
        try:
            meta["results"] = json.loads(res.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            meta["results"] = f"unreadable: {e}"
    files = _files(path)
    return Preview(path, kind, f"{path.name}/: {len(files)} file(s)", meta, files=files, unit="files",
                   total=len(files), count=len(files))


def preview_json(path: Path) -> Preview:
    """A JSON document as metadata."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return Preview(path, "json", path.name, note=f"unreadable: {e}")
    meta = data if isinstance(data, dict) else {"value": data}
    return Preview(path, "json", path.name, meta)


def preview_text(path: Path, start: int, count: int) -> Preview:
    """A text file by lines."""
    idx = line_index(path)
    lines = [b.decode("utf-8", "replace") for b in idx.lines(start, count)]
    text = Text("\n".join(lines))
    return Preview(path, "text", f"{path.name}: {len(idx):,} lines", {}, start, len(lines), len(idx), "lines",
                   text=text)


# ---- rendering for the terminal ------------------------------------------------------------------

def render(pv: Preview, meta_limit: int = 40) -> list[Any]:
    """Rich renderables for a preview (used by ``llmctl preview``): the page, then the metadata."""
    out: list[Any] = [Rule(f"[bold]{pv.title}[/]", align="left"), Text(str(pv.path), style="dim")]
    if pv.files is not None:
        ft = Table(title="files", title_justify="left")
        ft.add_column("file")
        ft.add_column("bytes", justify="right")
        for name, size in pv.files[:100]:
            ft.add_row(name, f"{size:,}")
        out.append(ft)
    if pv.columns and pv.rows is not None:
        t = Table(title=pv.range_label, title_justify="left", show_lines=True)
        for c in pv.columns:
            t.add_column(c, overflow="fold", max_width=60 if c != "#" else 8)
        for r in pv.rows:
            t.add_row(*r)
        out.append(t)
    if pv.text is not None:
        if pv.range_label:
            out.append(Text(pv.range_label, style="bold"))
        out.append(pv.text)
    if pv.note:
        out.append(Text(pv.note, style="dim italic"))
    pairs = flatten_meta(pv.meta)
    if pairs:
        mt = Table(show_header=False, box=None, padding=(0, 1), title="manifest / attributes",
                   title_justify="left", title_style="bold")
        mt.add_column(style="bold")
        mt.add_column(overflow="fold")
        for k, v in pairs[:meta_limit]:
            mt.add_row(k, v)
        if len(pairs) > meta_limit:
            mt.add_row("…", f"{len(pairs) - meta_limit} more entries")
        out.append(mt)
    return out
