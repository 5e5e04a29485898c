"""The few pieces the reward, DPO, PPO and GRPO trainers share (on top of :mod:`loop`).

Starting weights (``--resume`` / ``--init`` / ``scratch`` / newest SFT checkpoint), the frozen
reference, optimizer + schedule with exact resume, checkpoint saving, the stop and NaN guards,
and averaging logged numbers over DDP processes. Everything else stays in each trainer.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from llmctl.core.rl_params import SCRATCH
from llmctl.trainers import distributed as D
from llmctl.trainers.checkpoint import load_checkpoint, prune_checkpoints, resolve_checkpoint, save_checkpoint
from llmctl.trainers.loop import Cancelled, NonFiniteLoss, Session, find_start_checkpoint
from llmctl.trainers.model import GPT, GPTConfig
from llmctl.trainers.optim import make_optimizer, make_scheduler


def no_dropout(model: nn.Module) -> nn.Module:
    """Turn dropout off everywhere: on-policy ratios and log-prob comparisons need a deterministic model."""
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
        if hasattr(m, "dropout") and isinstance(m.dropout, float):
            m.dropout = 0.0
    if hasattr(model, "config"):
        model.config.dropout = 0.0
    return model


def _fresh(s: Session) -> GPT:
    torch.manual_seed(s.params.seed)
    return GPT(GPTConfig(**s.params.model_shape(), dropout=0.0)).to(s.device)


def start_policy(s: Session, need_stage: str = "sft") -> tuple[GPT, dict[str, Any] | None, Path | None, str]:
    """``(model, resume_state, start_checkpoint, reference_source)`` for a preference/RL stage.

    ``--resume`` restores a run of this stage; ``--init scratch`` builds a fresh preset model;
    ``--init CKPT`` or the newest ready checkpoint of ``need_stage`` gives the weights. The
    reference source (the starting checkpoint, or ``scratch``) is kept in every checkpoint so a
    resumed run compares against the same reference. Extra head weights stay in
    ``resume_state["extra_weights"]`` for the trainer to attach.
    """
    p = s.params
    torch.manual_seed(p.seed)
    if p.resume:
        where = s.ws.checkpoints_dir / s.stage if p.resume == "last" else s.ws.path(p.resume)
        src = resolve_checkpoint(where)
        model, state = load_checkpoint(src, s.device)
        ref = state["extra"].get("reference") or SCRATCH
        return no_dropout(model), state, src, ref  # type: ignore[return-value]
    if p.init == SCRATCH:
        return _fresh(s), None, None, SCRATCH
    start = find_start_checkpoint(s.ws, p.init, need_stage)
    if start is None:
        raise FileNotFoundError(f"{s.stage}: no ready checkpoint in checkpoints/{need_stage}: run "
                                f"`llmctl run {need_stage}` first, or pass --init CKPT (or --init scratch)")
    model, _ = load_checkpoint(start, s.device)
    return no_dropout(model), None, start, str(start)  # type: ignore[return-value]


def load_reference(s: Session, source: str) -> GPT:
    """The frozen reference policy: the starting checkpoint again (or the same fresh model)."""
    if source == SCRATCH:
        ref = _fresh(s)
    else:
        if not Path(source).exists():
            raise FileNotFoundError(f"{s.stage}: the reference checkpoint {source} is gone; cannot resume")
        ref, _ = load_checkpoint(source, s.device)
    no_dropout(ref).eval()
    for q in ref.parameters():
        q.requires_grad_(False)
    return ref  # type: ignore[return-value]


def make_optim(s: Session, module: nn.Module, total_steps: int,
               resume: dict[str, Any] | None) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW + warmup/cosine over ``total_steps`` optimizer steps, restored when resuming."""
    p = s.params
    opt = make_optimizer(module, p.lr, p.weight_decay, (p.beta1, p.beta2), device_type=s.device.type)
    sched = make_scheduler(opt, p.warmup_steps, total_steps, p.min_lr_ratio)
    if resume is not None:
        opt.load_state_dict(resume["optimizer"])
        sched.load_state_dict(resume["scheduler"])
    return opt, sched


