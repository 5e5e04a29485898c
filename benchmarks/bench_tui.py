"""Benchmark the control center: startup, idle CPU, and curves from a huge metrics.jsonl.

    python benchmarks/bench_tui.py [--quick]

1. Time to ``llmctl --help`` and to the app's first frame (headless, and in a real tmux terminal),
   against a bare ``python -c pass`` measured in the same run.
2. Idle CPU of the open app with 1 Hz GPU polling (NVML faked at its boundary: this box has no GPU),
   as process CPU time over ~10 s, beside a bare Textual app and the app with the real pynvml.
3. Time to show the curve of a 1,000,000-line metrics.jsonl in the job screen (sampled first look, then
   the full bounded index), against reading every row (``core.metrics.read_metrics``) and the memory
   while the file keeps growing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
PY = sys.executable

from llmctl.core.jobs import cli_argv  # noqa: E402


def wall(argv: list[str], n: int) -> float:
    """Median wall time of running ``argv`` ``n`` times."""
    times = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def make_workspace(root: Path) -> Path:
    sys.path.insert(0, str(TESTS))
    from tui_support import build_workspace

    from llmctl.core.tokenizer import get_tokenizer
    from llmctl.core.workspace import init_workspace

    ws = init_workspace(root)
    shared = Path(os.environ.get("LLMCTL_SHARED_DATA", REPO.parent / "shared" / "data"))
    build_workspace(ws, shared, get_tokenizer())
    return ws.root


FIRST_FRAME = textwrap.dedent("""
    import os, sys
    from llmctl.tui.app import LlmctlApp

    app = LlmctlApp(sys.argv[1])

    def first_frame():  # called after the main screen's first refresh
        os.write(1, b"FRAME\\n")
        app.exit()

    app._start_background = first_frame
    app.run(headless=True)
""")


def first_frame_headless(ws: Path, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        out = subprocess.run([PY, "-c", FIRST_FRAME, str(ws)], capture_output=True, text=True, check=True)
        assert "FRAME" in out.stdout, out.stderr
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True).stdout


def first_frame_tmux(ws: Path, n: int) -> float | None:
    """Seconds from starting ``llmctl`` in a real terminal until the pipeline is on screen."""
    if shutil.which("tmux") is None:
        return None
    times = []
    for i in range(n):
        name = f"bench-tui-{os.getpid()}-{i}"
        t = time.perf_counter()
        tmux("new-session", "-d", "-s", name, "-x", "150", "-y", "45", "env", "-u", "COLUMNS", "-u", "LINES",
             *cli_argv("--workspace", str(ws)))
        while "prepare-pretrain" not in tmux("capture-pane", "-p", "-t", name):
            if time.perf_counter() - t > 60:
                break
            time.sleep(0.01)
        times.append(time.perf_counter() - t)
        tmux("kill-session", "-t", name)
    return statistics.median(times)


IDLE_APP = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[3])
    from tui_support import FakeNVML, h100
    from llmctl.core.gpu import GpuPoller
    from llmctl.tui.app import LlmctlApp
    from textual.app import App

    kind = sys.argv[2]
    if kind == "bare":
        App().run()
    elif kind == "fake-gpu":
        LlmctlApp(sys.argv[1], gpu=GpuPoller(nvml=FakeNVML([h100(), h100()]), interval=1.0)).run()
    else:
        LlmctlApp(sys.argv[1]).run()
""")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_cpu(ws: Path, kind: str, seconds: float) -> float | None:
    """Percent of one core used by the open, idle app over ``seconds`` (after it settled)."""
    if shutil.which("tmux") is None:
        return None
    name = f"bench-idle-{os.getpid()}-{kind}"
    tmux("new-session", "-d", "-s", name, "-x", "150", "-y", "45", "env", "-u", "COLUMNS", "-u", "LINES",
         PY, "-c", IDLE_APP, str(ws), kind, str(TESTS))
    try:
        pid = int(tmux("display", "-p", "-t", name, "#{pane_pid}").strip())
        time.sleep(4.0)  # first frame, first workspace read, first GPU polls
        c0, t0 = cpu_seconds(pid), time.perf_counter()
        time.sleep(seconds)
        c1, t1 = cpu_seconds(pid), time.perf_counter()
        return 100.0 * (c1 - c0) / (t1 - t0)
    finally:
        tmux("kill-session", "-t", name)


