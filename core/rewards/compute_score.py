"""The reward function verl loads unchanged: ``compute_score(data_source, solution_str, ground_truth, ...)``.

verl 0.9.1 settings (``llmctl verl launch`` writes them)::

    reward.custom_reward_function.path=pkg://llmctl.core.verl_reward
    reward.custom_reward_function.name=compute_score

(the legacy top-level ``custom_reward_function.*`` keys are migrated there by verl; a file path to
this module works as well). Options come through verl's ``reward_kwargs`` and are checked once per
setting (:func:`reward_settings`): a bad one raises ``ValueError`` on the first call instead of
scoring quietly wrong:

- ``format_weight`` (finite, >= 0; math sources): ``(correct + w * format) / (1 + w)``, so the
  reward stays in [0, 1] (``verifier.format_score`` is the format part);
- ``bootcamp_convention``: ``verl`` (default) or ``eval``, upstream InternBootcamp's two ways of
  calling ``verify_score`` (:mod:`llmctl.core.rewards.bootcamp.score`). ``verl`` is the default
  because it is what upstream's own pipeline trains with (``examples/verl_usage``: no reward for
  answers under 100 characters or without ``</think>``), and this function is the training reward;
  ``eval`` is upstream's evaluation script (no penalties), for scoring finished models;
- upstream's own ``verify_score`` options, with upstream's meaning, overriding the convention:
  ``format_score`` (in [0, 1]), ``short_penalty``, ``short_threshold``, ``format_penalty``;
- ``bootcamp_backend``: ``auto`` | ``package`` | ``builtin``.

Dispatch on ``data_source``:

- ``openai/gsm8k``, ``llmctl/arithmetic`` and MATH-style sources (:data:`MATH_SOURCES`): the shared
  verifier (:mod:`llmctl.core.rewards.verifier`), so RL rewards and evaluation agree;
- ``bootcamp/<Name>``: under ``auto``, the ``internbootcamp`` package's ``<Name>bootcamp`` when it
  is installed and has it (called in the same convention), else the built-in verifier of
  :mod:`llmctl.core.rewards.bootcamp`; Game24 and KorPuzzle24Points, whose originals ``eval``
  model text, stay on the built-in under ``auto``;
- anything else: verl's ``default_compute_score`` when verl is importable.

Never raises for a response: an unknown source, a ground truth that does not parse or a verifier
that raises scores 0 and is counted (:func:`reward_warnings`), with a rate-limited log warning (the
1st, 10th, 100th, … occurrence of each source/reason) on the ``llmctl.verl_reward`` logger. Every
score is in [0, 1].
"""

from __future__ import annotations

import logging
import math
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

from llmctl.core.rewards import bootcamp
from llmctl.core.rewards.bootcamp.package import package_class, package_classes, package_score
from llmctl.core.rewards.bootcamp.score import DEFAULT_CONVENTION, OPTION_NAMES, Convention, convention

log = logging.getLogger("llmctl.verl_reward")

__all__ = ["BACKENDS", "BOOTCAMP_PREFIX", "GSM8K_SOURCES", "MATH_SOURCES", "RewardSettings", "bootcamp_backend",
           "can_score", "compute_score", "gold_answer", "reset_reward_warnings", "reward_settings",
           "reward_warnings", "source_kind"]

GSM8K_SOURCES = frozenset({"openai/gsm8k", "gsm8k", "llmctl/arithmetic"})
MATH_SOURCES = frozenset({
    "HuggingFaceH4/MATH-500", "lighteval/MATH", "DigitalLearningGmbH/MATH-lighteval", "math",
    "MATH-500", "math500", "hendrycks/competition_math", "EleutherAI/hendrycks_math", "nlile/hendrycks-MATH-benchmark",
})
BOOTCAMP_PREFIX = "bootcamp/"
BACKENDS = ("auto", "package", "builtin")
# originals that eval model text (a "9**9**9**9" answer would stall the reward worker)
EVAL_ORIGINALS = frozenset({"game24", "korpuzzle24points"})
_OWN_KEYS = ("format_weight", "bootcamp_backend", "bootcamp_convention")


@dataclass(frozen=True)
class RewardSettings:
    """Validated ``reward_kwargs``: see the module doc."""

    format_weight: float
    backend: str
    convention: Convention


def reward_settings(**kwargs: Any) -> RewardSettings:
    """Check operator settings once; raises ValueError naming the bad one."""
    try:
        key: Any = tuple(kwargs.items())
        cached = _settings_cache.get(key)
    except TypeError:  # an unhashable value: key on its text
        key = tuple((k, repr(v)) for k, v in kwargs.items())
        cached = _settings_cache.get(key)
    if cached is None:
        cached = _settings_cache[key] = _build_settings(kwargs)
    return cached


def _build_settings(kwargs: dict[str, Any]) -> RewardSettings:
    if "ans_threshold" in kwargs:
        raise ValueError("ans_threshold is not an option of upstream's verify_score (removed); "
                         "short_penalty/short_threshold are upstream's length rule")
    w = kwargs.get("format_weight", 0.0)
    if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) or w < 0:
        raise ValueError(f"format_weight must be a finite number >= 0, got {w!r}")
    backend = kwargs.get("bootcamp_backend", "auto")
    if backend not in BACKENDS:
        raise ValueError(f"bootcamp_backend must be one of {list(BACKENDS)}, got {backend!r}")
    conv = convention(kwargs.get("bootcamp_convention", DEFAULT_CONVENTION),
                      **{k: kwargs[k] for k in OPTION_NAMES if k in kwargs})
    return RewardSettings(float(w), backend, conv)


