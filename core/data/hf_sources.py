"""Read dataset records from a Hugging Face hub id or local files, all through ``datasets``.

A source spec is either a local path — a file (``.json`` list or lines, ``.jsonl``, ``.jsonl.gz``,
``.json.gz``, ``.parquet``), a glob, or a folder whose files are picked by split name — or a hub
id (``openai/gsm8k``) loaded with ``datasets.load_dataset(id, name=config, data_dir=..., split=...)``.
Local files go through ``load_dataset("json"|"parquet", data_files=...)``, one file at a time so
every record knows its file. Their arrow builds are kept in the ``datasets`` cache
(``llmctl-local/<path hash>/<size>-<mtime>``, see ``local_cache_dir``), so a second run on an
unchanged file skips the JSON parse, as it does for hub ids; hub downloads use the usual
``HF_HOME`` cache.

Record positions: ``Record.line`` is the 1-based line of a ``.jsonl`` file (blank lines counted,
as an editor shows them), the 1-based record number of a ``.json`` list or a parquet file, and the
0-based dataset row for a hub dataset. A local JSON file that ``datasets`` cannot parse (a broken
line, bytes that are not UTF-8) is read line by line as bytes instead, so the bad line is reported
as an InputError naming its field and, under ``--on-error skip``, only that line is lost; a
truncated or corrupt ``.gz`` names its last good line (see :func:`~llmctl.core.data.text_sources.gap_error`).
"""

from __future__ import annotations

import contextlib
import functools
import glob
import gzip
import hashlib
import json
import os
import re
import shutil
import socket
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from llmctl.core.artifacts import file_fingerprint
from llmctl.core.data.records import InputError, bad_utf8_field, decode_utf8
from llmctl.core.data.text_sources import Gap, decoded_blocks, gap_error, split_lines

JSON_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz")
PARQUET_SUFFIXES = (".parquet",)
DATA_SUFFIXES = JSON_SUFFIXES + PARQUET_SUFFIXES
SPLIT_ALIASES = {
    "train": ("train",),
    "test": ("test", "eval", "validation", "valid", "dev"),
}


@dataclass
class Record:
    """One input record and where it came from."""

    source: str  # file path, or "hub_id[split]"
    index: int  # 0-based row in its file / split
    data: Any
    _line_of: Callable[[int], int]

    @property
    def line(self) -> int:
        """Position for messages (see the module doc)."""
        return self._line_of(self.index)

    def error(self, reason: str, field: str | None = None) -> InputError:
        """An InputError naming this record's source, line and ``field``."""
        return InputError(self.source, self.line, reason, field)


def _has_suffix(path: str | Path, suffixes: tuple[str, ...]) -> bool:
    name = str(path).lower()
    return any(name.endswith(s) for s in suffixes)


def is_local(spec: str) -> bool:
    """Whether ``spec`` names local files (an existing path, a glob, or a data-file name)."""
    p = Path(spec).expanduser()
    if p.exists() or any(c in spec for c in "*?["):
        return True
    return _has_suffix(spec, DATA_SUFFIXES) or spec.startswith((".", "/", "~"))


def name_tokens(name: str) -> set[str]:
    return {t for t in re.split(r"[._\-/\s]+", name.lower()) if t}


def resolve_files(spec: str, split: str | None = None) -> list[Path]:
    """The data files a local spec names; a folder yields its files for ``split`` (by name)."""
    p = Path(spec).expanduser()
    if any(c in spec for c in "*?[") and not p.exists():
        files = sorted(Path(f) for f in glob.glob(str(p)) if _has_suffix(f, DATA_SUFFIXES))
        if not files:
            raise FileNotFoundError(f"{spec}: no data files match this pattern")
        return files
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and _has_suffix(f, DATA_SUFFIXES))
        if split is not None:
            want = set(SPLIT_ALIASES.get(split, (split,)))
            files = [f for f in files if name_tokens(f.name) & want]
        if not files:
            raise FileNotFoundError(f"{spec}: no {split + ' ' if split else ''}data files "
                                    f"({', '.join(DATA_SUFFIXES)}) in this folder")
        return files
    if not p.exists():
        raise FileNotFoundError(f"{spec}: no such file")
    if not _has_suffix(p, DATA_SUFFIXES):
        raise InputError(spec, None, f"unsupported file type (expected {', '.join(DATA_SUFFIXES)})")
    return [p]


def source_fingerprint(spec: str, split: str | None = None, **hub: Any) -> dict[str, Any]:
    """What a manifest records about a source: file fingerprints, or the hub id and options."""
    if is_local(spec):
        files = resolve_files(spec, split)
        if len(files) == 1:
            return file_fingerprint(files[0])
        return {"files": [file_fingerprint(f) for f in files]}
    return {"hub": spec, "split": split, **{k: v for k, v in hub.items() if v is not None}}


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[Any]:
    """``datasets`` without its progress bars or its own log lines: a file it cannot parse is
    reported once, by us, as ``file:line: reason`` (its json builder would also log a pyarrow error)."""
    import datasets

    was = datasets.is_progress_bar_enabled()
    level = datasets.logging.get_verbosity()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # a parse failure is ours to report, once
    try:
        yield datasets
    finally:
        datasets.logging.set_verbosity(level)
        if was:
            datasets.enable_progress_bars()


