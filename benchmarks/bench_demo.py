"""The demo's recipe over several seeds: held-out pass@1 and greedy accuracy before and after GRPO.

Runs ``llmctl demo --seed S`` on a fresh workspace per seed (the real CLI, one subprocess each),
each once the machine is quiet (``--quiet-load``), then prints one markdown row per seed from its
``demo_figures.json`` (wall time, load average before and after, GRPO's training reward, held-out pass@1 and greedy accuracy before -> after and their
change) and a closing row of the smallest changes, which is what the learning test's margins must
stay under. The baseline of each row is the same run's model before GRPO (the SFT checkpoint),
measured on the same held-out prompts with the same sampling seeds.

    python benchmarks/bench_demo.py --seeds 0,1,2 --out-dir /tmp/demo-seeds
    python -m llmctl.core.cli.demo_figures /tmp/demo-seeds/seed0 /tmp/demo-seeds/seed1 /tmp/demo-seeds/seed2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def wait_for_quiet(limit: float, max_wait: float) -> float:
    """Wait (up to ``max_wait`` s) until the 1-minute load average is below ``limit``; the load then."""
    t0 = time.time()
    while os.getloadavg()[0] >= limit and time.time() - t0 < max_wait:
        time.sleep(5)
    return os.getloadavg()[0]


def run_seed(out_dir: Path, seed: int, extra: list[str]) -> dict:
    """One whole demo at ``seed`` in ``out_dir/seed<seed>``; its measured figures."""
    ws = out_dir / f"seed{seed}"
    shutil.rmtree(ws, ignore_errors=True)
    argv = [sys.executable, "-m", "llmctl.core.cli", "demo", "--workspace", str(ws), "--seed", str(seed), *extra]
    with open(out_dir / f"seed{seed}.log", "w", encoding="utf-8") as log:
        code = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT).returncode
    if code != 0:
        raise SystemExit(f"demo at seed {seed} failed (exit {code}); see {out_dir / f'seed{seed}.log'}")
    return json.loads((ws / "demo_figures.json").read_text(encoding="utf-8"))


def row(fig: dict) -> tuple[str, float, float]:
    """A markdown row of one seed's figures, and its pass@1 and greedy changes."""
    h = fig["heldout"]
    d1 = h["pass@1"][1] - h["pass@1"][0]
    dg = h["accuracy"][1] - h["accuracy"][0]
    r = fig["reward"] or [float("nan")] * 2
    lo = fig["load"]
    return (f"| {fig['seed']} | {fig['seconds']} | {lo[0]} → {lo[1]} | {r[0]:.2f} → {r[1]:.2f} | "
            f"{h['pass@1'][0]:.2f} → {h['pass@1'][1]:.2f} ({d1:+.2f}) | "
            f"{h['accuracy'][0]:.2f} → {h['accuracy'][1]:.2f} ({dg:+.2f}) |", d1, dg)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out-dir", type=Path, default=Path("demo-seeds"))
    ap.add_argument("--fast", action="store_true", help="the --fast demo (a smoke run)")
    ap.add_argument("--quiet-load", type=float, default=1.5,
                    help="before each seed, wait until the 1-minute load average is below this (0 = don't wait)")
    ap.add_argument("--max-wait", type=float, default=300.0, help="seconds to wait for a quiet machine at most")
    args = ap.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    print("| seed | demo s | load | GRPO reward (train) | held-out pass@1, T=1, k=8 | held-out greedy |")
    print("|---|---|---|---|---|---|")
    changes = []
    for seed in (int(s) for s in args.seeds.split(",")):
        if args.quiet_load > 0:
            wait_for_quiet(args.quiet_load, args.max_wait)
        text, d1, dg = row(run_seed(args.out_dir, seed, ["--fast"] if args.fast else []))
        changes.append((d1, dg))
        print(text, flush=True)
    print(f"| smallest change | | | | {min(c[0] for c in changes):+.2f} | {min(c[1] for c in changes):+.2f} |")


if __name__ == "__main__":
    main()
