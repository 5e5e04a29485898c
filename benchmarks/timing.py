"""Wall time of a call on a device, for the benchmarks: the GPU's queue drained before and after."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch


def sync(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds one call of ``fn`` takes, including the device work it queues."""
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def best_time(fn: Callable[[], Any], device: torch.device, reps: int, warmup: int = 1) -> float:
    """Best wall time of ``reps`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    return min((timed(fn, device) for _ in range(reps)), default=float("inf"))