def _compression(path: Path) -> str | None:
    return "gzip" if str(path).lower().endswith(".gz") else None


def _raw_lines(path: Path) -> Iterator[tuple[int, bytes | InputError]]:
    """``(line number, raw bytes)`` of a (gzipped) text file; a truncated or corrupt gzip span
    comes out as an InputError naming the last good line (reading goes on at the next member)."""
    lineno = 0
    with open(path, "rb") as f:
        for raw in split_lines(decoded_blocks(f, _compression(path))):
            if isinstance(raw, Gap):
                yield lineno, gap_error(raw, str(path), lineno)
                continue
            lineno += 1
            yield lineno, raw


class _Lines:
    """Maps a 0-based row of a jsonl file to its 1-based line, counting blank lines (lazily)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[int] | None = None

    def __call__(self, index: int) -> int:
        if self.rows is None:
            self.rows = [n for n, raw in _raw_lines(self.path) if isinstance(raw, bytes) and raw.strip()]
        return self.rows[index] if index < len(self.rows) else index + 1


def _is_jsonl(path: Path) -> bool:
    """A ``.json`` file holding one object per line rather than one list."""
    name = str(path).lower()
    if name.endswith((".jsonl", ".jsonl.gz")):
        return True
    try:
        with (gzip.open(path, "rb") if _compression(path) else open(path, "rb")) as f:
            head = f.read(4096).lstrip()
    except (OSError, EOFError, zlib.error):
        return True  # unreadable: the line reader reports where
    return not head.startswith(b"[")


def _read_json_lines(path: Path) -> Iterator[Record | InputError]:
    """Line-by-line fallback: each line a record, or an InputError for a line that is not UTF-8
    JSON (naming the field that holds a bad byte) or for a truncated/corrupt gzip span."""
    for lineno, raw in _raw_lines(path):
        if isinstance(raw, InputError):
            yield raw
            continue
        if not raw.strip():
            continue
        try:
            data = json.loads(decode_utf8(raw, str(path), lineno))
        except InputError as e:
            yield e
            continue
        except ValueError as e:
            yield InputError(path, lineno, f"invalid JSON ({e.msg} at column {e.colno})")
            continue
        yield Record(str(path), lineno - 1, data, lambda i: i + 1)


def _read_json_list(path: Path) -> Iterator[Record | InputError]:
    parts = []
    with open(path, "rb") as f:
        for block in decoded_blocks(f, _compression(path)):
            if isinstance(block, Gap):
                raise InputError(path, None, f"{block.reason}: the file is one JSON list, nothing of it is read")
            parts.append(block)
    raw = b"".join(parts)
    try:  # bytes that are not UTF-8 are read as surrogates, so only the records holding them are bad
        data = json.loads(raw.decode("utf-8", "surrogateescape"))
    except ValueError as e:
        decode_utf8(raw, str(path), None)  # a bad byte outside any string: name its line
        lineno = getattr(e, "lineno", None)
        raise InputError(path, lineno, f"invalid JSON ({getattr(e, 'msg', e)})") from None
    if not isinstance(data, list):
        raise InputError(path, None, f"expected a list of records or JSON lines, got a {type(data).__name__}")
    for i, rec in enumerate(data):
        fld = bad_utf8_field(rec)
        if fld is not None:
            yield InputError(path, i + 1, "invalid UTF-8 (a byte that is not UTF-8 in this field)", fld)
            continue
        yield Record(str(path), i, rec, lambda i: i + 1)


def _iter_dataset(ds: Any, source: str, line_of: Callable[[int], int]) -> Iterator[Record]:
    i = 0
    for batch in ds.iter(batch_size=4096):
        keys = list(batch)
        cols = [batch[k] for k in keys]
        for values in zip(*cols, strict=True):
            yield Record(source, i, dict(zip(keys, values, strict=True)), line_of)
            i += 1


def datasets_cache_root() -> Path:
    """The ``datasets`` cache folder as the environment names it now (``HF_DATASETS_CACHE``, else
    ``$HF_HOME/datasets``, else ``~/.cache/huggingface/datasets``), read at call time."""
    if os.environ.get("HF_DATASETS_CACHE"):
        return Path(os.environ["HF_DATASETS_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "huggingface"
    return Path(home).expanduser() / "datasets"


def local_cache_dir(path: Path) -> str:
    """The arrow cache folder for one local file: one per resolved path, named by its size and
    mtime (what the manifest records), so a second run reads the arrow build instead of parsing
    the file again. A new version of the file replaces the folder of the old one."""
    p = Path(path).resolve()
    st = p.stat()
    slot = datasets_cache_root() / "llmctl-local" / hashlib.sha256(str(p).encode()).hexdigest()[:16]
    here = slot / f"{st.st_size}-{st.st_mtime_ns}"
    if not here.is_dir() and slot.is_dir():
        for old in slot.iterdir():
            shutil.rmtree(old, ignore_errors=True)
    return str(here)


def iter_file(path: Path) -> Iterator[Record | InputError]:
    """Records of one local file read through ``datasets`` (InputErrors inline for bad lines)."""
    path = Path(path)
    builder = "parquet" if _has_suffix(path, PARQUET_SUFFIXES) else "json"
    if path.stat().st_size == 0:
        raise InputError(path, None, "empty file (no records)")
    jsonl = builder == "json" and _is_jsonl(path)
    with _quiet_datasets() as datasets:
        try:
            ds = datasets.load_dataset(builder, data_files=str(path), split="train", cache_dir=local_cache_dir(path))
        except Exception as e:  # noqa: BLE001 - datasets wraps parse errors in many types
            if builder != "json":
                raise InputError(path, None, f"cannot read parquet ({type(e).__name__}: {e})") from None
            ds = None
        if ds is None:
            yield from (_read_json_lines(path) if jsonl else _read_json_list(path))
            return
        line_of = _Lines(path) if jsonl else (lambda i: i + 1)
        done = 0
        try:
            for rec in _iter_dataset(ds, str(path), line_of):
                yield rec
                done += 1
        except UnicodeDecodeError as e:  # arrow keeps bytes that are not UTF-8 until they are read
            if builder != "json":
                raise InputError(path, None, f"invalid UTF-8 in a string column ({e.reason})") from None
            rest = _read_json_lines(path) if jsonl else _read_json_list(path)
            for item in rest:  # the line reader names the line and field; records already read are not repeated
                if isinstance(item, Record) and done > 0:
                    done -= 1
                    continue
                yield item


OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
PROBE_TIMEOUT_S = 3.0
LOCAL_ALTERNATIVE = "pass a local .jsonl/.json/.parquet file or folder with the same fields instead"


@functools.cache
def _probe(host: str, port: int) -> str | None:
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            return None
    except OSError as e:
        return f"cannot connect to {host}:{port} ({e.strerror or type(e).__name__})"


def net_probe(url: str) -> str | None:
    """None when ``url``'s host (or the HTTPS proxy) accepts a TCP connection within
    ``PROBE_TIMEOUT_S``, else why not; each host is probed once per process."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    u = urlparse(proxy or url)
    return _probe(u.hostname or "", u.port or (443 if u.scheme == "https" else 80))


