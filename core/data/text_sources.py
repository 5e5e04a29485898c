"""Reading text shards as documents: local paths, globs and ``hf://`` files through one code path.

Supported inputs: ``.jsonl`` (one JSON object per line with a ``text`` string and an optional
``meta``; the Pile's format) and ``.txt``, each plain or compressed as ``.zst``/``.zstd`` or ``.gz``.
Every file is opened through ``fsspec.open`` (so ``hf://datasets/<repo>/<file>`` goes through
huggingface_hub's ``HfFileSystem`` exactly as a local file goes through the local filesystem) and
decompressed as a stream, one block at a time. A truncated or corrupt stream comes out as an
:class:`~llmctl.core.data.records.InputError` naming the shard and its last good line.

Documents come out as ``(end_line, text_or_error)``: ``end_line`` is the number of physical lines
consumed once the document is complete, so reading again with ``skip_lines=end_line`` continues
exactly after it (this is what ``prepare pretrain --resume`` records). Line numbers count ``\\n``
characters, start at 1 and are the ones error messages name.

``.txt`` files are split into documents by ``txt_docs``: ``file`` (the whole file), ``lines`` (each
non-blank line) or ``paragraphs`` (runs of non-blank lines separated by blank lines). ``\\r\\n`` line
ends are read as ``\\n``; a line holding only ASCII whitespace is blank. A document does not include
the line end that closes it (a whole file loses its final ``\\n``; EOT follows every document).

The ``sources`` recorded in artifacts give each file's name, size and a sha256: of the whole file up
to :data:`HASH_LIMIT` bytes, else of its first ``HASH_LIMIT`` bytes (``sha256_scope`` says which),
so fingerprinting a 14 GB Pile shard costs one 64 MiB read; hub files with an LFS sha256 use it.
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from llmctl.core.data.records import InputError

TXT_DOCS_CHOICES = ("file", "lines", "paragraphs")
HASH_LIMIT = 64 << 20  # bytes hashed per source file
READ_BLOCK = 1 << 20  # compressed bytes read per step
ZSTD_MAX_WINDOW = 2**31  # the Pile was compressed with long windows
KINDS = {".jsonl": "jsonl", ".txt": "txt"}
COMPRESSIONS = {".zst": "zstd", ".zstd": "zstd", ".gz": "gzip", "": None}
BLANK = b" \t\r\n\x0b\x0c"


@dataclass
class Source:
    """One input file: its name (a local path or a URL), kind, compression and size."""

    name: str
    kind: str  # jsonl | txt
    compression: str | None  # zstd | gzip | None
    size: int | None = None

    @property
    def is_remote(self) -> bool:
        return "://" in self.name

    @property
    def label(self) -> str:
        """Short name for messages: the file name."""
        return self.name.rstrip("/").rsplit("/", 1)[-1]


def classify(name: str) -> tuple[str, str | None]:
    """(kind, compression) of a file name, or InputError for an unsupported type."""
    low = name.lower()
    base, ext = os.path.splitext(low)
    comp_ext = ext if ext in COMPRESSIONS and ext else ""
    if comp_ext:
        base, ext = os.path.splitext(base)
    if ext not in KINDS:
        raise InputError(name, None, "unsupported file type (expected .jsonl or .txt, "
                         "optionally compressed as .zst or .gz)")
    return KINDS[ext], COMPRESSIONS[comp_ext]


def _supported(name: str) -> bool:
    try:
        classify(name)
    except InputError:
        return False
    return True


def expand_inputs(patterns: list[str]) -> list[Source]:
    """Resolve local paths, folders, globs and fsspec URLs (``hf://…``) into sorted sources.

    A folder means the supported files under it. A pattern that matches nothing, or a missing
    file, raises FileNotFoundError naming it. Duplicates are dropped (first occurrence kept).
    """
    out: list[Source] = []
    seen: set[str] = set()
    for pat in patterns:
        names = _expand_remote(pat) if "://" in pat else _expand_local(pat)
        for name, size in names:
            if name in seen:
                continue
            seen.add(name)
            kind, comp = classify(name)
            out.append(Source(name, kind, comp, size))
    return out


def _expand_local(pat: str) -> list[tuple[str, int | None]]:
    path = os.path.abspath(os.path.expanduser(pat))
    if glob.has_magic(path):
        names = sorted(p for p in glob.glob(path, recursive=True) if os.path.isfile(p))
        if not names:
            raise FileNotFoundError(f"input {pat}: pattern matched no files")
    elif os.path.isdir(path):
        names = sorted(os.path.join(root, f) for root, _, files in os.walk(path) for f in files
                       if _supported(f))
        if not names:
            raise FileNotFoundError(f"input {pat}: folder has no .jsonl/.txt files")
    elif os.path.isfile(path):
        names = [path]
    else:
        raise FileNotFoundError(f"input {pat}: no such file")
    return [(n, os.path.getsize(n)) for n in names]


def _expand_remote(url: str) -> list[tuple[str, int | None]]:
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    if glob.has_magic(path):
        found = sorted(fs.glob(path))
        if not found:
            raise FileNotFoundError(f"input {url}: pattern matched no files")
    else:
        if not fs.exists(path):
            raise FileNotFoundError(f"input {url}: no such file")
        found = [path]
    out = []
    for p in found:
        info = fs.info(p)
        if info.get("type") == "directory":
            continue
        out.append((fs.unstrip_protocol(p), info.get("size")))
    return out


def source_info(src: Source, hash_limit: int = HASH_LIMIT) -> dict[str, Any]:
    """What an artifact records about a source: name, size, sha256 and what the hash covers."""
    import fsspec

    if src.is_remote:
        fs, path = fsspec.core.url_to_fs(src.name)
        info = fs.info(path)
        lfs = info.get("lfs") or {}
        if lfs.get("sha256"):
            return {"name": src.name, "size": info.get("size"), "sha256": lfs["sha256"], "sha256_scope": "full"}
    h = hashlib.sha256()
    n = 0
    with fsspec.open(src.name, "rb") as f:
        while n < hash_limit:
            block = f.read(min(READ_BLOCK * 4, hash_limit - n))
            if not block:
                break
            h.update(block)
            n += len(block)
        more = bool(f.read(1))
    scope = f"first {n} bytes" if more else "full"
    size = src.size if src.size is not None else (None if more else n)
    return {"name": src.name, "size": size, "sha256": h.hexdigest(), "sha256_scope": scope}


def input_fingerprint(src: Source) -> dict[str, Any]:
    """The cheap identity used for staleness: path, size and a head/tail content hash for local
    files (:func:`~llmctl.core.artifacts.file_fingerprint`), URL/size for remote ones."""
    from llmctl.core.artifacts import file_fingerprint

    if src.is_remote:
        return {"url": src.name, "size": src.size}
    return file_fingerprint(src.name)


# ---- decompressed blocks and lines ----------------------------------------------------------------

class CorruptStream(Exception):
    """The compressed stream is truncated or corrupt (wraps the decompressor's message)."""


def _decoder(compression: str | None) -> tuple[Callable[[], Any], tuple[type[BaseException], ...]]:
    if compression == "zstd":
        import zstandard

        dctx = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
        return dctx.decompressobj, (zstandard.ZstdError,)
    import zlib

    return (lambda: zlib.decompressobj(16 + zlib.MAX_WBITS)), (zlib.error,)


def decoded_blocks(f: Any, compression: str | None, on_read: Callable[[int], None] | None = None
                   ) -> Iterator[bytes]:
    """Decompressed blocks of the binary file ``f``; CorruptStream on a truncated/corrupt stream.

    zstd and gzip streams may hold several frames/members; the stream must end on a frame end.
    ``on_read(n)`` is called with the number of compressed bytes read at each step.
    """
    if compression is None:
        while True:
            block = f.read(READ_BLOCK * 4)
            if not block:
                return
            if on_read is not None:
                on_read(len(block))
            yield block
    new_obj, errors = _decoder(compression)
    obj, fed = new_obj(), False
    while True:
        data = f.read(READ_BLOCK)
        if not data:
            break
        if on_read is not None:
            on_read(len(data))
        while data:
            try:
                out = obj.decompress(data)
            except errors as e:
                raise CorruptStream(f"corrupt {compression} stream ({e})") from None
            fed = True
            if out:
                yield out
            if obj.eof:  # a frame/member ended: the rest belongs to the next one
                data = obj.unused_data
                obj, fed = new_obj(), False
            else:
                data = b""
    if fed:
        raise CorruptStream(f"truncated {compression} stream (it ends inside a frame)")


def split_lines(blocks: Iterator[bytes]) -> Iterator[bytes]:
    """Lines (without ``\\n``) of a stream of byte blocks; a final line without ``\\n`` included."""
    pending: list[bytes] = []
    for block in blocks:
        nl = block.find(b"\n")
        if nl < 0:
            if block:
                pending.append(block)
            continue
        if pending:
            pending.append(block[:nl])
            yield b"".join(pending)
            pending = []
            block = block[nl + 1:]
        lines = block.split(b"\n")
        last = lines.pop()
        yield from lines
        if last:
            pending.append(last)
    if pending:
        yield b"".join(pending)


# ---- documents ------------------------------------------------------------------------------------

def _utf8_error(e: UnicodeDecodeError) -> str:
    return f"invalid UTF-8 (byte 0x{e.object[e.start]:02x} at offset {e.start})"


def _json_doc(raw: bytes, name: str, lineno: int, loads: Callable[[bytes], Any]) -> str | InputError:
    try:
        rec = loads(raw)
    except ValueError as e:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as ue:
            return InputError(name, lineno, _utf8_error(ue))
        return InputError(name, lineno, f"not JSON ({e})")
    if not isinstance(rec, dict):
        return InputError(name, lineno, f"expected a JSON object, got {type(rec).__name__}")
    text = rec.get("text")
    if text is None:
        return InputError(name, lineno, "missing", "text")
    if not isinstance(text, str):
        return InputError(name, lineno, f"expected a string, got {type(text).__name__}", "text")
    if not text.strip():
        return InputError(name, lineno, "empty document", "text")
    return text


def _line_text(raw: bytes, name: str, lineno: int) -> str | InputError:
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return InputError(name, lineno, _utf8_error(e))


def _loads() -> Callable[[bytes], Any]:
    try:
        import orjson

        return orjson.loads
    except ImportError:  # pragma: no cover
        import json

        return json.loads


def iter_documents(src: Source, *, txt_docs: str = "file", skip_lines: int = 0,
                   on_read: Callable[[int], None] | None = None) -> Iterator[tuple[int, str | InputError]]:
    """``(end_line, text | InputError)`` for every document of ``src`` after its first ``skip_lines``.

    Bad records come out as InputError values (the caller's ErrorPolicy decides); a truncated or
    corrupt stream comes out as a last InputError naming the last good line, after which the
    source is abandoned.
    """
    import fsspec

    if txt_docs not in TXT_DOCS_CHOICES:
        raise ValueError(f"txt_docs must be one of {', '.join(TXT_DOCS_CHOICES)}, got {txt_docs!r}")
    name = src.name
    lineno = 0
    with fsspec.open(name, "rb") as f:
        lines = split_lines(decoded_blocks(f, src.compression, on_read))
        try:
            if src.kind == "txt" and txt_docs == "file":
                if skip_lines > 0:
                    for _ in lines:
                        pass
                    return
                yield from _whole_file(lines, name)
                return
            for _ in range(skip_lines):
                if next(lines, None) is None:
                    return
                lineno += 1
            if src.kind == "jsonl":
                loads = _loads()
                for raw in lines:
                    lineno += 1
                    if not raw.strip(BLANK):
                        continue
                    yield lineno, _json_doc(raw, name, lineno, loads)
            elif txt_docs == "lines":
                for raw in lines:
                    lineno += 1
                    if raw.strip(BLANK):
                        yield lineno, _line_text(raw, name, lineno)
            else:
                yield from _paragraphs(lines, name, lineno)
        except CorruptStream as e:
            good = getattr(e, "last_line", lineno)  # _paragraphs/_whole_file count their own lines
            yield good, InputError(name, good, f"{e} after line {good}, the last good line")


def _paragraphs(lines: Iterator[bytes], name: str, lineno: int) -> Iterator[tuple[int, str | InputError]]:
    para: list[str] = []
    err: InputError | None = None
    try:
        for raw in lines:
            lineno += 1
            if not raw.strip(BLANK):
                if para or err:
                    yield lineno - 1, err or "\n".join(para)
                    para, err = [], None
                continue
            t = _line_text(raw, name, lineno)
            if isinstance(t, InputError):
                err = err or t
            else:
                para.append(t)
    except CorruptStream as e:
        e.last_line = lineno  # type: ignore[attr-defined]  # the unfinished paragraph is lost with it
        raise
    if para or err:
        yield lineno, err or "\n".join(para)


def _whole_file(lines: Iterator[bytes], name: str) -> Iterator[tuple[int, str | InputError]]:
    parts: list[bytes] = []
    n = 0
    try:
        for raw in lines:
            parts.append(raw[:-1] if raw.endswith(b"\r") else raw)
            n += 1
    except CorruptStream as e:
        e.last_line = n  # type: ignore[attr-defined]
        raise
    for i, raw in enumerate(parts, start=1):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as e:
            yield n, InputError(name, i, _utf8_error(e))
            return
    text = b"\n".join(parts).decode("utf-8")
    if not text.strip():
        yield n, InputError(name, 1, "empty document")
        return
    yield n, text
