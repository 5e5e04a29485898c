"""PPO: value head + GAE with verifier or reward-model rewards, checkpoints usable downstream, and
(slow) the reward rising on arithmetic prompts after a short SFT."""

from __future__ import annotations

import pytest
import torch
from rl_support import (
    SHORT_RUN,
    fresh_model,
    prefs_workspace,
    reward_rise,
    rl_workspace,
    run_after_short_sft,
    save_sft,
)
from stage_support import run_headless, run_in_process

from llmctl.core.metrics import read_metrics
from llmctl.core.rl_params import PPOParams
from llmctl.core.stages import ParamError, get_stage, resolve_params

PPO_KEYS = ("reward", "kl", "value_loss", "policy_loss", "clip_fraction", "explained_variance", "entropy",
            "completions/mean_length", "completions/clipped_ratio")


def test_params_validate():
    stage = get_stage("ppo")
    p = resolve_params(stage, {}, {"reward": "reward_model", "gamma": "0.99", "ppo_epochs": "3"})
    assert isinstance(p, PPOParams) and p.reward == "reward_model" and p.ppo_epochs == 3
    for bad in ({"reward": "human"}, {"lam": "1.5"}, {"ppo_epochs": "0"}, {"cliprange_value": "0"}):
        with pytest.raises(ParamError):
            resolve_params(stage, {}, bad)


def test_ppo_verifier_cli_and_checkpoint_loads_as_plain_gpt(workspace, shared_data):
    from llmctl.trainers.checkpoint import load_checkpoint, load_model

    ws = rl_workspace(workspace, shared_data)
    save_sft(ws, fresh_model())
    run_dir, rows = run_headless(ws, "ppo", "--max-steps", "2", "--prompts-per-step", "2", "--num-generations", "2",
                                 "--max-new-tokens", "6", "--eval-prompts", "4", "--eval-every", "2",
                                 "--micro-batch-size", "4", "--arithmetic-level", "1")
    train = [r for r in rows if "value_loss" in r]
    assert [r["step"] for r in train] == [1, 2]
    for key in PPO_KEYS:
        assert all(key in r for r in train), key
    assert [r["step"] for r in rows if "eval/accuracy" in r] == [0, 2]
    assert (run_dir / "samples.jsonl").is_file()
    ck = ws.checkpoints_dir / "ppo" / run_dir.name / "step_2"
    _, state = load_checkpoint(ck)
    assert {"value_head.proj.weight", "value_head.proj.bias"} <= set(state["extra_weights"])
    assert load_model(ck).config.n_embd == 64  # eval / export load the policy as a plain GPT


def test_ppo_with_reward_model_on_preference_prompts(workspace, shared_data):
    """Rewards from a reward-model checkpoint (the reward stage's artifact) on the preference prompts."""
    from llmctl.trainers.checkpoint import save_checkpoint
    from llmctl.trainers.heads import REWARD_HEAD, attach_head

    ws = prefs_workspace(workspace, shared_data, max_pairs=60)
    save_sft(ws, fresh_model())
    rm = fresh_model(7)
    attach_head(rm, REWARD_HEAD)
    rm_ck = save_checkpoint(ws.checkpoints_dir / "reward" / "rm", rm, step=1, stage="reward")
    params = PPOParams(reward="reward_model", max_steps=2, prompts_per_step=2, num_generations=2,
                       max_new_tokens=6, max_prompt_length=48, eval_prompts=2, eval_every=1, micro_batch_size=4,
                       progress=False, samples_per_step=-1)
    summary, run_dir, rows = run_in_process(ws, "ppo", params)
    train = [r for r in rows if "value_loss" in r]
    for key in PPO_KEYS:
        assert all(key in r for r in train), key
    assert [r["step"] for r in rows if "eval/reward" in r] == [0, 1, 2]
    assert "rewards/correct" not in train[0]
    samples = read_metrics(run_dir / "samples.jsonl")
    assert len(samples) == 2 * 2 * 2 and all("score" in s for s in samples)
    assert summary["checkpoint"]
    prov = (run_dir / "provenance.json").read_text()
    assert str(rm_ck) in prov
    # the reward is the reward model's score of prompt + completion
    from llmctl.trainers.heads import load_reward_model

    assert isinstance(load_reward_model(rm_ck)(torch.tensor([[1, 2, 3]]), lengths=torch.tensor([3])), torch.Tensor)


@pytest.mark.slow
def test_ppo_reward_rises_after_short_sft(workspace, shared_data):
    """PPO's verifier reward (correct + 0.5 x format) rises on the arithmetic prompts after the
    short arithmetic SFT the other RL tests start from (made once per test session)."""
    rows = run_after_short_sft(workspace, shared_data, "ppo", PPOParams(
        **SHORT_RUN, prompts_per_step=16, num_generations=4, ppo_epochs=2, lr=2e-3))
    train = [r for r in rows if "value_loss" in r]
    r0, r1 = reward_rise("PPO", train, f"value loss {train[0]['value_loss']:.4f} -> {train[-1]['value_loss']:.4f}")["reward"]
    assert r1 > r0 + 0.1, [r["reward"] for r in train]
