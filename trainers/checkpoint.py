"""Checkpoints: ``checkpoints/<stage>/<run_id>/step_N/``, ready once its ``manifest.json`` exists.

A step folder holds ``model.safetensors`` (weights, tied copies stored once), ``config.json``
(the :class:`GPTConfig`) and ``state.pt`` (optimizer, scheduler, RNG states, step and any extra
training state such as the data position). It is written as ``step_N.tmp`` and renamed into place;
``manifest.json`` (stage, params, inputs, counts ``{step, tokens, eval_loss}``) is written last
(:class:`llmctl.core.artifacts.ArtifactWriter`), so a killed writer never leaves a ready checkpoint.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from llmctl.core.artifacts import ArtifactWriter, newest_checkpoint, read_manifest, ready_checkpoints
from llmctl.core.render import human_bytes
from llmctl.core.runs import RunStopped
from llmctl.core.workspace import Workspace
from llmctl.trainers.model import GPT, GPTConfig

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
STATE = "state.pt"
FORMAT = "llmctl-gpt-1"
_STEP_RE = re.compile(r"^step_(\d+)$")


class CheckpointError(RunStopped):
    """A checkpoint that cannot be written (full disk, non-finite weights) or read safely."""


class NonFiniteWeights(CheckpointError):
    """The weights hold NaN or inf: such a model is never saved as a ready checkpoint."""

    def __init__(self, path: Path, names: list[str]) -> None:
        self.path, self.names = path, names
        more = f" and {len(names) - 3} more" if len(names) > 3 else ""
        super().__init__(f"weights are not finite ({', '.join(names[:3])}{more}): "
                         f"not saving {path} as a checkpoint; lower the learning rate or resume from an earlier step")


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return next((ln for ln in lines if "Unsupported global" in ln), lines[0] if lines else type(e).__name__)


def _disk_full(e: BaseException) -> bool:
    return getattr(e, "errno", None) == 28 or "os error 28" in str(e) or "No space left" in str(e) \
        or "file write failed" in str(e)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside DDP and ``torch.compile`` wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def step_dir_name(step: int) -> str:
    return f"step_{step}"


def step_of(path: str | os.PathLike[str]) -> int:
    """The step number of a ``step_N`` folder."""
    m = _STEP_RE.match(Path(path).name)
    if not m:
        raise ValueError(f"{path}: not a step_N checkpoint folder")
    return int(m.group(1))


def rng_state() -> dict[str, Any]:
    """This process's random generator states (torch CPU/CUDA and Python's)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "python" in state:
        random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _dedupe(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Drop tied copies (same storage) so safetensors can save; return (tensors, {dropped: kept})."""
    seen: dict[tuple[int, int, tuple[int, ...]], str] = {}
    out, tied = {}, {}
    for name, t in sd.items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if key in seen:
            tied[name] = seen[key]
            continue
        seen[key] = name
        out[name] = t.detach().contiguous().cpu()
    return out, tied


def save_checkpoint(run_ckpt_dir: str | os.PathLike[str], model: nn.Module, optimizer: Any = None,
                    scheduler: Any = None, step: int = 0, extra: dict[str, Any] | None = None, *,
                    stage: str = "", params: dict[str, Any] | None = None, inputs: dict[str, Any] | None = None,
                    counts: dict[str, Any] | None = None, tokenizer: dict[str, Any] | None = None,
                    config: GPTConfig | None = None) -> Path:
    """Write ``run_ckpt_dir/step_<step>/`` atomically and return it.

    ``model`` may be wrapped (DDP, compiled) and may carry extra modules (e.g. a value head)
    besides a GPT; its ``config`` attribute (or ``config=``) is recorded. ``extra`` is any
    picklable-by-torch training state (data position, best eval loss, ...). Call on rank 0 only.
    """
    raw = unwrap_model(model)
    cfg = config or getattr(raw, "config", None)
    if not isinstance(cfg, GPTConfig):
        raise TypeError("save_checkpoint needs a GPTConfig (model.config or config=)")
    final = Path(run_ckpt_dir) / step_dir_name(step)
    counts = {"step": step, **(counts or {})}
    tensors, tied = _dedupe(raw.state_dict())
    bad = [n for n, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise NonFiniteWeights(final, bad)
    with ArtifactWriter(final, stage=stage, params=params or {}, inputs=inputs or {}) as w:
        if w.tmp.exists():
            shutil.rmtree(w.tmp)
        w.tmp.mkdir(parents=True)
        try:
            save_file(tensors, str(w.tmp / WEIGHTS), metadata={"format": FORMAT, "tied": json.dumps(tied)})
            (w.tmp / CONFIG).write_text(json.dumps({"format": FORMAT, "model": cfg.to_dict(),
                                                    "model_class": type(raw).__name__}, indent=2) + "\n")
            state = {
                "step": step,
                "optimizer": optimizer.state_dict() if optimizer is not None else None,
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "rng": rng_state(),
                "extra": extra or {},
            }
            torch.save(state, w.tmp / STATE)
        except Exception as e:  # safetensors and torch report a full disk as their own errors
            if not _disk_full(e) and isinstance(e, TypeError | ValueError):
                raise
            free = shutil.disk_usage(w.tmp.parent).free
            why = f"no space left ({human_bytes(free)} free on {w.tmp.parent})" if _disk_full(e) else _first_line(e)
            raise CheckpointError(f"cannot write checkpoint {final}: {why}") from None
        w.commit(counts=counts, tokenizer=tokenizer, model=cfg.to_dict())
    return final


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """A ready ``step_N`` folder from a step folder, a run folder (its newest step) or a stage folder."""
    p = Path(path).expanduser()
    if (p / "manifest.json").is_file() and (p / WEIGHTS).is_file():
        return p
    if p.is_dir():
        steps = sorted((s for s in p.glob("step_*") if _STEP_RE.match(s.name) and (s / "manifest.json").is_file()),
                       key=step_of)
        if steps:
            return steps[-1]
        ready = ready_checkpoints(p)
        if ready:
            return ready[-1]
    if p.name.startswith("step_") and p.is_dir():
        raise FileNotFoundError(f"checkpoint {p} is not ready (no manifest.json)")
    raise FileNotFoundError(f"no ready checkpoint at {p}")


def find_checkpoint(ws: Workspace, ref: str) -> Path:
    """A ready step folder for ``ref``: a step/run/stage folder (absolute or workspace-relative),
    or a stage name (``sft``) meaning that stage's newest ready checkpoint."""
    p = ws.path(ref)
    if not p.exists() and "/" not in ref:
        stage_dir = ws.checkpoints_dir / ref
        found = newest_checkpoint(stage_dir)
        if found is None:
            raise FileNotFoundError(f"no ready {ref} checkpoint under {stage_dir}")
        return found
    return resolve_checkpoint(p)


def read_config(path: str | os.PathLike[str]) -> GPTConfig:
    """The GPTConfig recorded in a checkpoint."""
    step = resolve_checkpoint(path)
    data = json.loads((step / CONFIG).read_text(encoding="utf-8"))
    return GPTConfig.from_dict(data["model"])


def read_weights(path: str | os.PathLike[str], device: Any = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, tied) of a checkpoint: every stored tensor and the {dropped_name: kept_name} ties."""
    step = resolve_checkpoint(path)
    from safetensors import safe_open

    with safe_open(str(step / WEIGHTS), framework="pt") as f:
        meta = f.metadata() or {}
    tensors = load_file(str(step / WEIGHTS), device=str(device))
    return tensors, json.loads(meta.get("tied", "{}"))


def load_checkpoint(path: str | os.PathLike[str], device: Any = "cpu", *,
                    model: nn.Module | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Load a checkpoint: ``(model, state)``.

    Without ``model`` a :class:`GPT` is built from the recorded config; weights it does not have
    (e.g. a value head) are returned in ``state["extra_weights"]``. With ``model`` every stored
    tensor must fit it. ``state`` holds ``step``, ``optimizer``, ``scheduler``, ``rng``, ``extra``,
    ``manifest``, ``config`` and ``path`` (the step folder).
    """
    step_dir = resolve_checkpoint(path)
    config = read_config(step_dir)
    tensors, tied = read_weights(step_dir, device)
    strict = model is not None
    if model is None:
        model = GPT(config)
    model.to(device)
    raw = unwrap_model(model)
    own = raw.state_dict()
    extra_weights = {k: v for k, v in tensors.items() if k not in own}
    if strict and extra_weights:
        raise ValueError(f"{step_dir}: weights not in the model: {', '.join(sorted(extra_weights)[:5])}")
    missing = [k for k in own if k not in tensors and k not in tied]
    if missing:
        raise ValueError(f"{step_dir}: weights missing from the checkpoint: {', '.join(missing[:5])}")
    raw.load_state_dict({k: v for k, v in tensors.items() if k in own}, strict=False)
    state: dict[str, Any] = {"extra_weights": extra_weights}
    sp = step_dir / STATE
    if sp.is_file():
        try:  # weights_only: a crafted pickle is refused, never executed
            loaded = torch.load(sp, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(f"{sp}: not a training state llmctl can load safely ({_first_line(e)})") from None
        if not isinstance(loaded, dict):
            raise CheckpointError(f"{sp}: not a training state (a {type(loaded).__name__}, not a dict)")
        state.update(loaded)
    state.setdefault("step", step_of(step_dir))
    state.setdefault("extra", {})
    state.update(manifest=read_manifest(step_dir) or {}, config=config, path=step_dir)
    return model, state


def load_model(ckpt_dir: str | os.PathLike[str], device: Any = "cpu") -> GPT:
    """A GPT from a checkpoint (step, run or stage folder), in eval mode on ``device``."""
    model, _ = load_checkpoint(ckpt_dir, device)
    model.eval()
    return model  # type: ignore[return-value]


def ready_steps(run_ckpt_dir: str | os.PathLike[str]) -> list[Path]:
    """Ready ``step_N`` folders of one run, by step."""
    root = Path(run_ckpt_dir)
    if not root.is_dir():
        return []
    steps = [s for s in root.iterdir() if _STEP_RE.match(s.name) and (s / "manifest.json").is_file()]
    return sorted(steps, key=step_of)


def prune_checkpoints(run_ckpt_dir: str | os.PathLike[str], keep_last: int, keep_best: bool = True) -> list[Path]:
    """Delete all but the last ``keep_last`` ready steps and the best by ``counts.eval_loss``.

    The manifest goes first so a half-deleted folder is never taken as ready. Returns what was removed.
    """
    steps = ready_steps(run_ckpt_dir)
    keep = set(steps[-keep_last:]) if keep_last > 0 else set()
    if keep_best:
        scored = []
        for s in steps:
            loss = ((read_manifest(s) or {}).get("counts") or {}).get("eval_loss")
            if isinstance(loss, int | float):
                scored.append((float(loss), step_of(s), s))
        if scored:
            keep.add(min(scored)[2])
    removed = []
    for s in steps:
        if s not in keep:
            (s / "manifest.json").unlink(missing_ok=True)
            shutil.rmtree(s, ignore_errors=True)
            removed.append(s)
    return removed
