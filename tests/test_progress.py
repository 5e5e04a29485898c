"""Progress of long work: a rich bar with elapsed/rate/ETA on a terminal, the same figures as plain
periodic lines elsewhere (logs, pipes), for prepare stages, training loops and the demo."""

from __future__ import annotations

import io
import os
import subprocess
import sys

from llmctl.core.progress import Progress, figures, fmt_duration, parse_step_line


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_figures():
    assert fmt_duration(42) == "42s" and fmt_duration(185) == "3m05s" and fmt_duration(3720) == "1h02m"
    assert figures(30, 60, 12.0) == "12s elapsed · 2.5 step/s · ETA 12s"
    assert figures(10, 60, 20.0, start=5) == "20s elapsed · 4.0 s/step · ETA 3m20s"
    assert figures(60, 60, 30.0) == "30s elapsed · 2.0 step/s"  # done: no ETA
    assert figures(3, None, 3.0) == "3s elapsed · 1.0 step/s"


def test_plain_lines_are_periodic_and_parse_back(monkeypatch):
    monkeypatch.delenv("LLMCTL_PROGRESS", raising=False)
    out, clock = io.StringIO(), Clock()
    p = Progress("sft", 60, stream=out, every_s=10, clock=clock)
    for step in range(1, 61):
        clock.t += 0.5
        p.update(step, f"loss {1 / step:.3f}")
    lines = out.getvalue().splitlines()
    # the first update, one every 10 s (20 steps of 0.5 s), and the last
    assert [parse_step_line(x)[1:] for x in lines] == [(1, 60), (21, 60), (41, 60), (60, 60)]
    assert lines[1] == "sft step 21/60 loss 0.048 · 10s elapsed · 2.0 step/s · ETA 20s"
    assert lines[-1].endswith("· 30s elapsed · 2.0 step/s")
    p.update(61, "x", force_line=True)
    assert out.getvalue().splitlines()[-1].startswith("sft step 61/60 x ·")


def test_bytes_unit_line():
    p = Progress("prepare pretrain", 480, unit="MB", stream=io.StringIO(), clock=Clock())
    p.clock.t += 40
    assert p.line(120, "96,000 docs") == \
        "prepare pretrain 120.0/480 MB 96,000 docs · 40s elapsed · 3.0 MB/s · ETA 2m00s"


def test_terminal_gets_a_rich_bar_with_the_same_figures(monkeypatch):
    monkeypatch.delenv("LLMCTL_PROGRESS", raising=False)
    out, clock = Tty(), Clock()
    with Progress("grpo", 32, stream=out, clock=clock) as p:
        assert p.bar is not None
        clock.t += 8
        p.update(16, "reward 0.5")
    text = out.getvalue()
    assert "grpo" in text and "16/32" in text and "8s elapsed · 2.0 step/s · ETA 8s" in text and "reward 0.5" in text


def test_settings(monkeypatch):
    monkeypatch.setenv("LLMCTL_PROGRESS", "plain")
    out = Tty()
    p = Progress("sft", 2, stream=out, clock=Clock())
    assert p.bar is None
    p.update(1)
    assert out.getvalue().startswith("sft step 1/2 · ")
    monkeypatch.setenv("LLMCTL_PROGRESS", "off")
    out = io.StringIO()
    p = Progress("sft", 2, stream=out)
    p.update(2, force_line=True)
    assert out.getvalue() == ""


def test_training_loop_lines_carry_the_figures(capsys, monkeypatch):
    monkeypatch.delenv("LLMCTL_PROGRESS", raising=False)
    from llmctl.trainers.loop import Progress as LoopProgress

    p = LoopProgress(60, 0, "sft")
    p.update(10, "loss 0.5 lr 1e-3", line=True)
    p.close()
    [line] = capsys.readouterr().out.splitlines()
    assert line.startswith("sft step 10/60 loss 0.5 lr 1e-3 · ") and " elapsed · " in line and " · ETA " in line


def test_prepare_pretrain_writes_progress_lines_when_not_a_terminal(workspace, shared_data):
    src = sorted((shared_data / "pile-sample").glob("*.jsonl*"))[0]
    env = {k: v for k, v in os.environ.items() if k not in ("LLMCTL_PROGRESS", "LLMCTL_NO_PROGRESS")}
    res = subprocess.run([sys.executable, "-m", "llmctl.core.cli", "prepare", "pretrain", "-w", str(workspace.root),
                          "--inputs", str(src), "--max-tokens", "20000"], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = [x for x in res.stderr.splitlines() if x.startswith("prepare pretrain ")]
    assert lines and " MB " in lines[0] and " elapsed · " in lines[0] and "MB/s" in lines[0]