def write_metrics(path: Path, start: int, n: int) -> None:
    import math
    import random

    rnd = random.Random(0)
    with open(path, "a", encoding="utf-8") as f:
        for i in range(start, start + n):
            row = {"step": i, "time": round(i * 0.05, 3), "train/loss": round(3.5 * math.exp(-i / 250_000) + 0.6
                                                                               + rnd.random() * 0.2, 5),
                   "lr": 6e-4, "grad_norm": round(1 + rnd.random(), 4), "tokens_per_s": 51234.5, "mfu": 0.41}
            if i % 1000 == 0:
                row["eval/loss"] = round(3.5 * math.exp(-i / 250_000) + 0.7, 5)
            f.write(json.dumps(row) + "\n")


CURVE_PROBE = textwrap.dedent("""
    import asyncio, json, os, sys, threading, time
    from pathlib import Path

    def rss_mb():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    ws, run_key, metrics, grow, lines = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    from llmctl.tui.app import LlmctlApp
    out = {}

    async def main():
        app = LlmctlApp(ws, start_gpu=False)
        async with app.run_test(size=(150, 45)) as pilot:
            t = time.perf_counter()
            while app.state is None or "textual_plotext" not in sys.modules:  # the app warms up
                await pilot.pause(0.05)
                if time.perf_counter() - t > 20:
                    break
            out["rss_before_mb"] = rss_mb()
            t = time.perf_counter()
            app.open_job(run_key)
            screen = app.screen
            while screen.curves is None or not screen._drawn.is_set():  # painted, not just computed
                await pilot.pause(0.01)
            out["first_curve_s"] = time.perf_counter() - t
            out["first_rows"] = screen.curves.rows
            # the full index is in and painted (the screen clears _drawn whenever new curves arrive)
            while screen.curves.note or screen.curves.rows < lines or not screen._drawn.is_set():
                await pilot.pause(0.01)
            out["full_curve_s"] = time.perf_counter() - t
            out["points_drawn"] = len(screen.curves.points["train/loss"][0])
            out["rss_full_mb"] = rss_mb()
            done = threading.Event()

            def writer():  # the run keeps logging while we watch
                import math
                with open(metrics, "a") as f:
                    for i in range(lines, lines + grow):
                        f.write(json.dumps({"step": i, "train/loss": 0.6 + 0.1 * math.sin(i / 500)}) + "\\n")
                        if i % 20_000 == 0:
                            f.flush()
                            time.sleep(0.1)
                done.set()

            th = threading.Thread(target=writer)
            th.start()
            peak = rss_mb()
            while not done.is_set() or screen.curves.rows < lines + grow:
                await pilot.pause(0.1)
                peak = max(peak, rss_mb())
            out["rss_growing_peak_mb"] = peak
            out["rows_after_growth"] = screen.curves.rows
            th.join()
    asyncio.run(main())
    print("RESULT=" + json.dumps(out))
""")

READ_ALL = textwrap.dedent("""
    import json, sys, time
    t = time.perf_counter()
    from llmctl.core.metrics import iter_series, read_metrics
    rows = read_metrics(sys.argv[1])
    xs = list(iter_series(rows, "train/loss"))
    dt = time.perf_counter() - t
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    print("RESULT=" + json.dumps({"read_all_s": dt, "rss_mb": rss, "rows": len(rows)}))
""")


def result(out: str) -> dict:
    return json.loads(next(x for x in out.splitlines() if x.startswith("RESULT="))[7:])


