"""Parameters of the pretrain, SFT and eval stages, and the GPT model presets (no torch here).

Each params class is a plain dataclass; the CLI turns every field into an option
(``max_steps`` -> ``--max-steps``) and ``llmctl.toml`` ``[stages.<name>]`` supplies defaults.
Model shape fields set to 0 mean "the preset's value".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# name -> GPT shape. vocab_size is always 50304 (r50k's 50257 padded to a multiple of 64).
# "tiny" is sized so that a 1024-token training step takes about a second on a 2-core CPU,
# where the 50304-wide output layer dominates the cost.
MODEL_PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"n_layer": 2, "n_head": 2, "n_embd": 128, "block_size": 1024},
    "mini": {"n_layer": 4, "n_head": 4, "n_embd": 256, "block_size": 1024},
    "small": {"n_layer": 6, "n_head": 6, "n_embd": 384, "block_size": 1024},
    "gpt2": {"n_layer": 12, "n_head": 12, "n_embd": 768, "block_size": 1024},
    "gpt2-medium": {"n_layer": 24, "n_head": 16, "n_embd": 1024, "block_size": 1024},
    "gpt2-large": {"n_layer": 36, "n_head": 20, "n_embd": 1280, "block_size": 1024},
    "gpt2-xl": {"n_layer": 48, "n_head": 25, "n_embd": 1600, "block_size": 1024},
}
SHAPE_FIELDS = ("n_layer", "n_head", "n_embd", "block_size")


def resolve_model_shape(preset: str, **overrides: int) -> dict[str, int]:
    """The preset's shape with every non-zero override applied; raises ValueError when invalid."""
    if preset not in MODEL_PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; presets: {', '.join(MODEL_PRESETS)}")
    shape = dict(MODEL_PRESETS[preset])
    for k, v in overrides.items():
        if k not in SHAPE_FIELDS:
            raise ValueError(f"unknown model field {k!r}")
        if v:
            if v < 0:
                raise ValueError(f"{k} must be positive, got {v}")
            shape[k] = int(v)
    if shape["n_embd"] % shape["n_head"]:
        raise ValueError(f"n_embd {shape['n_embd']} is not divisible by n_head {shape['n_head']}")
    return shape


def _h(text: str, default: Any) -> Any:
    return field(default=default, metadata={"help": text})


