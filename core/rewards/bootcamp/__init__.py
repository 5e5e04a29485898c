"""Built-in verifiers for InternBootcamp task types, one module per type.

Each task module defines ``TASK``, a :class:`~llmctl.core.rewards.bootcamp.score.BootcampTask`
written from the upstream class's scoring rules (InternLM/InternBootcamp @ 18a5525; our own code:
model text is never ``eval``-ed, every scan is linear, sizes are capped). Adding a type is adding a
module here: :func:`tasks` finds every module of this package that has a ``TASK``.
"""

from __future__ import annotations

import functools
import importlib
import json
import pkgutil
from typing import Any

from llmctl.core.rewards.bootcamp.score import (
    CONVENTIONS,
    DEFAULT_CONVENTION,
    BootcampTask,
    Convention,
    convention,
    verify_score,
)

__all__ = ["CONVENTIONS", "DEFAULT_CONVENTION", "BootcampTask", "Convention", "builtin_task", "convention",
           "parse_ground_truth", "shared_ground_truth", "tasks", "verify_score"]


@functools.cache
def tasks() -> dict[str, BootcampTask]:
    """``{lowercase name: task}`` for every task module in this package (imports them all)."""
    out: dict[str, BootcampTask] = {}
    for module in _modules().values():
        task = _task_of(module)
        if task is not None:
            out[task.name.lower()] = task
    return out


@functools.cache
def _modules() -> dict[str, str]:
    """``{module name without underscores, lowercase: module name}`` of this package, read from
    its folder without importing anything (``kor_puzzle_24_points`` is keyed ``korpuzzle24points``)."""
    return {info.name.replace("_", "").lower(): info.name for info in pkgutil.iter_modules(__path__)}


def _task_of(module_name: str) -> BootcampTask | None:
    task = getattr(importlib.import_module(f"{__name__}.{module_name}"), "TASK", None)
    return task if isinstance(task, BootcampTask) else None


@functools.cache
def builtin_task(name: str) -> BootcampTask | None:
    """The built-in task for a bootcamp name (case-insensitive), or None.

    Imports only the module named like the task (``KorPuzzle24Points``: ``kor_puzzle_24_points``),
    so a run that scores one type never loads the others; a task named unlike its module is
    found through :func:`tasks`."""
    key = name.lower()
    module = _modules().get(key.replace("_", ""))
    task = _task_of(module) if module is not None else None
    if task is not None and task.name.lower() == key:
        return task
    return tasks().get(key)


def shared_ground_truth(ground_truth: Any) -> dict:
    """:func:`parse_ground_truth`, cached for JSON strings (a GRPO group scores one row n times).
    The dict is shared between calls: only for checks that never change it (the built-ins)."""
    if isinstance(ground_truth, str) and len(ground_truth) <= 100_000:
        return _parsed(ground_truth)
    return parse_ground_truth(ground_truth)


@functools.lru_cache(maxsize=2048)
def _parsed(ground_truth: str) -> dict:
    return parse_ground_truth(ground_truth)


def parse_ground_truth(ground_truth: Any, *, max_chars: int = 1_000_000) -> dict:
    """A bootcamp ground truth (the upstream "identity") as a fresh dict; verl stores it as JSON."""
    if isinstance(ground_truth, dict):
        return json.loads(json.dumps(ground_truth))  # a copy: a check must never change the row
    if not isinstance(ground_truth, str | bytes):
        raise ValueError(f"ground truth is a {type(ground_truth).__name__}, expected a JSON object string")
    if len(ground_truth) > max_chars:
        raise ValueError(f"ground truth is {len(ground_truth)} characters (limit {max_chars})")
    value = json.loads(ground_truth)
    if not isinstance(value, dict):
        raise ValueError(f"ground truth JSON is a {type(value).__name__}, expected an object")
    return value
