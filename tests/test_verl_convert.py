"""``llmctl verl convert``: real bootcamp rows and GSM8K prompts -> verl parquet, checked field by field."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from llmctl.core.data.records import InputError
from llmctl.core.verl.convert import VerlConvertParams, run

FILES = {  # source tree layout -> real file
    "train/game24.jsonl": "game24.jsonl",
    "train/nested/sudoku.jsonl": "sudoku.jsonl",
    "test/maze.jsonl": "maze.jsonl",
    "extra/bbeh.jsonl": "BbehMultistepArithmetic.jsonl",  # no train/test above: default split
}


@pytest.fixture
def src_tree(tmp_path: Path, shared_data: Path) -> Path:
    root = tmp_path / "gen_out"
    for rel, real in FILES.items():
        dst = root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shared_data / "internbootcamp" / real, dst)
    (root / "README.md").write_text("not data\n")
    return root


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _check_file(parquet: Path, source: Path, rel: str, split: str) -> None:
    src_rows = _jsonl(source)
    table = pq.read_table(parquet)
    assert table.num_rows == len(src_rows)
    rows = table.to_pylist()
    assert sorted(r["extra_info"]["index"] for r in rows) == list(range(len(src_rows)))
    for r in rows:
        rec = src_rows[r["extra_info"]["index"]]
        assert r["data_source"] == "bootcamp/" + rec["data_source"]
        assert r["prompt"] == [{"role": "user", "content": rec["prompt"]}]
        assert r["ability"] == "bootcamp"
        assert r["reward_model"]["style"] == "rule"
        assert json.loads(r["reward_model"]["ground_truth"]) == rec["ground_truth"]
        assert r["extra_info"] == {"split": split, "index": r["extra_info"]["index"], "source_file": rel}


def test_convert_tree_into_the_workspace(workspace, src_tree):
    report = run(workspace, VerlConvertParams(src=str(src_tree)), None)
    out = workspace.path("data/verl")
    splits = {"train/game24.jsonl": "train", "train/nested/sudoku.jsonl": "train", "test/maze.jsonl": "test",
              "extra/bbeh.jsonl": "test"}
    for rel, split in splits.items():
        _check_file(out / "bootcamp" / rel.replace(".jsonl", ".parquet"), src_tree / rel, rel, split)
    assert report["defaulted_split_files"] == 1 and report["ignored_files"] == ["README.md"]
    assert report["rows_by_split"] == {"train": 128, "test": 128}
    # merged: every row of the split once, shuffled
    for split in ("train", "test"):
        merged = pq.read_table(out / "bootcamp_merged" / split / "bootcamps.parquet").to_pylist()
        parts = [pq.read_table(out / "bootcamp" / rel.replace(".jsonl", ".parquet")).to_pylist()
                 for rel, s in splits.items() if s == split]
        union = [r for p in parts for r in p]
        key = lambda r: (r["extra_info"]["source_file"], r["extra_info"]["index"])  # noqa: E731
        assert sorted(map(key, merged)) == sorted(map(key, union))
        assert [key(r) for r in merged] != [key(r) for r in union]
        assert {r["extra_info"]["split"] for r in merged} == {split}
    man = json.loads((out / "manifest.json").read_text())
    assert man["stage"] == "verl-convert" and man["counts"]["rows"] == 256
    assert man["kinds"]["bootcamp"]["data_sources"]["bootcamp/Game24"] == 64


def test_datasets_reads_the_files(workspace, src_tree, tmp_path):
    from datasets import Dataset

    run(workspace, VerlConvertParams(src=str(src_tree)), None)
    path = workspace.path("data/verl/bootcamp_merged/train/bootcamps.parquet")
    ds = Dataset.from_parquet(str(path), cache_dir=str(tmp_path / "hf_cache"))
    assert ds.num_rows == 128
    assert set(ds.column_names) == {"data_source", "prompt", "ability", "reward_model", "extra_info"}
    row = ds[0]
    assert row["prompt"][0]["role"] == "user" and row["data_source"].startswith("bootcamp/")
    assert isinstance(json.loads(row["reward_model"]["ground_truth"]), dict)
    assert Counter(ds["data_source"]) == {"bootcamp/Game24": 64, "bootcamp/Sudoku": 64}
    sources = {rel: _jsonl(src_tree / rel) for rel in ("train/game24.jsonl", "train/nested/sudoku.jsonl")}
    for r in ds:  # every field of every row against its source record
        info = r["extra_info"]
        rec = sources[info["source_file"]][info["index"]]
        assert r["data_source"] == "bootcamp/" + rec["data_source"] and r["ability"] == "bootcamp"
        assert r["prompt"] == [{"role": "user", "content": rec["prompt"]}]
        assert r["reward_model"]["style"] == "rule"
        assert json.loads(r["reward_model"]["ground_truth"]) == rec["ground_truth"]
        assert info["split"] == "train"
    assert sorted((r["extra_info"]["source_file"], r["extra_info"]["index"]) for r in ds) == sorted(
        (rel, i) for rel, rows in sources.items() for i in range(len(rows)))


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.parquet"))}


def test_same_input_and_seed_give_identical_bytes(workspace, src_tree, tmp_path):
    outs = []
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        out = tmp_path / name / "conv"
        run(workspace, VerlConvertParams(src=str(src_tree), out=str(out), seed=seed), None)
        outs.append((_tree_bytes(out), _tree_bytes(out.with_name("conv_merged"))))
    assert outs[0] == outs[1]
    assert len(outs[0][0]) == 4 and set(outs[0][1]) == {"train/bootcamps.parquet", "test/bootcamps.parquet"}
    assert outs[0][1] != outs[2][1] and outs[0][0] != outs[2][0]
    unshuffled = tmp_path / "d" / "conv"
    run(workspace, VerlConvertParams(src=str(src_tree), out=str(unshuffled), shuffle=False), None)
    idx = [r["index"] for r in pq.read_table(unshuffled / "train/game24.parquet").column("extra_info").to_pylist()]
    assert idx == list(range(64))


def test_out_dir_layout_like_the_original(workspace, src_tree):
    out = src_tree.with_name(src_tree.name + "_for_verl")
    run(workspace, VerlConvertParams(src=str(src_tree), out=str(out)), None)
    assert (out / "train" / "game24.parquet").is_file() and (out / "manifest.json").is_file()
    merged = out.with_name(out.name + "_merged")
    assert (merged / "train" / "bootcamps.parquet").is_file() and (merged / "test" / "bootcamps.parquet").is_file()
    assert not workspace.path("data/verl").exists()


def test_split_from_the_source_folder_itself_and_default_split(workspace, tmp_path, shared_data):
    train_dir = tmp_path / "train"
    train_dir.mkdir()
    shutil.copy(shared_data / "internbootcamp" / "game24.jsonl", train_dir / "g.jsonl")
    r = run(workspace, VerlConvertParams(src=str(train_dir / "g.jsonl"), out=str(tmp_path / "o1")), None)
    assert r["rows_by_split"] == {"train": 64, "test": 0} and r["defaulted_split_files"] == 0
    plain = tmp_path / "plain"
    plain.mkdir()
    shutil.copy(shared_data / "internbootcamp" / "maze.jsonl", plain / "m.jsonl")
    r = run(workspace, VerlConvertParams(src=str(plain), out=str(tmp_path / "o2"), default_split="train"), None)
    assert r["rows_by_split"] == {"train": 64, "test": 0} and r["defaulted_split_files"] == 1


def test_bad_lines_name_file_line_and_field(workspace, src_tree):
    path = src_tree / "train" / "game24.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    original = lines[2]
    rec = json.loads(lines[2])
    rec["ground_truth"] = "not a dict"
    lines[2] = json.dumps(rec)
    lines[5] = "{broken json"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"train/game24\.jsonl:3: field 'ground_truth': expected a JSON object"):
        run(workspace, VerlConvertParams(src=str(src_tree), shuffle=False), None)
    assert not workspace.path("data/verl").exists()
    assert workspace.path("data/verl.failed.json").is_file()
    lines[2] = original  # one bad line of 256 is within --on-error skip's 1% allowance
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = run(workspace, VerlConvertParams(src=str(src_tree), on_error="skip"), None)
    assert report["skipped"] == 1 and report["rows"] == 255
    assert report["per_file"]["train/game24.parquet"] == {"rows": 63, "skipped": 1, "split": "train"}
    man = json.loads(workspace.path("data/verl/manifest.json").read_text())
    assert man["errors"]["skipped_examples"][0].startswith("train/game24.jsonl:6: not valid JSON")


def _write_rl_prompts(ws, shared_data: Path) -> None:
    from llmctl.core.data.prompts import parse_gsm8k_gold

    for split, n in (("train", 30), ("test", 20)):
        with open(shared_data / "gsm8k" / f"{split}.jsonl", encoding="utf-8") as f:
            recs = [json.loads(line) for _, line in zip(range(n), f, strict=False)]
        rows = [{"prompt": r["question"], "gold": parse_gsm8k_gold(r["answer"]), "data_source": "openai/gsm8k",
                 "index": i} for i, r in enumerate(recs)]
        ws.path(f"data/rl_prompts_{split}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
    arith = [{"prompt": f"What is {a} + {a + 1}?", "gold": str(2 * a + 1), "level": 1,
              "data_source": "llmctl/arithmetic", "index": a} for a in range(10)]
    ws.path("data/arithmetic_prompts.jsonl").write_text("".join(json.dumps(x) + "\n" for x in arith))


def test_rl_prompts_and_kinds_side_by_side(workspace, src_tree, shared_data):
    from llmctl.core.data.prompts import format_question

    run(workspace, VerlConvertParams(src=str(src_tree)), None)
    _write_rl_prompts(workspace, shared_data)
    report = run(workspace, VerlConvertParams(source_kind="rl-prompts"), None)
    assert report["rows_by_split"] == {"train": 40, "test": 20}
    out = workspace.path("data/verl")
    assert (out / "bootcamp_merged" / "train" / "bootcamps.parquet").is_file()  # kept
    rows = pq.read_table(out / "rl_prompts_merged" / "train" / "rl_prompts.parquet").to_pylist()
    src = {r["prompt"]: r for r in _jsonl(workspace.path("data/rl_prompts_train.jsonl"))}
    src.update({r["prompt"]: r for r in _jsonl(workspace.path("data/arithmetic_prompts.jsonl"))})
    for r in rows:
        question = r["prompt"][0]["content"].split("\n\n", 1)[1]
        rec = src[question]
        assert r["prompt"] == [{"role": "user", "content": format_question(question)}]
        assert r["data_source"] == rec["data_source"] and r["ability"] == "math"
        assert r["reward_model"] == {"style": "rule", "ground_truth": rec["gold"]}
    assert Counter(r["data_source"] for r in rows) == {"openai/gsm8k": 30, "llmctl/arithmetic": 10}
    kinds = json.loads((out / "manifest.json").read_text())["kinds"]
    assert set(kinds) == {"bootcamp", "rl_prompts"}


def test_cli_from_flag_and_errors(workspace, src_tree):
    env = {**os.environ, "LLMCTL_WORKSPACE": str(workspace.root)}
    cmd = [sys.executable, "-m", "llmctl.core.cli", "verl", "convert"]
    ok = subprocess.run(cmd + ["--from", "bootcamp", "--src", str(src_tree), "--seed", "3"], env=env,
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "4 files, 256 rows" in ok.stdout and "put under 'test'" in ok.stdout
    bad = subprocess.run(cmd + ["--from", "nonsense"], env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--from must be one of bootcamp, rl-prompts" in bad.stderr
    with pytest.raises(FileNotFoundError, match="llmctl prepare rl"):
        run(workspace, VerlConvertParams(source_kind="rl-prompts"), None)
