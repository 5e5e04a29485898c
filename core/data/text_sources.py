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
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from llmctl.core.data.records import InputError, decode_utf8

TXT_DOCS_CHOICES = ("file", "lines", "paragraphs")
HASH_LIMIT = 64 << 20  # bytes hashed per source file
READ_BLOCK = 1 << 20  # compressed bytes read per step
FEED_BLOCK = 64 << 10  # compressed bytes handed to the decompressor per call
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


@dataclass
class Gap:
    """A span of a compressed stream that could not be decoded and was skipped: compressed bytes
    ``start`` (where the bad frame began) to ``end`` (the next frame, or the end of the file)."""

    start: int
    end: int
    reason: str
    resumed: bool  # whether reading went on at a later frame
    out_before: int = 0  # decompressed bytes that came out before the gap
    lost_out: float | None = None  # decompressed bytes lost, estimated (None: unknown, the file is cut)

    @property
    def lost_bytes(self) -> int:
        return self.end - self.start


# Frame (zstd) and member (gzip) headers: where decoding can start again after a corrupt span.
FRAME_MAGIC = {"zstd": b"\x28\xb5\x2f\xfd", "gzip": b"\x1f\x8b\x08"}


def _decoder(compression: str | None) -> tuple[Callable[[], Any], tuple[type[BaseException], ...]]:
    if compression == "zstd":
        import zstandard

        dctx = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
        return dctx.decompressobj, (zstandard.ZstdError,)

    return (lambda: zlib.decompressobj(16 + zlib.MAX_WBITS)), (zlib.error,)


