"""MATH-style answer equivalence through ``math-verify``, inside our own bounds.

``math-verify`` parses LaTeX with sympy, which can take unbounded time on hostile input, and its
own timeout uses ``signal.alarm`` (whole seconds, main thread only: in any other thread it raises
and returns False). So we call it with its timeouts off and bound it ourselves:

- both strings are capped at :data:`MAX_EQUIV_CHARS` characters and :data:`MAX_NESTING` levels of
  brackets (beyond that is "not equal", without parsing);
- math-verify and sympy are imported (and warmed up) before the clock starts (~1 s, once);
- a signal cannot interrupt one long C-level big-integer operation, so "power bombs" that make
  sympy build astronomically large integers (towers like ``9^{9^{9^9}}``, a power of a power with
  a 3-digit exponent, exponents over 6 digits, factorials of 5+ digit numbers, factorials of groups
  holding a factorial, a power or a 3+ digit number such as ``(99999!)!``) are refused unparsed,
  in every thread, before any big-integer work (counted as ``bombs`` in :func:`equiv_stats`), so a
  helper thread never gets stuck in C-level integer arithmetic that holds the GIL;
- in the main thread a ``setitimer`` alarm (fractions of a second) interrupts the call, and any
  timer already running is restored afterwards;
- in other threads the call runs in a daemon helper thread and we wait at most the time limit;
  a call that overruns is abandoned (counted in :func:`equiv_stats`), and while
  :data:`MAX_ABANDONED` of them still run, new calls answer False at once instead of piling up.

Any failure (parse error, timeout, sympy exception) reads as "not equal".
"""

from __future__ import annotations

import functools
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

MAX_EQUIV_CHARS = 400  # longer answers are never equivalent (MATH-500's longest is 53 chars)
MAX_NESTING = 12  # brackets nested deeper than this are not an answer (and slow sympy down)
DEFAULT_TIMEOUT_S = float(os.environ.get("LLMCTL_MATH_TIMEOUT_S", "1.0"))  # per call, parse + verify
MAX_ABANDONED = 4  # helper threads still running past their limit before we stop starting more

T = TypeVar("T")

_lock = threading.Lock()
_stats = {"calls": 0, "timeouts": 0, "errors": 0, "abandoned_running": 0, "refused": 0, "bombs": 0}


class _Timeout(BaseException):
    """Raised by our alarm; a BaseException so math-verify's ``except Exception`` lets it through."""


def equiv_stats() -> dict[str, int]:
    """Counters: calls, timeouts, errors, helper threads still running past their limit, refusals."""
    with _lock:
        return dict(_stats)


def _bump(key: str, n: int = 1) -> None:
    with _lock:
        _stats[key] += n


def run_bounded(fn: Callable[[], T], timeout_s: float, default: T) -> T:
    """``fn()`` within ``timeout_s`` seconds, else ``default`` (exceptions also give ``default``)."""
    if threading.current_thread() is threading.main_thread():
        return _run_with_itimer(fn, timeout_s, default)
    return _run_in_helper(fn, timeout_s, default)


def _run_with_itimer(fn: Callable[[], T], timeout_s: float, default: T) -> T:
    start = time.monotonic()
    armed = [True]

    def on_alarm(signum: int, frame: Any) -> None:
        if armed[0]:  # a late alarm (after the call returned) must not raise anywhere else
            raise _Timeout()

    old_handler = signal.signal(signal.SIGALRM, on_alarm)
    old_delay, old_interval = signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        try:
            try:
                return fn()
            finally:
                armed[0] = False
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _Timeout:  # also when the alarm lands between the return and the disarm
            _bump("timeouts")
            return default
        except Exception:
            _bump("errors")
            return default
    finally:
        signal.signal(signal.SIGALRM, old_handler)
        if old_delay > 0:  # an outer timer (e.g. pytest-timeout) was running: give back what is left
            left = old_delay - (time.monotonic() - start)
            signal.setitimer(signal.ITIMER_REAL, max(left, 1e-6), old_interval)


def _run_in_helper(fn: Callable[[], T], timeout_s: float, default: T) -> T:
    with _lock:
        if _stats["abandoned_running"] >= MAX_ABANDONED:
            _stats["refused"] += 1
            return default
    box: dict[str, Any] = {}
    done = threading.Event()
    state = {"abandoned": False}

    def target() -> None:
        try:
            box["value"] = fn()
        except Exception:
            box["error"] = True
        finally:
            with _lock:
                done.set()
                if state["abandoned"]:
                    _stats["abandoned_running"] -= 1

    threading.Thread(target=target, name="llmctl-math-equiv", daemon=True).start()
    if not done.wait(timeout_s):
        with _lock:
            if not done.is_set():
                state["abandoned"] = True
                _stats["abandoned_running"] += 1
                _stats["timeouts"] += 1
                return default
    if "error" in box:
        _bump("errors")
        return default
    return box.get("value", default)


