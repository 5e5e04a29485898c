"""``llmctl run sft``: supervised fine-tuning on packed chat rows.

Rows of ``data/sft_packed.h5`` hold several examples each; the loss counts only answer tokens
(``loss_mask``), positions restart at every example and attention stays inside it
(``example_ids`` as ``doc_ids``). Starts from ``--init CKPT``, else the newest pretrain
checkpoint, else (with a warning) a fresh model; ``--resume`` continues a stopped run exactly.
The last ``eval_rows`` rows of the file are held out for eval loss. A ``--context-length``
shorter than the rows crops them to their start; rows whose start holds no answer token (only a
prompt) are left out of training and eval, and the run says how many.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from llmctl.core.train_params import SFTParams
from llmctl.core.workspace import Workspace
from llmctl.trainers.batches import PackedRows, fixed_sft_batches, sft_batches
from llmctl.trainers.loop import fit_rows, input_fingerprint, session, start_model

STAGE = "sft"
NEEDS = "pretrain"


def run(ws: Workspace, params: SFTParams, run_dir: Path) -> dict[str, Any]:
    """Fine-tune; return the summary (steps, tokens, losses, newest checkpoint)."""
    data = ws.path(params.data)
    if not data.exists():
        raise FileNotFoundError(f"{data} is missing: run `llmctl prepare sft` first")
    with session(ws, params, run_dir, STAGE) as s:
        model, resume, start = start_model(s, need_stage=NEEDS)
        if start is None:
            s.say(f"{STAGE}: warning: no pretrained checkpoint (checkpoints/{NEEDS}) and no --init; "
                  f"starting from a fresh {params.preset} model")
        block = model.config.block_size
        probe = PackedRows(data)
        T = min(params.context_length or probe.row_len - 1, probe.row_len - 1, block)
        rows = PackedRows(data, T + 1)
        n_eval = min(params.eval_rows, rows.n_rows // 2)
        train_ids = rows.trained_rows(np.arange(rows.n_rows - n_eval))
        eval_ids = rows.trained_rows(np.arange(rows.n_rows - n_eval, rows.n_rows))
        n_eval, dropped = len(eval_ids), rows.n_rows - len(train_ids) - len(eval_ids)
        if dropped:
            s.say(f"{STAGE}: {dropped} of {rows.n_rows} rows have no answer token in their first {T + 1} tokens; "
                  "left out" + (f" (prepare sft with --seq-len {T + 1} to pack rows this long)"
                                if T + 1 < rows.row_len else ""))
        if not len(train_ids):
            raise ValueError(f"{data}: no training row has an answer token in its first {T + 1} tokens: use a "
                             f"longer --context-length, or prepare sft with --seq-len {T + 1}")
        rank, world = s.dist.rank, s.dist.world_size

        def train_iter(micro_step: int):
            return sft_batches(rows, train_ids, params.batch_size, params.seed, s.device, rank=rank,
                               world_size=world, start_step=micro_step)

        held = fixed_sft_batches(rows, eval_ids, params.batch_size, s.device, rank=rank, world_size=world) \
            if n_eval else None
        inputs: dict[str, Any] = {"sft_packed": input_fingerprint(data)}
        if start is not None:
            inputs["init"] = str(start)
        return fit_rows(s, model, f"{len(train_ids)} train rows + {n_eval} held out, {T} tokens per row",
                        make_train_iter=train_iter, held=held, inputs=inputs, resume=resume, start=start, seq_len=T)