def decoded_blocks(f: Any, compression: str | None, on_read: Callable[[int], None] | None = None
                   ) -> Iterator[bytes | Gap]:
    """Decompressed blocks of the binary file ``f``, with a :class:`Gap` where it is corrupt.

    zstd and gzip streams may hold several frames/members. A frame that fails to decode is
    skipped up to the next frame header, where decoding starts again (a Gap marks the lost
    span); a stream that ends inside a frame ends with a Gap up to its end. ``on_read(n)`` is
    called with the number of compressed bytes read at each step.
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
    magic = FRAME_MAGIC[compression]
    obj, fed = new_obj(), False
    total = 0  # compressed bytes read so far
    base = 0  # offset of data[0] in the file
    frame_start = 0  # offset where the frame being decoded began
    data = b""
    out_total = frame_out = 0  # decompressed bytes: all, and of the current frame
    comp_done = out_done = 0  # compressed and decompressed bytes of the frames that decoded whole

    def lost(end: int) -> float:
        span = end - frame_start
        if comp_done:
            ratio = out_done / comp_done
        else:
            ratio = frame_out / max(1, base - frame_start)
        return max(0.0, span * ratio - frame_out)

    def read() -> bytes:
        nonlocal total
        block = f.read(READ_BLOCK)
        if block and on_read is not None:
            on_read(len(block))
        total += len(block)
        return block

    while True:
        if not data:
            data = read()
            if not data:
                break
        piece, data = data[:FEED_BLOCK], data[FEED_BLOCK:]  # small pieces: an error loses at most one's output
        try:
            out = obj.decompress(piece)
        except errors as e:
            data = piece + data
            reason = f"corrupt {compression} stream ({e})"
            # search for the next frame header after this frame's start
            at = max(frame_start + 1, base) - base
            while True:
                k = data.find(magic, at)
                if k >= 0:
                    break
                keep = data[-(len(magic) - 1):]
                more = read()
                if not more:
                    yield Gap(frame_start, total, reason, False, out_total, lost(total))
                    return
                base = total - len(more) - len(keep)
                data, at = keep + more, 0
            yield Gap(frame_start, base + k, reason, True, out_total, lost(base + k))
            data, base = data[k:], base + k
            frame_start, frame_out = base, 0
            obj, fed = new_obj(), False
            continue
        fed = True
        if out:
            frame_out += len(out)
            out_total += len(out)
            yield out
        if obj.eof:  # a frame/member ended: the rest belongs to the next one
            rest = obj.unused_data + data
            base += len(piece) - len(obj.unused_data)
            comp_done += base - frame_start
            out_done += frame_out
            data, frame_start, frame_out = rest, base, 0
            obj, fed = new_obj(), False
        else:
            base += len(piece)
    if fed:
        yield Gap(frame_start, total, f"truncated {compression} stream (it ends inside a frame)", False,
                  out_total, None)


def gap_error(gap: Gap, name: str, lineno: int) -> InputError:
    """The InputError for a skipped span, after ``lineno`` lines: names the last good line, the
    compressed bytes lost and the records they held (estimated from the lines per byte so far);
    ``.lost`` is that estimate, at least 1, which the skip count and cap see."""
    if gap.lost_out is None:
        n, what = 1, "what followed is missing (counted as 1 record)"
    else:
        per_byte = lineno / gap.out_before if gap.out_before and lineno else 0.0
        n = max(1, round(gap.lost_out * per_byte))
        where = "up to the next frame" if gap.resumed else "to the end of the file"
        many = f"about {n} records" if per_byte else "records: how many is unknown, counted as 1"
        what = f"skipped {gap.lost_bytes} compressed bytes {where} ({many})"
    at = f"after line {lineno}, the last good line" if lineno else "before any good line"
    err = InputError(name, lineno, f"{gap.reason} {at}; {what}")
    err.lost = n  # type: ignore[attr-defined]
    return err


def split_lines(blocks: Iterator[bytes | Gap]) -> Iterator[bytes | Gap]:
    """Lines (without ``\\n``) of a stream of byte blocks; a final line without ``\\n`` included.
    A Gap passes through; the unfinished line before it is lost with it."""
    pending: list[bytes] = []
    for block in blocks:
        if isinstance(block, Gap):
            pending = []
            yield block
            continue
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
            decode_utf8(raw, name, lineno)
        except InputError as ue:  # names the field holding the bad byte
            return ue
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

    Bad records come out as InputError values (the caller's ErrorPolicy decides). A corrupt span
    of a compressed stream comes out as an InputError naming the last good line and what was lost
    (:func:`gap_error`); reading goes on at the next frame where there is one.
    """
    import fsspec

    if txt_docs not in TXT_DOCS_CHOICES:
        raise ValueError(f"txt_docs must be one of {', '.join(TXT_DOCS_CHOICES)}, got {txt_docs!r}")
    name = src.name
    lineno = 0
    with fsspec.open(name, "rb") as f:
        lines = split_lines(decoded_blocks(f, src.compression, on_read))
        if src.kind == "txt" and txt_docs == "file":
            if skip_lines > 0:
                for _ in lines:
                    pass
                return
            yield from _whole_file(lines, name)
            return
        while lineno < skip_lines:  # gaps are not lines: a resumed read meets them where the first did
            item = next(lines, None)
            if item is None:
                return
            if not isinstance(item, Gap):
                lineno += 1
        if src.kind == "jsonl":
            loads = _loads()
            for raw in lines:
                if isinstance(raw, Gap):
                    yield lineno, gap_error(raw, name, lineno)
                    continue
                lineno += 1
                if not raw.strip(BLANK):
                    continue
                yield lineno, _json_doc(raw, name, lineno, loads)
        elif txt_docs == "lines":
            for raw in lines:
                if isinstance(raw, Gap):
                    yield lineno, gap_error(raw, name, lineno)
                    continue
                lineno += 1
                if raw.strip(BLANK):
                    yield lineno, _line_text(raw, name, lineno)
        else:
            yield from _paragraphs(lines, name, lineno)


def _paragraphs(lines: Iterator[bytes | Gap], name: str, lineno: int) -> Iterator[tuple[int, str | InputError]]:
    para: list[str] = []
    err: InputError | None = None
    for raw in lines:
        if isinstance(raw, Gap):  # the unfinished paragraph is lost with the span
            yield lineno, gap_error(raw, name, lineno)
            para, err = [], None
            continue
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
    if para or err:
        yield lineno, err or "\n".join(para)


def _whole_file(lines: Iterator[bytes | Gap], name: str) -> Iterator[tuple[int, str | InputError]]:
    parts: list[bytes] = []
    n = 0
    for raw in lines:
        if isinstance(raw, Gap):  # the file is one document: it is lost
            for _ in lines:
                n += 1
            yield n, gap_error(raw, name, len(parts))
            return
        parts.append(raw[:-1] if raw.endswith(b"\r") else raw)
        n += 1
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