@dataclass
class _TrainCommon:
    """Fields every training stage shares: model shape, optimisation, logging and checkpoints."""

    init: str | None = _h("Checkpoint to start from (step dir or run dir); default: newest of the stage it needs.", None)
    resume: str | None = _h("Resume a stopped run exactly from this checkpoint (step dir, run dir or 'last').", None)
    preset: str = _h("Model preset: " + ", ".join(MODEL_PRESETS) + " (ignored when starting from a checkpoint).", "tiny")
    n_layer: int = _h("Transformer layers (0 = preset's).", 0)
    n_head: int = _h("Attention heads (0 = preset's).", 0)
    n_embd: int = _h("Embedding width (0 = preset's).", 0)
    block_size: int = _h("Model context window (0 = preset's).", 0)
    dropout: float = _h("Dropout probability.", 0.0)
    max_steps: int = _h("Optimizer steps.", 200)
    batch_size: int = _h("Rows per micro-batch per process.", 8)
    grad_accum: int = _h("Micro-batches per optimizer step.", 1)
    context_length: int = _h("Tokens per row (0 = block size / the data's row length).", 256)
    lr: float = _h("Peak learning rate.", 1e-3)
    min_lr_ratio: float = _h("Final learning rate as a fraction of the peak (cosine decay).", 0.1)
    warmup_steps: int = _h("Linear warmup steps.", 20)
    weight_decay: float = _h("AdamW weight decay (matrices only).", 0.1)
    beta1: float = _h("AdamW beta1.", 0.9)
    beta2: float = _h("AdamW beta2.", 0.95)
    grad_clip: float = _h("Clip the gradient norm to this (0 = off).", 1.0)
    eval_every: int = _h("Evaluate every N steps (0 = only at the end).", 50)
    eval_batches: int = _h("Batches per evaluation.", 4)
    log_every: int = _h("Log train metrics every N steps.", 5)
    save_every: int = _h("Checkpoint every N steps (0 = only at the end).", 100)
    keep_last: int = _h("Checkpoints kept: the last N plus the best by eval loss.", 2)
    seed: int = _h("Random seed (weights and data order).", 1337)
    device: str = _h("auto, cpu, cuda or cuda:N.", "auto")
    dtype: str = _h("Autocast dtype: auto (bf16 on GPU, fp32 on CPU), bf16, fp16 or fp32.", "auto")
    compile: bool = _h("torch.compile the model on GPU (never on CPU).", True)
    peak_tflops: float = _h("Accelerator peak dense bf16 TFLOP/s for MFU (0 = from the known-GPU table).", 0.0)
    tensorboard: bool = _h("Also log to TensorBoard (runs/<stage>/<run>/tb) when installed.", False)
    wandb: bool = _h("Also log to Weights & Biases when installed.", False)
    wandb_project: str = _h("W&B project name.", "llmctl")
    progress: bool = _h("Show a progress bar (plain lines when not a terminal).", True)

    def validate(self) -> None:
        resolve_model_shape(self.preset, n_layer=self.n_layer, n_head=self.n_head, n_embd=self.n_embd,
                            block_size=self.block_size)
        for name in ("max_steps", "batch_size", "grad_accum", "eval_batches", "log_every", "keep_last"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        for name in ("context_length", "warmup_steps", "eval_every", "save_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.lr <= 0:
            raise ValueError("lr must be > 0")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")
        if self.dtype not in ("auto", "bf16", "fp16", "fp32"):
            raise ValueError(f"dtype {self.dtype!r}: expected auto, bf16, fp16 or fp32")

    def model_shape(self) -> dict[str, int]:
        """The resolved model shape (preset + non-zero overrides)."""
        return resolve_model_shape(self.preset, n_layer=self.n_layer, n_head=self.n_head, n_embd=self.n_embd,
                                   block_size=self.block_size)


@dataclass
class PretrainParams(_TrainCommon):
    """Next-token pretraining on the flat token files."""

    train_data: str = _h("Training tokens (workspace-relative).", "data/pile_train.h5")
    dev_data: str = _h("Held-out tokens for eval loss.", "data/pile_dev.h5")


@dataclass
class SFTParams(_TrainCommon):
    """Supervised fine-tuning on packed chat rows: loss only on answer tokens."""

    data: str = _h("Packed SFT rows (tokens, loss_mask, example_ids).", "data/sft_packed.h5")
    eval_rows: int = _h("Rows held out (from the end of the file) for eval loss.", 16)
    batch_size: int = _h("Packed rows per micro-batch per process.", 2)
    context_length: int = _h("Tokens per row (0 = the file's row length, up to the block size; shorter crops rows).", 0)
    lr: float = _h("Peak learning rate.", 3e-4)
    warmup_steps: int = _h("Linear warmup steps.", 10)
    weight_decay: float = _h("AdamW weight decay (matrices only).", 0.0)

    def validate(self) -> None:
        super().validate()
        if self.eval_rows < 0:
            raise ValueError("eval_rows must be >= 0")


@dataclass
class EvalParams:
    """Dev loss, GSM8K and arithmetic accuracy of a checkpoint."""

    ckpt: str | None = field(default=None, metadata={
        "help": "Checkpoint (step, run or stage folder, or a stage name); default: newest of grpo/ppo/dpo/sft/pretrain.",
        "argument": True})
    gsm8k_n: int = _h("GSM8K test questions to score (0 = skip).", 50)
    arithmetic_n: int = _h("Arithmetic questions to score (0 = skip).", 50)
    arithmetic_level: int = _h("Arithmetic difficulty level (0 = all levels).", 0)
    max_new_tokens: int = _h("Generated tokens per answer.", 128)
    batch_size: int = _h("Questions generated together / rows per dev-loss batch.", 8)
    dev_batches: int = _h("Dev-loss batches on pile_dev.h5 (0 = skip).", 8)
    context_length: int = _h("Tokens per dev-loss row (0 = model block size).", 256)
    dev_data: str = _h("Held-out tokens for dev loss.", "data/pile_dev.h5")
    gsm8k_data: str = _h("GSM8K test prompts.", "data/rl_prompts_test.jsonl")
    arithmetic_data: str = _h("Arithmetic prompts (generated when the file is missing).", "data/arithmetic_prompts.jsonl")
    chat: bool = _h("Render questions through the chat template.", True)
    seed: int = _h("Random seed.", 1337)
    device: str = _h("auto, cpu, cuda or cuda:N.", "auto")
    dtype: str = _h("auto (bf16 on GPU, fp32 on CPU), bf16, fp16 or fp32.", "auto")

    def validate(self) -> None:
        for name in ("gsm8k_n", "arithmetic_n", "arithmetic_level", "dev_batches", "context_length"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError("max_new_tokens and batch_size must be >= 1")
