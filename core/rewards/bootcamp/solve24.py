"""A 24-point search: an expression using every number once with ``+ - * /`` that hits a target."""

from __future__ import annotations

import itertools


def solve_numbers(numbers: list[int], target: int) -> str | None:
    """An expression over ``numbers`` equal to ``target`` (exact, and within 1e-9 as a float), or None."""
    from fractions import Fraction  # here: it loads decimal, and scoring never builds answers

    goal = Fraction(target)
    seen: set[tuple[Fraction, ...]] = set()

    def search(items: list[tuple[Fraction, str]]) -> str | None:
        if len(items) == 1:
            value, expr = items[0]
            return expr if value == goal and _float_ok(expr, target) else None
        key = tuple(sorted(v for v, _ in items))
        if key in seen:
            return None
        seen.add(key)
        for i, j in itertools.combinations(range(len(items)), 2):
            (a, ea), (b, eb) = items[i], items[j]
            rest = [items[k] for k in range(len(items)) if k not in (i, j)]
            cands = [(a + b, f"({ea}+{eb})"), (a * b, f"({ea}*{eb})"), (a - b, f"({ea}-{eb})"),
                     (b - a, f"({eb}-{ea})")]
            if b:
                cands.append((a / b, f"({ea}/{eb})"))
            if a:
                cands.append((b / a, f"({eb}/{ea})"))
            for v, e in cands:
                found = search([*rest, (v, e)])
                if found is not None:
                    return found
        return None

    return search([(Fraction(n), str(n)) for n in numbers])


def _float_ok(expr: str, target: int) -> bool:
    from llmctl.core.rewards.bootcamp import pyexpr

    return pyexpr.evaluate(expr) == target  # the float value upstream computes must hit it exactly
