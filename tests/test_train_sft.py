"""SFT on packed chat rows: which checkpoint it starts from, answer-only loss, learning."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from llmctl.core.artifacts import ready_checkpoints
from llmctl.core.data.arithmetic import arithmetic_sft_examples
from llmctl.core.data.chat import encode_chats
from llmctl.core.data.packing import pack_examples
from llmctl.core.metrics import read_metrics
from llmctl.core.tokenizer import EOT_ID
from llmctl.core.train_params import SFTParams
from llmctl.trainers import sft
from llmctl.trainers.batches import PackedRows, packed_batch
from llmctl.trainers.checkpoint import save_checkpoint
from llmctl.trainers.model import GPT

FAST = dict(preset="tiny", n_embd=64, block_size=128, batch_size=4, log_every=1, eval_rows=8, warmup_steps=2,
            lr=3e-3, progress=False)


def make_sft_file(ws, tokenizer, n: int = 240, seq_len: int = 128) -> Path:
    """data/sft_packed.h5 from arithmetic chat examples (levels 1-2), packed like prepare-sft does."""
    convs = arithmetic_sft_examples(n // 2, 1, seed=0) + arithmetic_sft_examples(n // 2, 2, seed=0)
    packed = pack_examples(encode_chats(convs, tokenizer), seq_len, pad_id=EOT_ID, seed=0)
    path = ws.data_dir / "sft_packed.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("tokens", data=packed.tokens)
        f.create_dataset("loss_mask", data=packed.loss_mask)
        f.create_dataset("example_ids", data=packed.example_ids)
    return path


def run_sft(ws, run_id: str, **kw):
    run_dir = ws.runs_dir / "sft" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    return sft.run(ws, SFTParams(**{**FAST, **kw}), run_dir), run_dir


@pytest.fixture
def ws(workspace, tokenizer):
    make_sft_file(workspace, tokenizer)
    return workspace


def test_loss_mask_covers_exactly_the_answers(ws, tokenizer):
    rows = PackedRows(ws.data_dir / "sft_packed.h5")
    b = packed_batch(*rows.read(np.arange(2)), torch.device("cpu"))
    y, m = b["y"][0], b["loss_mask"][0]
    trained = tokenizer.decode(y[m].tolist())
    skipped = tokenizer.decode(y[~m].tolist())
    assert "<answer>" in trained and "</think>" in trained
    assert "User:" not in trained and "Solve the following" not in trained and "Assistant:" not in trained
    assert "Solve the following" in skipped
    # positions restart at every example: each example's first input token sits at position 0
    starts = (b["position_ids"][0] == 0).sum().item()
    assert starts == len(set(b["doc_ids"][0].tolist()))


def test_sft_starts_from_the_newest_pretrain_checkpoint(ws):
    torch.manual_seed(0)
    base = save_checkpoint(ws.checkpoints_dir / "pretrain" / "base", GPT.from_preset("tiny", n_embd=64, block_size=128),
                           step=7, stage="pretrain")
    summary, run_dir = run_sft(ws, "from-base", max_steps=2, preset="gpt2")  # shape comes from the checkpoint
    prov = json.loads((run_dir / "provenance.json").read_text())
    assert prov["start_checkpoint"] == str(base) and prov["model"]["n_embd"] == 64
    assert prov["inputs"]["init"] == str(base) and "sft_packed" in prov["inputs"]
    assert [p.name for p in ready_checkpoints(ws.checkpoints_dir / "sft")] == ["step_2"]
    assert summary["eval_loss"] is not None


def test_sft_from_scratch_warns(ws, capsys):
    run_sft(ws, "scratch", max_steps=1)
    assert "warning: no pretrained checkpoint" in capsys.readouterr().out


@pytest.mark.slow
def test_short_sft_run_lowers_the_masked_loss(ws):
    summary, run_dir = run_sft(ws, "learn", max_steps=20, eval_every=10)
    rows = read_metrics(run_dir / "metrics.jsonl")
    evals = [r["eval/loss"] for r in rows if "eval/loss" in r]
    first_train = next(r["train/loss"] for r in rows if "train/loss" in r)
    assert len(evals) == 2 and evals[-1] < evals[0]
    assert evals[-1] < first_train - 2.5, (first_train, evals)
