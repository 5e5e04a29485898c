"""prepare prefs on the real HH-RLHF and UltraFeedback files, bad input, and the torch collator."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch
from stage_support import invoke, prepare, read_jsonl

from llmctl.core.data.chat import encode_chat, encode_prompt
from llmctl.core.data.prepare_prefs import parse_hh_transcript, prompt_key
from llmctl.core.tokenizer import EOT_ID
from llmctl.trainers.pref_data import PreferenceDataset, collate_pairs, encode_pair, read_pairs

pytestmark = pytest.mark.usefixtures("hf_cache")


@pytest.fixture(scope="module")
def built(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("prefs") / "ws"
    uf = shared_data / "ultrafeedback"
    params = {"hh_rlhf": [str(shared_data / "hh-rlhf" / "*.jsonl.gz")],
              "ultrafeedback": [str(uf / "ultrafeedback_binarized.train_clean.jsonl")],
              "ultrafeedback_test": [str(uf / "ultrafeedback_binarized.eval_clean.jsonl")]}
    status = prepare(root, "prefs", **params)
    data = root / "data"
    return {"root": root, "status": status,
            "train": read_pairs(data / "preferences.jsonl"), "test": read_pairs(data / "preferences_test.jsonl"),
            "manifest": json.loads((data / "preferences.jsonl.manifest.json").read_text())}


def test_ready_and_counted(built):
    arts = {a["name"]: a for a in built["status"]["artifacts"]}
    assert arts["preferences"]["state"] == "ready", arts["preferences"]
    assert arts["preferences_test"]["state"] == "ready"
    c = built["manifest"]["counts"]
    assert c["pairs"] == len(built["train"])
    # the real files: 5 UltraFeedback + 36 HH-RLHF identical pairs, 17 HH prompt mismatches,
    # 11 HH + 2 UltraFeedback empty final replies
    assert c["dropped_identical"] == 41
    assert c["dropped_prompt_mismatch"] == 17
    assert c["dropped_empty_reply"] == 13
    assert c["skipped"] == 0
    per = built["manifest"]["per_source"]
    assert per["ultrafeedback/ultrafeedback_binarized.eval_clean"] == {"train": 0, "test": 199}
    assert per["ultrafeedback/ultrafeedback_binarized.train_clean"] == {"train": 995 - 1, "test": 0}
    total_hh = sum(v["train"] + v["test"] for k, v in per.items() if k.startswith("hh-rlhf/"))
    assert total_hh == 2312 + 2354 + 1137 + 2749 - 36 - 17 - 11


def test_trl_conversational_format(built):
    for p in built["train"] + built["test"]:
        assert set(p) == {"prompt", "chosen", "rejected", "source"}
        assert p["prompt"] and all(set(m) == {"role", "content"} for m in p["prompt"])
        assert p["prompt"][-1]["role"] == "user" or p["source"].startswith("hh-rlhf")
        for side in ("chosen", "rejected"):
            assert len(p[side]) == 1 and p[side][0]["role"] == "assistant" and p[side][0]["content"]
        assert p["chosen"][0]["content"] != p["rejected"][0]["content"]


def test_no_prompt_in_both_files(built):
    train = {prompt_key(p["prompt"]) for p in built["train"]}
    test = {prompt_key(p["prompt"]) for p in built["test"]}
    assert test and not train & test
    hh_test = [p for p in built["test"] if p["source"].startswith("hh-rlhf")]
    hh_all = hh_test + [p for p in built["train"] if p["source"].startswith("hh-rlhf")]
    assert 0.02 < len(hh_test) / len(hh_all) < 0.09  # the seeded 5% prompt-hash split


def test_hh_split_at_last_assistant_turn(built, shared_data):
    recs = read_jsonl(shared_data / "hh-rlhf" / "helpful-base-test.jsonl.gz")
    pairs = {(prompt_key(p["prompt"]), p["chosen"][0]["content"]): p
             for p in built["train"] + built["test"] if p["source"] == "hh-rlhf/helpful-base-test"}
    checked = 0
    for rec in recs[:300]:
        k = rec["chosen"].rfind("\n\nAssistant:")
        head, reply = rec["chosen"][:k], rec["chosen"][k + len("\n\nAssistant:"):].strip()
        if head != rec["rejected"][:rec["rejected"].rfind("\n\nAssistant:")] or not reply:
            continue
        prompt = parse_hh_transcript(head)
        p = pairs.get((prompt_key(prompt), reply))
        if p is None:
            continue  # identical pair (dropped)
        assert rec["rejected"].endswith(p["rejected"][0]["content"])
        # the pair's conversation renders back to the original transcript
        text = "".join(("\n\nHuman: " if m["role"] == "user" else "\n\nAssistant: ") + m["content"]
                       for m in p["prompt"] + p["chosen"])
        assert text.split() == rec["chosen"].split()
        checked += 1
    assert checked > 250


def test_ultrafeedback_message_list_form_equals_flat(workspace, shared_data, tmp_path, monkeypatch):
    """The hub's message-list form (trl-lib / H4 style) gives the same pairs as the flat form."""
    flat = read_jsonl(shared_data / "ultrafeedback" / "ultrafeedback_binarized.eval_clean.jsonl")[:60]
    lists = tmp_path / "uf_lists.jsonl"
    with open(lists, "w") as f:
        for r in flat:
            user = {"role": "user", "content": r["prompt"]}
            f.write(json.dumps({"prompt": r["prompt"], "prompt_id": "x",
                                "chosen": [user, {"role": "assistant", "content": r["chosen"]}],
                                "rejected": [user, {"role": "assistant", "content": r["rejected"]}],
                                "score_chosen": 8.0, "score_rejected": 5.0}) + "\n")
    flat_file = tmp_path / "uf_flat.jsonl"
    flat_file.write_text("".join(json.dumps(r) + "\n" for r in flat))
    got = {}
    for name, path in (("lists", lists), ("flat", flat_file)):
        res = invoke(["prepare", "prefs", "--workspace", str(workspace.root), "--hh-rlhf", "",
                      "--ultrafeedback", str(path), "--test-fraction", "0.2"], monkeypatch)
        assert res.exit_code == 0, res.output
        got[name] = [{k: v for k, v in p.items() if k != "source"}
                     for p in read_pairs(workspace.path("data/preferences.jsonl"))]
    assert got["lists"] == got["flat"] and len(got["flat"]) > 30