_settings_cache: dict[tuple, RewardSettings] = {}
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
        if not math.isfinite(ground_truth):
            raise ValueError(f"ground truth is {ground_truth!r}, not a finite number")
        return str(ground_truth)
    if not isinstance(ground_truth, str) or not ground_truth.strip():
        raise ValueError(f"ground truth is {type(ground_truth).__name__} {str(ground_truth)[:50]!r}, "
                         "expected a non-empty answer string")
    if ground_truth.strip().lower().lstrip("+-") in _NON_FINITE:
        raise ValueError(f"ground truth is {ground_truth.strip()!r}, not a finite answer")
    if "\\boxed" in ground_truth or "####" in ground_truth:
        inner = extract_answer(ground_truth)
        if inner:
            return inner
    return ground_truth.strip()


_NON_FINITE = frozenset({"nan", "inf", "infinity", "\\infty", "∞"})


def _math_score(solution_str: str, ground_truth: Any, format_weight: float) -> float:
    from llmctl.core.rewards.verifier import score

    r = score(solution_str, gold_answer(ground_truth), format_weight=format_weight)
    return (r.correct + format_weight * r.format) / (1.0 + format_weight)


def bootcamp_backend(name: str, identity: dict | None = None, backend: str = "auto") -> str:
    """Which verifier scores ``bootcamp/<name>`` here: ``internbootcamp``, ``built-in`` or ``none``
    (``identity``: also whether the built-in supports that row)."""
    return _backend(name, *_verifiers_for(name), identity, backend)


def _backend(name: str, task: Any, pkg: bool, identity: dict | None, backend: str) -> str:
    builtin_ok = task is not None and (identity is None or task.supports(identity))
    if backend == "builtin":
        return "built-in" if builtin_ok else "none"
    if backend == "package":
        return "internbootcamp" if pkg else "none"
    if builtin_ok and (name.lower() in EVAL_ORIGINALS or not pkg):
        return "built-in"
    return "internbootcamp" if pkg else "none"


def _verifiers_for(name: str) -> tuple[Any, bool]:
    """(the built-in task or None, whether the package has the type), cached per name and per
    package lookup (clearing ``package_classes``' cache starts afresh)."""
    classes = package_classes()
    key = (name, id(classes))
    hit = _verifier_cache.get(key)
    if hit is None:
        hit = _verifier_cache[key] = (bootcamp.builtin_task(name), name.lower() + "bootcamp" in classes)
    return hit


_verifier_cache: dict[tuple[str, int], tuple[Any, bool]] = {}


def _bootcamp_score(data_source: str, solution_str: str, ground_truth: Any, settings: RewardSettings) -> float:
    name = data_source[len(BOOTCAMP_PREFIX):]
    try:
        identity = bootcamp.shared_ground_truth(ground_truth)  # read-only: built-ins never change it
    except ValueError as e:
        return _warn(data_source, "ground truth does not parse", str(e))
    task, pkg = _verifiers_for(name)
    which = _backend(name, task, pkg, identity, settings.backend)
    if which == "built-in":
        return bootcamp.verify_score(task, solution_str, identity, settings.convention)
    if which == "internbootcamp":  # upstream's checks may change the identity: a fresh copy each call
        identity = bootcamp.parse_ground_truth(ground_truth)
        return package_score(package_class(name), solution_str, identity, settings.convention)
    if task is not None and settings.backend != "package":
        return _warn(data_source, "no built-in verifier for this row", str(identity.get("task_key", ""))[:40])
    why = "the internbootcamp package has no such bootcamp" if package_classes() else \
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
    """verl's custom reward function: the score of one response, in [0, 1] (see the module doc).

    Never raises for a response; raises ValueError for bad settings (``reward_kwargs``)."""
    settings = reward_settings(**{k: v for k, v in kwargs.items() if k in _OWN_KEYS or k in _BOOTCAMP_KEYS})
    try:
        if not isinstance(solution_str, str):
            return _warn(data_source, "response is not a string", type(solution_str).__name__)
        if not isinstance(data_source, str):
            return _warn(data_source, "data_source is not a string", type(data_source).__name__)
        kind = source_kind(data_source)
        if kind in ("gsm8k", "math"):
            return _math_score(solution_str, ground_truth, settings.format_weight)
        if kind == "bootcamp":
            return _bootcamp_score(data_source, solution_str, ground_truth, settings)
        other = {k: v for k, v in kwargs.items() if k not in _OWN_KEYS and k not in _BOOTCAMP_KEYS}
        result = _verl_default(data_source, solution_str, ground_truth, extra_info, other)
        if result is None:
            return _warn(data_source, "unknown data_source", "not ours and verl is not importable")
        value = float(result.get("score", 0.0)) if isinstance(result, dict) else float(result)
        return min(max(value, 0.0), 1.0) if math.isfinite(value) else 0.0
    except NotImplementedError as e:
        return _warn(data_source, "unknown data_source", f"verl: {e}")
    except Exception as e:
        return _warn(data_source, "verifier raised", f"{type(e).__name__}: {e}")


_BOOTCAMP_KEYS = ("format_score", "short_penalty", "short_threshold", "format_penalty", "ans_threshold")


def can_score(data_source: str) -> tuple[bool, str]:
    """Whether :func:`compute_score` has a verifier for this source here, and which one."""
    kind = source_kind(data_source)
    if kind == "gsm8k":
        return True, "verifier"
    if kind == "math":
        return True, "math-verify"
    if kind == "bootcamp":
        which = bootcamp_backend(data_source[len(BOOTCAMP_PREFIX):])
        return which != "none", which
    try:
        from verl.utils.reward_score import default_compute_score  # noqa: F401
    except Exception:
        return False, "none (no verl)"
    return True, "verl default"
