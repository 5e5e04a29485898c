"""Shared training pieces and the language-model training loop used by pretrain and SFT.

The pieces (each usable alone, e.g. by the RL trainers):

* :func:`resolve_device`, :func:`resolve_dtype`, :func:`autocast`, :func:`maybe_compile`;
* :class:`StopFlag`: SIGTERM (the app's cancel) / Ctrl-C ask the loop to checkpoint and stop;
* :class:`Session`: one training process: device, DDP ranks, run folder, checkpoint folder,
  metrics (``metrics.jsonl`` + optional TensorBoard / W&B), provenance, progress display;
* :func:`train_step`: gradient accumulation over micro-batches (DDP ``no_sync``), the loss summed
  over the step's target tokens and divided by their count, gradient norm and clipping;
  :func:`eval_loss` on held-out batches;
* :class:`Throughput`: tokens/s and MFU against the GPU's dense bf16 peak;
* :func:`find_start_checkpoint` / :func:`start_model`: the model to train: resumed, from
  ``--init`` / the newest checkpoint of the needed stage, or fresh from the preset;
  :func:`continue_metrics` carries a resumed run's metrics over, cut back to its step.

:func:`fit` is the loop itself: optimizer and schedule, steps, NaN guard (and no update for a step
without a target token), logging, evaluation, checkpoints (last N + best by eval loss), SIGTERM,
exact resume. A batch is a dict of tensors ``x``, ``y`` and optionally ``loss_mask``,
``position_ids``, ``doc_ids`` (the keyword arguments of :meth:`GPT.forward`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from llmctl.core import progress as core_progress
from llmctl.core.artifacts import artifact_fingerprint, file_fingerprint, newest_checkpoint
from llmctl.core.metrics import MetricsWriter
from llmctl.core.runs import METRICS_FILE, RunStopped, record_max_steps, write_provenance
from llmctl.core.workspace import Workspace
from llmctl.trainers import distributed
from llmctl.trainers.checkpoint import (
    load_checkpoint,
    prune_checkpoints,
    resolve_checkpoint,
    save_checkpoint,
    set_rng_state,
    unwrap_model,
)
from llmctl.trainers.model import GPT, GPTConfig

Batch = dict[str, torch.Tensor]

# Dense bf16 tensor-core peaks (TFLOP/s), matched against torch.cuda.get_device_name; first hit wins.
GPU_PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0), ("GH200", 989.0),
    ("B200", 2250.0), ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0), ("A10", 125.0),
    ("RTX 4090", 165.0), ("RTX 3090", 71.0),
)


class NonFiniteLoss(RunStopped):
    """The loss became NaN/inf; the run stopped with a checkpoint to inspect."""

    def __init__(self, step: int, checkpoint: Path | None) -> None:
        self.step, self.checkpoint = step, checkpoint
        where = f"; checkpoint of the weights that produced it: {checkpoint}" if checkpoint else ""
        super().__init__(f"non-finite loss at step {step}{where}")


class Cancelled(KeyboardInterrupt):
    """SIGTERM / Ctrl-C stopped the run after writing a checkpoint (exit is reported as cancelled)."""


# ---- device, dtype, compile ---------------------------------------------------------------------

def resolve_device(pref: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` when a GPU is visible, else CPU."""
    if pref == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(pref)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device(f"cuda:{local_rank}")
    return dev


def resolve_dtype(pref: str, device: torch.device) -> torch.dtype:
    """Autocast dtype: ``auto`` is bf16 on a GPU that supports it, fp32 (no autocast) elsewhere."""
    if pref == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[pref]