def _hh_file(tmp: Path, name: str, recs: list[dict]) -> Path:
    p = tmp / name
    with gzip.open(p, "wt", encoding="utf-8") as f:
        for r in recs:
            f.write(json.dumps(r) + "\n")
    return p


def test_bad_records(workspace, shared_data, tmp_path, monkeypatch):
    good = read_jsonl(shared_data / "hh-rlhf" / "harmless-base-test.jsonl.gz")[:120]

    def clean(r):
        (hc, _, rc), (hr, _, rr) = (r[k].rpartition("\n\nAssistant:") for k in ("chosen", "rejected"))
        return hc == hr and rc.strip() and rr.strip() and rc.strip() != rr.strip()

    good = [r for r in good if clean(r)][:100]
    base = good[6]
    cases = [
        ({"rejected": base["rejected"]}, "field 'chosen': missing"),
        (dict(base, chosen=5), "field 'chosen': expected a string, got int"),
        (dict(base, rejected=" "), "field 'rejected': empty"),
        (dict(base, chosen="\n\nHuman: hi there", rejected="\n\nHuman: hi there"), "no '\\n\\nAssistant:' turn"),
        (dict(base, chosen="Hello\n\nAssistant: x", rejected="Hello\n\nAssistant: y"),
         "does not start with '\\n\\nHuman:'"),
    ]
    outs = [workspace.path("data/preferences.jsonl"), workspace.path("data/preferences_test.jsonl")]
    for k, (bad, msg) in enumerate(cases):
        recs = good[:6] + [bad] + good[7:]
        path = _hh_file(tmp_path, "hh_bad.jsonl.gz", recs)
        args = ["prepare", "prefs", "--workspace", str(workspace.root), "--hh-rlhf", str(path), "--ultrafeedback", ""]
        before = [o.read_bytes() if o.exists() else None for o in outs]
        res = invoke(args, monkeypatch)
        assert res.exit_code == 1, res.output
        assert f"{path}:7: " in res.output and msg in res.output, res.output
        # atomic: nothing written on the first failure, the previous outputs untouched later
        assert [o.read_bytes() if o.exists() else None for o in outs] == before
        assert k > 0 or before == [None, None]
        res = invoke(args + ["--on-error", "skip"], monkeypatch)
        assert res.exit_code == 0, res.output
        m = json.loads(workspace.path("data/preferences.jsonl.manifest.json").read_text())
        assert m["counts"]["skipped"] == 1 and f"{path}:7:" in m["errors"]["skipped_examples"][0]
    # a mismatched prompt is counted and dropped, not an error
    mism = dict(base, rejected="\n\nHuman: something else\n\nAssistant: no")
    path = _hh_file(tmp_path, "hh_mism.jsonl.gz", good[:6] + [mism] + good[7:])
    res = invoke(["prepare", "prefs", "--workspace", str(workspace.root), "--hh-rlhf", str(path),
                  "--ultrafeedback", ""], monkeypatch)
    assert res.exit_code == 0, res.output
    m = json.loads(workspace.path("data/preferences.jsonl.manifest.json").read_text())
    assert m["counts"]["dropped_prompt_mismatch"] == 1
    assert m["dropped_examples"] == [f"{path}:7: prompt_mismatch"]
    assert m["counts"]["pairs"] + json.loads(workspace.path("data/preferences_test.jsonl.manifest.json")
                                             .read_text())["counts"]["pairs"] == 99


