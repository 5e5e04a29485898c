"""Reward model: the scalar head reads the last real token; Bradley-Terry training on real HH-RLHF pairs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from rl_support import fresh_model, prefs_workspace, save_sft
from stage_support import run_in_process

from llmctl.core.rl_params import RewardParams
from llmctl.core.stages import ParamError, get_stage, resolve_params


def test_params_validate():
    stage = get_stage("reward")
    p = resolve_params(stage, {}, {"max_steps": "3", "max_length": "64"})
    assert isinstance(p, RewardParams) and p.max_steps == 3
    with pytest.raises(ParamError):
        resolve_params(stage, {}, {"max_length": "0"})


def test_reward_head_reads_last_real_token():
    from llmctl.trainers.heads import RewardModel
    from llmctl.trainers.model import GPT

    torch.manual_seed(0)
    rm = RewardModel(GPT.from_preset("tiny")).eval()
    torch.nn.init.normal_(rm.gpt.reward_head.proj.weight)  # a fresh head scores everything 0
    a = torch.tensor([[5, 6, 7, 8, 9]])
    b = torch.tensor([[11, 12, 13]])
    with torch.no_grad():
        alone_a = rm(a, lengths=torch.tensor([5]))
        alone_b = rm(b, lengths=torch.tensor([3]))
        # right-padded batch: padding after a row's last token must not change its score
        batch = torch.tensor([[5, 6, 7, 8, 9], [11, 12, 13, 50256, 50256]])
        both = rm(batch, lengths=torch.tensor([5, 3]))
        # left padding with an attention mask gives the same score too
        left = torch.tensor([[0, 0, 11, 12, 13]])
        masked = rm(left, attention_mask=torch.tensor([[0, 0, 1, 1, 1]]))
    assert alone_a.abs().item() > 1e-3 and (alone_a - alone_b).abs().item() > 1e-3
    torch.testing.assert_close(both, torch.cat([alone_a, alone_b]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(masked, alone_b, atol=1e-5, rtol=1e-5)


def test_reward_model_checkpoint_is_refused_without_head(workspace):
    from llmctl.trainers.heads import load_reward_model

    ck = save_sft(workspace, fresh_model())
    with pytest.raises(ValueError, match="no reward head"):
        load_reward_model(ck)


@pytest.mark.slow
def test_reward_model_learns_real_preferences(workspace, shared_data: Path):
    """Training accuracy on a few hundred real HH-RLHF pairs rises above 0.9 (held-out reported)."""
    from llmctl.trainers.heads import load_reward_model
    from llmctl.trainers.pref_data import PreferenceDataset, collate_pairs, read_pairs
    from llmctl.trainers.reward import pair_scores

    ws = prefs_workspace(workspace, shared_data, max_pairs=300)
    save_sft(ws, fresh_model())
    params = RewardParams(max_steps=60, batch_size=16, max_length=64, lr=1e-3, warmup_steps=5, eval_every=30,
                          eval_pairs=64, log_every=5, save_every=0, progress=False, max_pairs=240)
    summary, run_dir, rows = run_in_process(ws, "reward", params)
    train_acc = [r["train/accuracy"] for r in rows if "train/accuracy" in r]
    evals = [r for r in rows if "eval/accuracy" in r]
    assert evals and all("eval/margin" in r for r in evals)
    assert sum(train_acc[:2]) / 2 < 0.8  # it starts near chance ...
    assert sum(train_acc[-3:]) / 3 > 0.9  # ... and fits the training pairs
    print(f"reward model: train accuracy {train_acc[0]:.2f} -> {train_acc[-1]:.2f}, "
          f"held-out accuracy {evals[-1]['eval/accuracy']:.3f}, margin {evals[-1]['eval/margin']:.3f}")

    # the checkpoint artifact PPO uses: checkpoints/reward/<run>/step_N with its head
    ck = Path(summary["checkpoint"])
    assert ck.parent.parent == ws.checkpoints_dir / "reward" and (ck / "manifest.json").is_file()
    rm = load_reward_model(ck)
    pairs = read_pairs(ws.path(params.train_data))[:params.max_pairs]
    data = PreferenceDataset(pairs, ws.tokenizer(), params.max_length)
    with torch.no_grad():
        c, r = pair_scores(rm, collate_pairs([data[i] for i in range(len(data))]), torch.device("cpu"))
    assert (c > r).float().mean().item() > 0.9
