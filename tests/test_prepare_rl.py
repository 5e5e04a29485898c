"""prepare rl on the real GSM8K files: every gold cross-checked, no test leak, arithmetic, bad input."""

from __future__ import annotations

import json
import re

import pytest
from stage_support import invoke, prepare, read_jsonl

from llmctl.core.data.prepare_sft import question_key

pytestmark = pytest.mark.usefixtures("hf_cache")


@pytest.fixture(scope="module")
def built(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("rl") / "ws"
    params = {"gsm8k": str(shared_data / "gsm8k"), "arithmetic_n": 40, "arithmetic_levels": [1, 2, 6]}
    status = prepare(root, "rl", **params)
    data = root / "data"
    return {"root": root, "status": status,
            "train": read_jsonl(data / "rl_prompts_train.jsonl"), "test": read_jsonl(data / "rl_prompts_test.jsonl"),
            "arith": read_jsonl(data / "arithmetic_prompts.jsonl"),
            "manifests": {k: json.loads((data / f"{k}.manifest.json").read_text())
                          for k in ("rl_prompts_train.jsonl", "rl_prompts_test.jsonl", "arithmetic_prompts.jsonl")}}


def test_all_three_artifacts_ready(built):
    arts = {a["name"]: a for a in built["status"]["artifacts"]}
    for name in ("rl_prompts_train", "rl_prompts_test", "arithmetic_prompts"):
        assert arts[name]["state"] == "ready", arts[name]
    m = built["manifests"]
    assert m["rl_prompts_train.jsonl"]["counts"]["rows"] == 7473
    assert m["rl_prompts_test.jsonl"]["counts"]["rows"] == 1319
    assert m["arithmetic_prompts.jsonl"]["counts"] == {"rows": 120, "level_1": 40, "level_2": 40, "level_6": 40}


def test_every_gold_cross_checked(built, shared_data):
    """Each row = the source record in order: raw question, gold = an independent parse of '#### N'."""
    for split in ("train", "test"):
        src = read_jsonl(shared_data / "gsm8k" / f"{split}.jsonl")
        rows = built[split]
        assert len(rows) == len(src)
        for i, (row, rec) in enumerate(zip(rows, src, strict=True)):
            m = re.search(r"####\s*(-?[\d,]+)\s*$", rec["answer"])
            assert m, rec["answer"]
            assert row["gold"] == str(int(m.group(1).replace(",", "")))
            assert row["prompt"] == rec["question"].strip()
            assert row["data_source"] == "openai/gsm8k" and row["index"] == i
    negatives = [r for r in built["train"] + built["test"] if r["gold"].startswith("-")]
    assert len(negatives) == 5
    assert any("," in json.loads(x)["answer"].split("####")[-1]
               for x in (shared_data / "gsm8k" / "train.jsonl").read_text().splitlines())


def test_no_test_question_in_train(built):
    test_q = {question_key(r["prompt"]) for r in built["test"]}
    assert not test_q & {question_key(r["prompt"]) for r in built["train"]}


def test_arithmetic_rows(built):
    rows = built["arith"]
    assert [r["level"] for r in rows] == [1] * 40 + [2] * 40 + [6] * 40
    for r in rows:
        assert r["data_source"] == "llmctl/arithmetic"
        expr = re.fullmatch(r"What is (.*)\?", r["prompt"]).group(1)
        assert r["gold"] == str(eval(expr))  # noqa: S307 - our own generated arithmetic
    assert all(re.fullmatch(r"What is \d \+ \d\?", r["prompt"]) for r in rows[:40])


def test_test_leak_is_dropped_and_test_file_refused(workspace, shared_data, tmp_path, monkeypatch):
    train = (shared_data / "gsm8k" / "train.jsonl").read_text().splitlines()[:50]
    test = (shared_data / "gsm8k" / "test.jsonl").read_text().splitlines()[:20]
    d = tmp_path / "gsm"
    d.mkdir()
    (d / "train.jsonl").write_text("\n".join(train + test[:3]) + "\n")  # 3 test questions leaked into train
    (d / "test.jsonl").write_text("\n".join(test) + "\n")
    res = invoke(["prepare", "rl", "--workspace", str(workspace.root), "--gsm8k", str(d), "--arithmetic-n", "2"],
                 monkeypatch)
    assert res.exit_code == 0, res.output
    m = json.loads(workspace.path("data/rl_prompts_train.jsonl.manifest.json").read_text())
    assert m["counts"] == {"rows": 50, "skipped": 0, "test_overlap_dropped": 3}
    res = invoke(["prepare", "rl", "--workspace", str(workspace.root), "--gsm8k-train", str(d / "test.jsonl"),
                  "--gsm8k-test", str(d / "test.jsonl")], monkeypatch)
    assert res.exit_code == 1 and "looks like a test split" in res.output


def test_bad_gold_and_fields(workspace, shared_data, tmp_path, monkeypatch):
    lines = (shared_data / "gsm8k" / "test.jsonl").read_text().splitlines()[:150]
    test = tmp_path / "gtest.jsonl"
    test.write_text("\n".join(lines[:30]) + "\n")
    train_lines = (shared_data / "gsm8k" / "train.jsonl").read_text().splitlines()[:150]
    rec = json.loads(train_lines[9])
    cases = [
        (dict(rec, answer=rec["answer"].rsplit("####", 1)[0] + "#### 1/2"), "field 'answer': final answer after '####' is not a number"),
        (dict(rec, answer="no gold here"), "field 'answer': no '#### N' final answer"),
        ({"answer": rec["answer"]}, "field 'question': missing"),
        (dict(rec, question=["x"]), "field 'question': expected a string, got list"),
        (dict(rec, question=""), "field 'question': empty"),
    ]
    out = workspace.path("data/rl_prompts_train.jsonl")
    for bad, msg in cases:
        train = tmp_path / "gtrain.jsonl"
        train.write_text("\n".join(train_lines[:9] + [json.dumps(bad)] + train_lines[10:]) + "\n")
        args = ["prepare", "rl", "--workspace", str(workspace.root), "--gsm8k-train", str(train),
                "--gsm8k-test", str(test), "--arithmetic-n", "1"]
        res = invoke(args, monkeypatch)
        assert res.exit_code == 1, res.output
        assert f"{train}:10: {msg}" in res.output, res.output
        assert not out.exists()
        res = invoke(args + ["--on-error", "skip"], monkeypatch)
        assert res.exit_code == 0, res.output
        m = json.loads(workspace.path("data/rl_prompts_train.jsonl.manifest.json").read_text())
        assert m["counts"]["rows"] == 149 and m["counts"]["skipped"] == 1
        assert f"{train}:10:" in m["errors"]["skipped_examples"][0]
        out.unlink()


def test_parquet_and_jsonl_gz_sources(workspace, shared_data, tmp_path, monkeypatch):
    """Local parquet and .jsonl.gz files go through the same ``datasets`` path as .jsonl."""
    import gzip

    import pyarrow as pa
    import pyarrow.parquet as pq

    train = read_jsonl(shared_data / "gsm8k" / "train.jsonl")[:80]
    test = read_jsonl(shared_data / "gsm8k" / "test.jsonl")[:40]
    pq.write_table(pa.Table.from_pylist(train), tmp_path / "gsm_train.parquet")
    with gzip.open(tmp_path / "gsm_eval.jsonl.gz", "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in test)
    res = invoke(["prepare", "rl", "--workspace", str(workspace.root), "--gsm8k-train",
                  str(tmp_path / "gsm_train.parquet"), "--gsm8k-test", str(tmp_path / "gsm_eval.jsonl.gz"),
                  "--arithmetic-n", "1"], monkeypatch)
    assert res.exit_code == 0, res.output
    rows = read_jsonl(workspace.path("data/rl_prompts_train.jsonl"))
    assert [r["prompt"] for r in rows] == [r["question"].strip() for r in train]
    assert len(read_jsonl(workspace.path("data/rl_prompts_test.jsonl"))) == 40
