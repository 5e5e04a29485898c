"""SFT on packed chat rows: which checkpoint it starts from, answer-only loss, learning."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from types import SimpleNamespace

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
from llmctl.trainers.checkpoint import load_model, save_checkpoint
from llmctl.trainers.loop import train_step
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


def test_empty_micro_batch_adds_nothing_to_the_step(tokenizer):
    """The step's loss is the sum of trained-token losses over the number of trained tokens of all its
    micro-batches: one with no trained token changes neither loss nor gradients (it was 0/0 = NaN)."""
    torch.manual_seed(0)
    model = GPT.from_preset("tiny", n_layer=1, n_embd=32, block_size=16)
    s = SimpleNamespace(device=torch.device("cpu"), dist=SimpleNamespace(world_size=1), autocast=contextlib.nullcontext)
    x, y = torch.randint(0, 1000, (2, 2, 16))
    full = {"x": x, "y": y, "loss_mask": torch.rand(2, 16) < 0.5}
    empty = {"x": y, "y": x, "loss_mask": torch.zeros(2, 16, dtype=torch.bool)}

    def step(micro):
        model.zero_grad(set_to_none=True)
        loss, norm, n = train_step(s, model, micro)
        return loss, norm, n, [p.grad.clone() if p.grad is not None else None for p in model.parameters()]

    ref_loss, ref_norm, ref_n, ref_grads = step([full])
    for micro in ([full, empty], [empty, full]):
        loss, norm, n, grads = step(micro)
        assert math.isfinite(loss) and n == ref_n
        assert torch.allclose(loss, ref_loss) and torch.allclose(norm, ref_norm)
        for g, r in zip(grads, ref_grads, strict=True):
            assert (g is None and r is None) or torch.allclose(g, r, atol=1e-7)
    loss, norm, n, grads = step([empty, empty])  # a step with nothing to train: zero, not NaN
    assert n == 0 and float(loss) == 0.0 and float(norm) == 0.0
    assert model(x, y, loss_mask=empty["loss_mask"])[1].item() == 0.0


def test_run_sft_with_a_short_context_on_long_rows_stays_finite(workspace, shared_data, monkeypatch):
    """`run sft --context-length 64` on real 1024-token chat rows (issue #18): most rows start with 64 prompt
    tokens and no answer token, which gave a NaN loss at the first step; now every loss is finite."""
    from typer.testing import CliRunner

    from llmctl.core.cli import app

    monkeypatch.delenv("LLMCTL_RUN_DIR", raising=False)
    runner, w = CliRunner(), ["-w", str(workspace.root)]
    res = runner.invoke(app, ["prepare", "sft", *w, "--sources", "alpaca", "--sources", "dolly", "--sources", "gsm8k",
                              "--alpaca", str(shared_data / "alpaca" / "alpaca_small.json"),
                              "--dolly", str(shared_data / "dolly" / "databricks-dolly-15k.head49.jsonl"),
                              "--gsm8k", str(shared_data / "gsm8k" / "train.jsonl"), "--max-examples", "40"])
    assert res.exit_code == 0, res.output
    monkeypatch.delenv("LLMCTL_RUN_DIR", raising=False)
    res = runner.invoke(app, ["run", "sft", *w, "--preset", "tiny", "--max-steps", "3", "--batch-size", "2",
                              "--context-length", "64", "--log-every", "1", "--eval-every", "3", "--save-every", "0",
                              "--no-progress"])
    assert res.exit_code == 0, res.output
    (run_dir,) = (workspace.runs_dir / "sft").iterdir()
    rows = read_metrics(run_dir / "metrics.jsonl")
    losses = [r["train/loss"] for r in rows if "train/loss" in r] + [r["eval/loss"] for r in rows if "eval/loss" in r]
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses), losses


def test_a_step_without_answer_tokens_is_not_an_update(ws, monkeypatch):
    """A whole step with no trained token (its only micro-batch all prompt) leaves the weights and
    AdamW's momentum alone, logs no loss and counts the step in ``train/skipped_steps``."""
    real = sft.sft_batches

    def second_step_empty(*args, start_step: int = 0, **kw):
        for i, b in enumerate(real(*args, start_step=start_step, **kw), start=start_step):
            yield {**b, "loss_mask": torch.zeros_like(b["loss_mask"])} if i == 1 else b

    monkeypatch.setattr(sft, "sft_batches", second_step_empty)
    summary, run_dir = run_sft(ws, "skip", max_steps=3, save_every=1, keep_last=3)
    rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if "lr" in r]
    assert ["train/loss" in r for r in rows] == [True, False, True]
    assert [r.get("train/skipped_steps") for r in rows] == [None, 1, 1]
    assert summary["skipped_steps"] == 1 and math.isfinite(summary["train_loss"])
    ckpts = {p.name: p for p in ready_checkpoints(ws.checkpoints_dir / "sft")}
    w1, w2, w3 = (load_model(ckpts[f"step_{i}"], "cpu").state_dict() for i in (1, 2, 3))
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert not all(torch.equal(w2[k], w3[k]) for k in w2)
