"""Progress of long work: elapsed time, rate and ETA, drawn for a person or written for a log.

On a terminal a rich bar shows ``label ━━━━╸ 30/60 step · 0:00:12 elapsed · 2.4 step/s · ETA 0:00:13``
with the caller's ``info`` beside it; when the stream is not a terminal (a job's ``log.txt``, a pipe,
CI) the same figures come as plain lines, at most one per ``every_s`` seconds, plus the last one::

    sft step 30/60 loss 0.6906 · 12s elapsed · 2.4 step/s · ETA 13s
    prepare pretrain 120.5/480 MB 96,000 docs · 40s elapsed · 3.0 MB/s · ETA 2m00s

``LLMCTL_PROGRESS=plain`` forces the lines on a terminal and ``LLMCTL_PROGRESS=off`` silences both.
rich is imported only when a bar is drawn.
"""

from __future__ import annotations

import os
import re
import sys
import time
from typing import IO, Any

from llmctl.core.closing import Closing

ENV_PROGRESS = "LLMCTL_PROGRESS"  # auto (default) | plain | off
PLAIN_EVERY_S = 10.0
_STEP_LINE = re.compile(r"^\s*(\S+) step (\d+)/(\d+)\b")


def parse_step_line(line: str) -> tuple[str, int, int] | None:
    """``(label, done, total)`` of a plain ``label step i/n …`` line, as ``Progress`` writes them
    (and the trainers' logs hold), or None: what a parent shows a child's progress from."""
    m = _STEP_LINE.match(line)
    return (m.group(1), int(m.group(2)), int(m.group(3))) if m else None


def fmt_duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def fmt_rate(per_s: float, unit: str) -> str:
    """``2.4 step/s``, or ``12.5 s/step`` when slower than one per second."""
    if per_s <= 0:
        return f"- {unit}/s"
    if per_s < 1:
        return f"{1 / per_s:.1f} s/{unit}"
    return f"{per_s:,.1f} {unit}/s" if per_s < 100 else f"{per_s:,.0f} {unit}/s"


def figures(done: float, total: float | None, elapsed: float, start: float = 0, unit: str = "step") -> str:
    """``12s elapsed · 2.4 step/s · ETA 13s`` for ``done`` of ``total`` after ``elapsed`` seconds
    (the rate counts from ``start``, where a resumed run began; no ETA without a total or a rate)."""
    rate = (done - start) / elapsed if elapsed > 0 else 0.0
    out = f"{fmt_duration(elapsed)} elapsed · {fmt_rate(rate, unit)}"
    if total and rate > 0 and done < total:
        out += f" · ETA {fmt_duration((total - done) / rate)}"
    return out


def print_above(bar: Any, msg: str, stream: IO[str]) -> None:
    """``msg`` printed above a running rich progress ``bar``, or as a plain line to ``stream``
    when there is none."""
    if bar is not None:
        bar.console.print(msg, markup=False, highlight=False)
    else:
        print(msg, file=stream, flush=True)


class Progress(Closing):
    """``done`` out of ``total`` ``unit``s of ``label``, shown as a bar on a terminal and as plain
    periodic lines otherwise (see the module doc)."""

    def __init__(self, label: str, total: int | None, *, start: int = 0, unit: str = "step",
                 stream: IO[str] | None = None, every_s: float = PLAIN_EVERY_S, enabled: bool = True,
                 clock: Any = time.monotonic) -> None:
        self.label, self.total, self.unit, self.start = label, total, unit, start
        self.stream = stream if stream is not None else sys.stdout
        self.every_s, self.clock = every_s, clock
        self.t0 = clock()
        self.last_line = -float("inf")
        self.done = start
        mode = os.environ.get(ENV_PROGRESS, "auto").strip().lower()
        self.enabled = enabled and mode != "off"
        tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.bar: Any = None
        if self.enabled and tty and mode != "plain":
            self._start_bar()

    def _start_bar(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn
        from rich.progress import Progress as RichProgress

        self.bar = RichProgress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[figures]}"), TextColumn("{task.fields[info]}"),
                                console=Console(file=self.stream), transient=False)
        self.bar.start()
        self.task = self.bar.add_task(self.label, total=self.total, completed=self.start, info="",
                                      figures=figures(self.start, self.total, 0.0, self.start, self.unit))

    def line(self, done: float, info: str = "") -> str:
        """The plain progress line for ``done`` now."""
        total = f"/{self.total:g}" if self.total else ""
        count = f"{self.unit} {done:g}{total}" if self.unit == "step" else f"{done:,.1f}{total} {self.unit}"
        head = f"{self.label} {count}" + (f" {info}" if info else "")
        return f"{head} · {figures(done, self.total, self.clock() - self.t0, self.start, self.unit)}"

    def update(self, done: float, info: str = "", force_line: bool = False) -> None:
        """Move to ``done``. Without a terminal a line is written when ``every_s`` has passed since
        the last one, at the end (``done == total``), or when ``force_line``."""
        self.done = done
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(self.task, completed=done, info=info,
                            figures=figures(done, self.total, self.clock() - self.t0, self.start, self.unit))
            return
        now = self.clock()
        if force_line or now - self.last_line >= self.every_s or (self.total and done >= self.total):
            self.last_line = now
            print(self.line(done, info), file=self.stream, flush=True)

    def set_total(self, total: int | None) -> None:
        """Learn the total after starting (a child process said it)."""
        self.total = total
        if self.bar is not None:
            self.bar.update(self.task, total=total)

    def print(self, msg: str) -> None:
        """A message above the bar (or a plain line)."""
        print_above(self.bar, msg, self.stream)

    def close(self) -> None:
        """Stop the bar (its last state stays on screen)."""
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
