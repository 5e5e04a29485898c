"""The skeleton of the preference/RL trainers (reward, DPO, PPO, GRPO), on top of :mod:`loop`.

Each algorithm's ``run()`` reads top to bottom as::

    with session(ws, params, run_dir, STAGE) as s:               # loop.session: closed however it ends
        gpt, resume, start, ref_src = start_policy(s, "sft")     # weights: resumed, --init, or newest SFT
        ...its data, heads and reference...
        r = begin(s, gpt, module, ...)                           # optimizer, resume, provenance, DDP
        ...its one-line description...
        return train(r, Loop(step=..., evaluate=..., ...))       # the step loop

:func:`train` owns the cadence every stage shares: the stop check (SIGTERM / Ctrl-C write a
checkpoint and raise :class:`Cancelled`), one algorithm step, logging every ``log_every`` steps
(and on a warning), held-out evaluation every ``eval_every`` steps (and before the first step of
a fresh run when asked), checkpoints every ``save_every`` steps, and the last step doing all
three. :meth:`Run.update` is the optimizer step with its NaN guard. A resumed run continues its
source run's metrics (and samples), its RNG state and its step: the steps it takes are exactly
those of the unbroken run.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from llmctl.core.metrics import MetricsWriter
from llmctl.core.rl_params import SCRATCH
from llmctl.core.runs import SAMPLES_FILE
from llmctl.trainers import distributed
from llmctl.trainers.checkpoint import load_checkpoint, prune_checkpoints, save_checkpoint, set_rng_state
from llmctl.trainers.loop import (
    Cancelled,
    NonFiniteLoss,
    Progress,
    Session,
    continue_metrics,
    find_start_checkpoint,
    load_resume_checkpoint,
)
from llmctl.trainers.model import GPT, GPTConfig
from llmctl.trainers.optim import make_optimizer, make_scheduler
from llmctl.trainers.rl_common import no_dropout

Row = dict[str, Any]


# ---- setup ----------------------------------------------------------------------------------------

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
        model, state, src = load_resume_checkpoint(s)
        return no_dropout(model), state, src, state["extra"].get("reference") or SCRATCH  # type: ignore[return-value]
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


def continue_file(s: Session, src_ckpt: Path, name: str, step: int) -> None:
    """On resume: carry ``name`` (e.g. samples.jsonl) over from the source run, cut back to ``step``."""
    if not s.is_main:
        return
    src = s.ws.runs_dir / s.stage / src_ckpt.parent.name / name
    mine = s.run_dir / name
    if src.resolve() != mine.resolve() and src.is_file() and not mine.exists():
        shutil.copyfile(src, mine)
    if mine.exists():
        w = MetricsWriter(mine)
        w.truncate_to_step(step)
        w.close()


# ---- the run --------------------------------------------------------------------------------------

@dataclasses.dataclass
class Run:
    """One preference/RL run after setup: what its steps change and what its checkpoints hold."""

    s: Session
    gpt: GPT  # the weights checkpointed (with any attached heads)
    model: nn.Module  # what the steps call: the trained module, DDP-wrapped with several processes
    opt: torch.optim.Optimizer
    sched: Any
    step: int  # optimizer steps done (the algorithm's steps, not its inner updates)
    resumed: bool
    inputs: dict[str, Any]  # input fingerprints, for provenance and the checkpoint manifests
    reference: str | None  # the reference source, kept in every checkpoint
    counts: dict[str, str]  # manifest count -> metric key of the latest train row or evaluation
    samples: MetricsWriter | None = None  # samples.jsonl (RL stages, rank 0)
    row: Row = dataclasses.field(default_factory=dict)  # the latest train row
    ev: dict[str, float] = dataclasses.field(default_factory=dict)  # the latest evaluation
    last_path: Path | None = None

    def save(self, at: int) -> Path | None:
        """Checkpoint to ``checkpoints/<stage>/<run>/step_<at>`` on rank 0 (others wait)."""
        s, latest = self.s, {**self.row, **self.ev}
        if s.is_main:
            self.last_path = save_checkpoint(
                s.ckpt_dir, self.gpt, self.opt, self.sched, at, {"reference": self.reference}, stage=s.stage,
                params=dataclasses.asdict(s.params), inputs=self.inputs,
                counts={name: latest.get(key) for name, key in self.counts.items()}, tokenizer=s.tokenizer_info)
            prune_checkpoints(s.ckpt_dir, s.params.keep_last)
        else:
            self.last_path = None
        distributed.barrier()
        return self.last_path

    def update(self, loss: float) -> tuple[float, float]:
        """Clip the accumulated gradients and step optimizer and schedule: ``(grad_norm, lr)``.

        A non-finite ``loss`` or norm on any process is logged, checkpointed (the weights that
        produced it) and raised as :class:`NonFiniteLoss` on every process together.
        """
        s = self.s
        norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), s.params.grad_clip or float("inf")))
        if distributed.any_true(not (math.isfinite(loss) and math.isfinite(norm)), s.device):
            s.log(self.step + 1, {"train/loss": loss, "grad_norm": norm, "warning": "non-finite loss"})
            raise NonFiniteLoss(self.step + 1, self.save(self.step))
        lr = self.sched.get_last_lr()[0]
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        return norm, lr


def begin(s: Session, gpt: GPT, module: nn.Module, *, total_steps: int, resume: dict[str, Any] | None,
          start: Path | None, inputs: dict[str, Any], reference: str | None, counts: dict[str, str],
          samples: bool = False) -> Run:
    """The run before its first step: optimizer and schedule over ``total_steps`` updates of
    ``module``; on resume its step, metrics (and ``samples.jsonl``) and RNG state; provenance."""
    opt, sched = make_optim(s, module, total_steps, resume)
    step = 0
    if resume is not None:
        step = int(resume["step"])
        continue_metrics(s, start, step)
        if samples:
            continue_file(s, start, SAMPLES_FILE, step)
        set_rng_state(resume["rng"])
    s.provenance(seed=s.params.seed, inputs=inputs, model=gpt.config.to_dict(),
                 start_checkpoint=str(start) if start else None, resumed_step=step if resume is not None else None)
    writer = MetricsWriter(s.run_dir / SAMPLES_FILE) if samples and s.is_main else None
    model = distributed.wrap_ddp(module, s.device)
    model.train()
    return Run(s, gpt, model, opt, sched, step, resume is not None, inputs, reference, counts, writer)


# ---- the loop -------------------------------------------------------------------------------------

@dataclasses.dataclass
class Loop:
    """What one algorithm plugs into :func:`train`."""

    step: Callable[[], Row]  # one training step at ``run.step``; its metrics row (``warning`` optional)
    progress: Callable[[Row], str]  # the progress text of a logged row
    summary: Callable[[Row, dict[str, float]], dict[str, Any]]  # (latest row, latest eval) -> summary
    evaluate: Callable[[], dict[str, float]] | None = None  # held-out metrics; None without held-out data
    eval_line: Callable[[dict[str, float]], str] = str  # the message after an evaluation
    eval_first: bool = False  # also evaluate before the first step of a fresh run


def _every(step: int, n: int) -> bool:
    return bool(n) and step % n == 0


def _evaluate(r: Run, loop: Loop, step: int) -> None:
    assert loop.evaluate is not None
    r.ev = loop.evaluate()
    r.s.log(step, r.ev)
    r.s.say(f"{r.s.stage} step {step}: {loop.eval_line(r.ev)}")


def train(r: Run, loop: Loop) -> dict[str, Any]:
    """Run ``loop.step`` until ``max_steps`` with the shared log / eval / save cadence; the summary."""
    s, p = r.s, r.s.params
    if loop.evaluate is not None and loop.eval_first and not r.resumed:
        _evaluate(r, loop, 0)
    s.progress = Progress(p.max_steps, r.step, s.stage, enabled=p.progress and s.is_main)
    while r.step < p.max_steps:
        if distributed.any_true(s.stop.requested is not None, s.device):
            path = r.save(r.step)
            s.say(f"{s.stage}: stopped ({s.stop.requested or 'signal'}) at step {r.step}; checkpoint {path}")
            raise Cancelled(f"stopped at step {r.step}; checkpoint {path}")
        r.row = loop.step()
        r.step += 1
        step, last, warning = r.step, r.step == p.max_steps, r.row.get("warning")
        if warning:
            s.say(f"{s.stage} step {step}: warning: {warning}")
        if _every(step, p.log_every) or last or warning:
            s.log(step, r.row)
            s.progress.update(step, loop.progress(r.row), line=True)
        else:
            s.progress.update(step)
        if loop.evaluate is not None and (_every(step, p.eval_every) or last):
            _evaluate(r, loop, step)
        if _every(step, p.save_every) or last:
            r.save(step)
    s.progress.close()
    if r.samples is not None:
        r.samples.close()
    s.say(f"{s.stage}: done at step {r.step}, checkpoint {r.last_path}")
    return {"step": r.step, **loop.summary(r.row, r.ev), "checkpoint": str(r.last_path) if r.last_path else None,
            "checkpoints": str(s.ckpt_dir)}
