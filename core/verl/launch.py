"""``llmctl verl launch``: the verl GRPO command for this workspace (printed, or run with ``--run``).

The command is ``python -m verl.trainer.main_ppo`` with Hydra overrides for verl 0.9.1's
``ppo_trainer`` config: GRPO advantages, our parquet files (``data/verl/*_merged/{train,test}``
unless given), the model path (e.g. a folder written by ``llmctl export hf``), rollout ``n``,
batch sizes, GPUs, and our reward function::

    reward.custom_reward_function.path=pkg://llmctl.core.verl_reward
    reward.custom_reward_function.name=compute_score

(``reward_ref="file"`` passes this module's file path instead of ``pkg://``, for a verl whose
workers cannot import llmctl by name). Every key is a real key of verl's config: a test composes
verl's own Hydra config with these overrides, so a renamed key fails there, not on a GPU node.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmctl.core.tokenizer import Tokenizer
from llmctl.core.workspace import Workspace

REWARD_MODULE = "llmctl.core.verl_reward"
REWARD_FN = "compute_score"


@dataclass
class LaunchOptions:
    """What goes into the verl command; defaults suit a GPT-2-class model on one GPU."""

    model: str
    train_files: list[str]
    val_files: list[str]
    n: int = 8  # responses per prompt (GRPO group size)
    train_batch_size: int = 64  # prompts per step
    ppo_mini_batch_size: int = 32
    micro_batch_size_per_gpu: int = 8
    max_prompt_length: int = 512
    max_response_length: int = 512
    lr: float = 1e-6
    kl_coef: float = 0.001
    gpus: int = 1
    nnodes: int = 1
    epochs: int = 1
    rollout_engine: str = "vllm"
    gpu_memory_utilization: float = 0.5
    save_dir: str = ""
    experiment_name: str = "llmctl-grpo"
    reward_ref: str = "pkg"  # pkg | file
    reward_kwargs: dict[str, Any] = field(default_factory=dict)
    extra: list[str] = field(default_factory=list)  # raw KEY=VALUE overrides, appended last


_SAFE = re.compile(r"[A-Za-z_/~][\w./:+~-]*")


def _q(value: str) -> str:
    """A Hydra string value, quoted only when Hydra's grammar would read it otherwise."""
    if _SAFE.fullmatch(value) and value.lower() not in ("true", "false", "null", "none", "nan", "inf"):
        return value
    # Hydra quoted strings: only backslashes before a quote (or the closing quote) are escapes
    body = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
    body = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, body)
    body = body.replace("${", "\\${")  # no OmegaConf interpolation inside a path
    return "'" + body + "'"


def _files(paths: list[str]) -> str:
    return _q(paths[0]) if len(paths) == 1 else "[" + ",".join(_q(p) for p in paths) + "]"


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return _q(str(v))


def reward_path(ref: str = "pkg") -> str:
    """The ``custom_reward_function.path`` value: ``pkg://…`` or this install's module file."""
    if ref == "pkg":
        return "pkg://" + REWARD_MODULE
    if ref == "file":
        spec = importlib.util.find_spec(REWARD_MODULE)
        if spec is None or not spec.origin:
            raise RuntimeError(f"cannot locate {REWARD_MODULE}")
        return spec.origin
    raise ValueError(f"reward_ref must be pkg or file, got {ref!r}")


def build_overrides(o: LaunchOptions) -> list[str]:
    """Hydra overrides for verl's ``ppo_trainer`` config."""
    if not o.train_files:
        raise ValueError("no training parquet files (run `llmctl verl convert` or pass --train)")
    if o.ppo_mini_batch_size > o.train_batch_size:
        raise ValueError("ppo_mini_batch_size must not exceed train_batch_size")
    mb = o.micro_batch_size_per_gpu
    ov = [
        "algorithm.adv_estimator=grpo",
        "algorithm.use_kl_in_reward=false",
        f"data.train_files={_files(o.train_files)}",
        f"data.val_files={_files(o.val_files or o.train_files)}",
        f"data.train_batch_size={o.train_batch_size}",
        f"data.max_prompt_length={o.max_prompt_length}",
        f"data.max_response_length={o.max_response_length}",
        "data.filter_overlong_prompts=true",
        "data.truncation=error",
        f"actor_rollout_ref.model.path={_q(o.model)}",
        f"actor_rollout_ref.actor.optim.lr={o.lr!r}",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={o.ppo_mini_batch_size}",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={mb}",
        "actor_rollout_ref.actor.use_kl_loss=true",
        f"actor_rollout_ref.actor.kl_loss_coef={o.kl_coef!r}",
        "actor_rollout_ref.actor.kl_loss_type=low_var_kl",
        f"actor_rollout_ref.rollout.name={o.rollout_engine}",
        f"actor_rollout_ref.rollout.n={o.n}",
        "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
        f"actor_rollout_ref.rollout.gpu_memory_utilization={o.gpu_memory_utilization!r}",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={mb}",
        f"actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu={mb}",
        f"reward.custom_reward_function.path={_q(reward_path(o.reward_ref))}",
        f"reward.custom_reward_function.name={REWARD_FN}",
        f"trainer.n_gpus_per_node={o.gpus}",
        f"trainer.nnodes={o.nnodes}",
        f"trainer.total_epochs={o.epochs}",
        "trainer.project_name=llmctl",
        f"trainer.experiment_name={_q(o.experiment_name)}",
        "trainer.logger=[console]",
        "trainer.critic_warmup=0",
    ]
    for k, v in sorted(o.reward_kwargs.items()):
        ov.append(f"+reward.custom_reward_function.reward_kwargs.{k}={_value(v)}")
    if o.save_dir:
        ov.append(f"trainer.default_local_dir={_q(o.save_dir)}")
    return ov + list(o.extra)


