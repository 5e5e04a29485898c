"""prepare sft on the real Alpaca / Dolly / GSM8K files: packing invariants, masks, leaks, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stage_support import invoke, prepare

from llmctl.core.data.chat import encode_chat
from llmctl.core.data.prepare_sft import (
    check_gsm8k_example,
    check_gsm8k_row,
    iter_examples,
    question_key,
    rows_with_source,
)
from llmctl.core.data.prompts import format_question, gsm8k_target
from llmctl.core.tokenizer import EOT_ID

pytestmark = pytest.mark.usefixtures("hf_cache")


def sources(shared: Path) -> dict:
    return {"alpaca": str(shared / "alpaca" / "alpaca_small.json"),
            "dolly": str(shared / "dolly" / "databricks-dolly-15k.head49.jsonl"),
            "gsm8k": str(shared / "gsm8k")}


@pytest.fixture(scope="module")
def built(tmp_path_factory, shared_data):
    """One full run on the real files (all of them), through the CLI, read back."""
    root = tmp_path_factory.mktemp("sft") / "ws"
    status = prepare(root, "sft", **sources(shared_data), include_arithmetic=60)
    path = root / "data" / "sft_packed.h5"
    with h5py.File(path, "r") as f:
        arrays = {k: f[k][:] for k in f}
        attrs = dict(f.attrs)
    manifest = json.loads((root / "data" / "sft_packed.h5.manifest.json").read_text())
    return {"root": root, "path": path, "a": arrays, "attrs": attrs, "manifest": manifest,
            "status": status}


def test_artifact_is_ready_with_counts(built):
    arts = {a["name"]: a for a in built["status"]["artifacts"]}
    assert arts["sft_packed"]["state"] == "ready", arts["sft_packed"]
    c = built["manifest"]["counts"]
    assert c["examples_gsm8k"] == 7473 and c["examples_alpaca"] == 2000 and c["examples_arithmetic"] == 60
    assert c["rows"] == built["a"]["tokens"].shape[0]
    assert c["skipped"] == 0
    for key in ("rows", "examples", "tokens", "truncated", "efficiency", "skipped"):
        assert key in c
    attrs = built["attrs"]
    assert json.loads(attrs["counts"]) == c
    assert json.loads(attrs["tokenizer"])["eot_id"] == EOT_ID
    assert json.loads(attrs["parameters"])["seq_len"] == 1024
    assert "per_source" in json.loads(attrs["sources"])
    assert attrs["truncations"] == c["truncated"]
    assert "{%" in attrs["chat_template"]


def test_packing_invariants(built):
    a = built["a"]
    tok, mask, ex = a["tokens"], a["loss_mask"], a["example_ids"]
    n_rows, seq_len = tok.shape
    assert seq_len == 1024 and mask.shape == ex.shape == tok.shape
    assert tok.dtype == np.int32 and ex.dtype == np.int32
    pad = ex < 0
    assert (tok[pad] == EOT_ID).all() and (mask[pad] == 0).all()
    # efficiency is the share of real tokens, as recorded
    eff = 1.0 - pad.mean()
    assert abs(eff - built["attrs"]["packing_efficiency"]) < 1e-9
    assert abs(built["manifest"]["counts"]["efficiency"] - round(eff, 4)) < 1e-9
    assert eff > 0.9
    # every example lies in exactly one row, contiguously, where the index says
    n_ex = len(a["example_source"])
    assert built["manifest"]["counts"]["examples"] == n_ex
    rows_of = {}
    for r in range(n_rows):
        ids = ex[r][ex[r] >= 0]
        change = np.flatnonzero(np.diff(ids)) + 1
        runs = np.split(ids, change)
        assert len({int(x[0]) for x in runs}) == len(runs), "an example is split inside a row"
        for run in runs:
            assert int(run[0]) not in rows_of, "an example crosses a row boundary"
            rows_of[int(run[0])] = r
        # padding only after the real tokens
        used = int((ex[r] >= 0).sum())
        assert (ex[r][:used] >= 0).all()
    assert sorted(rows_of) == list(range(n_ex))
    for j in range(0, n_ex, 97):
        r, s, n = a["example_row"][j], a["example_start"][j], a["example_length"][j]
        assert rows_of[j] == r and (ex[r, s:s + n] == j).all()


def test_mask_only_on_assistant_tokens(built, shared_data, tokenizer):
    """Every example: trained span = one run at its end, right after ``Assistant:\\n``, ending in EOT
    (unless truncated); re-encoding a sample of source records reproduces the packed tokens and mask."""
    a = built["a"]
    marker = tokenizer.encode("Assistant:\n")
    for j in range(len(a["example_source"])):
        r, s, n = a["example_row"][j], a["example_start"][j], a["example_length"][j]
        ids, m = a["tokens"][r, s:s + n], a["loss_mask"][r, s:s + n]
        on = np.flatnonzero(m)
        assert len(on) and on[-1] - on[0] + 1 == len(on)
        start = on[0]
        assert list(ids[start - 3:start]) == marker
        truncated = n == 1024
        assert on[-1] == n - 1
        if not truncated:
            assert ids[-1] == EOT_ID
        assert (ids[:start] == EOT_ID).sum() == 1  # the user turn's EOT; the question is never trained
    # exact re-encoding of real records
    by_prompt = {}
    for j in range(len(a["example_source"])):
        r, s, n = a["example_row"][j], a["example_start"][j], a["example_length"][j]
        by_prompt[tuple(a["tokens"][r, s:s + min(n, 48)])] = (a["tokens"][r, s:s + n], a["loss_mask"][r, s:s + n])
    recs = json.loads((shared_data / "alpaca" / "alpaca_small.json").read_text())[::50]
    for rec in recs:
        user = rec["instruction"].strip() + (f"\n\n{rec['input'].strip()}" if rec["input"].strip() else "")
        ids, mask = encode_chat([{"role": "user", "content": user},
                                 {"role": "assistant", "content": rec["output"].strip()}], tokenizer)
        got = by_prompt[tuple(ids[:48])]
        assert list(got[0]) == ids[:1024] and list(got[1]) == mask[:1024]


def test_gsm8k_row_preview_check(built, shared_data, tokenizer):
    path = built["path"]
    answers = {}
    for line in (shared_data / "gsm8k" / "train.jsonl").read_text().splitlines():
        r = json.loads(line)
        answers[question_key(r["question"])] = r["answer"]
    rows = rows_with_source(path, "gsm8k")
    assert rows
    checked = 0
    for row in rows[:: max(1, len(rows) // 25)]:
        for e in check_gsm8k_row(path, row, tokenizer):
            # exactly the target of the original answer plus EOT, and the exact user turn
            answer = answers[question_key(e["question"])]
            assert e["completion"] == gsm8k_target(answer) + "<|endoftext|>"
            assert e["prompt"] == "User:\n" + format_question(e["question"]) + "<|endoftext|>Assistant:\n"
            checked += 1
    assert checked >= 25


def test_check_catches_a_misaligned_mask(built, tmp_path, tokenizer):
    bad = tmp_path / "bad.h5"
    shutil.copy(built["path"], bad)
    row = rows_with_source(bad, "gsm8k")[0]
    e = check_gsm8k_row(bad, row, tokenizer)[0]
    with h5py.File(bad, "r+") as f:
        m = f["loss_mask"][row]
        first = e["start"] + np.flatnonzero(m[e["start"]:e["start"] + e["length"]])[0]
        m[first - 1] = 1  # the assistant marker's newline wrongly trained
        f["loss_mask"][row] = m
    with pytest.raises(ValueError, match="trained text is not"):
        check_gsm8k_row(bad, row, tokenizer)


def test_preview_check_gsm8k_from_the_cli(built, tmp_path, monkeypatch):
    """``llmctl preview sft_packed --check-gsm8k``: ok on the real rows, exit 1 on a broken mask."""
    root, path = built["root"], built["path"]
    row = rows_with_source(path, "gsm8k")[0]
    res = invoke(["preview", "sft_packed", "--row", str(row), "--count", "2", "--check-gsm8k",
                  "--workspace", str(root)], monkeypatch)
    assert res.exit_code == 0, res.output
    assert f"in rows {row}..{row + 1} ok" in res.output
    others = set(range(len(built["a"]["tokens"]))) - set(rows_with_source(path, "gsm8k"))
    if others:  # a row without GSM8K examples is refused with the next row that has one
        res = invoke(["preview", "sft_packed", "--row", str(min(others)), "--count", "1", "--check-gsm8k",
                      "--workspace", str(root)], monkeypatch)
        assert res.exit_code == 1 and "no GSM8K example" in res.output
    bad = tmp_path / "bad.h5"
    shutil.copy(path, bad)
    with h5py.File(bad, "r+") as f:
        m = f["loss_mask"][row]
        m[:] = 1  # the question trained too
        f["loss_mask"][row] = m
    res = invoke(["preview", str(bad), "--row", str(row), "--count", "1", "--check-gsm8k",
                  "--workspace", str(root)], monkeypatch)
    assert res.exit_code == 1 and "GSM8K check failed" in res.output and f"row {row}" in res.output


def test_no_gsm8k_test_question_reaches_sft(built, shared_data, tokenizer):
    test_q = {question_key(json.loads(x)["question"])
              for x in (shared_data / "gsm8k" / "test.jsonl").read_text().splitlines()}
    train_q = {question_key(json.loads(x)["question"])
               for x in (shared_data / "gsm8k" / "train.jsonl").read_text().splitlines()}
    seen = {question_key(check_gsm8k_example(e)["question"])
            for e in iter_examples(built["path"], tokenizer, source="gsm8k")}
    assert seen == train_q  # the detector sees every train question …
    assert not seen & test_q  # … and no test question


def test_test_split_file_is_refused(workspace, shared_data, monkeypatch):
    res = invoke(["prepare", "sft", "--workspace", str(workspace.root), "--sources", "gsm8k",
                  "--gsm8k", str(shared_data / "gsm8k" / "test.jsonl")], monkeypatch)
    assert res.exit_code == 1
    assert "looks like a test split" in res.output
    assert not workspace.path("data/sft_packed.h5").exists()


def test_small_rows_truncate_and_sample(workspace, shared_data, monkeypatch):
    src = sources(shared_data)
    res = invoke(["prepare", "sft", "--workspace", str(workspace.root), "--alpaca", src["alpaca"],
                  "--dolly", src["dolly"], "--gsm8k", src["gsm8k"], "--max-examples", "40",
                  "--seq-len", "128", "--include-arithmetic", "12", "--arithmetic-levels", "1",
                  "--arithmetic-levels", "7"], monkeypatch)
    assert res.exit_code == 0, res.output
    m = json.loads(workspace.path("data/sft_packed.h5.manifest.json").read_text())
    c = m["counts"]
    assert c["truncated"] > 0
    assert c["examples_alpaca"] <= 40 and c["examples_gsm8k"] <= 40 and c["examples_arithmetic"] == 12
    assert c["examples"] == sum(c[f"examples_{k}"] for k in ("alpaca", "dolly", "gsm8k", "arithmetic"))
    with h5py.File(workspace.path("data/sft_packed.h5"), "r") as f:
        assert f["tokens"].shape[1] == 128
        assert f.attrs["truncations"] == c["truncated"]
        # truncated examples keep their first tokens and still have a trained span
        for j in np.flatnonzero(f["example_length"][:] == 128):
            r = f["example_row"][j]
            assert f["loss_mask"][r].sum() > 0


# ---- bad input -----------------------------------------------------------------------------------

def _lines(path: Path, n: int) -> list[str]:
    return path.read_text().splitlines()[:n]


def _bad_cases(shared: Path, tmp: Path) -> list[tuple[str, str, Path, str]]:
    """(source, expected message part, file, line:field) for each kind of bad record."""
    g = _lines(shared / "gsm8k" / "train.jsonl", 20)
    cases = []

    def write(name, lines):
        p = tmp / name
        p.write_text("\n".join(lines) + "\n")
        return p

    rec = json.loads(g[4])
    missing = dict(rec)
    del missing["answer"]
    cases.append(("gsm8k", "field 'answer': missing", write("missing.jsonl", g[:4] + [json.dumps(missing)] + g[5:]), ":5:"))
    wrong = dict(rec, question=17)
    cases.append(("gsm8k", "field 'question': expected a string, got int",
                  write("wrong.jsonl", g[:4] + [json.dumps(wrong)] + g[5:]), ":5:"))
    empty = dict(rec, question="  ")
    cases.append(("gsm8k", "field 'question': empty", write("empty.jsonl", g[:4] + [json.dumps(empty)] + g[5:]), ":5:"))
    nogold = dict(rec, answer=rec["answer"].replace("####", "answer:"))
    cases.append(("gsm8k", "field 'answer': no '#### N'", write("nogold.jsonl", g[:4] + [json.dumps(nogold)] + g[5:]),
                  ":5:"))
    badnum = dict(rec, answer=rec["answer"].rsplit("####", 1)[0] + "#### about 5")
    cases.append(("gsm8k", "not a number", write("badnum.jsonl", g[:4] + [json.dumps(badnum)] + g[5:]), ":5:"))
    cases.append(("gsm8k", "invalid JSON", write("broken.jsonl", g[:4] + ['{"question": "x", "answer'] + g[5:]), ":5:"))
    a = json.loads((shared / "alpaca" / "alpaca_small.json").read_text())[:20]
    a[7] = {"instruction": "Say hi", "input": "", "output": ["hi"]}
    p = tmp / "alpaca_bad.json"
    p.write_text(json.dumps(a, indent=1))
    cases.append(("alpaca", "field 'output': expected a string, got list", p, ":8:"))
    d = _lines(shared / "dolly" / "databricks-dolly-15k.head49.jsonl", 10)
    drec = json.loads(d[2])
    del drec["response"]
    # a blank line before the bad record: the reported line is still the file's line
    cases.append(("dolly", "field 'response': missing", write("dolly_bad.jsonl", d[:2] + ["", json.dumps(drec)] + d[3:]),
                  ":4:"))
    return cases


def test_bad_records_fail_with_file_line_field(workspace, shared_data, tmp_path, monkeypatch):
    out = workspace.path("data/sft_packed.h5")
    for source, msg, path, where in _bad_cases(shared_data, tmp_path):
        res = invoke(["prepare", "sft", "--workspace", str(workspace.root), "--sources", source,
                      f"--{source}", str(path)], monkeypatch)
        assert res.exit_code == 1, (source, msg, res.output)
        assert f"{path}{where}" in res.output and msg in res.output, res.output
        assert not out.exists()
        assert (out.parent / "sft_packed.h5.failed.json").exists()


def test_bad_records_skip_is_counted(workspace, shared_data, tmp_path, monkeypatch):
    cases = _bad_cases(shared_data, tmp_path)
    gsm = [c for c in cases if c[0] == "gsm8k"]
    # all gsm8k kinds in one file of 60 good records: skipped, counted, reported
    good = _lines(shared_data / "gsm8k" / "train.jsonl", 300)[100:300]
    lines = list(good)
    for _, _, path, _ in gsm:
        lines.append(path.read_text().splitlines()[4])
    p = tmp_path / "mixed.jsonl"
    p.write_text("\n".join(lines) + "\n")
    res = invoke(["prepare", "sft", "--workspace", str(workspace.root), "--sources", "gsm8k", "--gsm8k", str(p),
                  "--on-error", "skip"], monkeypatch)
    # 6 bad of 206 is over the 1% limit: refused with every reason listed
    assert res.exit_code == 1 and "records skipped" in res.output
    p.write_text("\n".join(good + [lines[-1]]) + "\n")  # 1 bad of 201
    res = invoke(["prepare", "sft", "--workspace", str(workspace.root), "--sources", "gsm8k", "--gsm8k", str(p),
                  "--on-error", "skip"], monkeypatch)
    assert res.exit_code == 0, res.output
    m = json.loads(workspace.path("data/sft_packed.h5.manifest.json").read_text())
    assert m["counts"]["skipped"] == 1 and m["counts"]["examples_gsm8k"] == 200
    assert f"{p}:201:" in m["errors"]["skipped_examples"][0]


def test_missing_file_and_unknown_source(workspace, monkeypatch, tmp_path):
    res = invoke(["prepare", "sft", "--workspace", str(workspace.root), "--sources", "alpaca",
                  "--alpaca", str(tmp_path / "nope.json")], monkeypatch)
    assert res.exit_code == 1 and "no such file" in res.output
    res = invoke(["prepare", "sft", "--workspace", str(workspace.root), "--sources", "nosuch"], monkeypatch)
    assert res.exit_code == 2 and "unknown source" in res.output


# ---- packing ---------------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 70), min_size=1, max_size=120), st.integers(8, 64))
def test_best_fit_decreasing_packs_every_example_once(lengths, cap):
    from llmctl.core.data.packing import best_fit_decreasing, pack_examples

    clipped = [min(n, cap) for n in lengths]
    bins = best_fit_decreasing(clipped, cap)
    assert sorted(j for b in bins for j in b) == list(range(len(lengths)))
    assert all(sum(clipped[j] for j in b) <= cap for b in bins)
    # any-fit property: a bin is opened only when its first item fits no open bin, so any two bins
    # together hold more than one row (hence fewer than 2 x volume / cap + 1 rows)
    fills = sorted(sum(clipped[j] for j in b) for b in bins)
    assert len(fills) < 2 or fills[0] + fills[1] > cap
    examples = [([j % 50000] * n, [j % 2] * n) for j, n in enumerate(lengths)]
    p = pack_examples(examples, cap, pad_id=EOT_ID, seed=1)
    assert p.truncated == sum(n > cap for n in lengths)
    assert p.real_tokens == sum(clipped) == int((p.example_ids >= 0).sum())
    for j, n in enumerate(clipped):
        r, s = p.example_row[j], p.example_start[j]
        assert (p.tokens[r, s:s + n] == j % 50000).all() and (p.loss_mask[r, s:s + n] == j % 2).all()
        assert (p.example_ids[r, s:s + n] == j).all()
