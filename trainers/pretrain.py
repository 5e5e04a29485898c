"""``llmctl run pretrain``: next-token training on the flat token files.

Windows of ``data/pile_train.h5`` (``core.data.token_windows``) feed :func:`loop.fit`; eval loss comes
from fixed windows of ``data/pile_dev.h5`` when it exists. Starts fresh from ``--preset`` (or from
``--init CKPT``), or continues a stopped run exactly with ``--resume CKPT|last``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmctl.core.stages import ParamError
from llmctl.core.train_params import PretrainParams, check_context_length
from llmctl.core.workspace import Workspace
from llmctl.trainers.batches import fixed_token_batches, token_batches
from llmctl.trainers.loop import fit_rows, input_fingerprint, session, start_model

STAGE = "pretrain"
EVAL_SEED = 1234  # the same dev windows for every run, so eval losses compare across runs


def run(ws: Workspace, params: PretrainParams, run_dir: Path) -> dict[str, Any]:
    """Train; return the summary (steps, tokens, losses, newest checkpoint)."""
    train_path, dev_path = ws.path(params.train_data), ws.path(params.dev_data)
    if not train_path.exists():
        raise FileNotFoundError(f"{train_path} is missing: run `llmctl prepare pretrain` first")
    with session(ws, params, run_dir, STAGE) as s:
        model, resume, start = start_model(s)
        T = params.context_length or model.config.block_size
        try:
            check_context_length(T, model.config.block_size)
        except ValueError as e:  # the checkpoint's capacity, known only now: one line, like a bad option
            raise ParamError(f"{STAGE}: {e}") from None
        rank, world = s.dist.rank, s.dist.world_size

        def train_iter(micro_step: int):
            return token_batches(train_path, T, params.batch_size, params.seed, s.device, rank=rank,
                                 world_size=world, start_step=micro_step)

        dev = None
        if dev_path.exists() and params.eval_batches > 0:
            dev = fixed_token_batches(dev_path, T, params.batch_size, params.eval_batches, EVAL_SEED, s.device,
                                      rank=rank, world_size=world)
        else:
            s.say(f"{STAGE}: no {dev_path.name}; training without eval loss")
        inputs = {"pile_train": input_fingerprint(train_path)}
        if dev is not None:
            inputs["pile_dev"] = input_fingerprint(dev_path)
        return fit_rows(s, model, f"context {T}", make_train_iter=train_iter, held=dev, inputs=inputs,
                        resume=resume, start=start, seq_len=T)