def build_command(o: LaunchOptions, python: str | None = None) -> list[str]:
    """The full argv: ``python -m verl.trainer.main_ppo <overrides>``."""
    return [python or sys.executable, "-m", "verl.trainer.main_ppo", *build_overrides(o)]


def shell_line(argv: list[str]) -> str:
    """The command as one copy-pasteable shell line, one override per line."""
    head = shlex.join(argv[:3])
    return head + "".join(" \\\n    " + shlex.quote(a) for a in argv[3:])


def verl_installed() -> bool:
    """Whether the ``verl`` package is installed (without importing it)."""
    return importlib.util.find_spec("verl") is not None


def verl_missing() -> list[str]:
    """What a ``python -m verl.trainer.main_ppo`` run lacks here (empty when it can start)."""
    return [m for m in ("verl", "ray", "torch", "tensordict", "hydra") if importlib.util.find_spec(m) is None]


def workspace_files(ws: Workspace) -> tuple[list[str], list[str]]:
    """(train, val) parquet files of the workspace's ``data/verl/*_merged`` conversions."""
    root = ws.path("data/verl")
    train = sorted(str(p) for p in root.glob("*_merged/train/*.parquet"))
    val = sorted(str(p) for p in root.glob("*_merged/test/*.parquet"))
    return train, val


def verl_config_dir() -> Path | None:
    """verl's trainer config folder (``verl/trainer/config``) when verl is installed."""
    spec = importlib.util.find_spec("verl")
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(list(spec.submodule_search_locations)[0]) / "trainer" / "config"
    return d if (d / "ppo_trainer.yaml").is_file() else None


@dataclass
class SourceRows:
    """Rows of one data_source in the launch's training files."""

    rows: int = 0
    unscorable: int = 0  # no verifier for the row here
    over_length: int = 0  # longer than max_prompt_length: verl's filter drops them


def source_report(files: list[str], max_prompt_length: int, tok: Tokenizer) -> dict[str, SourceRows]:
    """Per data_source: rows, rows with no verifier, rows whose prompt exceeds ``max_prompt_length``
    tokens (counted with llmctl's tokenizer and chat template, as ``llmctl export hf`` writes them)."""
    import pyarrow.parquet as pq

    from llmctl.core.data.chat import encode_prompt
    from llmctl.core.verl.check import row_backend

    out: dict[str, SourceRows] = {}
    known: dict[str, bool] = {}
    for f in files:
        table = pq.read_table(f, columns=["data_source", "prompt", "reward_model"])
        for ds, prompt, rm in zip(*(table.column(i).to_pylist() for i in range(3)), strict=True):
            r = out.setdefault(ds, SourceRows())
            r.rows += 1
            gt = (rm or {}).get("ground_truth")
            key = ds if not ds.startswith("bootcamp/") else None
            ok = known.get(key) if key else None
            if ok is None:
                ok = row_backend(ds, gt) not in ("none", "none (no verl)")
                if key:
                    known[key] = ok
            r.unscorable += not ok
            if len(encode_prompt(prompt, tok)) > max_prompt_length:
                r.over_length += 1
    return out


def drop_unscorable(files: list[str], out_dir: Path) -> tuple[list[str], dict[str, int]]:
    """Copies of ``files`` under ``out_dir`` without the rows that have no verifier; returns the new
    files and the rows dropped per data_source."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from llmctl.core.verl.check import row_backend

    out_dir.mkdir(parents=True, exist_ok=True)
    dropped: dict[str, int] = {}
    new_files = []
    for i, f in enumerate(files):
        table = pq.read_table(f)
        sources = table.column("data_source").to_pylist()
        gts = [(rm or {}).get("ground_truth") for rm in table.column("reward_model").to_pylist()]
        keep = [row_backend(ds, gt) not in ("none", "none (no verl)") for ds, gt in zip(sources, gts, strict=True)]
        for ds, k in zip(sources, keep, strict=True):
            if not k:
                dropped[ds] = dropped.get(ds, 0) + 1
        path = out_dir / f"{i:03d}_{Path(f).name}"
        pq.write_table(table.filter(pa.array(keep)), path)
        new_files.append(str(path))
    return new_files, dropped
