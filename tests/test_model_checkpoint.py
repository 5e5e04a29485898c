"""Checkpoints: atomic step folders, round trips, extra weights, resolution and pruning."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from llmctl.core.artifacts import newest_checkpoint, ready_checkpoints
from llmctl.trainers.checkpoint import (
    load_checkpoint,
    load_model,
    prune_checkpoints,
    ready_steps,
    resolve_checkpoint,
    save_checkpoint,
)
from llmctl.trainers.model import GPT, GPTConfig
from llmctl.trainers.optim import make_optimizer, make_scheduler


def small() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=32))


def one_step(m: GPT, opt, sched) -> None:
    x = torch.randint(0, 50257, (2, 16))
    _, loss = m(x, x)
    loss.backward()
    opt.step()
    sched.step()
    opt.zero_grad()


def test_round_trip_restores_weights_optimizer_and_state(tmp_path):
    m = small()
    opt = make_optimizer(m, 1e-3)
    sched = make_scheduler(opt, 2, 10)
    one_step(m, opt, sched)
    run = tmp_path / "checkpoints" / "pretrain" / "run1"
    path = save_checkpoint(run, m, opt, sched, 1, {"tokens": 32}, stage="pretrain",
                           counts={"tokens": 32, "eval_loss": 4.5}, params={"lr": 1e-3})
    assert path == run / "step_1"
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "manifest.json", "model.safetensors", "state.pt"]
    assert not list(run.glob("*.tmp")) and not list(run.glob("*.lock"))
    man = json.loads((path / "manifest.json").read_text())
    assert man["counts"] == {"step": 1, "tokens": 32, "eval_loss": 4.5} and man["stage"] == "pretrain"

    m2, state = load_checkpoint(run)  # a run folder resolves to its newest step
    assert state["step"] == 1 and state["extra"] == {"tokens": 32} and state["path"] == path
    assert m2.lm_head.weight is m2.transformer.wte.weight
    x = torch.randint(0, 50257, (1, 8))
    assert torch.equal(m.eval()(x), m2.eval()(x))
    opt2 = make_optimizer(m2, 1e-3)
    opt2.load_state_dict(state["optimizer"])
    sched2 = make_scheduler(opt2, 2, 10)
    sched2.load_state_dict(state["scheduler"])
    assert sched2.get_last_lr() == sched.get_last_lr()
    for a, b in zip(opt.state.values(), opt2.state.values(), strict=True):
        assert torch.equal(a["exp_avg"], b["exp_avg"])
    assert load_model(path).training is False


def test_extra_weights_of_a_model_with_a_head(tmp_path):
    class WithHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=32)
            self.gpt = GPT(self.config)
            self.value_head = nn.Linear(32, 1)

    class GPTWithHead(GPT):
        def __init__(self, config: GPTConfig) -> None:
            super().__init__(config)
            self.value_head = nn.Linear(config.n_embd, 1)

    m = GPTWithHead(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=32))
    path = save_checkpoint(tmp_path / "run", m, step=3, stage="reward")
    plain, state = load_checkpoint(path)
    assert isinstance(plain, GPT) and set(state["extra_weights"]) == {"value_head.weight", "value_head.bias"}
    again, _ = load_checkpoint(path, model=GPTWithHead(m.config))
    assert torch.equal(again.value_head.weight, m.value_head.weight)
    with pytest.raises(ValueError, match="not in the model"):
        load_checkpoint(path, model=GPT(m.config))


def test_resolution_and_readiness(tmp_path):
    m = small()
    stage_dir = tmp_path / "sft"
    save_checkpoint(stage_dir / "a", m, step=5)
    newest = save_checkpoint(stage_dir / "b", m, step=2)
    assert resolve_checkpoint(stage_dir) == newest_checkpoint(stage_dir) == newest
    assert resolve_checkpoint(stage_dir / "a") == stage_dir / "a" / "step_5"
    (newest / "manifest.json").unlink()  # not ready any more
    assert resolve_checkpoint(stage_dir) == stage_dir / "a" / "step_5"
    with pytest.raises(FileNotFoundError, match="not ready"):
        resolve_checkpoint(newest)
    with pytest.raises(FileNotFoundError):
        resolve_checkpoint(tmp_path / "nothing")


def test_prune_keeps_last_n_and_best(tmp_path):
    m = small()
    run = tmp_path / "run"
    for step, loss in [(10, 3.0), (20, 2.0), (30, 2.5), (40, None), (50, 2.6)]:
        save_checkpoint(run, m, step=step, counts={"eval_loss": loss})
    removed = prune_checkpoints(run, keep_last=2)
    assert sorted(p.name for p in removed) == ["step_10", "step_30"]
    assert [p.name for p in ready_steps(run)] == ["step_20", "step_40", "step_50"]
    assert len(ready_checkpoints(tmp_path)) == 3