def _nesting_ok(text: str) -> bool:
    depth = 0
    for ch in text:
        if ch in "([{":
            depth += 1
            if depth > MAX_NESTING:
                return False
        elif ch in ")]}":
            depth = max(depth - 1, 0)
    return True


def _group_end(text: str, start: int) -> int:
    """End (exclusive) of the exponent starting at ``start``: a braced group or one token."""
    n = len(text)
    while start < n and text[start] == " ":
        start += 1
    if start >= n:
        return n
    if text[start] == "{":
        depth = 0
        for j in range(start, n):
            depth += (text[j] == "{") - (text[j] == "}")
            if depth == 0:
                return j + 1
        return n
    j = start
    while j < n and text[j].isdigit():
        j += 1
    return j if j > start else start + 1


def _group_start(text: str, end: int) -> int:
    """Start of the base group that ends at ``end`` (a closing bracket), or ``end`` itself."""
    close = text[end]
    opener = {")": "(", "}": "{", "]": "["}.get(close)
    if opener is None:
        return end
    depth = 0
    for j in range(end, -1, -1):
        depth += (text[j] == close) - (text[j] == opener)
        if depth == 0:
            return j
    return 0


def power_bomb(text: str) -> bool:
    """Whether evaluating ``text`` could build an astronomically large integer (see module doc)."""
    t = text.replace("**", "^")
    if re.search(r"\d{5,}\s*!", t) or _factorial_of_big_group(t):
        return True
    if "^" not in t:
        return False
    exps = []
    nested = False
    for m in re.finditer(r"\^", t):
        i = m.start()
        end = _group_end(t, i + 1)
        exp = t[i + 1:end]
        if "^" in exp or t[end:].lstrip(" ")[:1] == "^":
            return True  # a tower
        if i > 0 and "^" in t[_group_start(t, i - 1):i]:
            nested = True
        exps.extend(re.findall(r"\d+", exp))
    if any(len(e) > 6 for e in exps):
        return True
    return nested and any(len(e) >= 3 for e in exps)


def _factorial_of_big_group(t: str) -> bool:
    """A factorial of a bracketed group that itself holds a factorial, a power or a 3+ digit number
    (``(99999!)!``, ``(10^5)!``, ``(2*500)!``): sympy would build the huge integer first."""
    for m in re.finditer(r"[)\]}]\s*!", t):
        inner = t[_group_start(t, m.start()):m.start()]
        if "!" in inner or "^" in inner or re.search(r"\d{3,}", inner):
            return True
    return False


@functools.cache
def _load_math_verify() -> bool:
    """Import math-verify once, outside any time limit; silence its "timeout disabled" notice
    (we run it with its signal timeouts off and bound it ourselves)."""
    try:
        import math_verify  # noqa: F401
        from math_verify import grader, parser
    except ImportError:
        return False
    parser.TIMEOUT_WARNING_SHOWN = True
    grader.TIMEOUT_WARNING_SHOWN = True
    for a, b in (("\\frac{1}{2}", "0.5"), ("(3, \\pi/2)", "\\left( 3, \\frac{\\pi}{2} \\right)")):
        _equal_unbounded(a, b)  # load sympy's lazy parts outside any time limit
    return True


@functools.lru_cache(maxsize=4096)
def _parse(text: str) -> Any:
    from math_verify import parse

    # Wrapping in \boxed{} makes math-verify take the whole string as the answer.
    return parse("\\boxed{" + text + "}", parsing_timeout=None)


def _equal_unbounded(pred: str, gold: str) -> bool:
    from math_verify import verify

    g = _parse(gold)
    p = _parse(pred)
    if not g or not p:
        return False
    return bool(verify(g, p, timeout_seconds=None))


def math_equal(pred: str, gold: str, *, timeout_s: float | None = None) -> bool:
    """Whether ``pred`` and ``gold`` (LaTeX answer bodies, no ``$``/``\\boxed``) are equivalent.

    Uses math-verify (fractions, ``\\dfrac``, degrees, ``\\text{}``, tuples, intervals, sets,
    complex numbers, symbolic expressions); bounded in size and time as the module describes.
    """
    if not pred or not gold or len(pred) > MAX_EQUIV_CHARS or len(gold) > MAX_EQUIV_CHARS:
        return False
    if not _nesting_ok(pred) or not _nesting_ok(gold):
        return False
    if power_bomb(pred):
        _bump("bombs")
        return False
    if not _load_math_verify():
        return False
    _bump("calls")
    limit = DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s
    return run_bounded(lambda: _equal_unbounded(pred, gold), limit, False)
