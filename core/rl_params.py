"""Parameters of the reward-model, DPO, PPO and GRPO stages (no torch here).

They extend the shared training fields of :mod:`llmctl.core.train_params` (optimiser, schedule,
checkpoints, device, dtype). Defaults suit the ``tiny`` preset on a CPU; on a GPU raise the batch
sizes and lengths. A policy starts from ``--init`` (a step or run folder, or ``scratch`` for a
fresh preset model), else from the newest ready SFT checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llmctl.core.train_params import _TrainCommon

SCRATCH = "scratch"  # --init scratch: a fresh model of --preset instead of a checkpoint
DPO_LOSSES = ("sigmoid", "ipo")
GRPO_LOSSES = ("grpo", "dr_grpo", "bnpo")
PPO_REWARDS = ("verifier", "reward_model")
INIT_HELP = ("Starting weights: a checkpoint (step or run dir), or 'scratch' for a fresh --preset model; "
             "default: the newest ready SFT checkpoint.")


def _h(text: str, default: Any) -> Any:
    return field(default=default, metadata={"help": text})


def _l(text: str, default: list[str]) -> Any:
    return field(default_factory=lambda: list(default), metadata={"help": text})


def _positive(obj: Any, *names: str) -> None:
    for n in names:
        if getattr(obj, n) < 1:
            raise ValueError(f"{n} must be >= 1")


@dataclass
class _PrefCommon(_TrainCommon):
    """Preference-pair training: data files and truncation."""

    init: str | None = _h(INIT_HELP, None)
    train_data: str = _h("Preference pairs (prompt/chosen/rejected jsonl).", "data/preferences.jsonl")
    test_data: str = _h("Held-out pairs for accuracy / margins.", "data/preferences_test.jsonl")
    max_length: int = _h("Tokens per prompt+response: the prompt is cut from the left (keeping at least "
                         "half), then the responses at the end.", 128)
    max_pairs: int = _h("Training pairs used (0 = all).", 0)
    eval_pairs: int = _h("Held-out pairs scored per evaluation (0 = all).", 200)
    context_length: int = _h("Unused by preference stages (see max_length).", 0)
    warmup_steps: int = _h("Linear warmup steps.", 10)
    weight_decay: float = _h("AdamW weight decay (matrices only).", 0.0)
    eval_every: int = _h("Evaluate every N steps (0 = only at the end).", 25)
    eval_batches: int = _h("Unused by preference stages (see eval_pairs).", 1)
    compile: bool = _h("Unused by preference/RL stages (batch shapes change every step).", False)

    def validate(self) -> None:
        super().validate()
        _positive(self, "max_length")
        if self.max_pairs < 0 or self.eval_pairs < 0:
            raise ValueError("max_pairs and eval_pairs must be >= 0")


@dataclass
class RewardParams(_PrefCommon):
    """Bradley-Terry reward model: GPT trunk + scalar head read at the last real token."""

    lr: float = _h("Peak learning rate.", 3e-4)
    max_steps: int = _h("Optimizer steps.", 100)
    batch_size: int = _h("Preference pairs per micro-batch per process.", 16)
    center_rewards_coef: float = _h("Weight of a penalty on the squared mean score (0 = off).", 0.0)


@dataclass
class DPOParams(_PrefCommon):
    """Direct preference optimisation against a frozen copy of the starting policy."""

    beta: float = _h("DPO beta: strength of the implicit KL constraint.", 0.1)
    loss_type: str = _h("sigmoid (DPO) or ipo.", "sigmoid")
    label_smoothing: float = _h("Conservative-DPO label smoothing for the sigmoid loss.", 0.0)
    lr: float = _h("Peak learning rate.", 1e-4)
    max_steps: int = _h("Optimizer steps.", 100)
    batch_size: int = _h("Preference pairs per micro-batch per process.", 8)

    def validate(self) -> None:
        super().validate()
        if self.loss_type not in DPO_LOSSES:
            raise ValueError(f"loss_type {self.loss_type!r}: expected one of {', '.join(DPO_LOSSES)}")
        if self.beta <= 0:
            raise ValueError("beta must be > 0")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError("label_smoothing must be in [0, 0.5)")


@dataclass
class _RolloutCommon(_TrainCommon):
    """On-policy RL: prompt files, sampling, rollout logging and held-out accuracy."""

    init: str | None = _h(INIT_HELP, None)
    train_data: list[str] = _l("Prompt files ({prompt, gold, data_source} jsonl), mixed.",
                               ["data/arithmetic_prompts.jsonl"])
    eval_data: list[str] = _l("Held-out prompt files (empty = hold out eval_prompts rows of train_data).", [])
    arithmetic_level: int = _h("Keep only arithmetic rows of this level (0 = all).", 0)
    eval_prompts: int = _h("Held-out prompts scored per evaluation (0 = no eval).", 64)
    train_prompts: int = _h("Train on only the first N distinct prompts left after the hold-out (0 = all).", 0)
    prompts_per_step: int = _h("Prompts per rollout batch (per process).", 16)
    num_generations: int = _h("Completions sampled per prompt.", 8)
    max_new_tokens: int = _h("Completion length cap (longer ones are truncated).", 48)
    max_prompt_length: int = _h("Prompt tokens kept (from the end).", 192)
    temperature: float = _h("Sampling temperature for rollouts.", 1.0)
    top_k: int = _h("Top-k for rollouts (0 = off).", 0)
    top_p: float = _h("Top-p for rollouts (1 = off).", 1.0)
    micro_batch_size: int = _h("Completions per forward/backward in the update.", 32)
    clip_eps: float = _h("PPO clip range of the probability ratio.", 0.2)
    kl_coef: float = _h("Coefficient of the KL penalty to the frozen reference (0 = no reference).", 0.04)
    format_weight: float = _h("Reward weight of the <think>/<answer> format score.", 0.1)
    samples_per_step: int = _h("Rollouts written to samples.jsonl per step (-1 = all, 0 = none).", 64)
    lr: float = _h("Peak learning rate (tiny model on CPU; lower it for larger models).", 1e-3)
    max_steps: int = _h("RL steps (rollout + updates).", 60)
    warmup_steps: int = _h("Linear warmup steps.", 0)
    weight_decay: float = _h("AdamW weight decay (matrices only).", 0.0)
    eval_every: int = _h("Evaluate held-out accuracy every N steps (0 = only at the end).", 10)
    log_every: int = _h("Log metrics every N steps.", 1)
    save_every: int = _h("Checkpoint every N steps (0 = only at the end).", 50)
    context_length: int = _h("Unused by RL stages (see max_prompt_length / max_new_tokens).", 0)
    batch_size: int = _h("Unused by RL stages (see prompts_per_step / micro_batch_size).", 1)
    grad_accum: int = _h("Unused by RL stages (each update accumulates over micro_batch_size chunks).", 1)
    eval_batches: int = _h("Unused by RL stages (see eval_prompts).", 1)
    compile: bool = _h("Unused by preference/RL stages (batch shapes change every step).", False)

    def validate(self) -> None:
        super().validate()
        _positive(self, "prompts_per_step", "num_generations", "max_new_tokens", "max_prompt_length",
                  "micro_batch_size")
        if self.arithmetic_level < 0 or self.eval_prompts < 0 or self.train_prompts < 0:
            raise ValueError("arithmetic_level, eval_prompts and train_prompts must be >= 0")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0 for on-policy sampling")
        if not 0.0 < self.top_p <= 1.0 or self.top_k < 0:
            raise ValueError("top_p must be in (0, 1] and top_k >= 0")
        if not 0.0 < self.clip_eps < 1.0:
            raise ValueError("clip_eps must be in (0, 1)")
        if self.kl_coef < 0:
            raise ValueError("kl_coef must be >= 0")


@dataclass
class GRPOParams(_RolloutCommon):
    """Group-relative policy optimisation with verifier rewards."""

    num_iterations: int = _h("Updates over each rollout batch (GRPO's mu / PPO epochs).", 2)
    loss_type: str = _h("grpo (per-sequence mean), dr_grpo (no std scaling, constant normaliser) or bnpo.",
                        "grpo")
    scale_rewards: bool = _h("Divide advantages by the group's reward std (off for dr_grpo).", True)
    clip_eps_high: float = _h("Upper clip range (0 = clip_eps; DAPO's clip-higher uses e.g. 0.28).", 0.0)

    def validate(self) -> None:
        super().validate()
        _positive(self, "num_iterations")
        if not self.train_data:
            raise ValueError("train_data needs at least one prompt file")
        if self.num_generations < 2:
            raise ValueError("GRPO needs num_generations >= 2 (advantages are relative to the group)")
        if self.loss_type not in GRPO_LOSSES:
            raise ValueError(f"loss_type {self.loss_type!r}: expected one of {', '.join(GRPO_LOSSES)}")
        if self.clip_eps_high < 0:
            raise ValueError("clip_eps_high must be >= 0")


@dataclass
class PPOParams(_RolloutCommon):
    """PPO with a value head on the policy, GAE and a per-token KL penalty."""

    reward: str = _h("Reward source: verifier (math prompts) or reward_model (preference prompts).", "verifier")
    reward_model: str | None = _h("Reward-model checkpoint (default: newest in checkpoints/reward).", None)
    train_data: list[str] = _l("Prompt files (empty = data/arithmetic_prompts.jsonl for the verifier, "
                               "data/preferences.jsonl prompts for the reward model).", [])
    num_generations: int = _h("Completions sampled per prompt.", 4)
    prompts_per_step: int = _h("Prompts per rollout batch (per process).", 16)
    ppo_epochs: int = _h("Optimisation epochs over each rollout batch.", 2)
    gamma: float = _h("Discount factor.", 1.0)
    lam: float = _h("GAE lambda.", 0.95)
    kl_coef: float = _h("Per-token KL penalty coefficient (k1 estimator, folded into the rewards).", 0.05)
    vf_coef: float = _h("Weight of the value loss.", 0.1)
    cliprange_value: float = _h("Clip range of the value update.", 0.2)
    whiten_advantages: bool = _h("Normalise advantages over the batch.", True)
    whiten_rewards: bool = _h("Normalise the sequence scores over the batch before shaping.", False)

    def validate(self) -> None:
        super().validate()
        _positive(self, "ppo_epochs")
        if self.reward not in PPO_REWARDS:
            raise ValueError(f"reward {self.reward!r}: expected one of {', '.join(PPO_REWARDS)}")
        if not (0.0 <= self.gamma <= 1.0 and 0.0 <= self.lam <= 1.0):
            raise ValueError("gamma and lam must be in [0, 1]")
        if self.vf_coef < 0 or self.cliprange_value <= 0:
            raise ValueError("vf_coef must be >= 0 and cliprange_value > 0")
