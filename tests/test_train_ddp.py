"""DDP: two CPU processes under torchrun (gloo) match one process with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from llmctl.core.metrics import read_metrics
from llmctl.core.train_params import PretrainParams
from llmctl.trainers import pretrain


def make_token_files(ws, tokenizer, shared_data, chars: int) -> None:
    """pile_train.h5 / pile_dev.h5 from real text (tinyshakespeare), 90/10."""
    text = (shared_data / "pile-sample" / "tinyshakespeare.txt").read_text(encoding="utf-8")[:chars]
    ids = np.asarray(tokenizer.encode(text), dtype=np.int32)
    cut = len(ids) * 9 // 10
    for name, arr in (("pile_train.h5", ids[:cut]), ("pile_dev.h5", ids[cut:])):
        with h5py.File(ws.data_dir / name, "w") as f:
            f.create_dataset("tokens", data=arr)

ARGS = dict(preset="tiny", n_embd=64, block_size=64, context_length=32, max_steps=2, log_every=1,
            eval_every=2, eval_batches=1, warmup_steps=1, progress=False)


@pytest.mark.slow
def test_two_processes_match_one(workspace, tokenizer, shared_data):
    ws = workspace
    make_token_files(ws, tokenizer, shared_data, chars=40_000)
    one_dir = ws.runs_dir / "pretrain" / "one"
    one_dir.mkdir(parents=True)
    pretrain.run(ws, PretrainParams(**ARGS, batch_size=4), one_dir)

    cli = [sys.executable, "-m", "llmctl.core.cli", "run", "pretrain", "--nproc", "2", "--workspace", str(ws.root),
           "--batch-size", "2", "--no-progress"]
    for k, v in ARGS.items():
        if k != "progress":
            cli += ["--" + k.replace("_", "-"), str(v)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("LLMCTL_RUN_DIR", None)
    proc = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    two_dir = next(p for p in (ws.runs_dir / "pretrain").iterdir() if p.name != "one")

    one = read_metrics(one_dir / "metrics.jsonl")
    two = read_metrics(two_dir / "metrics.jsonl")
    prov = (two_dir / "provenance.json").read_text()
    assert '"world_size": 2' in prov
    for key in ("train/loss", "grad_norm", "eval/loss"):
        a = [r[key] for r in one if key in r]
        b = [r[key] for r in two if key in r]
        assert len(a) == len(b) > 0
        assert b == pytest.approx(a, rel=1e-4), key
    assert [r["tokens"] for r in two if "tokens" in r] == [r["tokens"] for r in one if "tokens" in r]
    assert (ws.checkpoints_dir / "pretrain" / two_dir.name / "step_2" / "manifest.json").exists()