def autocast(device: torch.device, dtype: torch.dtype) -> Any:
    """Mixed-precision context (a no-op for fp32)."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def maybe_compile(model: nn.Module, enabled: bool, device: torch.device) -> nn.Module:
    """``torch.compile(model)`` on GPU when enabled; the model itself on CPU."""
    if enabled and device.type == "cuda":
        return torch.compile(model)
    return model


def gpu_peak_flops(device: torch.device, override_tflops: float = 0.0) -> float | None:
    """Peak dense bf16 FLOP/s of the device (``override_tflops`` wins); None on CPU or unknown GPUs."""
    if override_tflops > 0:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, tflops in GPU_PEAK_TFLOPS:
        if key in name:
            return tflops * 1e12
    return None


# ---- stopping -----------------------------------------------------------------------------------

class StopFlag:
    """Catches SIGTERM and SIGINT: the first one asks for a checkpoint and a clean stop.

    A second SIGINT raises KeyboardInterrupt at once. Handlers are restored by :meth:`restore`.
    """

    def __init__(self) -> None:
        self.requested: str | None = None
        self._old: dict[int, Any] = {}

    def install(self) -> StopFlag:
        import threading

        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


# ---- metrics sinks ------------------------------------------------------------------------------

class ExtraLoggers:
    """TensorBoard and W&B mirrors of the metrics (each only when asked for and installed)."""

    def __init__(self, run_dir: Path, params: Any, stage: str) -> None:
        self.tb = self.wandb = None
        if getattr(params, "tensorboard", False):
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tb"))
            except ImportError:
                print("llmctl: tensorboard is not installed; skipping it", file=sys.stderr)
        if getattr(params, "wandb", False):
            try:
                import wandb

                self.wandb = wandb.init(project=getattr(params, "wandb_project", "llmctl"), name=run_dir.name,
                                        group=stage, config=dataclasses.asdict(params), dir=str(run_dir))
            except ImportError:
                print("llmctl: wandb is not installed; skipping it", file=sys.stderr)

    def log(self, step: int, values: dict[str, Any]) -> None:
        nums = {k: v for k, v in values.items() if isinstance(v, int | float) and math.isfinite(v)}
        if self.tb is not None:
            for k, v in nums.items():
                self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(nums, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


# ---- progress display ---------------------------------------------------------------------------

class Progress(core_progress.Progress):
    """The loop's ``core.progress.Progress``: a bar with elapsed, rate and ETA on a terminal, plain
    ``label step i/n info · elapsed · rate · ETA`` lines otherwise (each ``line=True`` update, and
    at least every ``PLAIN_EVERY_S`` seconds)."""

    def __init__(self, total: int, start: int, label: str, enabled: bool = True) -> None:
        super().__init__(label, total, start=start, enabled=enabled)

    def update(self, step: float, info: str = "", line: bool = False) -> None:  # type: ignore[override]
        super().update(step, info, force_line=line)


# ---- the session --------------------------------------------------------------------------------

def input_fingerprint(path: Path) -> Any:
    """An input artifact's fingerprint (its manifest hash), or the file's size/mtime without one."""
    fp = artifact_fingerprint(path)
    if fp is not None:
        return fp
    return file_fingerprint(path) if path.exists() else None


class Session:
    """One training process of a stage: ranks, device, folders, metrics and the stop flag."""

    def __init__(self, ws: Workspace, params: Any, run_dir: Path, stage: str) -> None:
        self.ws, self.params, self.stage = ws, params, stage
        self.run_dir = Path(run_dir)
        env = distributed.dist_env()
        self.device = resolve_device(getattr(params, "device", "auto"), env.local_rank)
        self.dist = distributed.init_distributed(self.device)
        self.dtype = resolve_dtype(getattr(params, "dtype", "auto"), self.device)
        self.ckpt_dir = ws.checkpoints_dir / stage / self.run_dir.name
        self.is_main = self.dist.is_main
        self.metrics = MetricsWriter(self.run_dir / METRICS_FILE) if self.is_main else None
        self.extra = ExtraLoggers(self.run_dir, params, stage) if self.is_main else None
        self.stop = StopFlag().install()
        self.progress: Progress | None = None
        if self.is_main and isinstance(getattr(params, "max_steps", None), int):
            record_max_steps(self.run_dir, params.max_steps)  # progress reads k/N from the run folder
        try:
            self.tokenizer_info = ws.tokenizer().describe()
        except Exception:  # a missing tokenizer must not stop training; provenance says so
            self.tokenizer_info = None
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

    def autocast(self) -> Any:
        return autocast(self.device, self.dtype)

    def log(self, step: int, values: dict[str, Any]) -> None:
        """Write metrics (rank 0 only)."""
        if self.metrics is not None:
            self.metrics.log(step, values)
        if self.extra is not None:
            self.extra.log(step, values)

    def say(self, msg: str) -> None:
        """Print a message from rank 0 (through the progress bar when one is shown)."""
        if not self.is_main:
            return
        if self.progress is not None:
            self.progress.print(msg)
        else:
            print(msg, flush=True)

    def provenance(self, *, seed: int, inputs: dict[str, Any], **extra: Any) -> None:
        if self.is_main:
            write_provenance(self.run_dir, stage=self.stage, params=dataclasses.asdict(self.params), seed=seed,
                             tokenizer=self.tokenizer_info, inputs=inputs, world_size=self.dist.world_size,
                             device=str(self.device), dtype=str(self.dtype).removeprefix("torch."), **extra)

    def close(self) -> None:
        self.stop.restore()
        if self.progress is not None:
            self.progress.close()
        if self.metrics is not None:
            self.metrics.close()
        if self.extra is not None:
            self.extra.close()
        distributed.cleanup_distributed()


@contextlib.contextmanager
def session(ws: Workspace, params: Any, run_dir: Path, stage: str) -> Iterator[Session]:
    """A :class:`Session` closed (signal handlers, metrics, DDP) however the run ends."""
    s = Session(ws, params, run_dir, stage)
    try:
        yield s
    finally:
        s.close()


# ---- which model to train -----------------------------------------------------------------------

def find_start_checkpoint(ws: Workspace, init: str | None, need_stage: str | None) -> Path | None:
    """``--init`` (a step/run/stage folder), else the newest ready checkpoint of ``need_stage``."""
    if init:
        return resolve_checkpoint(ws.path(init))
    if need_stage:
        return newest_checkpoint(ws.checkpoints_dir / need_stage)
    return None


def load_resume_checkpoint(s: Session) -> tuple[GPT, dict[str, Any], Path]:
    """``--resume`` (a checkpoint, or ``last``: the newest of this stage): ``(model, state, checkpoint)``."""
    p = s.params
    where = s.ws.checkpoints_dir / s.stage if p.resume == "last" else s.ws.path(p.resume)
    src = resolve_checkpoint(where)
    model, state = load_checkpoint(src, s.device)
    return model, state, src  # type: ignore[return-value]


def start_model(s: Session, need_stage: str | None = None) -> tuple[GPT, dict[str, Any] | None, Path | None]:
    """The model to train and, when resuming, the checkpoint state.

    ``--resume`` (a checkpoint or ``last``) restores everything; else weights come from ``--init``
    or the newest checkpoint of ``need_stage``; else a fresh model of the preset (seeded).
    Returns ``(model on device, resume_state or None, checkpoint path or None)``.
    """
    p = s.params
    torch.manual_seed(p.seed)
    if p.resume:
        return load_resume_checkpoint(s)
    start = find_start_checkpoint(s.ws, p.init, need_stage)
    if start is not None:
        model, _ = load_checkpoint(start, s.device)
        if p.dropout != model.config.dropout:  # dropout is a training choice, not a shape
            model.config.dropout = p.dropout
            for m in model.modules():
                if isinstance(m, nn.Dropout):
                    m.p = p.dropout
            for blk in model.transformer.h:
                blk.attn.dropout = p.dropout
        return model, None, start  # type: ignore[return-value]
    shape = p.model_shape()
    model = GPT(GPTConfig(**shape, dropout=p.dropout)).to(s.device)
    return model, None, None


def start_note(resume: dict[str, Any] | None, start: Path | str | None) -> str:
    """The end of a run's first line: the step it resumes at, or the checkpoint it starts from."""
    if resume:
        return f", resuming at step {resume['step']}"
    return f", from {start}" if start is not None else ""


