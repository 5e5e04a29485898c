"""Shared training pieces: optimizer groups, schedule, batch iterators, params, device helpers."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from llmctl.core.stages import ParamError, get_stage, resolve_params
from llmctl.core.train_params import PretrainParams, SFTParams
from llmctl.trainers.batches import (
    PackedRows,
    packed_batch,
    restart_positions,
    sft_batches,
    token_batches,
)
from llmctl.trainers.loop import GPU_PEAK_TFLOPS, gpu_peak_flops, resolve_device, resolve_dtype
from llmctl.trainers.model import GPT, GPTConfig
from llmctl.trainers.optim import WarmupCosine, make_optimizer, param_groups

CPU = torch.device("cpu")


def test_decay_groups_split_matrices_from_vectors():
    m = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=32))
    decay, no_decay = param_groups(m, 0.1)
    assert all(p.dim() == 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.1
    n = sum(p.numel() for g in (decay, no_decay) for p in g["params"])
    assert n == sum(p.numel() for p in m.parameters())  # tied weight counted once
    opt = make_optimizer(m, 1e-3)
    assert len(opt.param_groups) == 2


def test_warmup_cosine_schedule():
    f = WarmupCosine(warmup_steps=10, max_steps=110, min_ratio=0.1)
    assert f(0) == pytest.approx(1 / 11)
    assert f(9) == pytest.approx(10 / 11)
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.55)
    assert f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)
    vals = [f(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(vals, vals[1:], strict=False))


@pytest.fixture(scope="module")
def token_file(tmp_path_factory, tokenizer, shared_data):
    text = (shared_data / "pile-sample" / "gutenberg-972-devils-dictionary.txt").read_text(encoding="utf-8")[:60000]
    path = tmp_path_factory.mktemp("tok") / "pile_train.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("tokens", data=np.asarray(tokenizer.encode(text), dtype=np.int32))
    return path


def test_token_batches_resume_and_shard(token_file):
    it = token_batches(token_file, 32, 4, seed=1, device=CPU)
    first = [next(it) for _ in range(5)]
    b = first[0]
    assert b["x"].shape == (4, 32) and b["x"].dtype == torch.int64
    assert torch.equal(b["x"][:, 1:], b["y"][:, :-1])
    resumed = next(token_batches(token_file, 32, 4, seed=1, device=CPU, start_step=3))
    assert torch.equal(resumed["x"], first[3]["x"])
    # two ranks of 2 rows together hold the rows one process of 4 rows sees
    r0 = next(token_batches(token_file, 32, 2, seed=1, device=CPU, rank=0, world_size=2))
    r1 = next(token_batches(token_file, 32, 2, seed=1, device=CPU, rank=1, world_size=2))
    assert torch.equal(torch.cat([r0["x"], r1["x"]]), b["x"])


def test_restart_positions_and_packed_batch():
    ex = np.array([[3, 3, 3, 7, 7, -1, -1]])
    assert restart_positions(ex).tolist() == [[0, 1, 2, 0, 1, 0, 1]]
    tokens = np.array([[10, 11, 12, 20, 21, 50256, 50256, 50256]])
    mask = np.array([[0, 1, 1, 1, 1, 0, 0, 0]])  # (20 marked as a target to show the boundary guard)
    exid = np.array([[3, 3, 3, 7, 7, -1, -1, -1]])
    b = packed_batch(tokens, mask, exid, CPU)
    assert b["x"].tolist() == [[10, 11, 12, 20, 21, 50256, 50256]]
    assert b["y"].tolist() == [[11, 12, 20, 21, 50256, 50256, 50256]]
    # 12 -> 20 crosses into the next example and padding targets are masked; positions/docs follow x
    assert b["loss_mask"].tolist() == [[True, True, False, True, False, False, False]]
    assert b["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1]]
    assert b["doc_ids"].tolist() == [[3, 3, 3, 7, 7, -1, -1]]


def test_sft_batches_are_deterministic_and_resumable(tmp_path):
    path = tmp_path / "sft_packed.h5"
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f.create_dataset("tokens", data=rng.integers(0, 50257, (10, 17), dtype=np.int32))
        f.create_dataset("loss_mask", data=rng.integers(0, 2, (10, 17), dtype=np.uint8))
        f.create_dataset("example_ids", data=np.repeat(np.arange(10, dtype=np.int32)[:, None], 17, 1))
    rows = PackedRows(path, 9)
    assert (rows.n_rows, rows.row_len, rows.length) == (10, 17, 9)
    ids = np.arange(8)
    it = sft_batches(rows, ids, 2, seed=3, device=CPU)
    seq = [next(it) for _ in range(6)]  # 4 steps per epoch: crosses into epoch 2
    assert seq[0]["x"].shape == (2, 8)
    seen = torch.cat([b["x"] for b in seq[:4]])
    assert len({tuple(r) for r in seen.tolist()}) == 8  # one epoch = every row once
    again = next(sft_batches(rows, ids, 2, seed=3, device=CPU, start_step=5))
    assert torch.equal(again["x"], seq[5]["x"])


def test_params_resolve_and_validate(workspace):
    p = resolve_params(get_stage("pretrain"), workspace.stage_config("pretrain"), {"n_layer": "3"})
    assert isinstance(p, PretrainParams) and p.model_shape()["n_layer"] == 3
    assert isinstance(resolve_params(get_stage("sft"), {}, {}), SFTParams)
    with pytest.raises(ParamError, match="unknown model preset"):
        resolve_params(get_stage("pretrain"), {}, {"preset": "huge"})
    with pytest.raises(ParamError, match="batch_size"):
        resolve_params(get_stage("sft"), {}, {"batch_size": 0})


def test_device_dtype_and_peak_table():
    assert resolve_device("auto").type in ("cpu", "cuda")
    assert resolve_device("cpu") == CPU
    assert resolve_dtype("auto", CPU) == torch.float32
    assert resolve_dtype("bf16", CPU) == torch.bfloat16
    assert gpu_peak_flops(CPU) is None
    assert gpu_peak_flops(CPU, 989.0) == 989e12
    assert dict(GPU_PEAK_TFLOPS)["H100"] == 989.0