def bench_curves(ws: Path, lines: int, grow: int) -> dict:
    from llmctl.core.runs import JobState, begin, finish, new_run_dir

    run = new_run_dir(ws / "runs", "pretrain", "20260101-090000-big0")
    begin(run, stage="pretrain", command=["llmctl", "run", "pretrain"], state=JobState.RUNNING)
    finish(run, 0)
    metrics = run / "metrics.jsonl"
    t = time.perf_counter()
    write_metrics(metrics, 0, lines)
    gen = time.perf_counter() - t
    size_mb = metrics.stat().st_size / 1e6
    base = result(subprocess.run([PY, "-c", READ_ALL, str(metrics)], capture_output=True, text=True,
                                 check=True).stdout)
    probe = subprocess.run([PY, "-c", CURVE_PROBE, str(ws), f"pretrain/{run.name}", str(metrics), str(grow),
                            str(lines)], capture_output=True, text=True, timeout=900)
    if probe.returncode != 0:
        raise SystemExit(probe.stderr[-3000:])
    app = result(probe.stdout)
    return {"lines": lines, "file_mb": size_mb, "write_s": gen, **app, "baseline": base}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer repeats, a 200k-line file")
    args = ap.parse_args()
    n = 3 if args.quick else 5
    os.environ.setdefault("LLMCTL_TIKTOKEN_FILE", str(REPO.parent / "shared/data/tokenizer/r50k_base.tiktoken"))
    tmp = Path(tempfile.mkdtemp(prefix="bench-tui-"))
    try:
        ws = make_workspace(tmp / "ws")
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
        bare = wall([PY, "-c", "pass"], n)
        helpt = wall(cli_argv("--help"), n)
        frame = first_frame_headless(ws, n)
        frame_tty = first_frame_tmux(ws, n)
        print(f"\n## startup (median of {n})")
        print(f"python -c pass            {bare:6.3f} s")
        print(f"llmctl --help             {helpt:6.3f} s   x{helpt / bare:.1f} of bare python")
        print(f"first frame (headless)    {frame:6.3f} s   x{frame / bare:.1f}   (screen laid out, before any file I/O)")
        if frame_tty is not None:
            print(f"pipeline shown (tmux)     {frame_tty:6.3f} s   x{frame_tty / bare:.1f}   (real terminal, workspace read)")
        secs = 5.0 if args.quick else 10.0
        print(f"\n## idle CPU over {secs:.0f} s (percent of one core)")
        for kind in ("bare", "fake-gpu", "real-pynvml"):
            v = idle_cpu(ws, kind, secs)
            label = {"bare": "bare Textual App", "fake-gpu": "llmctl, 2 GPUs polled at 1 Hz (fake NVML)",
                     "real-pynvml": "llmctl, real pynvml (no GPU here)"}[kind]
            print(f"{label:44} {'n/a (no tmux)' if v is None else f'{v:5.2f} %'}")
        lines = 200_000 if args.quick else 1_000_000
        c = bench_curves(Path(ws), lines, grow=100_000 if args.quick else 300_000)
        b = c["baseline"]
        print(f"\n## curve of a {c['lines']:,}-line metrics.jsonl ({c['file_mb']:.0f} MB)")
        print(f"first curve on screen (sampled)     {c['first_curve_s']:6.2f} s  ({c['first_rows']:,} lines sampled)")
        print(f"full curve (bounded index)          {c['full_curve_s']:6.2f} s  ({c['points_drawn']} points drawn)")
        print(f"baseline: read every row            {b['read_all_s']:6.2f} s  (x{b['read_all_s'] / c['first_curve_s']:.0f} "
              f"slower than the first curve, x{b['read_all_s'] / c['full_curve_s']:.1f} than the full one)")
        print(f"app RSS: before {c['rss_before_mb']:.0f} MB, after indexing {c['rss_full_mb']:.0f} MB, "
              f"peak while {c['rows_after_growth'] - c['lines']:,} more lines arrived {c['rss_growing_peak_mb']:.0f} MB")
        print(f"baseline RSS holding every row      {b['rss_mb']:.0f} MB")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
