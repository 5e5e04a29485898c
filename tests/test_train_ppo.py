"""PPO: value head + GAE with verifier or reward-model rewards, checkpoints usable downstream, and
(slow) the reward rising on arithmetic prompts after a short SFT."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from rl_support import arithmetic_sft, fresh_model, prefs_workspace, rl_workspace, save_sft

from llmctl.core import runs
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
    argv = [sys.executable, "-m", "llmctl.core.cli", "run", "ppo", "--workspace", str(ws.root), "--no-progress",
            "--max-steps", "2", "--prompts-per-step", "2", "--num-generations", "2", "--max-new-tokens", "6",
            "--eval-prompts", "4", "--eval-every", "2", "--micro-batch-size", "4", "--arithmetic-level", "1"]
    env = {k: v for k, v in os.environ.items() if k != runs.ENV_RUN_DIR}
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (run_dir,) = list((ws.runs_dir / "ppo").iterdir())
    rows = read_metrics(run_dir / "metrics.jsonl")
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
    from llmctl.trainers.ppo import run

    ws = prefs_workspace(workspace, shared_data, max_pairs=60)
    save_sft(ws, fresh_model())
    rm = fresh_model(7)
    attach_head(rm, REWARD_HEAD)
    rm_ck = save_checkpoint(ws.checkpoints_dir / "reward" / "rm", rm, step=1, stage="reward")
    params = PPOParams(reward="reward_model", max_steps=2, prompts_per_step=2, num_generations=2,
                       max_new_tokens=6, max_prompt_length=48, eval_prompts=2, eval_every=1, micro_batch_size=4,
                       progress=False, samples_per_step=-1)
    run_dir = runs.new_run_dir(ws.runs_dir, "ppo")
    summary = run(ws, params, run_dir)
    rows = read_metrics(run_dir / "metrics.jsonl")
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
    same short SFT as the GRPO test (shared within a test session)."""
    from llmctl.trainers.ppo import run

    ws = rl_workspace(workspace, shared_data)
    arithmetic_sft(ws, steps=50)
    params = PPOParams(max_steps=12, prompts_per_step=16, num_generations=4, max_new_tokens=24,
                       micro_batch_size=64, ppo_epochs=2, kl_coef=0.0, lr=2e-3, format_weight=0.5,
                       eval_prompts=32, eval_every=0, save_every=0, log_every=1, progress=False,
                       arithmetic_level=1, samples_per_step=8)
    run_dir = runs.new_run_dir(ws.runs_dir, "ppo")
    run(ws, params, run_dir)
    rows = read_metrics(run_dir / "metrics.jsonl")
    train = [r for r in rows if "value_loss" in r]
    reward = [r["reward"] for r in train]

    def mean(key, part):
        return sum(r[key] for r in part) / len(part)

    first, last = train[:4], train[-4:]
    print(f"PPO reward {mean('reward', first):.3f} -> {mean('reward', last):.3f}, "
          f"format {mean('rewards/format', first):.3f} -> {mean('rewards/format', last):.3f}, "
          f"correct {mean('rewards/correct', first):.3f} -> {mean('rewards/correct', last):.3f}, "
          f"value loss {train[0]['value_loss']:.4f} -> {train[-1]['value_loss']:.4f}")
    assert mean("reward", last) > mean("reward", first) + 0.1, reward
