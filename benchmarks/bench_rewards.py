"""Benchmark ``compute_score`` (single thread): throughput on the bootcamp oracle's gold rows and on
GSM8K outputs in the same run, the slowest call on 1 MB adversarial inputs per task type, and the
symbolic path under a worker thread (refused bombs, then a real answer).

Run: ``python benchmarks/bench_rewards.py [--repeat 5]`` from the repository root. Data: the shared
oracle (``../shared/data/bootcamp-oracle/upstream_scores.jsonl``, rows whose case starts with
``gold``) and GSM8K test (1,319 real answers as ``<think>…</think><answer>N</answer>`` plus a wrong
one each). The agreement table itself is printed by ``tests/test_bootcamp_rewards.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    from llmctl.core.verl_reward import compute_score

    oracle = [json.loads(line) for line in (DATA / "bootcamp-oracle" / "upstream_scores.jsonl").open(encoding="utf-8")]
    gold = [(r["data_source"], r["response"], r["ground_truth"]) for r in oracle if r["case"].startswith("gold")]
    by_type: dict[str, list] = {}
    for c in gold:
        by_type.setdefault(c[0], []).append(c)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {time.strftime('%Y-%m-%d %H:%M')}")
    from llmctl.core.rewards.bootcamp import _parsed, arc

    for ds, cases in by_type.items():  # imports and first-call costs, on ground truths not measured below
        compute_score(ds, cases[0][1], cases[0][2] + " ")
    _parsed.cache_clear()
    arc._transformed.cache_clear()
    r, _ = rate(gold, 1, bootcamp_convention="verl")
    print(f"oracle gold rows ({len(gold):,}), verl, cold caches (one pass): {r:10,.0f} scores/s")
    for conv in ("verl", "eval"):
        r, total = rate(gold, args.repeat, bootcamp_convention=conv)
        print(f"oracle gold rows ({len(gold):,}), {conv:4s}: {r:10,.0f} scores/s  (sum {total:.0f})")
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