def continue_metrics(s: Session, src_ckpt: Path, step: int) -> None:
    """On resume: carry the source run's metrics into this run folder, cut back to ``step``."""
    if s.metrics is None:
        return
    src_run = s.ws.runs_dir / s.stage / src_ckpt.parent.name
    mine = s.run_dir / METRICS_FILE
    theirs = src_run / METRICS_FILE
    if src_run.resolve() != s.run_dir.resolve() and theirs.is_file() and not mine.exists():
        shutil.copyfile(theirs, mine)
    s.metrics.truncate_to_step(step)


# ---- one optimizer step -------------------------------------------------------------------------

def _n_targets(b: Batch) -> torch.Tensor:
    valid = b["y"] != -1
    if b.get("loss_mask") is not None:
        valid = valid & (b["loss_mask"] != 0)
    return valid.sum()


def train_step(s: Session, model: nn.Module, micro_batches: list[Batch],
               grad_clip: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Accumulate gradients over ``micro_batches``; return ``(loss, grad_norm, target_tokens)`` as
    device tensors (nothing here waits for the GPU).

    The loss is the sum of the cross-entropies of every target token of the step on every process
    over their number (micro-batches with more answer tokens weigh more), so 2 processes x B rows
    give the same loss and gradients as 1 process x 2B rows. A micro-batch without target tokens
    (an SFT window of prompt only) adds nothing; a step without any gives loss and gradients 0 and
    ``target_tokens`` 0, for the caller to skip. The optimizer is not stepped here; a non-finite
    loss is returned as is for the caller's guard. ``grad_norm`` is measured before clipping.
    """
    counts = torch.stack([_n_targets(b) for b in micro_batches]).float()
    n_targets = distributed.all_reduce_sum(counts.sum().clone())
    total = n_targets.clamp(min=1.0)
    world = s.dist.world_size
    loss_sum = torch.zeros((), device=s.device)
    for i, b in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        sync = contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with s.autocast():
                _, loss = model(b["x"], b["y"], loss_mask=b.get("loss_mask"), position_ids=b.get("position_ids"),
                                doc_ids=b.get("doc_ids"))
            weight = counts[i] / total
            (loss * weight * world).backward()
        loss_sum += loss.detach().float() * counts[i]  # the micro-batch's summed loss (its mean is 0 when empty)
    loss_mean = distributed.all_reduce_sum(loss_sum) / total
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip > 0 else float("inf"))
    return loss_mean, norm.float(), n_targets


class FiniteGuard:
    """Non-finite loss / gradient-norm detection on the device, read only when asked.

    :meth:`update` folds a step's loss and norm into a sticky device flag and remembers the first
    bad step; with a fused optimizer the flag is also its ``found_inf``, so from the first bad step
    on every update is skipped on the device (the weights stay those that produced the bad loss)
    until the host reads the flag at the next log / eval / save point and stops the run. Without a
    fused optimizer :meth:`update` reads the flag at once (the old per-step check).

    A step with no target token (every SFT window of it prompt only) is not an update either:
    :meth:`step` skips it (on the device with a fused optimizer) and ``skipped`` counts it.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, device: torch.device) -> None:
        self.bad = torch.zeros((), dtype=torch.bool, device=device)
        self.first = torch.zeros((), dtype=torch.long, device=device)  # first bad step (1-based), 0 = none
        self.values = torch.zeros(2, device=device)  # loss and norm of that step
        self.empty = torch.zeros((), dtype=torch.bool, device=device)  # this step has no target token
        self.skipped = torch.zeros((), dtype=torch.long, device=device)  # steps skipped for that so far
        self.optimizer = optimizer
        self.deferred = bool(optimizer.defaults.get("fused"))
        if self.deferred:
            optimizer.found_inf = self.bad.float()  # type: ignore[attr-defined]

    def update(self, step: int, loss: torch.Tensor, norm: torch.Tensor,
               n_targets: torch.Tensor | None = None) -> bool:
        """Fold in step ``step``'s numbers; True when the host must check now (non-fused optimizer)."""
        now = ~(torch.isfinite(loss) & torch.isfinite(norm))
        fresh = now & ~self.bad
        self.first.copy_(torch.where(fresh, step, self.first))
        self.values.copy_(torch.where(fresh, torch.stack([loss.float(), norm.float()]), self.values))
        self.bad |= now
        if n_targets is not None:
            self.empty.copy_(n_targets == 0)
            self.skipped += self.empty
        if self.deferred:
            self.optimizer.found_inf.copy_((self.bad | self.empty).float())  # type: ignore[attr-defined]
            return False
        return True

    def step(self) -> None:
        """``optimizer.step()``, but not for a step without target tokens (fused: nor after a non-finite one)."""
        if self.deferred or not bool(self.empty):
            self.optimizer.step()

    def first_bad(self) -> tuple[int, float, float] | None:
        """``(step, loss, norm)`` of the first non-finite step, or None (reads the device)."""
        first = int(self.first)
        if not first:
            return None
        loss, norm = self.values.tolist()
        return first, loss, norm


