"""The reward function verl loads unchanged: ``compute_score(data_source, solution_str, ground_truth, ...)``.

verl 0.9.1 settings (``llmctl verl launch`` writes them)::

    reward.custom_reward_function.path=pkg://llmctl.core.verl_reward
    reward.custom_reward_function.name=compute_score

(the legacy top-level ``custom_reward_function.*`` keys are migrated there by verl; a file path to
this module works as well). Options come through verl's ``reward_kwargs``: ``format_weight``
(adds ``format_weight * verifier.format_score`` for the math sources), ``bootcamp_backend``
(``auto`` | ``package`` | ``builtin``) and the bootcamp ``verify_score`` options
``format_score``, ``short_penalty``, ``short_threshold``, ``ans_threshold``, ``format_penalty``.

Dispatch on ``data_source``:

- ``openai/gsm8k``, ``llmctl/arithmetic`` and MATH-style sources (:data:`MATH_SOURCES`): the shared
  verifier (:mod:`llmctl.core.rewards.verifier`), so RL rewards and evaluation agree;
- ``bootcamp/<Name>``: the ``internbootcamp`` package's ``<Name>bootcamp.verify_score`` when it is
  installed (the class looked up case-insensitively among the package's own bootcamp classes only),
  else the built-in verifiers of :mod:`llmctl.core.rewards.bootcamp_verifiers`. Tasks whose original
  ``eval``-s model text (Game24, KorPuzzle24Points) use the built-in under ``auto``;
- anything else: verl's ``default_compute_score`` when verl is importable.

Never raises: an unknown source, a ground truth that does not parse or a verifier that raises
scores 0 and is counted (:func:`reward_warnings`), with a rate-limited log warning (the 1st, 10th,
100th, … occurrence of each source/reason) on the ``llmctl.verl_reward`` logger.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import Counter
from typing import Any

log = logging.getLogger("llmctl.verl_reward")

__all__ = ["BACKENDS", "BOOTCAMP_PREFIX", "GSM8K_SOURCES", "MATH_SOURCES", "can_score", "compute_score",
           "gold_answer", "reset_reward_warnings", "reward_warnings", "source_kind"]

GSM8K_SOURCES = frozenset({"openai/gsm8k", "gsm8k", "llmctl/arithmetic"})
MATH_SOURCES = frozenset({
    "HuggingFaceH4/MATH-500", "lighteval/MATH", "DigitalLearningGmbH/MATH-lighteval", "math",
    "MATH-500", "math500", "hendrycks/competition_math", "EleutherAI/hendrycks_math", "nlile/hendrycks-MATH-benchmark",
})
BOOTCAMP_PREFIX = "bootcamp/"
BACKENDS = ("auto", "package", "builtin")
_BOOTCAMP_OPTS = ("format_score", "short_penalty", "short_threshold", "ans_threshold", "format_penalty")

_lock = threading.Lock()
_warnings: Counter[str] = Counter()


def reward_warnings() -> dict[str, int]:
    """Counts of scored-as-zero problems, keyed ``"<reason>: <data_source>"``."""
    with _lock:
        return dict(_warnings)


def reset_reward_warnings() -> None:
    """Forget the counts (tests, or a new evaluation)."""
    with _lock:
        _warnings.clear()


def _warn(data_source: Any, reason: str, detail: str = "") -> float:
    key = f"{reason}: {str(data_source)[:200]}"
    with _lock:
        _warnings[key] += 1
        n = _warnings[key]
    if n == 1 or math.log10(n).is_integer():
        log.warning("reward 0 for data_source %r: %s%s (seen %d time%s)", str(data_source)[:200], reason,
                    f" ({detail[:300]})" if detail else "", n, "" if n == 1 else "s")
    return 0.0


def source_kind(data_source: str) -> str:
    """``gsm8k`` | ``math`` | ``bootcamp`` | ``other`` for a data_source string."""
    if data_source in GSM8K_SOURCES:
        return "gsm8k"
    if data_source in MATH_SOURCES:
        return "math"
    if data_source.startswith(BOOTCAMP_PREFIX):
        return "bootcamp"
    return "other"


def gold_answer(ground_truth: Any) -> str:
    """The gold answer string of a math row (a ``\\boxed{}`` or ``#### N`` inside it is unwrapped)."""
    from llmctl.core.rewards.verifier import extract_answer

    if isinstance(ground_truth, int | float) and not isinstance(ground_truth, bool):
        return str(ground_truth)
    if not isinstance(ground_truth, str) or not ground_truth.strip():
        raise ValueError(f"ground truth is {type(ground_truth).__name__} {str(ground_truth)[:50]!r}, "
                         "expected a non-empty answer string")
    if "\\boxed" in ground_truth or "####" in ground_truth:
        inner = extract_answer(ground_truth)
        if inner:
            return inner
    return ground_truth.strip()


def _math_score(solution_str: str, ground_truth: Any, format_weight: float) -> float:
    from llmctl.core.rewards.verifier import score

    return score(solution_str, gold_answer(ground_truth), format_weight=format_weight).reward


def _bootcamp_score(data_source: str, solution_str: str, ground_truth: Any, backend: str,
                    opts: dict[str, Any]) -> float:
    from llmctl.core.rewards import bootcamp_verifiers as bv

    name = data_source[len(BOOTCAMP_PREFIX):]
    try:
        identity = bv.parse_ground_truth(ground_truth)
    except ValueError as e:
        return _warn(data_source, "ground truth does not parse", str(e))
    builtin = bv.builtin_task(name)
    cls = None
    if backend == "package" or (backend == "auto" and not (builtin and name.lower() in bv.EVAL_ORIGINALS)):
        cls = bv.package_class(name)
    if cls is not None:
        value = cls.verify_score(solution_str, identity, **{"format_score": 0, **opts})
        return float(value)
    if builtin is not None and backend != "package":
        return bv.verify_score(builtin, solution_str, identity, **opts)
    why = "the internbootcamp package has no such bootcamp" if bv.package_classes() else \
        "no built-in verifier and the internbootcamp package is not installed"
    return _warn(data_source, "unknown bootcamp", why)


def _verl_default(data_source: str, solution_str: str, ground_truth: Any, extra_info: Any,
                  kwargs: dict[str, Any]) -> float | dict | None:
    try:
        from verl.utils.reward_score import default_compute_score
    except Exception:  # verl missing or not importable here (its own dependencies)
        return None
    return default_compute_score(data_source, solution_str, ground_truth, extra_info, **kwargs)


def compute_score(data_source: str, solution_str: str, ground_truth: Any, extra_info: dict | None = None,
                  **kwargs: Any) -> float:
    """verl's custom reward function: the score of one response (see the module doc). Never raises."""
    try:
        if not isinstance(solution_str, str):
            return _warn(data_source, "response is not a string", type(solution_str).__name__)
        if not isinstance(data_source, str):
            return _warn(data_source, "data_source is not a string", type(data_source).__name__)
        kind = source_kind(data_source)
        if kind in ("gsm8k", "math"):
            return _math_score(solution_str, ground_truth, float(kwargs.get("format_weight", 0.0)))
        if kind == "bootcamp":
            backend = kwargs.get("bootcamp_backend", "auto")
            if backend not in BACKENDS:
                return _warn(data_source, "bad bootcamp_backend", str(backend))
            opts = {k: kwargs[k] for k in _BOOTCAMP_OPTS if k in kwargs}
            return _bootcamp_score(data_source, solution_str, ground_truth, backend, opts)
        other = {k: v for k, v in kwargs.items() if k not in _BOOTCAMP_OPTS + ("format_weight", "bootcamp_backend")}
        result = _verl_default(data_source, solution_str, ground_truth, extra_info, other)
        if result is None:
            return _warn(data_source, "unknown data_source", "not ours and verl is not importable")
        if isinstance(result, dict):
            return float(result.get("score", 0.0))
        return float(result)
    except NotImplementedError as e:
        return _warn(data_source, "unknown data_source", f"verl: {e}")
    except Exception as e:
        return _warn(data_source, "verifier raised", f"{type(e).__name__}: {e}")


def can_score(data_source: str) -> tuple[bool, str]:
    """Whether :func:`compute_score` has a verifier for this source here, and which one."""
    from llmctl.core.rewards import bootcamp_verifiers as bv

    kind = source_kind(data_source)
    if kind == "gsm8k":
        return True, "verifier"
    if kind == "math":
        return True, "math-verify"
    if kind == "bootcamp":
        name = data_source[len(BOOTCAMP_PREFIX):]
        builtin = bv.builtin_task(name)
        if builtin and name.lower() in bv.EVAL_ORIGINALS:
            return True, "built-in"
        if bv.package_class(name) is not None:
            return True, "internbootcamp"
        if builtin:
            return True, "built-in"
        return False, "none"
    try:
        from verl.utils.reward_score import default_compute_score  # noqa: F401
    except Exception:
        return False, "none (no verl)"
    return True, "verl default"
