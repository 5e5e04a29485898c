"""Every stage and artifact of the pipeline, declared once.

The CLI builds its commands from these declarations, the TUI draws its pipeline from them and
``llmctl init`` writes their parameters into ``llmctl.toml``. A stage's parameters are a dataclass
and its runner a function ``run(ws, params, run_dir) -> dict | None``, both named as
``"module:attribute"`` so that listing stages imports nothing heavy; a stage whose module is not
importable yet is reported as not built.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import math
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmctl.core.params import check_values, field_default


class StageNotBuilt(RuntimeError):
    """The stage is declared but its implementation is not available."""


class ParamError(ValueError):
    """A parameter value from the config or the command line is invalid."""


@dataclass(frozen=True)
class ArtifactSpec:
    """A named output: where it lives in the workspace and what kind of thing it is."""

    name: str
    path: str  # workspace-relative, e.g. "data/pile_train.h5" or "checkpoints/sft"
    kind: str  # tokens-h5 | sft-h5 | jsonl | parquet-dir | checkpoint | eval
    stage: str  # the stage that makes it
    help: str = ""


@dataclass(frozen=True)
class Stage:
    """One piece of work: what it needs, what it makes, its parameters and its runner."""

    name: str
    command: tuple[str, ...]  # CLI words, e.g. ("run", "grpo")
    needs: tuple[str, ...]  # artifact names; "a|b" means either
    makes: tuple[str, ...]
    params: str  # "module:Dataclass"
    runner: str  # "module:function"
    trains: bool = False  # uses GPUs, may run under torchrun
    help: str = ""

    def load_params_class(self) -> type:
        return _load(self.params, self.name)

    def load_runner(self) -> Any:
        return _load(self.runner, self.name)

    @property
    def built(self) -> bool:
        """Its params class loads and its runner module exists (found, not imported: trainers import torch)."""
        try:
            self.load_params_class()
        except StageNotBuilt:
            return False
        return module_exists(self.runner.partition(":")[0])


def module_exists(module: str) -> bool:
    """Whether ``module`` can be imported, found without running it or its package's ``__init__``."""
    parent, _, leaf = module.rpartition(".")
    try:
        if not parent or parent in sys.modules:
            return importlib.util.find_spec(module) is not None
        pspec = importlib.util.find_spec(parent)
    except (ImportError, ValueError):
        return False
    if pspec is None:
        return False
    for loc in pspec.submodule_search_locations or ():
        base = Path(loc) / leaf
        if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
            return True
    return False