def test_uf_bad_message_list(workspace, tmp_path, shared_data, monkeypatch):
    r = read_jsonl(shared_data / "ultrafeedback" / "ultrafeedback_binarized.eval_clean.jsonl")[0]
    bad = {"prompt": r["prompt"], "chosen": [{"role": "user", "content": r["prompt"]}],
           "rejected": [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": "x"}]}
    p = tmp_path / "uf.jsonl"
    p.write_text(json.dumps(bad) + "\n")
    res = invoke(["prepare", "prefs", "--workspace", str(workspace.root), "--hh-rlhf", "", "--ultrafeedback", str(p)],
                 monkeypatch)
    assert res.exit_code == 1 and f"{p}:1: field 'chosen': the last message is not the assistant's" in res.output


# ---- the collator ---------------------------------------------------------------------------------

def test_pair_encoding_matches_the_chat_template(built, tokenizer):
    pairs = built["train"][:40] + built["test"][:10]
    ds = PreferenceDataset(pairs, tokenizer, max_len=4096)
    for p, item in zip(pairs, ds.items, strict=True):
        for side in ("chosen", "rejected"):
            ids, mask = encode_chat(p["prompt"] + p[side], tokenizer)
            assert item["prompt_ids"] + item[f"{side}_ids"] == ids
            # the completion = exactly the final assistant turn (content + EOT)
            assert mask[len(item["prompt_ids"]):] == [1] * len(item[f"{side}_ids"])
            assert item[f"{side}_ids"][-1] == EOT_ID
        assert item["prompt_ids"] == encode_prompt(p["prompt"], tokenizer)
    batch = collate_pairs([ds[i] for i in range(8)])
    width = batch["chosen_ids"].shape[1]
    assert batch["rejected_ids"].shape == (8, width) and batch["chosen_ids"].dtype == torch.long
    for i in range(8):
        it = ds[i]
        pl = int(batch["prompt_lens"][i])
        assert pl == len(it["prompt_ids"])
        for side in ("chosen", "rejected"):
            n = int(batch[f"{side}_lens"][i])
            row, m = batch[f"{side}_ids"][i], batch[f"{side}_mask"][i]
            assert row[:n].tolist() == it["prompt_ids"] + it[f"{side}_ids"]
            assert (row[n:] == EOT_ID).all() and (m[n:] == 0).all() and (m[:pl] == 0).all()
            assert m[pl:n].tolist() == [1] * (n - pl)
            assert int(row[n - 1]) == EOT_ID  # the last real token: where a reward model reads
    assert int(max(batch["chosen_lens"].max(), batch["rejected_lens"].max())) == width


def test_pair_truncation(tokenizer):
    long_prompt = [{"role": "user", "content": "word " * 400}]
    pair = {"prompt": long_prompt, "chosen": [{"role": "assistant", "content": "yes " * 30}],
            "rejected": [{"role": "assistant", "content": "no " * 200}]}
    it = encode_pair(pair, tokenizer, max_len=128)
    assert it["truncated"]
    assert len(it["prompt_ids"]) + len(it["rejected_ids"]) <= 128
    assert len(it["prompt_ids"]) + len(it["chosen_ids"]) <= 128
    assert len(it["prompt_ids"]) == 64  # a long prompt keeps max_len // 2, from the end
    full = encode_prompt(long_prompt, tokenizer)
    assert it["prompt_ids"] == full[-64:]
    assert it["chosen_ids"][-1] == EOT_ID  # the short reply fits whole
    short = encode_pair({"prompt": [{"role": "user", "content": "hi"}], "chosen": "a", "rejected": "b"},
                        tokenizer, max_len=128)
    assert not short["truncated"]
    batch = collate_pairs([it, short])
    assert batch["chosen_ids"].shape[1] == 128
