"""Parameters of the pretrain, SFT and eval stages (no torch here).

Each is composed from the groups of :mod:`llmctl.core.params` it uses; the CLI turns every field
into an option (``max_steps`` -> ``--max-steps``) and ``llmctl.toml`` ``[stages.<name>]`` supplies
defaults. Model shape fields set to 0 mean "the preset's value". Length words (``block_size``,
``context_length``, ``seq_len``) are defined in :mod:`llmctl.core.params`.
"""

from __future__ import annotations

from llmctl.core.params import (
    DTYPES,
    MODEL_PRESETS,
    SHAPE_FIELDS,
    Logging,
    ModelShape,
    Optimiser,
    Runtime,
    Schedule,
    Start,
    TokenBatches,
    compose,
    param,
    resolve_model_shape,
)

__all__ = ["MODEL_PRESETS", "SHAPE_FIELDS", "resolve_model_shape", "PretrainParams", "SFTParams", "EvalParams"]

# the stage's own group first, then the shared ones: the order of --help and the launch form
TOKEN_TRAINING = (TokenBatches, Schedule, Optimiser, Logging, Start, ModelShape, Runtime)


def check_context_length(context_length: int, block_size: int) -> None:
    """The training window fits the model's capacity, else a ValueError saying what to change."""
    if context_length > block_size:
        raise ValueError(f"context_length {context_length} is longer than the model's block_size {block_size} "
                         f"(the longest sequence it holds): use --context-length {block_size} or less, "
                         "or a larger --block-size for a fresh model")


@compose(*TOKEN_TRAINING)
class PretrainParams:
    """Next-token pretraining on the flat token files."""

    train_data: str = param("Training tokens (workspace-relative).", "data/pile_train.h5")
    dev_data: str = param("Held-out tokens for eval loss.", "data/pile_dev.h5")
    eval_batches: int = param("Batches of dev_data per evaluation.", 4, ge=1)

    def validate(self) -> None:
        if not (self.init or self.resume):
            check_context_length(self.context_length, self.model_shape()["block_size"])


@compose(*TOKEN_TRAINING, retired=("eval_batches",), lr=3e-4, warmup_steps=10, weight_decay=0.0,
         batch_size=param("Packed rows per micro-batch per process.", 2),
         context_length=param("Training window: tokens per row (0 = the file's seq_len, up to block_size; "
                              "shorter crops rows).", 0))
class SFTParams:
    """Supervised fine-tuning on packed chat rows: loss only on answer tokens (every held-out row is scored)."""

    data: str = param("Packed SFT rows (tokens, loss_mask, example_ids).", "data/sft_packed.h5")
    eval_rows: int = param("Rows held out (from the end of the file) for eval loss.", 16, ge=0)


@compose(Runtime, seed=param("Random seed.", 1337),
         dtype=param("auto (bf16 on GPU, fp32 on CPU), " + ", ".join(DTYPES[1:]) + ".", "auto"))
class EvalParams:
    """Dev loss, GSM8K and arithmetic accuracy of a checkpoint."""

    ckpt: str | None = param("Checkpoint (step, run or stage folder, or a stage name); default: newest of "
                             "grpo/ppo/dpo/sft/pretrain.", None, argument=True)
    gsm8k_n: int = param("GSM8K test questions to score (0 = skip).", 50, ge=0)
    arithmetic_n: int = param("Arithmetic questions to score (0 = skip).", 50, ge=0)
    arithmetic_level: int = param("Arithmetic difficulty level (0 = all levels).", 0, ge=0)
    max_new_tokens: int = param("Tokens generated per answer.", 128, ge=1)
    batch_size: int = param("Questions generated together / rows per dev-loss batch.", 8, ge=1)
    dev_batches: int = param("Dev-loss batches on pile_dev.h5 (0 = skip).", 8, ge=0)
    context_length: int = param("Dev-loss window: tokens per row (0 = the model's block_size).", 256, ge=0)
    dev_data: str = param("Held-out tokens for dev loss.", "data/pile_dev.h5")
    gsm8k_data: str = param("GSM8K test prompts.", "data/rl_prompts_test.jsonl")
    arithmetic_data: str = param("Arithmetic prompts (generated when the file is missing).",
                                 "data/arithmetic_prompts.jsonl")
    chat: bool = param("Render questions through the chat template.", True)
    samples: int = param("Samples per arithmetic question at --temperature, for pass@1 and pass@k beside greedy "
                         "accuracy (0 = greedy only).", 0, ge=0, le=1024)
    temperature: float = param("Sampling temperature of --samples (the RL rollout temperature).", 1.0)
    arithmetic_heldout: int = param("Score the N arithmetic prompts a GRPO/PPO run with the same --seed and "
                                    "--arithmetic-level holds out of arithmetic_data (0 = its first arithmetic_n "
                                    "rows).", 0, ge=0)
    baseline: str | None = param("A second checkpoint scored on the same arithmetic questions and shown before "
                                 "this one (e.g. sft, the model before RL).", None)

    def validate(self) -> None:
        if not self.temperature > 0:
            raise ValueError("temperature must be > 0")