def hub_offline_reason() -> str | None:
    """Why the Hugging Face hub is out of reach, or None: an offline variable that is set, else
    ``net_probe`` of ``HF_ENDPOINT`` (default huggingface.co)."""
    for var in OFFLINE_ENV:
        if os.environ.get(var, "").strip().upper() in ("1", "ON", "YES", "TRUE"):
            return f"{var} is set"
    return net_probe(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")


@contextlib.contextmanager
def _hub_offline(datasets: Any) -> Iterator[None]:
    """``datasets`` and ``huggingface_hub`` in offline mode (cache only, no retries) for a block."""
    from huggingface_hub import constants

    was = datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE = was


def iter_hub(hub_id: str, *, split: str, name: str | None = None,
             data_dir: str | None = None) -> Iterator[Record]:
    """Records of a hub dataset split (needs the network or a filled ``HF_HOME`` cache). Without
    the network (see ``hub_offline_reason``) only the cache is read, so the error comes at once."""
    label = hub_id + (f"/{data_dir}" if data_dir else "") + (f" ({name})" if name else "") + f"[{split}]"
    offline = hub_offline_reason()
    with _quiet_datasets() as datasets:
        try:
            with _hub_offline(datasets) if offline else contextlib.nullcontext():
                ds = datasets.load_dataset(hub_id, name=name, data_dir=data_dir, split=split)
        except Exception as e:  # noqa: BLE001 - offline, unknown id, bad split …
            if offline:
                raise InputError(label, None, f"no network ({offline}) and not in the Hugging Face cache; "
                                              + LOCAL_ALTERNATIVE) from None
            raise InputError(label, None, f"cannot load from the Hugging Face hub ({type(e).__name__}: "
                                          f"{str(e).splitlines()[0] if str(e) else ''}); "
                                          + LOCAL_ALTERNATIVE) from None
        yield from _iter_dataset(ds, label, lambda i: i)


def iter_records(spec: str, *, split: str = "train", name: str | None = None,
                 data_dir: str | None = None) -> Iterator[Record | InputError]:
    """Records of a source spec (local path/glob/folder, or hub id with config/data_dir/split).

    Unreadable lines come out as InputError values for the caller's error policy.
    """
    if is_local(spec):
        for f in resolve_files(spec, split):
            yield from iter_file(f)
    else:
        yield from iter_hub(spec, split=split, name=name, data_dir=data_dir)

