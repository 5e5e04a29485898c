"""Cipher: the text in the last ```` ```text ```` block, with upstream's partial credit.

Upstream's rule (reproduced exactly): the block has ``'`` replaced by ``"``, ``(`` by ``[`` and
``)`` by ``]``, and is lower-cased; with ``d`` its Levenshtein distance to the lower-cased expected
text of length ``L``, the score is ``(1 - min(d / L, 1)) ** 2``: 1.0 for an exact answer
(case-insensitive), partial credit for a near miss, 0 from ``d >= L`` on. It is a partial score,
not a pass/fail: under both conventions a wrong answer can score between 0 and 1.

The expected text is ``str(identity["ground_truth"])``: upstream recomputes it by running the
cipher (encode or decode of ``identity["input"]``); for every gold answer in the shared oracle the
two agree.
"""

from __future__ import annotations

from llmctl.core.rewards.bootcamp.score import BootcampTask, think_block
from llmctl.core.rewards.scan import last_fenced


def extract(response: str) -> str | None:
    """The block text with upstream's quote and bracket replacements, or None."""
    block = last_fenced(response, "text")
    if block is None:
        return None
    return block.replace("'", '"').replace("(", "[").replace(")", "]")


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions of one character each)."""
    start = 0
    while start < len(a) and start < len(b) and a[start] == b[start]:
        start += 1
    a, b = a[start:], b[start:]
    while a and b and a[-1] == b[-1]:
        a, b = a[:-1], b[:-1]
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def check(solution: str, identity: dict) -> float:
    """Upstream's partial credit (see the module doc)."""
    expected = str(identity["ground_truth"]).lower()
    solution = solution.lower()
    n = len(expected)
    if solution == expected:
        d = 0
    elif abs(len(solution) - n) >= n:
        d = n  # the distance is at least the length difference: the score is 0 either way
    else:
        d = levenshtein(solution, expected)
    score = 1 - min(d / n, 1.0)
    return score * score


def solve(identity: dict) -> str:
    """A correct response."""
    return think_block("Apply the cipher's rules one character at a time.") + \
        f"Final-answer: ```text\n{identity['ground_truth']}\n```"


def wrong(identity: dict) -> str:
    """A wrong response (nothing in common with the answer)."""
    text = str(identity["ground_truth"])
    return think_block() + "Final-answer: ```text\n" + "~" * (2 * len(text) + 1) + "\n```"


TASK = BootcampTask("Cipher", extract, check, solve, wrong)