@torch.no_grad()
def eval_loss(s: Session, model: nn.Module, batches: Iterable[Batch]) -> float:
    """Mean cross-entropy over every target token of ``batches`` (all processes' shares)."""
    was = model.training
    model.eval()
    tot = torch.zeros(2, device=s.device, dtype=torch.float64)
    for b in batches:
        with s.autocast():
            _, loss = model(b["x"], b["y"], loss_mask=b.get("loss_mask"), position_ids=b.get("position_ids"),
                            doc_ids=b.get("doc_ids"))
        n = _n_targets(b)
        tot[0] += loss.double() * n
        tot[1] += n
    model.train(was)
    distributed.all_reduce_sum(tot)
    return float(tot[0] / tot[1]) if tot[1] > 0 else float("nan")


class Throughput:
    """Tokens/s (all processes) and MFU since the last :meth:`read`."""

    def __init__(self, flops_per_token: float, peak_flops: float | None, world_size: int) -> None:
        self.flops_per_token, self.peak, self.world = flops_per_token, peak_flops, world_size
        self.t0 = time.perf_counter()
        self.tokens = 0

    def add(self, tokens: int) -> None:
        self.tokens += tokens

    def read(self, device: torch.device) -> dict[str, float]:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        dt = max(time.perf_counter() - self.t0, 1e-9)
        tps = self.tokens / dt
        out = {"tokens_per_s": tps}
        if self.peak:
            out["mfu"] = self.flops_per_token * tps / (self.peak * self.world)
        self.t0, self.tokens = time.perf_counter(), 0
        return out


