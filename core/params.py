"""Stage parameters by composition: one field helper, the groups stages hold, one length vocabulary.

A stage's parameters are a flat dataclass (``params.lr``, ``--lr``, ``[stages.sft] lr``) composed
from the groups it uses plus its own fields::

    @compose(Start, ModelShape, Optimiser, Schedule, Logging, Runtime, Rollout, lr=1e-3)
    class GRPOParams:
        num_iterations: int = param("Updates over each rollout batch.", 2)

so every option a command offers changes what it does: a stage that ignores a group does not hold
it. Each group checks its own fields (``validate``); ``params.group(Optimiser)`` gives a group back
as its own object. A field marked ``run_only`` changes how a run goes, not what it makes, so it
never makes an artifact stale.

Lengths, in tokens, have one vocabulary (internal names and help text use these words):

- ``block_size``: model capacity, the longest sequence the model's position table holds.
- ``seq_len``: packed row length of a prepared SFT file (``prepare sft``).
- ``context_length``: training window, tokens per training row (pretrain, SFT, eval's dev loss);
  at most ``block_size``.
- ``max_length``: preference window, tokens of one prompt + response (reward model, DPO).
- ``max_prompt_length`` / ``max_new_tokens``: RL prompt tokens kept / completion tokens sampled.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")
INT_LIMIT = 2**53  # no count or size of ours comes near it; larger values are typos or attacks

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
DTYPES = ("auto", "bf16", "fp16", "fp32")
INIT_HELP = ("Starting weights: a checkpoint (step or run dir), or 'scratch' for a fresh --preset model; "
             "default: the newest ready SFT checkpoint.")


def param(help: str, default: Any = None, *, run_only: bool = False, ge: float | None = None,
          le: float | None = None, **meta: Any) -> Any:
    """A parameter field: its help text, default (a list is copied per instance) and metadata.

    ``run_only`` marks a field that changes how a run goes, not what it makes; ``ge``/``le`` bound
    a number; other metadata (``flag``, ``argument``) shapes the generated CLI option.
    """
    md = {"help": help, "run_only": run_only, "ge": ge, "le": le, **meta}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=md)
    return dataclasses.field(default=default, metadata=md)


def run_only_names(cls: type) -> frozenset[str]:
    """The fields of a params class marked ``run_only``."""
    return frozenset(f.name for f in dataclasses.fields(cls) if f.metadata.get("run_only"))


def field_default(f: dataclasses.Field) -> Any:
    """A field's default value (a fresh copy for a factory), or None."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


class FieldValueError(ValueError):
    """A parameter's value is out of its range; ``name`` is the field."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


def check_values(params: Any) -> None:
    """Every number finite and within its field's bounds; raises FieldValueError naming the field."""
    for f in dataclasses.fields(params):
        v = getattr(params, f.name)
        if isinstance(v, bool) or not isinstance(v, int | float):
            continue
        if isinstance(v, float) and not math.isfinite(v):
            raise FieldValueError(f.name, f"{f.name} must be a finite number, got {v}")
        lo, hi = f.metadata.get("ge"), f.metadata.get("le")
        if abs(v) > INT_LIMIT or (lo is not None and v < lo) or (hi is not None and v > hi):
            bounds = " and ".join(b for b in (lo is not None and f">= {lo}", hi is not None and f"<= {hi}") if b)
            raise FieldValueError(f.name, f"{f.name} = {v} is out of range" + (f": it must be {bounds}" if bounds
                                                                               else ""))


def _own_fields(cls: type) -> list[tuple[str, Any, dataclasses.Field]]:
    hints = typing.get_type_hints(cls)
    out = []
    for name in cls.__dict__.get("__annotations__", {}):
        value = cls.__dict__.get(name, dataclasses.MISSING)
        f = value if isinstance(value, dataclasses.Field) else dataclasses.field(default=value)
        out.append((name, hints[name], f))
    return out


def _with_default(f: dataclasses.Field, new: Any) -> dataclasses.Field:
    if isinstance(new, dataclasses.Field):
        return new
    return param(f.metadata.get("help", ""), new, **{k: v for k, v in f.metadata.items() if k != "help"})


