"""A STAND-IN for the ``internbootcamp`` package, for tests only (not InternBootcamp's code).

It has the interface ``llmctl.core.verl_reward`` relies on: bootcamp classes exported at the
package top level, named ``<Name>bootcamp``, each with a classmethod
``verify_score(model_output, identity, format_score=0, short_penalty=True, short_threshold=100,
format_penalty=True) -> float``: upstream's real signature and defaults at 18a5525 (so a caller
that leaves the penalties at their defaults gets them, as with the real package). The rule is
upstream's: too short -> 0, no ``</think>`` -> 0 (each when its penalty is on), no answer -> 0, a
wrong answer -> ``format_score``, right -> 1.
Also present, to prove the lookup only ever picks bootcamp classes defined in this package: a
plain function, a module attribute, and a class imported from elsewhere.
"""

from __future__ import annotations

import json as _json  # noqa: F401  (a module attribute: never a verifier)
from collections import OrderedDict as Notabootcamp  # noqa: F401  (defined elsewhere: ignored)

CALLS: list[tuple[str, str]] = []  # (class name, model output) of every verify_score call


class Basebootcamp:
    """The stand-in base: subclasses give ``extract_output`` and ``_verify_correction``."""

    @staticmethod
    def extract_output(output: str):
        raise NotImplementedError

    @classmethod
    def _verify_correction(cls, solution, identity) -> bool:
        raise NotImplementedError

    @classmethod
    def verify_score(cls, model_output, identity, format_score=0, short_penalty=True, short_threshold=100,
                     format_penalty=True) -> float:
        CALLS.append((cls.__name__, model_output))
        if short_penalty and len(model_output) < short_threshold:
            return 0.0
        if format_penalty and "</think>" not in model_output:
            return 0.0
        solution = cls.extract_output(model_output)
        if solution is None:
            return 0.0
        return 1.0 if cls._verify_correction(solution, identity) else float(format_score)


class Echobootcamp(Basebootcamp):
    """The answer is ``identity["answer"]`` written inside ``[[...]]``."""

    @staticmethod
    def extract_output(output: str):
        start = output.rfind("[[")
        end = output.find("]]", start + 2) if start >= 0 else -1
        return output[start + 2:end].strip() if end >= 0 else None

    @classmethod
    def _verify_correction(cls, solution, identity) -> bool:
        return solution == str(identity["answer"])


class Game24bootcamp(Echobootcamp):
    """Stand-in Game24: accepts exactly the string in ``identity["expected"]``."""

    @classmethod
    def _verify_correction(cls, solution, identity) -> bool:
        return solution == identity.get("expected")


class Raisingbootcamp(Echobootcamp):
    """A verifier that raises, as a buggy bootcamp would."""

    @classmethod
    def verify_score(cls, model_output, identity, **kwargs) -> float:
        raise RuntimeError("stand-in verifier failure")


def evilbootcamp(*args, **kwargs):  # a function, not a class: must never be called
    raise AssertionError("a non-class attribute was called as a bootcamp")
