"""Upstream's scoring rule (``Basebootcamp.verify_score`` at InternBootcamp 18a5525) and its two
calling conventions.

The rule, for one response and one task:

1. ``short_penalty`` and the response has fewer than ``short_threshold`` characters: 0;
2. ``format_penalty`` and the response has no ``</think>``: 0;
3. no answer can be extracted (or extraction fails): 0;
4. the check says ``True``: 1; a number (Cipher's partial credit): that number; anything else,
   or a check that fails: ``format_score``.

Conventions (:data:`CONVENTIONS`), as upstream calls ``verify_score``:

- ``eval``: upstream's evaluation script, ``short_penalty=False, format_penalty=False``;
- ``verl``: upstream's verl reward (``examples/verl_usage``), ``format_score=0`` with the defaults
  ``short_penalty=True, short_threshold=100, format_penalty=True``.

Both use ``format_score=0``. Every score is clamped into [0, 1] (upstream's are already there for
settings we accept).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class BootcampTask:
    """One task type: how to read an answer, check it, and build right and wrong responses."""

    name: str
    extract: Callable[[str], Any]  # the answer, or None; may raise (then the score is 0)
    check: Callable[[Any, dict], Any]  # True, a float in [0, 1], or anything else (= wrong)
    solve: Callable[[dict], str | None]  # a correct response for this identity, or None
    wrong: Callable[[dict], str | None]  # a well-formed wrong response, or None
    supports: Callable[[dict], bool] = lambda identity: True  # can the built-in check this identity


@dataclass(frozen=True)
class Convention:
    """Upstream's ``verify_score`` keyword arguments."""

    format_score: float = 0.0
    short_penalty: bool = True
    short_threshold: int = 100
    format_penalty: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.format_score, int | float) or isinstance(self.format_score, bool) \
                or not math.isfinite(self.format_score) or not 0.0 <= self.format_score <= 1.0:
            raise ValueError(f"format_score must be a number in [0, 1], got {self.format_score!r}")
        if not isinstance(self.short_threshold, int) or isinstance(self.short_threshold, bool) \
                or self.short_threshold < 0:
            raise ValueError(f"short_threshold must be a whole number >= 0, got {self.short_threshold!r}")
        for name in ("short_penalty", "format_penalty"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")


CONVENTIONS: dict[str, Convention] = {
    "eval": Convention(short_penalty=False, format_penalty=False),
    "verl": Convention(),
}
DEFAULT_CONVENTION = "verl"  # what upstream's own pipeline trains with (see compute_score's doc)
OPTION_NAMES = ("format_score", "short_penalty", "short_threshold", "format_penalty")


def convention(name: str = DEFAULT_CONVENTION, **overrides: Any) -> Convention:
    """The named convention with upstream's own option names overriding it; raises ValueError
    for an unknown name, an unknown option or a bad value."""
    if name not in CONVENTIONS:
        raise ValueError(f"bootcamp_convention must be one of {sorted(CONVENTIONS)}, got {name!r}")
    unknown = sorted(set(overrides) - set(OPTION_NAMES))
    if unknown:
        raise ValueError(f"unknown bootcamp option(s) {unknown}: upstream's verify_score takes {list(OPTION_NAMES)}")
    base = CONVENTIONS[name]
    return Convention(**{k: overrides.get(k, getattr(base, k)) for k in OPTION_NAMES})


def verify_score(task: BootcampTask, response: str, identity: dict, conv: Convention = CONVENTIONS["eval"]) -> float:
    """The score upstream's ``verify_score`` gives ``response`` under ``conv`` (see module doc)."""
    if not isinstance(response, str):
        return 0.0
    if conv.short_penalty and len(response) < conv.short_threshold:
        return 0.0
    if conv.format_penalty and "</think>" not in response:
        return 0.0
    try:
        solution = task.extract(response)
    except Exception:
        return 0.0
    if solution is None:
        return 0.0
    try:
        judge = task.check(solution, identity)
    except Exception:
        return float(conv.format_score)
    if judge is True:
        return 1.0
    if type(judge) in (int, float):
        value = float(judge)
        return min(max(value, 0.0), 1.0) if math.isfinite(value) else 0.0
    return float(conv.format_score)


def think_block(body: str = "Work through the puzzle step by step, checking each constraint.") -> str:
    """A ``<think>…</think>`` preamble long enough for the ``verl`` convention's length rule."""
    return f"<think>\n{body}\nI check every rule of the puzzle once more before answering.\n</think>\n"