def compose(*groups: type, retired: tuple[str, ...] = (), **defaults: Any) -> Callable[[type[T]], type[T]]:
    """Make a flat params dataclass of ``groups``' fields, then the decorated class's own fields.

    ``defaults`` set this stage's default of a group field (a value, or a whole ``param(...)`` for
    a different help text). ``retired`` names keys an older version of the stage had: found in
    ``llmctl.toml`` they are dropped with a notice. ``validate`` checks every group, then the
    class's own ``validate``.
    """
    unknown = set(defaults) - {f.name for g in groups for f in dataclasses.fields(g)}
    if unknown:
        raise TypeError(f"compose: defaults for fields no group has: {', '.join(sorted(unknown))}")

    def build(cls: type[T]) -> type[T]:
        specs: dict[str, tuple[Any, dataclasses.Field]] = {}  # own fields first: the stage's own options
        own = _own_fields(cls)
        group_names = {f.name for g in groups for f in dataclasses.fields(g)}
        for name, typ, f in own:
            if name in group_names:
                raise TypeError(f"{cls.__name__}.{name}: a group already holds it (set its default in compose)")
            specs[name] = (typ, f)
        owner: dict[type, tuple[str, ...]] = {}
        for g in groups:
            hints = typing.get_type_hints(g)
            for f in dataclasses.fields(g):
                new = defaults.get(f.name, dataclasses.MISSING)
                specs[f.name] = (hints[f.name], f if new is dataclasses.MISSING else _with_default(f, new))
            owner[g] = tuple(f.name for f in dataclasses.fields(g))
        own_validate = cls.__dict__.get("validate")
        ns = {k: v for k, v in cls.__dict__.items()
              if k not in specs and k not in ("__dict__", "__weakref__", "__annotations__", "validate")}

        def validate(self: Any) -> None:
            check_values(self)
            for g in groups:
                group_check = getattr(g, "validate", None)
                if group_check is not None:
                    group_check(self.group(g))
            if own_validate is not None:
                own_validate(self)

        def group(self: Any, g: type[T]) -> T:
            """This stage's values of group ``g`` as a ``g`` object."""
            return g(**{n: getattr(self, n) for n in owner[g]})

        for g in groups:  # a group's helpers (e.g. ModelShape.model_shape) read the flat fields
            for k, v in g.__dict__.items():
                if callable(v) and not k.startswith("_") and k != "validate" and k not in ns:
                    ns[k] = v
        ns.update(validate=validate, group=group, __groups__=tuple(groups), __retired__=tuple(retired))
        fields = [(name, typ, f) for name, (typ, f) in specs.items()]
        made = dataclasses.make_dataclass(cls.__name__, fields, namespace=ns)
        made.__module__, made.__qualname__ = cls.__module__, cls.__qualname__
        return made  # type: ignore[return-value]

    return build


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


def _at_least(obj: Any, low: float, *names: str) -> None:
    for n in names:
        if getattr(obj, n) < low:
            raise ValueError(f"{n} must be >= {low:g}, got {getattr(obj, n)}")


# ---- the groups -----------------------------------------------------------------------------------

@dataclass
class Start:
    """Where the weights come from."""

    init: str | None = param("Checkpoint to start from (step dir or run dir); default: newest of the stage "
                             "it needs.", None)
    resume: str | None = param("Resume a stopped run exactly from this checkpoint (step dir, run dir or "
                               "'last').", None)


@dataclass
class ModelShape:
    """The GPT shape of a fresh model (a checkpoint brings its own)."""

    preset: str = param("Model preset: " + ", ".join(MODEL_PRESETS) + " (ignored when starting from a "
                        "checkpoint).", "tiny")
    n_layer: int = param("Transformer layers (0 = preset's).", 0)
    n_head: int = param("Attention heads (0 = preset's).", 0)
    n_embd: int = param("Embedding width (0 = preset's).", 0)
    block_size: int = param("Model capacity: the longest sequence it holds, in tokens (0 = preset's).", 0)

    def validate(self) -> None:
        self.model_shape()

    def model_shape(self) -> dict[str, int]:
        """The resolved model shape (preset + non-zero overrides)."""
        return resolve_model_shape(self.preset, n_layer=self.n_layer, n_head=self.n_head, n_embd=self.n_embd,
                                   block_size=self.block_size)


@dataclass
class Optimiser:
    """AdamW and gradient clipping."""

    lr: float = param("Peak learning rate.", 1e-3)
    weight_decay: float = param("AdamW weight decay (matrices only).", 0.1)
    beta1: float = param("AdamW beta1.", 0.9)
    beta2: float = param("AdamW beta2.", 0.95)
    grad_clip: float = param("Clip the gradient norm to this (0 = off).", 1.0)

    def validate(self) -> None:
        if self.lr <= 0:
            raise ValueError("lr must be > 0")
        if not (0.0 <= self.beta1 < 1.0 and 0.0 <= self.beta2 < 1.0):
            raise ValueError("beta1 and beta2 must be in [0, 1)")
        _at_least(self, 0, "weight_decay", "grad_clip")


@dataclass
class Schedule:
    """Step count and the learning-rate schedule (linear warmup, cosine decay)."""

    max_steps: int = param("Optimizer steps.", 200)
    warmup_steps: int = param("Linear warmup steps.", 20)
    min_lr_ratio: float = param("Final learning rate as a fraction of the peak (cosine decay).", 0.1)

    def validate(self) -> None:
        _at_least(self, 1, "max_steps")
        _at_least(self, 0, "warmup_steps")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError("min_lr_ratio must be in [0, 1]")


@dataclass
class Logging:
    """Logging, evaluation and checkpoint cadence."""

    eval_every: int = param("Evaluate every N steps (0 = only at the end).", 50)
    log_every: int = param("Log train metrics every N steps.", 5)
    save_every: int = param("Checkpoint every N steps (0 = only at the end).", 100)
    keep_last: int = param("Checkpoints kept: the last N plus the best by eval loss.", 2)
    progress: bool = param("Show a progress bar (plain lines when not a terminal).", True, run_only=True)
    tensorboard: bool = param("Also log to TensorBoard (runs/<stage>/<run>/tb) when installed.", False,
                              run_only=True)
    wandb: bool = param("Also log to Weights & Biases when installed.", False, run_only=True)
    wandb_project: str = param("W&B project name.", "llmctl", run_only=True)

    def validate(self) -> None:
        _at_least(self, 1, "log_every", "keep_last")
        _at_least(self, 0, "eval_every", "save_every")