def _load(ref: str, stage: str) -> Any:
    module, _, attr = ref.partition(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and (module == e.name or module.startswith(e.name + ".")):
            raise StageNotBuilt(f"stage {stage} is not built yet ({module} is missing)") from None
        raise
    try:
        return getattr(mod, attr)
    except AttributeError:
        raise StageNotBuilt(f"stage {stage} is not built yet ({ref} is missing)") from None


ARTIFACTS: tuple[ArtifactSpec, ...] = (
    ArtifactSpec("pile_train", "data/pile_train.h5", "tokens-h5", "prepare-pretrain", "pretraining tokens"),
    ArtifactSpec("pile_dev", "data/pile_dev.h5", "tokens-h5", "prepare-pretrain", "held-out tokens"),
    ArtifactSpec("sft_packed", "data/sft_packed.h5", "sft-h5", "prepare-sft", "packed chat rows + loss mask"),
    ArtifactSpec("preferences", "data/preferences.jsonl", "jsonl", "prepare-prefs", "preference pairs"),
    ArtifactSpec("preferences_test", "data/preferences_test.jsonl", "jsonl", "prepare-prefs", "held-out pairs"),
    ArtifactSpec("rl_prompts_train", "data/rl_prompts_train.jsonl", "jsonl", "prepare-rl", "GSM8K train prompts"),
    ArtifactSpec("rl_prompts_test", "data/rl_prompts_test.jsonl", "jsonl", "prepare-rl", "GSM8K test prompts"),
    ArtifactSpec("arithmetic_prompts", "data/arithmetic_prompts.jsonl", "jsonl", "prepare-rl", "arithmetic curriculum"),
    ArtifactSpec("verl_data", "data/verl", "parquet-dir", "verl-convert", "verl parquet (per file + merged)"),
    ArtifactSpec("ckpt_pretrain", "checkpoints/pretrain", "checkpoint", "pretrain", "base model"),
    ArtifactSpec("ckpt_sft", "checkpoints/sft", "checkpoint", "sft", "chat model"),
    ArtifactSpec("ckpt_reward", "checkpoints/reward", "checkpoint", "reward", "reward model"),
    ArtifactSpec("ckpt_dpo", "checkpoints/dpo", "checkpoint", "dpo", "DPO policy"),
    ArtifactSpec("ckpt_ppo", "checkpoints/ppo", "checkpoint", "ppo", "PPO policy"),
    ArtifactSpec("ckpt_grpo", "checkpoints/grpo", "checkpoint", "grpo", "GRPO policy"),
    ArtifactSpec("eval_results", "runs/eval", "eval", "eval", "evaluation results"),
)

STAGES: tuple[Stage, ...] = (
    Stage("prepare-pretrain", ("prepare", "pretrain"), (), ("pile_train", "pile_dev"),
          "llmctl.core.data.prepare_pretrain:PreparePretrainParams", "llmctl.core.data.prepare_pretrain:run",
          help="Pile-style shards -> flat int32 token HDF5"),
    Stage("prepare-sft", ("prepare", "sft"), (), ("sft_packed",),
          "llmctl.core.data.prepare_sft:PrepareSFTParams", "llmctl.core.data.prepare_sft:run",
          help="Alpaca / Dolly / GSM8K -> packed chat rows with loss mask"),
    Stage("prepare-prefs", ("prepare", "prefs"), (), ("preferences", "preferences_test"),
          "llmctl.core.data.prepare_prefs:PreparePrefsParams", "llmctl.core.data.prepare_prefs:run",
          help="HH-RLHF / UltraFeedback -> prompt/chosen/rejected"),
    Stage("prepare-rl", ("prepare", "rl"), (), ("rl_prompts_train", "rl_prompts_test", "arithmetic_prompts"),
          "llmctl.core.data.prepare_rl:PrepareRLParams", "llmctl.core.data.prepare_rl:run",
          help="GSM8K gold answers + arithmetic curriculum"),
    Stage("verl-convert", ("verl", "convert"), (), ("verl_data",),
          "llmctl.core.verl.convert:VerlConvertParams", "llmctl.core.verl.convert:run",
          help="bootcamp / RL-prompt .jsonl -> verl parquet"),
    Stage("pretrain", ("run", "pretrain"), ("pile_train", "pile_dev"), ("ckpt_pretrain",),
          "llmctl.core.train_params:PretrainParams", "llmctl.trainers.pretrain:run", trains=True,
          help="next-token pretraining"),
    Stage("sft", ("run", "sft"), ("ckpt_pretrain?", "sft_packed"), ("ckpt_sft",),
          "llmctl.core.train_params:SFTParams", "llmctl.trainers.sft:run", trains=True,
          help="supervised fine-tuning on packed chat rows"),
    Stage("reward", ("run", "reward"), ("ckpt_sft", "preferences", "preferences_test"), ("ckpt_reward",),
          "llmctl.core.rl_params:RewardParams", "llmctl.trainers.reward:run", trains=True,
          help="Bradley-Terry reward model"),
    Stage("dpo", ("run", "dpo"), ("ckpt_sft", "preferences", "preferences_test"), ("ckpt_dpo",),
          "llmctl.core.rl_params:DPOParams", "llmctl.trainers.dpo:run", trains=True,
          help="direct preference optimisation"),
    Stage("ppo", ("run", "ppo"), ("ckpt_sft", "rl_prompts_train|arithmetic_prompts", "ckpt_reward?"),
          ("ckpt_ppo",), "llmctl.core.rl_params:PPOParams", "llmctl.trainers.ppo:run", trains=True,
          help="PPO with value head, reward model or verifier"),
    Stage("grpo", ("run", "grpo"), ("ckpt_sft", "rl_prompts_train|arithmetic_prompts"), ("ckpt_grpo",),
          "llmctl.core.rl_params:GRPOParams", "llmctl.trainers.grpo:run", trains=True,
          help="group-relative policy optimisation with the verifier"),
    Stage("eval", ("eval",), ("ckpt_pretrain|ckpt_sft|ckpt_dpo|ckpt_ppo|ckpt_grpo",), ("eval_results",),
          "llmctl.core.train_params:EvalParams", "llmctl.trainers.evaluate:run", trains=True,
          help="dev loss, GSM8K and arithmetic accuracy"),
)

STAGE_BY_NAME = {s.name: s for s in STAGES}
ARTIFACT_BY_NAME = {a.name: a for a in ARTIFACTS}


def get_stage(name: str) -> Stage:
    try:
        return STAGE_BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r}; stages: {', '.join(STAGE_BY_NAME)}") from None


