"""The answer verifier shared by RL rewards (GRPO/PPO, verl) and evaluation.

Public API::

    extract_answer(text) -> str | None     # the model's final answer
    answers_match(pred, gold) -> bool      # numeric / MATH-style equivalence
    format_score(text) -> float            # 1.0 for <think>…</think><answer>…</answer>
    score(completion, gold, format_weight=0.0) -> ScoreResult

Bounds (so a reward call can never stall training):

- only the last :data:`MAX_TAIL_CHARS` (10,000) characters of a completion are searched for the
  answer; an answer tag or box opened before that window is not seen;
- an extracted answer longer than :data:`MAX_ANSWER_CHARS` never matches;
- numbers longer than :data:`MAX_NUMBER_DIGITS` digits are compared as digit strings, never
  converted (no int/float blow-up);
- nothing is ``eval``-ed; patterns are anchored and linear, brace matching is a single scan that
  stops at the window's end, and at most :data:`MAX_BOX_TRIES` ``\\boxed`` are tried;
- MATH-style fallbacks go through :mod:`llmctl.core.rewards.math_equiv` (size cap + time cap per call).

So a megabyte of adversarial text is scored (as wrong) in milliseconds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from llmctl.core.rewards.scan import brace_close

MAX_TAIL_CHARS = 10_000
MAX_ANSWER_CHARS = 1_000
MAX_NUMBER_DIGITS = 100
MAX_BOX_TRIES = 4
MAX_EXPONENT = 30

__all__ = [
    "MAX_TAIL_CHARS", "ScoreResult", "answers_match", "extract_answer", "format_score",
    "normalize_number", "score",
]


@dataclass(frozen=True, slots=True)
class ScoreResult:
    """One scored completion: ``reward = correct + format_weight * format``."""

    correct: float
    format: float
    reward: float
    extracted: str | None


# ---- extraction --------------------------------------------------------------------------------

_BOX_MARKERS = ("\\boxed", "\\fbox")


def _match_brace(text: str, open_pos: int) -> int | None:
    """Index of the ``}`` closing the ``{`` at ``open_pos``, or None (one linear scan)."""
    close = brace_close(text, open_pos)
    return None if close < 0 else close


def _last_boxed(text: str) -> tuple[int, str] | None:
    """(position, content) of the last complete ``\\boxed{…}`` / ``\\fbox{…}`` / ``\\boxed N``."""
    end = len(text)
    for _ in range(MAX_BOX_TRIES):
        pos = max(text.rfind(mk, 0, end) for mk in _BOX_MARKERS)
        if pos < 0:
            return None
        marker = "\\boxed" if text.startswith("\\boxed", pos) else "\\fbox"
        i = pos + len(marker)
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            close = _match_brace(text, i)
            if close is not None:
                return pos, text[i + 1:close]
        elif i > pos + len(marker) and i < len(text):  # "\boxed 5": the next token
            m = re.match(r"[^\s$]+", text[i:i + 200])
            if m:
                return pos, m.group()
        end = pos
    return None


def _last_hashes(text: str) -> tuple[int, str] | None:
    pos = text.rfind("####")
    if pos < 0:
        return None
    line = text[pos + 4:pos + 4 + 400].split("\n", 1)[0].strip()
    return (pos, line) if line else None


def _last_double_brackets(text: str) -> tuple[int, str] | None:
    pos = text.rfind("[[")
    if pos < 0:
        return None
    close = text.find("]]", pos + 2)
    if close < 0:
        # "[[" may sit inside a later answer like [[ [1,2] ]]; try the one before it once
        pos = text.rfind("[[", 0, pos)
        close = text.find("]]", pos + 2) if pos >= 0 else -1
        if close < 0:
            return None
    return pos, text[pos + 2:close]


def extract_answer(text: str | None) -> str | None:
    """The final answer in a completion, or None.

    Looks only at the last :data:`MAX_TAIL_CHARS` characters. The last closed
    ``<answer>…</answer>`` wins (a ``\\boxed{}`` inside it is unwrapped); otherwise whichever of
    ``\\boxed{…}`` (nested braces), ``#### N`` and ``[[…]]`` appears last.
    """
    if not text:
        return None
    tail = text[-MAX_TAIL_CHARS:]
    close = tail.rfind("</answer>")
    if close >= 0:
        open_ = tail.rfind("<answer>", 0, close)
        if open_ >= 0:
            inner = tail[open_ + len("<answer>"):close]
            boxed = _last_boxed(inner)
            if boxed is not None:
                inner = boxed[1]
            inner = inner.strip()
            return inner or None
    found = [c for c in (_last_boxed(tail), _last_hashes(tail), _last_double_brackets(tail)) if c is not None]
    if not found:
        return None
    content = max(found, key=lambda c: c[0])[1].strip()
    return content or None


# ---- numbers -----------------------------------------------------------------------------------

_LATEX_SPACES = ("\\!", "\\,", "\\;", "\\:", "\\ ", "~", "\\quad", "\\qquad")
_TEXT_CMD = re.compile(r"\\(?:text|textbf|mathrm|mbox|textnormal|operatorname)\s*\{([^{}]{0,100})\}")
_NUM = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d{1,3})?"
_PLAIN = re.compile(_NUM)
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_SLASH = re.compile(rf"({_NUM})\s*/\s*({_NUM})")
_FRAC = re.compile(r"([+-]?)\\[dt]?frac\s*\{\s*([+-]?[\d.]+)\s*\}\s*\{\s*([+-]?[\d.]+)\s*\}")
_FRAC_SHORT = re.compile(r"([+-]?)\\[dt]?frac(\d)(\d)")
_UNIT_WORDS = re.compile(r"(?:[A-Za-z]{2,20}\.?)(?:[\s-]+[A-Za-z]{2,20}\.?){0,3}")
_NUMBER_THEN_REST = re.compile(rf"({_NUM}|[+-]?\d{{1,3}}(?:,\d{{3}})+(?:\.\d+)?)\s*(.*)", re.S)


def _strip_wrappers(s: str) -> str:
    s = s.strip().replace("\\\\", "\0")  # keep LaTeX line breaks "\\" out of the spacing rules
    for sp in _LATEX_SPACES:
        s = s.replace(sp, " ")
    s = s.replace("\0", "\\\\")
    s = s.replace("\\left", "").replace("\\right", "").replace("\\displaystyle", "")
    s = s.replace("\\$", "$").replace("\\%", "%").strip()
    while len(s) >= 2 and s[0] == "$" and s[-1] == "$":
        s = s[1:-1].strip()
    s = s.rstrip(".").strip()
    return s


def _digits_key(s: str) -> str | None:
    """A long plain integer/decimal as a canonical digit string (compared, never converted)."""
    if not re.fullmatch(r"[+-]?\d+(?:\.\d+)?", s):
        return None
    sign = "-" if s[0] == "-" else ""
    whole, _, frac = s.lstrip("+-").partition(".")
    whole, frac = whole.lstrip("0") or "0", frac.rstrip("0")
    if whole == "0" and not frac:
        sign = ""
    return f"{sign}{whole}.{frac}"


def _number(s: str) -> Fraction | str | None:
    """Parse one bare number: int, decimal, scientific, ``a/b``, ``\\frac{a}{b}``, ``1,234``."""
    s = s.strip()
    if not s:
        return None
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    if len(s) > MAX_NUMBER_DIGITS:
        return _digits_key(s)
    if _PLAIN.fullmatch(s):
        m = re.search(r"[eE]([+-]?\d+)$", s)
        if m and abs(int(m.group(1))) > MAX_EXPONENT:
            return None
        try:
            return Fraction(s)
        except (ValueError, ZeroDivisionError):
            return None
    for pat in (_FRAC, _FRAC_SHORT):
        m = pat.fullmatch(s)
        if m:
            try:
                v = Fraction(m.group(2)) / Fraction(m.group(3))
            except (ValueError, ZeroDivisionError):
                return None
            return -v if m.group(1) == "-" else v
    m = _SLASH.fullmatch(s)
    if m:
        try:
            return Fraction(m.group(1)) / Fraction(m.group(2))
        except (ValueError, ZeroDivisionError):
            return None
    return None


def normalize_number(text: str) -> Fraction | str | None:
    """A number written the way GSM8K-style answers are, or None when ``text`` is not one.

    Strips ``$``, ``\\$``, ``%``, degree signs, thousands commas, LaTeX spacing, ``\\text{unit}``
    and trailing unit words (``12 dollars``, ``5 cm``). Returns an exact Fraction (or, for numbers
    over :data:`MAX_NUMBER_DIGITS` digits, a canonical digit string).
    """
    if text is None or len(text) > MAX_ANSWER_CHARS:
        return None
    s = _strip_wrappers(text)
    if s.startswith("=") or s.startswith("\\approx"):
        s = s.lstrip("=").removeprefix("\\approx").strip()
    s = _TEXT_CMD.sub(lambda m: " " + m.group(1) + " ", s).strip()
    s = s.replace("^{\\circ}", "").replace("^\\circ", "").replace("°", "").replace("\\%", "").strip()
    if s.endswith("%"):
        s = s[:-1].strip()
    s = s.lstrip("$").strip()
    if s.startswith("-$") or s.startswith("+$"):
        s = s[0] + s[2:].lstrip()
    s = s.rstrip(".").strip()
    v = _number(s)
    if v is not None:
        return v
    m = _NUMBER_THEN_REST.fullmatch(s)  # "12 dollars", "5 cm", "18 eggs per day"
    if m and m.group(2) and _UNIT_WORDS.fullmatch(m.group(2).strip()):
        return _number(m.group(1))
    return None


def _plain_key(s: str) -> str:
    s = _strip_wrappers(s)
    s = _TEXT_CMD.sub(lambda m: m.group(1), s)
    return re.sub(r"\s+", "", s).lower()


def answers_match(pred: str | None, gold: str | None) -> bool:
    """Whether a predicted answer equals the gold one.

    Numbers compare exactly as rationals after normalisation (commas, signs, decimals, fractions,
    ``$``/``%``/degrees/units stripped: ``"1,000.50"``, ``"\\frac{3}{4}"``, ``"0.75"``, ``"3/4"``).
    Anything else (MATH-style: intervals, tuples, ``\\sqrt``, complex numbers, expressions) goes to
    math-verify under a size and time cap. Never raises.
    """
    if pred is None or gold is None:
        return False
    pred, gold = str(pred), str(gold)
    if not pred.strip() or not gold.strip() or len(pred) > MAX_ANSWER_CHARS or len(gold) > MAX_ANSWER_CHARS:
        return False
    g = normalize_number(gold)
    p = normalize_number(pred)
    if g is not None and p is not None:
        return type(g) is type(p) and g == p
    if _plain_key(pred) == _plain_key(gold):
        return True
    if g is not None and p is None and not any(ch in pred for ch in "\\^{}()[]/*+-=√πi"):
        return False  # plain words vs a number: skip the expensive parse
    from llmctl.core.rewards.math_equiv import math_equal

    return math_equal(_strip_wrappers(pred), _strip_wrappers(gold))


# ---- format ------------------------------------------------------------------------------------

def format_score(text: str | None) -> float:
    """1.0 for exactly ``<think>…</think>`` then ``<answer>…</answer>`` and nothing after it;
    0.5 for a single closed ``<answer>…</answer>`` block with no ``<think>`` structure; else 0.0.

    Only counts and finds tags (linear, no regex), so any size is fine.
    """
    if not text:
        return 0.0
    s = text.strip()
    n_ans_open, n_ans_close = s.count("<answer>"), s.count("</answer>")
    if n_ans_open != 1 or n_ans_close != 1:
        return 0.0
    a_open, a_close = s.find("<answer>"), s.find("</answer>")
    if a_close < a_open or not s[a_open + 8:a_close].strip() or s[a_close + 9:].strip():
        return 0.0
    n_think_open, n_think_close = s.count("<think>"), s.count("</think>")
    if n_think_open == 0 and n_think_close == 0:
        return 0.5
    if n_think_open != 1 or n_think_close != 1 or not s.startswith("<think>"):
        return 0.0
    t_close = s.find("</think>")
    if t_close > a_open or s[t_close + 8:a_open].strip():
        return 0.0
    return 1.0


def score(completion: str | None, gold: str, *, format_weight: float = 0.0) -> ScoreResult:
    """Score one completion against a gold answer: ``reward = correct + format_weight * format``."""
    extracted = extract_answer(completion)
    correct = 1.0 if answers_match(extracted, gold) else 0.0
    fmt = format_score(completion)
    return ScoreResult(correct=correct, format=fmt, reward=correct + format_weight * fmt, extracted=extracted)