@dataclass
class Runtime:
    """Seed, device and numeric precision."""

    seed: int = param("Random seed (weights and data order).", 1337)
    device: str = param("auto, cpu, cuda or cuda:N.", "auto", run_only=True)
    dtype: str = param("Autocast dtype: auto (bf16 on GPU, fp32 on CPU), bf16, fp16 or fp32.", "auto")

    def validate(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype {self.dtype!r}: expected {', '.join(DTYPES)}")


@dataclass
class TokenBatches:
    """The token-row training loop of pretrain and SFT: rows, accumulation, window, dropout, speed."""

    batch_size: int = param("Rows per micro-batch per process.", 8)
    grad_accum: int = param("Micro-batches per optimizer step.", 1)
    context_length: int = param("Training window: tokens per row, at most block_size (0 = block_size).", 256)
    dropout: float = param("Dropout probability.", 0.0)
    compile: bool = param("torch.compile the model on GPU (never on CPU).", True, run_only=True)
    peak_tflops: float = param("Accelerator peak dense bf16 TFLOP/s for MFU (0 = from the known-GPU table).", 0.0,
                               run_only=True)

    def validate(self) -> None:
        _at_least(self, 1, "batch_size", "grad_accum")
        _at_least(self, 0, "context_length", "peak_tflops")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")


@dataclass
class PreferencePairs:
    """Preference pairs (prompt/chosen/rejected): files, batches and the preference window."""

    train_data: str = param("Preference pairs (prompt/chosen/rejected jsonl).", "data/preferences.jsonl")
    test_data: str = param("Held-out pairs for accuracy / margins.", "data/preferences_test.jsonl")
    max_length: int = param("Preference window: tokens of prompt + response; the prompt is cut from the left "
                            "(keeping at least half), then the responses at the end.", 128)
    max_pairs: int = param("Training pairs used (0 = all).", 0)
    eval_pairs: int = param("Held-out pairs scored per evaluation (0 = all).", 200)
    batch_size: int = param("Preference pairs per micro-batch per process.", 8)
    grad_accum: int = param("Micro-batches per optimizer step.", 1)

    def validate(self) -> None:
        _at_least(self, 1, "max_length", "batch_size", "grad_accum")
        _at_least(self, 0, "max_pairs", "eval_pairs")


@dataclass
class Rollout:
    """On-policy RL: prompt files, sampling, the clipped update, rollout logging, held-out accuracy."""

    train_data: list[str] = param("Prompt files ({prompt, gold, data_source} jsonl), mixed.",
                                  ["data/arithmetic_prompts.jsonl"])
    eval_data: list[str] = param("Held-out prompt files (empty = hold out eval_prompts rows of train_data).", [])
    arithmetic_level: int = param("Keep only arithmetic rows of this level (0 = all).", 0)
    eval_prompts: int = param("Held-out prompts scored per evaluation (0 = no eval).", 64)
    eval_samples: int = param("Samples per held-out prompt at the rollout temperature, for pass@1 and pass@k "
                              "(0 = greedy accuracy only).", 8)
    train_prompts: int = param("Train on only the first N distinct prompts left after the hold-out (0 = all).", 0)
    prompts_per_step: int = param("Prompts per rollout batch (per process).", 16)
    num_generations: int = param("Completions sampled per prompt.", 8)
    max_new_tokens: int = param("Completion length: tokens sampled per completion (longer ones are cut).", 48)
    max_prompt_length: int = param("Prompt length: prompt tokens kept (from the end).", 192)
    temperature: float = param("Sampling temperature for rollouts.", 1.0)
    top_k: int = param("Top-k for rollouts (0 = off).", 0)
    top_p: float = param("Top-p for rollouts (1 = off).", 1.0)
    micro_batch_size: int = param("Completions per forward/backward in the update.", 32)
    clip_eps: float = param("PPO clip range of the probability ratio.", 0.2)
    kl_coef: float = param("Coefficient of the KL penalty to the frozen reference (0 = no reference).", 0.04)
    format_weight: float = param("Reward weight of the <think>/<answer> format score.", 0.1)
    samples_per_step: int = param("Rollouts written to samples.jsonl per step (-1 = all, 0 = none).", 64)

    def validate(self) -> None:
        _at_least(self, 1, "prompts_per_step", "num_generations", "max_new_tokens", "max_prompt_length",
                  "micro_batch_size")
        _at_least(self, 0, "arithmetic_level", "eval_prompts", "eval_samples", "train_prompts", "top_k", "kl_coef")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0 for on-policy sampling")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError("top_p must be in (0, 1]")
        if not 0.0 < self.clip_eps < 1.0:
            raise ValueError("clip_eps must be in (0, 1)")
