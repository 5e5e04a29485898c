"""Headless previews of real artifacts built from ../shared/data (by the real stage runners when built)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
from tui_support import (
    gsm8k_rows,
    write_checkpoint,
    write_jsonl,
    write_sft_h5,
    write_tokens_h5,
    write_verl_parquet,
)

from llmctl.core.previews import (
    EOT_ID,
    TRAINED_STYLES,
    LineIndex,
    cell,
    preview,
    render,
    resolve_target,
    token_pieces,
)
from llmctl.core.stages import get_stage, resolve_params


def _run_stage(ws, name: str, overrides: dict) -> bool:
    """Run a built stage's real runner in this process; False when the stage is not built yet."""
    stage = get_stage(name)
    if not stage.built:
        return False
    params = resolve_params(stage, {}, overrides)
    run_dir = ws.runs_dir / name / "test"
    run_dir.mkdir(parents=True, exist_ok=True)
    stage.load_runner()(ws, params, run_dir)
    return True


@pytest.fixture(scope="module")
def built(tmp_path_factory, shared_data, tokenizer):
    """A workspace whose artifacts come from the real pipelines (or the same layout written here)."""
    from llmctl.core.workspace import init_workspace

    ws = init_workspace(tmp_path_factory.mktemp("prev") / "ws")
    pile = shared_data / "pile-sample"
    if not _run_stage(ws, "prepare-pretrain", {"inputs": [str(pile / "c4_demo.jsonl")], "val_fraction": 0.1}):
        write_tokens_h5(ws.path("data/pile_train.h5"), [json.loads(x)["text"] for x in
                        (pile / "c4_demo.jsonl").read_text().splitlines()[:40]], tokenizer)
    if not _run_stage(ws, "prepare-sft", {"sources": ["alpaca"], "alpaca": str(shared_data / "alpaca/alpaca_small.json"),
                                          "max_examples": 24, "seq_len": 256}):
        write_sft_h5(ws.path("data/sft_packed.h5"), shared_data, tokenizer, seq_len=256, n=24)
    if not _run_stage(ws, "prepare-rl", {"gsm8k": str(shared_data / "gsm8k"), "max_examples": 30, "arithmetic_n": 5}):
        write_jsonl(ws.path("data/rl_prompts_train.jsonl"), gsm8k_rows(shared_data, 30), "prepare-rl")
    write_verl_parquet(ws.path("data/verl"), shared_data, n=25)
    return ws


def test_token_file_decodes_back_to_text(built, tokenizer):
    path = built.path("data/pile_train.h5")
    with h5py.File(path, "r") as f:
        n = int(f["tokens"].shape[0])
        ids = [int(t) for t in f["tokens"][256:512]]
    pv = preview(path, start=1, count=1, tokenizer=tokenizer)
    assert pv.kind == "tokens-h5" and pv.total == math.ceil(n / 256) and (pv.start, pv.count) == (1, 1)
    body = pv.text.plain.split("\n", 1)[1]
    assert pv.text.plain.startswith("── window 1 · tokens 256–511")
    segs, cur = [], []
    for t in ids:
        if t == EOT_ID:
            segs.append(tokenizer.decode(cur) + "<|endoftext|>\n")
            cur = []
        else:
            cur.append(t)
    assert body.rstrip("\n") == ("".join(segs) + tokenizer.decode(cur)).rstrip("\n")
    assert any(k in pv.meta for k in ("attributes", "manifest")) and "datasets" in pv.meta


def test_sft_row_highlights_exactly_the_trained_tokens(built, tokenizer):
    path = built.path("data/sft_packed.h5")
    with h5py.File(path, "r") as f:
        toks, mask, exs = f["tokens"][1], f["loss_mask"][1], f["example_ids"][1]
        rows = int(f["tokens"].shape[0])
    pv = preview(path, start=1, tokenizer=tokenizer)
    assert pv.kind == "sft-h5" and pv.total == rows and pv.count == 1
    plain = pv.text.plain
    got = "".join(plain[s.start:s.end] for s in pv.text.spans if s.style in TRAINED_STYLES)
    want = "".join(text for i, _, text in token_pieces(toks, tokenizer)
                   if mask[i] and int(toks[i]) != EOT_ID and int(exs[i]) >= 0)
    assert got == want and len(got) > 20
    assert f"{int(mask.sum())} trained" in plain.splitlines()[0]