def save(s: Session, gpt: GPT, opt: Any, sched: Any, step: int, extra: dict[str, Any], *,
         inputs: dict[str, Any], counts: dict[str, Any] | None = None) -> Path | None:
    """Checkpoint ``gpt`` (with any attached heads) to ``checkpoints/<stage>/<run>/step_N`` on rank 0."""
    path = None
    if s.is_main:
        path = save_checkpoint(s.ckpt_dir, gpt, opt, sched, step, extra, stage=s.stage,
                               params=dataclasses.asdict(s.params), inputs=inputs, counts=counts or {},
                               tokenizer=s.tokenizer_info)
        prune_checkpoints(s.ckpt_dir, s.params.keep_last)
    D.barrier()
    return path


def stop_requested(s: Session) -> bool:
    """Whether SIGTERM / Ctrl-C arrived on any process."""
    return D.any_true(s.stop.requested is not None, s.device)


def cancelled(s: Session, step: int, path: Path | None) -> Cancelled:
    s.say(f"{s.stage}: stopped ({s.stop.requested or 'signal'}) at step {step}; checkpoint {path}")
    return Cancelled(f"stopped at step {step}; checkpoint {path}")


def check_finite(s: Session, step: int, loss: float, norm: float, save_fn: Any) -> None:
    """NaN guard: log the bad values, checkpoint the weights that produced them and stop
    (on every process together, when any of them saw a non-finite value)."""
    if not D.any_true(not (math.isfinite(loss) and math.isfinite(norm)), s.device):
        return
    s.log(step, {"train/loss": loss, "grad_norm": norm, "warning": "non-finite loss"})
    raise NonFiniteLoss(step, save_fn())


def mean_over_ranks(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average every number over the DDP processes (identity with one process)."""
    if not values or not D.dist_env().enabled:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], device=device, dtype=torch.float64)
    D.all_reduce_mean(t)
    return dict(zip(keys, t.tolist(), strict=True))


def continue_file(s: Session, src_ckpt: Path, name: str, step: int) -> None:
    """On resume: carry ``name`` (e.g. samples.jsonl) over from the source run, cut back to ``step``."""
    if not s.is_main:
        return
    from llmctl.core.metrics import MetricsWriter

    src = s.ws.runs_dir / s.stage / src_ckpt.parent.name / name
    mine = s.run_dir / name
    if src.resolve() != mine.resolve() and src.is_file() and not mine.exists():
        shutil.copyfile(src, mine)
    if mine.exists():
        w = MetricsWriter(mine)
        w.truncate_to_step(step)
        w.close()


def shuffled_indices(n: int, count: int, seed: int, start: int) -> list[int]:
    """Items ``start .. start+count-1`` of an endless stream of seeded shuffles of ``range(n)``.

    A pure function of its arguments, so batch ``k`` is the same in a resumed run.
    """
    out: list[int] = []
    perms: dict[int, list[int]] = {}
    for k in range(start, start + count):
        epoch, i = divmod(k, n)
        if epoch not in perms:
            g = torch.Generator().manual_seed(seed * 100_003 + epoch)
            perms[epoch] = torch.randperm(n, generator=g).tolist()
        out.append(perms[epoch][i])
    return out


def sequence_logprobs(gpt: GPT, ids: torch.Tensor, loss_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of log p(ids[:, t]) over ``loss_mask[:, t] == 1``, token count) per row, t >= 1.

    Rows are right-padded, so plain causal attention is exact. Only the masked positions go
    through the output layer (the 50k-wide projection dominates the cost of a small model).
    """
    from llmctl.trainers.rl_losses import gather_logprobs

    h = gpt.hidden_states(ids[:, :-1])
    m = loss_mask[:, 1:].bool()
    rows, cols = m.nonzero(as_tuple=True)
    logits = gpt.lm_head(h[rows, cols])
    lp = gather_logprobs(logits, ids[:, 1:][rows, cols])
    out = torch.zeros(ids.shape[0], device=ids.device, dtype=lp.dtype).index_add(0, rows, lp)
    return out, m.sum(1)


class SequenceLogprobs(nn.Module):
    """DDP-friendly wrapper: ``forward(ids, loss_mask) -> (summed log-probs, counts)``."""

    def __init__(self, gpt: GPT) -> None:
        super().__init__()
        self.gpt = gpt

    def forward(self, ids: torch.Tensor, loss_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return sequence_logprobs(self.gpt, ids, loss_mask)
