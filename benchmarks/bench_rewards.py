"""Benchmark ``compute_score`` (single thread): the first pass over the bootcamp oracle's gold rows
in a fresh process beside the warm rate, throughput on GSM8K outputs in the same run, the slowest
call on 1 MB adversarial inputs per task type, and the symbolic path under a worker thread (refused
bombs, then a real answer).

Run: ``python benchmarks/bench_rewards.py [--repeat 5] [--fresh 5] [--baseline REV]`` from the
repository root. Data: the shared oracle (``../shared/data/bootcamp-oracle/upstream_scores.jsonl``,
rows whose case starts with ``gold``) and GSM8K test (1,319 real answers as
``<think>…</think><answer>N</answer>`` plus a wrong one each). The agreement table itself is
printed by ``tests/test_bootcamp_rewards.py``.

The first pass is what a reward worker pays once: a fresh Python process imports
``compute_score``, then scores every gold row once (the lazy imports of each task type, first
calls, every identity parsed and every Arc grid computed), then scores them again (warm; best of
3). It runs ``--fresh`` times per variant on a copy of ``core/`` put first on PYTHONPATH: with
llmctl's modules compiled from source (no bytecode cache, as under ``PYTHONDONTWRITEBYTECODE=1``)
and with a bytecode cache (a normal install); with ``--baseline REV`` the same for that revision's
``core/`` (``git archive``), the variants taking turns so that each sees the same load.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
TARGET = 10_000  # scores/s on the first pass (issue 15)


def rate(cases: list[tuple], repeat: int, **kwargs) -> tuple[float, float]:
    """(best scores/s, sum of scores) of compute_score over ``cases`` (data_source, response, gt)."""
    from llmctl.core.verl_reward import compute_score

    best, total = float("inf"), 0.0
    for _ in range(repeat):
        t0 = time.perf_counter()
        total = sum(compute_score(ds, s, g, **kwargs) for ds, s, g in cases)
        best = min(best, time.perf_counter() - t0)
    return len(cases) / best, total


def gsm8k_cases() -> list[tuple]:
    from llmctl.core.data.prompts import gsm8k_target, parse_gsm8k_gold

    out = []
    for line in (DATA / "gsm8k" / "test.jsonl").read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        gold = parse_gsm8k_gold(r["answer"])
        out += [("openai/gsm8k", gsm8k_target(r["answer"]), gold),
                ("openai/gsm8k", "<think>guess</think><answer>-1</answer>", gold)]
    return out


def adversarial() -> dict[str, str]:
    mb = 1_000_000
    return {
        "boxed braces": "\\boxed{" + "{" * (mb // 2) + "}" * (mb // 2 - 10) + "<answer>" * 10,
        "[[ spam": "[[" * (mb // 2),
        "[answer] spam": "[answer]" * (mb // 8),
        "```json/```text spam": ("```json" + "```text") * (mb // 14),
        "deep [ nesting": "<think>x</think>[answer]" + "[" * mb + "[/answer]",
        "long grid": "<think>x</think>[[" + "1 2 3, " * (mb // 7) + "]]",
        "digits": "<think>x</think>[[" + "9" * mb + "]]",
        "power tower": "<think>x</think>\\boxed{9**9**9**9}" + " " * mb,
    }


def oracle_rows() -> list[dict]:
    with open(DATA / "bootcamp-oracle" / "upstream_scores.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def gold_cases(oracle: list[dict]) -> list[tuple]:
    """(data_source, response, ground truth) of every oracle case whose name starts with ``gold``."""
    return [(r["data_source"], r["response"], r["ground_truth"]) for r in oracle if r["case"].startswith("gold")]


def first_pass_child() -> None:
    """In a fresh process: print the import time, the first pass and the best warm pass (JSON)."""
    gold = gold_cases(oracle_rows())
    t0 = time.perf_counter()
    from llmctl.core.verl_reward import compute_score

    t1, c1 = time.perf_counter(), time.process_time()
    total = sum(compute_score(ds, s, g) for ds, s, g in gold)
    t2, c2 = time.perf_counter(), time.process_time()
    warm = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        sum(compute_score(ds, s, g) for ds, s, g in gold)
        warm = min(warm, time.perf_counter() - t)
    print(json.dumps({"rows": len(gold), "sum": total, "import_s": t1 - t0, "first_s": t2 - t1, "first_cpu_s": c2 - c1,
                      "warm_s": warm,
                      "core": str(Path(sys.modules["llmctl.core"].__file__).parent)}))


def checkout(rev: str | None, into: Path) -> Path:
    """``core/`` of ``rev`` (None: the working tree's, without bytecode) as an importable
    ``llmctl.core`` under ``into`` (a PYTHONPATH entry)."""
    if rev is None:
        shutil.copytree(REPO / "core", into / "llmctl" / "core", ignore=shutil.ignore_patterns("__pycache__"))
        return into
    tar = subprocess.run(["git", "-C", str(REPO), "archive", rev, "core"], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        t.extractall(into / "llmctl", filter="data")
    return into


def fresh_first_passes(runs: int, variants: dict[str, dict[str, str]]) -> dict[str, list[dict]]:
    """``runs`` fresh-process first passes per variant (its environment changes), the variants
    taking turns; each must have imported ``llmctl.core`` from its PYTHONPATH."""
    out: dict[str, list[dict]] = {name: [] for name in variants}
    for _ in range(runs):
        for name, env in variants.items():
            res = subprocess.run([sys.executable, __file__, "--first-pass-child"], env={**os.environ, **env},
                                 capture_output=True, text=True, check=True, cwd=REPO)
            out[name].append(json.loads(res.stdout))
            assert out[name][-1]["core"].startswith(env["PYTHONPATH"].split(os.pathsep)[0]), (name, res.stdout)
    return out


def report_first_passes(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"ours": checkout(None, Path(tmp) / "ours")}
        if args.baseline:
            trees[f"baseline {args.baseline}"] = checkout(args.baseline, Path(tmp) / "baseline")
        variants: dict[str, dict[str, str]] = {}
        for tree, path in trees.items():
            pythonpath = os.pathsep.join(filter(None, [str(path), os.environ.get("PYTHONPATH", "")]))
            # from source: our modules compiled at import (the library's own bytecode is used as installed)
            variants[f"{tree}, compiled from source"] = {"PYTHONPATH": pythonpath, "PYTHONDONTWRITEBYTECODE": "1"}
            variants[f"{tree}, bytecode cached"] = {"PYTHONPATH": pythonpath, "PYTHONDONTWRITEBYTECODE": "",
                                                    "PYTHONPYCACHEPREFIX": str(Path(tmp) / "bytecode")}
        fresh_first_passes(1, {k: v for k, v in variants.items() if "bytecode cached" in k})  # writes the cache
        load = os.getloadavg()[0]
        runs = fresh_first_passes(args.fresh, variants)
    print(f"first pass in a fresh process ({args.fresh} runs per variant, taking turns; load average "
          f"{load:.1f} -> {os.getloadavg()[0]:.1f}), verl convention; target {TARGET:,} scores/s:")
    print(f"  {'variant':40s} {'import':>8s} {'first pass: wall best / median':>31s} {'CPU best':>10s} "
          f"{'warm':>10s}  sum")
    for name, rs in runs.items():
        n = rs[0]["rows"]
        firsts = [n / r["first_s"] for r in rs]
        cpu = max(n / r["first_cpu_s"] for r in rs)
        warm = max(n / r["warm_s"] for r in rs)
        imp = min(r["import_s"] for r in rs) * 1000
        ok = "ok" if max(firsts) >= TARGET else "BELOW TARGET"
        print(f"  {name:40s} {imp:5.0f} ms {max(firsts):14,.0f} / {statistics.median(firsts):8,.0f}/s {cpu:8,.0f}/s "
              f"{warm:8,.0f}/s  {rs[0]['sum']:.0f}  {ok}")
    for mode in ("compiled from source", "bytecode cached"):
        if args.baseline:
            ours, base = runs[f"ours, {mode}"], runs[f"baseline {args.baseline}, {mode}"]
            best = {key: min(r[key] for r in base) / min(r[key] for r in ours)
                    for key in ("first_s", "first_cpu_s", "warm_s")}
            print(f"  ours / baseline {args.baseline}, {mode}: first pass x{best['first_s']:.2f} (wall, best), "
                  f"x{best['first_cpu_s']:.2f} (CPU, best); warm x{best['warm_s']:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5, help="passes per warm figure (the best counts)")
    ap.add_argument("--fresh", type=int, default=5, help="fresh processes per first-pass variant")
    ap.add_argument("--baseline", help="a git revision whose core/ is measured beside ours (first pass)")
    ap.add_argument("--first-pass-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.first_pass_child:
        first_pass_child()
        return
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {time.strftime('%Y-%m-%d %H:%M')}")
    report_first_passes(args)
    from llmctl.core.verl_reward import compute_score

    oracle = oracle_rows()
    gold = gold_cases(oracle)
    by_type: dict[str, list] = {}
    for c in gold:
        by_type.setdefault(c[0], []).append(c)
    from llmctl.core.rewards.bootcamp import _parsed, arc

    for ds, cases in by_type.items():  # imports and first-call costs, on ground truths not measured below
        compute_score(ds, cases[0][1], cases[0][2] + " ")
    _parsed.cache_clear()
    arc._transformed.cache_clear()
    cold, _ = rate(gold, 1, bootcamp_convention="verl")
    warm, total = rate(gold, args.repeat, bootcamp_convention="verl")
    print(f"oracle gold rows ({len(gold):,}), verl, this process: caches cleared (one pass) {cold:10,.0f} scores/s, "
          f"warm {warm:10,.0f} scores/s  (sum {total:.0f})")
    r, total = rate(gold, args.repeat, bootcamp_convention="eval")
    print(f"oracle gold rows ({len(gold):,}), eval, warm: {r:10,.0f} scores/s  (sum {total:.0f})")
    g, total = rate(gsm8k_cases(), args.repeat)
    print(f"GSM8K outputs (2,638)          : {g:10,.0f} scores/s  (sum {total:.0f})")
    for ds, cases in sorted(by_type.items()):
        r, _ = rate(cases, args.repeat, bootcamp_convention="eval")
        print(f"  {ds:36s} {len(cases):4d} gold rows {r:10,.0f} scores/s")
    gts = {r["data_source"]: r["ground_truth"] for r in oracle}
    worst = (0.0, "")
    for label, text in adversarial().items():
        for ds, gt in sorted(gts.items()) + [("openai/gsm8k", "18"), ("HuggingFaceH4/MATH-500", "\\frac{1}{2}")]:
            for conv in ("eval", "verl"):
                t0 = time.perf_counter()
                s = compute_score(ds, text, gt, bootcamp_convention=conv)
                dt = time.perf_counter() - t0
                assert s == 0.0, (label, ds, s)
                worst = max(worst, (dt, f"{label} on {ds} ({conv})"))
    print(f"1 MB adversarial: slowest call {worst[0] * 1000:.0f} ms ({worst[1]}); "
          f"{len(adversarial())} inputs x {len(gts) + 2} sources x 2 conventions, all scored 0")
    times: list[float] = []

    def worker() -> None:
        for _ in range(4):
            t0 = time.perf_counter()
            compute_score("HuggingFaceH4/MATH-500", "\\boxed{(99999!)!}", "\\frac{1}{2}")
            times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ok = compute_score("HuggingFaceH4/MATH-500", "\\boxed{(3, \\pi/2)}", "\\left( 3, \\frac{\\pi}{2} \\right)")
        times.append(time.perf_counter() - t0)
        assert ok == 1.0

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    print("worker thread: (99999!)! x4 then a sympy answer: " + ", ".join(f"{x * 1000:.1f} ms" for x in times))


if __name__ == "__main__":
    main()
