"""Linear-time text scans that find what upstream's regexes find, without backtracking.

Each function names the pattern whose ``re.findall(...)[-1]`` it reproduces (non-overlapping
matches taken left to right, so the *last* match is found by scanning from the start). All of
them run in time linear in the text (``str.find`` jumps), so a megabyte costs milliseconds.
"""

from __future__ import annotations

import re

_BRACKET_RUN = re.compile(r"\[+")
_DIGITS = re.compile(r"\d+")  # Unicode decimal digits, as upstream's pattern
_CLOSE_PAIR = re.compile(r"\]\s*\]")  # leftmost "]", whitespace, "]": each whitespace run scanned once


def _skip_space(text: str, i: int) -> int:
    """The first index at or after ``i`` that does not hold whitespace (``len(text)`` at the end)."""
    n = len(text)
    while i < n and text[i].isspace():
        i += 1
    return i


def last_between(text: str, open_: str, close: str, *, one_line: bool = False) -> str | None:
    """``re.findall(open_ + '(.*?)' + close, text, DOTALL)[-1]`` (``one_line``: without DOTALL,
    so a match may not span a newline), or None when nothing matches."""
    last = None
    pos = 0
    while True:
        s = text.find(open_, pos)
        if s < 0:
            return last
        body = s + len(open_)
        e = text.find(close, body)
        if e < 0:
            return last  # no close after here: no later open can match either
        if one_line:
            nl = text.find("\n", body, e)
            if nl >= 0:
                pos = nl + 1  # no open before this newline can reach a close without crossing it
                continue
        last = text[body:e]
        pos = e + len(close)


def last_fenced(text: str, tag: str) -> str | None:
    """``re.findall(r'```TAG\\s*([\\s\\S]*?)\\s*```', text)[-1]`` (``tag`` e.g. ``json``)."""
    opener = "```" + tag
    last = None
    pos = 0
    while True:
        s = text.find(opener, pos)
        if s < 0:
            return last
        g = _skip_space(text, s + len(opener))
        q = text.find("```", g)
        if q < 0:
            return last
        last = text[g:q].rstrip()
        pos = q + 3


def last_double_bracket_digits(text: str) -> str | None:
    """``re.findall(r'\\[\\[(\\d+)\\]\\]', text)[-1]`` (``\\d``: any Unicode decimal digit)."""
    last = None
    pos = 0
    n = len(text)
    while True:
        s = text.find("[[", pos)
        if s < 0:
            return last
        m = _DIGITS.match(text, s + 2)
        j = m.end() if m else s + 2
        if j > s + 2 and text.startswith("]]", j):
            last = text[s + 2:j]
            pos = j + 2
        elif j < n and text[j] == "[":
            pos = max(s + 1, _BRACKET_RUN.match(text, s).end() - 2)  # only a run's last "[[" can match
        else:
            pos = s + 1


def all_nested_brackets(text: str) -> list[str]:
    """``re.findall(r'\\[\\s*\\[\\s*.*?\\s*\\]\\s*\\]', text, DOTALL)``: every ``[[ … ]]`` span
    (whitespace allowed between the two brackets at each end), left to right."""
    out = []
    pos = 0
    while True:
        s = text.find("[", pos)
        if s < 0:
            return out
        b = _skip_space(text, s + 1)
        if b >= len(text) or text[b] != "[":
            pos = s + 1
            continue
        end = _close_pair(text, b + 1)
        if end < 0:
            return out  # no "] ]" after here: no later start can match
        out.append(text[s:end])
        pos = end


def _close_pair(text: str, start: int) -> int:
    """End (exclusive) of the first ``]`` + whitespace + ``]`` at or after ``start``, or -1."""
    m = _CLOSE_PAIR.search(text, start)
    return m.end() if m else -1

_BRACES = re.compile(r"[{}]")
_CHUNK = 4096


def brace_close(text: str, start: int) -> int:
    r"""Index of the first ``}`` (from ``start``) that brings the count of ``{`` minus ``}`` back to
    zero, or -1: the loop upstream's ``last_boxed_only_string`` runs, in C-speed chunks (a chunk
    where the count cannot reach zero is skipped on its two ``str.count``\ s)."""
    depth = 0
    for a in range(start, len(text), _CHUNK):
        b = min(a + _CHUNK, len(text))
        opens, closes = text.count("{", a, b), text.count("}", a, b)
        if depth - closes > 0 or depth + opens < 1:
            depth += opens - closes
            continue
        for m in _BRACES.finditer(text, a, b):
            if m.group() == "{":
                depth += 1
            else:
                depth -= 1
                if depth == 0:
                    return m.start()
    return -1