# ---- the loop -----------------------------------------------------------------------------------

def _start_fit(s: Session, raw: GPT, inputs: dict[str, Any], resume: dict[str, Any] | None,
               start_ckpt: Path | None) -> tuple[torch.optim.Optimizer, Any, int, int, float]:
    """:func:`fit`'s optimizer and schedule, restored on resume with the step, token count, best
    eval loss, metrics and RNG state; then provenance. ``(optimizer, scheduler, step, tokens, best)``."""
    from llmctl.trainers.optim import make_optimizer, make_scheduler

    p = s.params
    optimizer = make_optimizer(raw, p.lr, p.weight_decay, (p.beta1, p.beta2), device_type=s.device.type)
    scheduler = make_scheduler(optimizer, p.warmup_steps, p.max_steps, p.min_lr_ratio)
    step, tokens, best = 0, 0, float("inf")
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        step = int(resume["step"])
        tokens = int(resume["extra"].get("tokens", 0))
        best = float(resume["extra"].get("best_eval_loss", float("inf")))
        if resume["extra"].get("grad_accum", p.grad_accum) * resume["extra"].get("world_size", 1) != \
                p.grad_accum * s.dist.world_size:
            s.say("warning: grad_accum x processes differs from the resumed run; the data order will differ")
        if start_ckpt is not None:
            continue_metrics(s, start_ckpt, step)
        set_rng_state(resume["rng"])  # last: building the model above used the generator
    s.provenance(seed=p.seed, inputs=inputs, model=raw.config.to_dict(),
                 start_checkpoint=str(start_ckpt) if start_ckpt else None,
                 resumed_step=step if resume is not None else None)
    return optimizer, scheduler, step, tokens, best


def _log_step(s: Session, thr: Throughput, step: int, loss: torch.Tensor, lr: float, norm: torch.Tensor,
              tokens: int, guard: FiniteGuard) -> None:
    """:func:`fit`'s metrics row every ``log_every`` steps (and at the last), and the progress line.

    ``loss`` and ``norm`` are device tensors: they are read (one sync) only on the steps that log.
    A step without target tokens logs no loss or norm; once any step was skipped for that, rows
    carry ``train/skipped_steps`` (the count so far).
    """
    p = s.params
    if step % p.log_every == 0 or step == p.max_steps:
        loss_v, norm_v, empty, skipped = (float(x) for x in torch.stack(
            [loss, norm, guard.empty.float(), guard.skipped.float()]).tolist())
        if empty:
            row: dict[str, Any] = {"lr": lr, "tokens": tokens}
            info = f"no target token, update skipped lr {lr:.2e}"
        else:
            row = {"train/loss": loss_v, "lr": lr, "grad_norm": norm_v, "tokens": tokens}
            info = f"loss {loss_v:.4f} lr {lr:.2e} gnorm {norm_v:.2f}"
        row.update(thr.read(s.device))
        if skipped:
            row["train/skipped_steps"] = int(skipped)
        s.log(step, row)
        s.progress.update(step, f"{info} {row['tokens_per_s']:.0f} tok/s", line=True)
    else:
        s.progress.update(step)


