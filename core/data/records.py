"""Reading input records with errors that name the file, the line and the field.

Every pipeline reads through these helpers so a bad line always reads the same way:
``shard.jsonl.zst:1234: field 'text': missing`` and ``--on-error skip|fail`` means the same thing
everywhere: fail stops at the first bad record; skip counts and reports every skipped record and
still fails once the skipped share passes a threshold.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

ON_ERROR_CHOICES = ("fail", "skip")


class InputError(ValueError):
    """A bad input record: names the source, the line/row and the field."""

    def __init__(self, source: str | os.PathLike[str], line: int | None, reason: str,
                 field: str | None = None) -> None:
        self.source = str(source)
        self.line = line
        self.field = field
        self.reason = reason
        where = self.source if line is None else f"{self.source}:{line}"
        what = f"field '{field}': {reason}" if field else reason
        super().__init__(f"{where}: {what}")


def open_hdf5(path: str | os.PathLike[str]) -> Any:
    """An HDF5 file opened for reading; a file that is not one is an :class:`InputError` naming it."""
    import h5py

    try:
        return h5py.File(path, "r")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except OSError as e:
        reason = str(e).split("(", 1)[-1].rstrip(")") if "(" in str(e) else str(e)
        raise InputError(path, None, f"not an HDF5 file of tokens ({reason})") from None


def check_on_error(mode: str) -> None:
    """ValueError unless ``mode`` is one of the ``on_error`` choices (fail, skip)."""
    if mode not in ON_ERROR_CHOICES:
        raise ValueError(f"on_error must be one of {', '.join(ON_ERROR_CHOICES)}, got {mode!r}")


class TooManyErrors(RuntimeError):
    """More records were skipped than the error policy allows."""


@dataclass
class ErrorPolicy:
    """``fail`` raises the first InputError; ``skip`` records it and goes on, within limits."""

    mode: str = "fail"
    max_fraction: float = 0.01  # fail once more than this share of records was skipped …
    min_records: int = 100  # … counted only after this many records were seen
    max_skipped: int | None = None  # or once this many were skipped
    skipped: list[str] = field(default_factory=list)
    seen: int = 0
    lost: int = 0  # records lost beyond one per skipped entry (estimated inside corrupt stream spans)

    def __post_init__(self) -> None:
        check_on_error(self.mode)

    def ok(self) -> None:
        """Count one good record."""
        self.seen += 1

    @property
    def n_skipped(self) -> int:
        """Records skipped or lost (a corrupt stream span counts the records it held, estimated)."""
        return len(self.skipped) + self.lost

    def bad(self, err: InputError) -> None:
        """Handle one bad record (or a lost span: ``err.lost`` records): raise under ``fail``,
        else record it and check the limits."""
        n = max(1, int(getattr(err, "lost", 1) or 1))
        self.seen += n
        if self.mode == "fail":
            raise err
        self.skipped.append(str(err))
        self.lost += n - 1
        if self.max_skipped is not None and self.n_skipped > self.max_skipped:
            raise TooManyErrors(self._summary(f"more than {self.max_skipped} records skipped"))
        if self.seen >= self.min_records and self.n_skipped / self.seen > self.max_fraction:
            raise TooManyErrors(self._summary(
                f"{self.n_skipped} of {self.seen} records skipped (> {self.max_fraction:.1%})"))

    def finish(self) -> None:
        """Apply the share limit once more at the end (small inputs included)."""
        if self.skipped and self.seen and self.n_skipped / self.seen > self.max_fraction \
                and self.seen < self.min_records and self.n_skipped > 1:
            raise TooManyErrors(self._summary(
                f"{self.n_skipped} of {self.seen} records skipped (> {self.max_fraction:.1%})"))

    def _summary(self, head: str) -> str:
        shown = "\n  ".join(self.skipped[:10])
        more = f"\n  … and {len(self.skipped) - 10} more" if len(self.skipped) > 10 else ""
        return f"{head}:\n  {shown}{more}"

    def report(self) -> dict[str, Any]:
        """Counts for the manifest: records seen, skipped and the first reasons."""
        return {"seen": self.seen, "skipped": self.n_skipped, "lost_in_corrupt_spans": self.lost,
                "skipped_examples": self.skipped[:20]}


def require_str(rec: Any, key: str, source: str, line: int, *, allow_empty: bool = False) -> str:
    """``rec[key]`` as a string, or InputError naming the record and field."""
    if not isinstance(rec, dict):
        raise InputError(source, line, f"expected a JSON object, got {type(rec).__name__}")
    if key not in rec or rec[key] is None:
        raise InputError(source, line, "missing", key)
    v = rec[key]
    if not isinstance(v, str):
        raise InputError(source, line, f"expected a string, got {type(v).__name__}", key)
    if not allow_empty and not v.strip():
        raise InputError(source, line, "empty", key)
    return v


def bad_utf8_field(obj: Any, key: str | None = None) -> str | None:
    """The first field (``a.b``) whose text holds a byte that is not UTF-8 (read as a surrogate)."""
    if isinstance(obj, str):
        return key if any("\udc80" <= c <= "\udcff" for c in obj) else None
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        if isinstance(k, str) and bad_utf8_field(k) is not None:
            return f"{key}.{k}" if key else k
        sub = bad_utf8_field(v, f"{key}.{k}" if key else str(k))
        if sub is not None:
            return sub
    return None


def decode_utf8(raw: bytes, source: str, line: int | None) -> str:
    """``raw`` as UTF-8 text, or an InputError naming the line, the field that holds the bad byte
    (when the text is JSON) and the byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        reason = f"invalid UTF-8 (byte 0x{e.object[e.start]:02x} at offset {e.start})"
        where = line if line is not None else raw.count(b"\n", 0, e.start) + 1
        try:
            fld = bad_utf8_field(json.loads(raw.decode("utf-8", "surrogateescape")))
        except ValueError:
            fld = None
        raise InputError(source, where, reason, fld) from None