def test_token_pieces_join_split_characters(tokenizer):
    ids = tokenizer.encode("naïve café — 東京")
    pieces = token_pieces(ids, tokenizer)
    assert "".join(p[2] for p in pieces) == "naïve café — 東京"
    assert "\ufffd" not in "".join(p[2] for p in pieces)


def test_jsonl_pages(built):
    path = built.path("data/rl_prompts_train.jsonl")
    lines = path.read_text(encoding="utf-8").splitlines()
    pv = preview(path, start=5, count=4)
    assert pv.kind == "jsonl" and pv.total == len(lines) and pv.range_label == f"rows 5–8 of {len(lines)}"
    assert pv.records == [json.loads(x) for x in lines[5:9]]
    assert [r[0] for r in pv.rows] == ["5", "6", "7", "8"] and "prompt" in pv.columns and "gold" in pv.columns
    last = preview(path, start=10_000, count=4)  # past the end: the last page
    assert last.records == [json.loads(x) for x in lines[-4:]]


def test_parquet_pages_across_row_groups(built):
    import pyarrow.parquet as pq

    folder = built.path("data/verl")
    f = sorted(folder.rglob("*.parquet"))[0]
    whole = pq.read_table(f).to_pylist()
    pv = preview(f, start=8, count=5)  # row groups of 10: spans two
    assert pv.kind == "parquet" and pv.total == len(whole) and pv.records == whole[8:13]
    assert "reward_model" in pv.meta["schema"]
    assert "user: " in pv.rows[0][pv.columns.index("prompt")]
    d = preview(folder)
    assert d.kind == "parquet-dir" and len(d.files) == 2 and d.records


def test_folders_manifest_and_files(built, shared_data):
    ck = write_checkpoint(built, "pretrain", "r1", 20)
    assert resolve_target(built, "ckpt_pretrain") == ck
    pv = preview(ck)
    assert pv.kind == "checkpoint" and pv.meta["manifest"]["step"] == 20
    assert {name for name, _ in pv.files} == {"config.json", "manifest.json", "model.safetensors"}


def test_resolve_target_errors(built):
    with pytest.raises(FileNotFoundError, match="artifacts: pile_train"):
        resolve_target(built, "no_such_thing")
    with pytest.raises(FileNotFoundError, match="no ready checkpoint"):
        resolve_target(built, "ckpt_grpo")
    assert resolve_target(built, "data/rl_prompts_train.jsonl") == built.path("data/rl_prompts_train.jsonl")


def test_line_index_without_final_newline(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_bytes(b'{"a": 1}\n{"a": 2}\n{"a": 3}')
    idx = LineIndex(p)
    assert len(idx) == 3 and idx.lines(1, 5) == [b'{"a": 2}', b'{"a": 3}']
    p.write_bytes(b"")
    assert len(LineIndex(p)) == 0


def test_cells():
    assert cell([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]) == "user: hi | assistant: yo"
    assert cell("a\nb") == "a b" and cell(None) == "∅" and cell(0.123456789) == "0.123457"
    assert cell("x" * 500).endswith("…") and len(cell("x" * 500)) == 120


def test_render_has_page_and_metadata(built, tokenizer):
    from rich.console import Console

    console = Console(record=True, width=120, file=open("/dev/null", "w"))  # noqa: SIM115
    for r in render(preview(built.path("data/sft_packed.h5"), tokenizer=tokenizer)):
        console.print(r)
    text = console.export_text()
    assert "trained" in text and "manifest / attributes" in text


def _cli(*args: str, ws: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmctl.core.cli", *args, "--workspace", str(ws)],
                          capture_output=True, text=True, timeout=120)


def test_cli_preview(built):
    out = _cli("preview", "rl_prompts_train", "--row", "3", "-n", "2", ws=built.root)
    assert out.returncode == 0, out.stderr
    assert "rows 3–4 of" in out.stdout and "gold" in out.stdout
    out = _cli("preview", "pile_train", ws=built.root)
    assert out.returncode == 0 and "window 0" in out.stdout
    bad = _cli("preview", "ckpt_grpo", ws=built.root)
    assert bad.returncode == 1 and "no ready checkpoint" in bad.stderr