class _Fit:
    """What :func:`fit` carries from one optimizer step to the next: the optimizer and schedule, the
    step, token count and best eval loss, the last checkpoint, and the non-finite guard."""

    def __init__(self, s: Session, raw: GPT, inputs: dict[str, Any], resume: dict[str, Any] | None,
                 start_ckpt: Path | None) -> None:
        self.s, self.raw, self.inputs = s, raw, inputs
        self.optimizer, self.scheduler, self.step, self.tokens, self.best = \
            _start_fit(s, raw, inputs, resume, start_ckpt)
        self.last_path: Path | None = None
        self.last_saved = self.step if resume is not None else -1
        self.guard = FiniteGuard(self.optimizer, s.device)
        if resume is not None:
            self.guard.skipped.fill_(int(resume["extra"].get("skipped_steps", 0)))
        self.sched_states: dict[int, dict[str, Any]] = {}  # the schedule before each step since the last check

    def save(self, at: int, eval_value: float | None) -> Path | None:
        s, p = self.s, self.s.params
        if s.is_main:
            extra = {"tokens": self.tokens, "best_eval_loss": self.best, "grad_accum": p.grad_accum,
                     "world_size": s.dist.world_size, "micro_step": at * p.grad_accum,
                     "skipped_steps": int(self.guard.skipped)}
            counts = {"tokens": self.tokens, "eval_loss": eval_value if eval_value is not None and
                      math.isfinite(eval_value) else None}
            self.last_path = save_checkpoint(s.ckpt_dir, self.raw, self.optimizer, self.scheduler, at, extra,
                                             stage=s.stage, params=dataclasses.asdict(p), inputs=self.inputs,
                                             counts=counts, tokenizer=s.tokenizer_info)
            prune_checkpoints(s.ckpt_dir, p.keep_last)
        self.last_saved = at
        distributed.barrier()
        return self.last_path

    def check_finite(self) -> None:
        """Stop with a checkpoint of the weights that produced the first non-finite loss, if any."""
        bad = self.guard.first_bad()
        if bad is None:
            self.sched_states.clear()
            return
        at, bad_loss, bad_norm = bad
        self.optimizer.zero_grad(set_to_none=True)
        self.s.log(at, {"train/loss": bad_loss, "grad_norm": bad_norm})
        path = self.last_path
        if self.last_saved != at - 1:  # the weights of step at-1 (later updates were skipped on the device)
            self.scheduler.load_state_dict(self.sched_states.get(at, self.scheduler.state_dict()))
            path = self.save(at - 1, None)
        raise NonFiniteLoss(at, path)

    def stop_if_asked(self) -> None:
        """On a stop request (any process): a checkpoint of this step, then :class:`Cancelled`."""
        s, step = self.s, self.step
        if distributed.any_true(s.stop.requested is not None, s.device):
            self.check_finite()
            path = self.save(step, None) if self.last_saved != step else self.last_path
            s.say(f"{s.stage}: stopped ({s.stop.requested or 'signal'}) at step {step}; checkpoint {path}")
            raise Cancelled(f"stopped at step {step}; checkpoint {path}")

    def optimizer_step(self, train_model: nn.Module, micro: list[Batch],
                       thr: Throughput) -> tuple[torch.Tensor, torch.Tensor, float]:
        """One optimizer step over ``micro``: ``(loss, grad norm, lr)``, the first two on the device."""
        s = self.s
        loss_t, norm_t, n_t = train_step(s, train_model, micro, s.params.grad_clip)
        if self.guard.update(self.step + 1, loss_t, norm_t, n_t):
            self.check_finite()
        lr = self.scheduler.get_last_lr()[0]
        self.sched_states[self.step + 1] = self.scheduler.state_dict()
        self.guard.step()  # no update without target tokens; fused: none once the guard has seen a non-finite step
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        n_tok = sum(int(b["x"].numel()) for b in micro) * s.dist.world_size
        self.tokens += n_tok
        thr.add(n_tok)
        return loss_t, norm_t, lr

    def evaluate(self, eval_model: nn.Module, eval_batches: Callable[[], Iterable[Batch]]) -> float:
        s = self.s
        ev = eval_loss(s, eval_model, eval_batches())
        self.best = min(self.best, ev) if math.isfinite(ev) else self.best
        s.log(self.step, {"eval/loss": ev})
        s.say(f"{s.stage} step {self.step}: eval loss {ev:.4f}")
        return ev

    def summary(self, loss_t: torch.Tensor | None, ev: float | None) -> dict[str, Any]:
        s = self.s
        skipped = int(self.guard.skipped)
        s.progress.close()
        if skipped:
            s.say(f"{s.stage}: {skipped} step(s) had no target token (no answer token in any window); "
                  "their updates were skipped")
        s.say(f"{s.stage}: done at step {self.step}, checkpoint {self.last_path}")
        return {"step": self.step, "tokens": self.tokens, "skipped_steps": skipped,
                "train_loss": float(loss_t) if loss_t is not None and not bool(self.guard.empty) else float("nan"),
                "eval_loss": ev if ev is not None and math.isfinite(ev) else None,
                "best_eval_loss": self.best if math.isfinite(self.best) else None,
                "checkpoint": str(self.last_path) if self.last_path else None, "checkpoints": str(s.ckpt_dir)}


