"""Benchmark ``llmctl verl convert`` against the straightforward pandas way, and compute_score.

    python benchmarks/bench_verl_convert.py [--train-copies 70] [--test-copies 19] [--repeat 3]

1. Conversion: a tree of >= 100,000 rows made by repeating the 12 real InternBootcamp files
   (``train/<name>.jsonl`` x70 and ``test/<name>.jsonl`` x19 copies of each file's rows). Ours:
   ``verl_convert.convert_tree`` (per-file parquet + shuffled merge per split). Baseline, written as
   a user would with pandas: ``pd.read_json(lines=True)`` per file, build the same five columns,
   shuffle with ``DataFrame.sample``, ``to_parquet``; then concat + sample + ``to_parquet`` per split.
   Both produce the same rows; the two alternate ``--repeat`` times: best rows/s of each, and the
   median of the paired ratios (robust on a shared machine).
2. compute_score on GSM8K-style outputs (the real test answers as ``<think>…</think><answer>N</answer>``,
   right and wrong) and on a 1 MB adversarial output: scores/s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LLMCTL_SHARED_DATA", REPO.parent / "shared" / "data"))
TRAIN_COPIES, TEST_COPIES = 70, 19


def make_tree(root: Path, train_copies: int, test_copies: int) -> int:
    rows = 0
    for f in sorted((DATA / "internbootcamp").glob("*.jsonl")):
        lines = [ln for ln in f.read_text(encoding="utf-8").splitlines() if ln.strip()]
        for split, copies in (("train", train_copies), ("test", test_copies)):
            out = root / split / f.name
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text("\n".join(lines * copies) + "\n", encoding="utf-8")
            rows += len(lines) * copies
    return rows


def ours(src: Path, out: Path) -> int:
    from llmctl.core.data.records import ErrorPolicy
    from llmctl.core.verl.convert import convert_tree, plan_bootcamp

    jobs, _ = plan_bootcamp(src, "test", [])
    report = convert_tree(jobs, out / "files", out / "merged", kind="bootcamp", seed=42, shuffle=True,
                          policy=ErrorPolicy("fail"))
    return sum(report["merged_rows"].values())


def pandas_way(src: Path, out: Path) -> int:
    import pandas as pd

    merged_rows = 0
    for split in ("train", "test"):
        written = []
        for f in sorted((src / split).glob("*.jsonl")):
            df = pd.read_json(f, lines=True)
            rel = f"{split}/{f.name}"
            table = pd.DataFrame({
                "data_source": "bootcamp/" + df["data_source"],
                "prompt": [[{"role": "user", "content": p}] for p in df["prompt"]],
                "ability": "bootcamp",
                "reward_model": [{"style": "rule", "ground_truth": json.dumps(g, ensure_ascii=False)}
                                 for g in df["ground_truth"]],
                "extra_info": [{"split": split, "index": i, "source_file": rel} for i in range(len(df))],
            })
            table = table.sample(frac=1, random_state=42)
            dst = out / "files" / split / f.with_suffix(".parquet").name
            dst.parent.mkdir(parents=True, exist_ok=True)
            table.to_parquet(dst, index=False)
            written.append(dst)
        merged = pd.concat([pd.read_parquet(p) for p in written], ignore_index=True).sample(frac=1, random_state=42)
        dst = out / "merged" / split / "bootcamps.parquet"
        dst.parent.mkdir(parents=True, exist_ok=True)
        merged.to_parquet(dst, index=False)
        merged_rows += len(merged)
    return merged_rows


def timed(fn, src: Path, out: Path) -> tuple[float, int]:
    t0 = time.perf_counter()
    rows = fn(src, out)
    dt = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    return dt, rows


def paired(src: Path, work: Path, repeat: int) -> tuple[list[float], list[float], int]:
    """Alternate baseline and ours ``repeat`` times (the machine is shared: pairs see the same load)."""
    t_pd, t_us, rows = [], [], 0
    for i in range(repeat):
        dt, rows_pd = timed(pandas_way, src, work / f"pd_{i}")
        t_pd.append(dt)
        dt, rows = timed(ours, src, work / f"us_{i}")
        t_us.append(dt)
        assert rows_pd == rows, (rows_pd, rows)
    return t_pd, t_us, rows


def bench_scores(repeat: int) -> dict[str, float]:
    from llmctl.core.data.prompts import gsm8k_target, parse_gsm8k_gold
    from llmctl.core.rewards.compute_score import compute_score

    recs = [json.loads(line) for line in (DATA / "gsm8k" / "test.jsonl").read_text(encoding="utf-8").splitlines()]
    cases = []
    for r in recs:
        gold = parse_gsm8k_gold(r["answer"])
        cases.append((gsm8k_target(r["answer"]), gold))
        cases.append(("<think>guess</think><answer>-1</answer>", gold))
    adversarial = "\\boxed{" + "{" * 500_000 + "}" * 499_990 + "<answer>" * 10
    out = {}
    for name, items in (("gsm8k", cases), ("adversarial_1MB", [(adversarial, "18")] * 50)):
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            total = sum(compute_score("openai/gsm8k", s, g) for s, g in items)
            best = min(best, time.perf_counter() - t0)
        out[name] = len(items) / best
        if name == "gsm8k":
            assert total == len(recs), total  # every right answer right, every wrong one wrong
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-copies", type=int, default=TRAIN_COPIES)
    ap.add_argument("--test-copies", type=int, default=TEST_COPIES)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    with tempfile.TemporaryDirectory(prefix="bench_verl_") as tmp:
        src = Path(tmp) / "gen"
        n = make_tree(src, args.train_copies, args.test_copies)
        size = sum(p.stat().st_size for p in src.rglob("*.jsonl"))
        print(f"tree: {n:,} rows, {len(list(src.rglob('*.jsonl')))} files, {size / 1e6:.1f} MB")
        t_pd, t_us, rows = paired(src, Path(tmp), args.repeat)
        assert rows == n, (rows, n)
        ratios = sorted(p / u for p, u in zip(t_pd, t_us, strict=True))
        print(f"verl convert (ours) : best {min(t_us):7.2f} s  {n / min(t_us):10,.0f} rows/s")
        print(f"pandas baseline     : best {min(t_pd):7.2f} s  {n / min(t_pd):10,.0f} rows/s")
        print(f"speed-up            : best/best {min(t_pd) / min(t_us):.2f}x, paired median "
              f"{ratios[len(ratios) // 2]:.2f}x (pairs: {', '.join(f'{r:.2f}' for r in ratios)})")
    scores = bench_scores(args.repeat)
    print(f"compute_score gsm8k-style : {scores['gsm8k']:10,.0f} scores/s")
    print(f"compute_score 1 MB adversarial: {scores['adversarial_1MB']:10,.0f} scores/s "
          f"({1000 / scores['adversarial_1MB']:.2f} ms each)")


if __name__ == "__main__":
    main()
