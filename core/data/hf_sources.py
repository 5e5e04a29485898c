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
line) is read line by line instead, so the bad line is reported as an InputError and, under
``--on-error skip``, only that line is lost.
"""

from __future__ import annotations

import contextlib
import glob
import gzip
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmctl.core.data.records import InputError

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
    from llmctl.core.artifacts import file_fingerprint

    if is_local(spec):
        files = resolve_files(spec, split)
        if len(files) == 1:
            return file_fingerprint(files[0])
        return {"files": [file_fingerprint(f) for f in files]}
    return {"hub": spec, "split": split, **{k: v for k, v in hub.items() if v is not None}}


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[Any]:
    import datasets

    was = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield datasets
    finally:
        if was:
            datasets.enable_progress_bars()


def _open_text(path: Path):
    if str(path).lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


class _Lines:
    """Maps a 0-based row of a jsonl file to its 1-based line, counting blank lines (lazily)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[int] | None = None

    def __call__(self, index: int) -> int:
        if self.rows is None:
            try:
                with _open_text(self.path) as f:
                    self.rows = [n for n, line in enumerate(f, start=1) if line.strip()]
            except (OSError, UnicodeDecodeError):
                self.rows = []
        return self.rows[index] if index < len(self.rows) else index + 1


def _is_jsonl(path: Path) -> bool:
    """A ``.json`` file holding one object per line rather than one list."""
    name = str(path).lower()
    if name.endswith((".jsonl", ".jsonl.gz")):
        return True
    with _open_text(path) as f:
        head = f.read(4096).lstrip()
    return not head.startswith("[")


def _read_json_lines(path: Path) -> Iterator[Record | InputError]:
    """Line-by-line fallback: each line a record, or an InputError for a line that is not JSON."""
    with _open_text(path) as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except ValueError as e:
                yield InputError(path, lineno, f"invalid JSON ({e.msg} at column {e.colno})")
                continue
            yield Record(str(path), lineno - 1, data, lambda i: i + 1)


def _read_json_list(path: Path) -> Iterator[Record | InputError]:
    try:
        with _open_text(path) as f:
            data = json.load(f)
    except ValueError as e:
        lineno = getattr(e, "lineno", None)
        raise InputError(path, lineno, f"invalid JSON ({getattr(e, 'msg', e)})") from None
    if not isinstance(data, list):
        raise InputError(path, None, f"expected a list of records or JSON lines, got a {type(data).__name__}")
    for i, rec in enumerate(data):
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
        yield from _iter_dataset(ds, str(path), line_of)


def iter_hub(hub_id: str, *, split: str, name: str | None = None,
             data_dir: str | None = None) -> Iterator[Record]:
    """Records of a hub dataset split (needs the network or a filled ``HF_HOME`` cache)."""
    label = hub_id + (f"/{data_dir}" if data_dir else "") + (f" ({name})" if name else "") + f"[{split}]"
    with _quiet_datasets() as datasets:
        try:
            ds = datasets.load_dataset(hub_id, name=name, data_dir=data_dir, split=split)
        except Exception as e:  # noqa: BLE001 - offline, unknown id, bad split …
            raise InputError(label, None, f"cannot load from the Hugging Face hub ({type(e).__name__}: "
                                          f"{str(e).splitlines()[0] if str(e) else ''}); "
                                          "pass a local .jsonl/.json/.parquet file or folder instead") from None
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