def fit(s: Session, model: GPT, *, make_train_iter: Callable[[int], Iterator[Batch]],
        eval_batches: Callable[[], Iterable[Batch]] | None, inputs: dict[str, Any],
        resume: dict[str, Any] | None = None, start_ckpt: Path | None = None,
        seq_len: int = 0) -> dict[str, Any]:
    """Train ``model`` for ``params.max_steps`` optimizer steps and return a summary.

    ``make_train_iter(micro_step)`` yields this process's micro-batches from that global
    micro-batch index on (deterministic, so a resumed run sees exactly the same data);
    ``eval_batches()`` gives this process's share of the fixed held-out batches. ``resume`` is
    the state of the checkpoint ``start_ckpt`` to continue from (see :func:`start_model`).
    Checkpoints go to ``checkpoints/<stage>/<run_id>/step_N`` (last ``keep_last`` + best kept).
    """
    p = s.params
    raw = unwrap_model(model)
    run = _Fit(s, raw, inputs, resume, start_ckpt)

    eval_model = maybe_compile(raw, p.compile, s.device)  # the same weights, without DDP's hooks
    train_model = distributed.wrap_ddp(eval_model, s.device)
    batches = make_train_iter(run.step * p.grad_accum)
    thr = Throughput(raw.estimate_flops_per_token(seq_len or raw.config.block_size),
                     gpu_peak_flops(s.device, p.peak_tflops), s.dist.world_size)
    s.progress = Progress(p.max_steps, run.step, s.stage, enabled=p.progress and s.is_main)
    ev: float | None = float("nan")
    train_model.train()
    loss_t = None
    while run.step < p.max_steps:
        run.stop_if_asked()
        loss_t, norm_t, lr = run.optimizer_step(train_model, [next(batches) for _ in range(p.grad_accum)], thr)
        step = run.step
        do_eval = eval_batches is not None and ((p.eval_every and step % p.eval_every == 0) or step == p.max_steps)
        do_save = (p.save_every and step % p.save_every == 0) or step == p.max_steps
        if step % p.log_every == 0 or step == p.max_steps or do_eval or do_save:
            run.check_finite()  # the one read of the device flag: before anything is logged or saved
        _log_step(s, thr, step, loss_t, lr, norm_t, run.tokens, run.guard)
        ev = None
        if do_eval:
            ev = run.evaluate(eval_model, eval_batches)
            thr.t0 = time.perf_counter()
        if do_save:
            run.save(step, ev)
            thr.t0 = time.perf_counter()
    return run.summary(loss_t, ev)


def fit_rows(s: Session, model: GPT, data: str, *, make_train_iter: Callable[[int], Iterator[Batch]],
             held: list[Batch] | None, inputs: dict[str, Any], resume: dict[str, Any] | None,
             start: Path | None, seq_len: int) -> dict[str, Any]:
    """:func:`fit` for the token-row stages (pretrain, SFT), after their first line: model size,
    ``data`` (what a row is), batch shape, device and precision, where the run starts. Eval loss
    comes from the fixed ``held`` batches, when there are any."""
    p = s.params
    s.say(f"{s.stage}: {model.num_params() / 1e6:.1f}M parameters, {data}, batch {p.batch_size} x {p.grad_accum} x "
          f"{s.dist.world_size}, {s.device} {str(s.dtype).removeprefix('torch.')}" + start_note(resume, start))
    return fit(s, model, make_train_iter=make_train_iter, eval_batches=(lambda: held) if held else None,
               inputs=inputs, resume=resume, start_ckpt=start, seq_len=seq_len)
