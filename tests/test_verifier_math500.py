"""MATH-500 answers rewritten into equivalent forms must score 1, perturbed ones 0.

The rewrites are derived programmatically from the real ``answer`` field; each kind applies only to
answers of the right shape (a kind that does not apply is not counted). Rates are printed (``-s``)
and each kind must clear its bar. The full 500 run is ``slow``; a fixed subset runs always.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from llmctl.core.rewards.verifier import score

# kind -> (rewrite or None when it does not apply, required share of correct verdicts)
Rewrite = Callable[[str], "str | None"]


def _dfrac(a: str) -> str | None:
    return a.replace("\\frac", "\\dfrac") if "\\frac" in a else None


def _slash(a: str) -> str | None:
    m = re.fullmatch(r"(-?)\\frac\{(\d+)\}\{(\d+)\}", a)
    return f"{m.group(1)}{m.group(2)}/{m.group(3)}" if m else None


def _numeric(a: str) -> bool:
    return re.fullmatch(r"-?\d+(\.\d+)?", a) is not None


def _commas(a: str) -> str | None:
    return f"{int(a):,}" if re.fullmatch(r"-?\d{4,}", a) else None


def _spaces(a: str) -> str | None:
    if " " in a:
        return a.replace(" ", "")
    return re.sub(r"([+=,])", r" \1 ", a)


def _left_right(a: str) -> str | None:
    if "\\left" in a:
        return a.replace("\\left", "").replace("\\right", "")
    if a.startswith("(") and a.endswith(")"):
        return "\\left" + a[:-1] + "\\right)"
    return None


def _untext(a: str) -> str | None:
    m = re.fullmatch(r"\\text\{([^{}]*)\}", a)
    return m.group(1) if m else None


def _frac_short(a: str) -> str | None:
    return re.sub(r"\\frac\{(\d)\}\{(\d)\}", r"\\frac\1\2", a) if re.search(r"\\frac\{\d\}\{\d\}", a) else None


def _sqrt_power(a: str) -> str | None:
    return re.sub(r"\\sqrt\{(\d+)\}", r"(\1)^{1/2}", a) if re.search(r"\\sqrt\{\d+\}", a) else None


def _perturb(a: str) -> str:
    m = re.search(r"\d+", a)
    if m:
        return a[:m.start()] + str(int(m.group()) + 1) + a[m.end():]
    return a + "+1"


EQUIVALENT: dict[str, tuple[Rewrite, float]] = {
    "dfrac": (_dfrac, 0.98),
    "slash": (_slash, 1.0),
    "units": (lambda a: a + "\\text{ cm}" if _numeric(a) else None, 1.0),
    "degrees": (lambda a: a + "^\\circ" if _numeric(a) else None, 1.0),
    "decimal": (lambda a: a + ".0" if re.fullmatch(r"-?\d+", a) else None, 1.0),
    "dollars": (lambda a: "\\$" + a if re.fullmatch(r"\d+", a) else None, 1.0),
    "commas": (_commas, 1.0),
    "spaces": (_spaces, 0.98),
    "left_right": (_left_right, 0.95),
    "untext": (_untext, 1.0),
    "frac_short": (_frac_short, 0.95),
    "sqrt_power": (_sqrt_power, 0.9),
}


def _answers(shared_data: Path) -> list[str]:
    with open(shared_data / "math" / "math500_test.jsonl", encoding="utf-8") as f:
        return [json.loads(line)["answer"] for line in f]


def _run(answers: list[str]) -> dict[str, tuple[int, int, list]]:
    out: dict[str, tuple[int, int, list]] = {}
    for a in answers:
        for kind, (fn, _) in EQUIVALENT.items():
            rw = fn(a)
            if rw is None or rw == a:
                continue
            n, ok, bad = out.get(kind, (0, 0, []))
            good = score(f"<think>work</think><answer>\\boxed{{{rw}}}</answer>", a).correct == 1.0
            out[kind] = (n + 1, ok + good, bad if good else bad + [(a, rw)])
        n, ok, bad = out.get("perturbed", (0, 0, []))
        rw = _perturb(a)
        good = score(f"The answer is $\\boxed{{{rw}}}$.", a).correct == 0.0
        out["perturbed"] = (n + 1, ok + good, bad if good else bad + [(a, rw)])
    return out


def _check(results: dict[str, tuple[int, int, list]]) -> None:
    bars = {k: bar for k, (_, bar) in EQUIVALENT.items()} | {"perturbed": 1.0}
    lines = []
    for kind, (n, ok, bad) in sorted(results.items()):
        lines.append(f"{kind:12} {ok:4}/{n:<4} {ok / n:6.1%}  misses: {bad[:3]}")
    print("\nMATH-500 rewrite rates\n" + "\n".join(lines))
    for kind, (n, ok, bad) in results.items():
        assert ok / n >= bars[kind], f"{kind}: {ok}/{n} below {bars[kind]:.0%}: {bad[:5]}"


@pytest.mark.timeout(300)
def test_math500_subset(shared_data, monkeypatch):
    from llmctl.core.rewards import math_equiv

    monkeypatch.setattr(math_equiv, "DEFAULT_TIMEOUT_S", 10.0)  # a loaded CI box must not flip verdicts
    answers = _answers(shared_data)
    subset = answers[::10]  # 50 real answers, every shape represented
    results = _run(subset)
    assert sum(n for n, _, _ in results.values()) > 150
    _check(results)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_math500_all(shared_data, monkeypatch):
    from llmctl.core.rewards import math_equiv

    monkeypatch.setattr(math_equiv, "DEFAULT_TIMEOUT_S", 10.0)
    results = _run(_answers(shared_data))
    assert results["perturbed"][0] == 500
    _check(results)