def need_names(need: str) -> tuple[list[str], bool]:
    """Split a ``needs`` entry into its alternatives and whether it is optional (``?``)."""
    optional = need.endswith("?")
    return need.rstrip("?").split("|"), optional


@functools.lru_cache(maxsize=256)
def _type_hints(cls: type) -> dict[str, Any]:
    """``typing.get_type_hints`` of a params class, evaluated once (it compiles every annotation)."""
    return typing.get_type_hints(cls)


def field_type(f: dataclasses.Field, cls: type) -> tuple[type, bool]:
    """The scalar type of a parameter field and whether it is a list."""
    t = _type_hints(cls).get(f.name, str)
    origin = typing.get_origin(t)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(t) if a is not type(None)]
        t = args[0] if args else str
        origin = typing.get_origin(t)
    if origin in (list, tuple):
        args = typing.get_args(t)
        return (args[0] if args else str), True
    return t, False


def stage_defaults(stage: Stage) -> dict[str, Any]:
    """The parameter defaults of a stage as plain TOML-able values (None values dropped)."""
    cls = stage.load_params_class()
    out = {}
    for f in dataclasses.fields(cls):
        v = field_default(f)
        if v is not None:
            out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


def _scalar(value: Any, typ: type) -> Any:
    """``value`` as ``typ``: strings (the command line) are parsed, other values must already fit."""
    if typ is bool:
        if isinstance(value, str):
            low = value.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
        elif isinstance(value, bool):
            return value
        raise ValueError(value)
    if isinstance(value, bool | dict | list | tuple):  # true is not 1, a table is not a string
        raise ValueError(value)
    if typ is str:
        if not isinstance(value, str):
            raise ValueError(value)
        return value
    if typ is int:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        return int(value)
    if typ is float:
        out = float(value)
        if not math.isfinite(out):
            raise ValueError(value)
        return out
    return value


def coerce(value: Any, typ: type, is_list: bool, name: str) -> Any:
    """Convert a config or command-line value to the field's type, or raise ParamError."""
    if value is None:
        return None
    if is_list:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list | tuple):
            raise ParamError(f"{name}: expected a list, got {value!r}")
        # an empty string item (``--sources ""``) means "none", so a list can be emptied from the CLI
        return [coerce(v, typ, False, name) for v in value if v != ""]
    try:
        return _scalar(value, typ)
    except (TypeError, ValueError, OverflowError):
        what = "a finite float" if typ is float else f"a valid {typ.__name__}"
        raise ParamError(f"{name}: {value!r} is not {what}") from None


def resolve_params(stage: Stage, config: dict[str, Any], overrides: dict[str, Any],
                   config_file: str = "llmctl.toml") -> Any:
    """Build the stage's params: dataclass defaults < ``llmctl.toml`` < command-line overrides.

    Config keys the stage does not have are ignored here (opening the workspace warns about them);
    unknown overrides are an error.
    """
    cls = stage.load_params_class()
    known = {f.name: f for f in dataclasses.fields(cls)}
    bad = sorted(set(overrides) - set(known))
    if bad:
        raise ParamError(f"{stage.name}: unknown parameter(s) {', '.join(bad)}")
    kwargs = {}
    for name, f in known.items():
        typ, is_list = field_type(f, cls)
        if name in overrides and overrides[name] is not None:
            kwargs[name] = coerce(overrides[name], typ, is_list, name)
        elif name in config:
            kwargs[name] = coerce(config[name], typ, is_list, f"{config_file} [stages.{stage.name}] {name}")
    params = cls(**kwargs)
    check = getattr(params, "validate", None)
    try:
        check_values(params)
        if callable(check):
            check()
    except ValueError as e:
        where = getattr(e, "name", None)
        src = f" (set in {config_file} [stages.{stage.name}])" if where in config and where not in overrides else ""
        raise ParamError(f"{stage.name}: {e}{src}") from None
    return params


def config_params(stage: Stage, ws_config: dict[str, Any]) -> dict[str, Any] | None:
    """The stage's parameters as ``llmctl.toml`` alone sets them (what staleness compares), or None."""
    try:
        return params_dict(resolve_params(stage, dict(ws_config.get("stages", {}).get(stage.name, {})), {}))
    except (ParamError, StageNotBuilt, TypeError):
        return None


def params_dict(params: Any) -> dict[str, Any]:
    """A params dataclass as a JSON-able dict."""
    return dataclasses.asdict(params)
