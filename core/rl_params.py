"""Parameters of the reward-model, DPO, PPO and GRPO stages (no torch here).

Each is composed from the groups of :mod:`llmctl.core.params` it uses: start, model shape (for
``--init scratch``), optimiser, schedule, logging/checkpoints, runtime, and either preference pairs
or rollouts. They hold nothing they ignore: no token-row window, no dropout (policies train without
it), no torch.compile (batch shapes change every step). Defaults suit the ``tiny`` preset on a CPU;
on a GPU raise the batch sizes and lengths. A policy starts from ``--init`` (a step or run folder, or
``scratch`` for a fresh preset model), else from the newest ready SFT checkpoint.
"""

from __future__ import annotations

from llmctl.core.params import (
    INIT_HELP,
    Logging,
    ModelShape,
    Optimiser,
    PreferencePairs,
    Rollout,
    Runtime,
    Schedule,
    Start,
    compose,
    param,
)

SCRATCH = "scratch"  # --init scratch: a fresh model of --preset instead of a checkpoint
DPO_LOSSES = ("sigmoid", "ipo")
GRPO_LOSSES = ("grpo", "dr_grpo", "bnpo")
PPO_REWARDS = ("verifier", "reward_model")
# keys the previous version's parameters held and ignored: dropped from llmctl.toml with a notice
RETIRED = ("context_length", "eval_batches", "compile", "dropout", "peak_tflops")
RETIRED_RL = RETIRED + ("batch_size", "grad_accum")

# the stage's own group first, then the shared ones: the order of --help and the launch form
PREFERENCE = (PreferencePairs, Schedule, Optimiser, Logging, Start, ModelShape, Runtime)
ROLLOUT = (Rollout, Schedule, Optimiser, Logging, Start, ModelShape, Runtime)
PREF_DEFAULTS = {"init": param(INIT_HELP, None), "warmup_steps": 10, "weight_decay": 0.0, "eval_every": 25}
RL_DEFAULTS = {"init": param(INIT_HELP, None), "warmup_steps": 0, "weight_decay": 0.0,
               "lr": param("Peak learning rate (tiny model on CPU; lower it for larger models).", 1e-3),
               "max_steps": param("RL steps (rollout + updates).", 60),
               "eval_every": param("Evaluate held-out accuracy every N steps (0 = only at the end).", 10),
               "log_every": param("Log metrics every N steps.", 1), "save_every": 50}


@compose(*PREFERENCE, retired=RETIRED, **PREF_DEFAULTS, lr=3e-4, max_steps=100, batch_size=16)
class RewardParams:
    """Bradley-Terry reward model: GPT trunk + scalar head read at the last real token."""

    center_rewards_coef: float = param("Weight of a penalty on the squared mean score (0 = off).", 0.0, ge=0)


@compose(*PREFERENCE, retired=RETIRED, **PREF_DEFAULTS, lr=1e-4, max_steps=100)
class DPOParams:
    """Direct preference optimisation against a frozen copy of the starting policy."""

    beta: float = param("DPO beta: strength of the implicit KL constraint.", 0.1)
    loss_type: str = param("sigmoid (DPO) or ipo.", "sigmoid")
    label_smoothing: float = param("Conservative-DPO label smoothing for the sigmoid loss.", 0.0)

    def validate(self) -> None:
        if self.loss_type not in DPO_LOSSES:
            raise ValueError(f"loss_type {self.loss_type!r}: expected one of {', '.join(DPO_LOSSES)}")
        if self.beta <= 0:
            raise ValueError("beta must be > 0")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError("label_smoothing must be in [0, 0.5)")


@compose(*ROLLOUT, retired=RETIRED_RL, **RL_DEFAULTS)
class GRPOParams:
    """Group-relative policy optimisation with verifier rewards."""

    num_iterations: int = param("Updates over each rollout batch (GRPO's mu / PPO epochs).", 2, ge=1)
    loss_type: str = param("grpo (per-sequence mean), dr_grpo (no std scaling, constant normaliser) or bnpo.",
                           "grpo")
    scale_rewards: bool = param("Divide advantages by the group's reward std (off for dr_grpo).", True)
    clip_eps_high: float = param("Upper clip range (0 = clip_eps; DAPO's clip-higher uses e.g. 0.28).", 0.0, ge=0)

    def validate(self) -> None:
        if not self.train_data:
            raise ValueError("train_data needs at least one prompt file")
        if self.num_generations < 2:
            raise ValueError("GRPO needs num_generations >= 2 (advantages are relative to the group)")
        if self.loss_type not in GRPO_LOSSES:
            raise ValueError(f"loss_type {self.loss_type!r}: expected one of {', '.join(GRPO_LOSSES)}")


@compose(*ROLLOUT, retired=RETIRED_RL, **RL_DEFAULTS, num_generations=4, kl_coef=param(
    "Per-token KL penalty coefficient (k1 estimator, folded into the rewards).", 0.05),
    train_data=param("Prompt files (empty = data/arithmetic_prompts.jsonl for the verifier, "
                     "data/preferences.jsonl prompts for the reward model).", []))
class PPOParams:
    """PPO with a value head on the policy, GAE and a per-token KL penalty."""

    reward: str = param("Reward source: verifier (math prompts) or reward_model (preference prompts).", "verifier")
    reward_model: str | None = param("Reward-model checkpoint (default: newest in checkpoints/reward).", None)
    ppo_epochs: int = param("Optimisation epochs over each rollout batch.", 2, ge=1)
    gamma: float = param("Discount factor.", 1.0, ge=0, le=1)
    lam: float = param("GAE lambda.", 0.95, ge=0, le=1)
    vf_coef: float = param("Weight of the value loss.", 0.1, ge=0)
    cliprange_value: float = param("Clip range of the value update.", 0.2)
    whiten_advantages: bool = param("Normalise advantages over the batch.", True)
    whiten_rewards: bool = param("Normalise the sequence scores over the batch before shaping.", False)

    def validate(self) -> None:
        if self.reward not in PPO_REWARDS:
            raise ValueError(f"reward {self.reward!r}: expected one of {', '.join(PPO_REWARDS)}")
        if self.cliprange_value <= 0:
            raise ValueError("cliprange_value must be > 0")
