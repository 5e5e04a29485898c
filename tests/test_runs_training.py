"""Runs of the real trainer that end badly: killed half way, a full disk, non-finite weights, a crafted
``state.pt``. Each ends in one line, leaves no ready checkpoint it should not, and shows what happened."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from llmctl.core import jobs, runs
from llmctl.core.artifacts import ready_checkpoints
from llmctl.core.status import stage_statuses
from llmctl.trainers.checkpoint import NonFiniteWeights, save_checkpoint
from llmctl.trainers.model import GPT


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmctl.core.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def pretrain_args(ws: Path, *extra: str) -> list[str]:
    return ["run", "pretrain", "--workspace", str(ws), "--preset", "tiny", "--batch-size", "2",
            "--context-length", "32", "--eval-every", "0", "--log-every", "1", "--warmup-steps", "2",
            "--no-progress", *extra]


def write_tokens(data_dir: Path, tokenizer, shared_data: Path) -> None:
    """pile_train.h5 from real text (tinyshakespeare)."""
    text = (shared_data / "pile-sample" / "tinyshakespeare.txt").read_text(encoding="utf-8")[:60_000]
    with h5py.File(data_dir / "pile_train.h5", "w") as f:
        f.create_dataset("tokens", data=np.asarray(tokenizer.encode(text), dtype=np.int32))


@pytest.fixture
def ws(workspace, tokenizer, shared_data):
    write_tokens(workspace.data_dir, tokenizer, shared_data)
    return workspace


def one_line_error(res: subprocess.CompletedProcess) -> str:
    assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("llmctl: error:")]
    assert len(errors) == 1, res.stderr
    return errors[0]


@pytest.mark.slow
def test_a_killed_run_shows_where_it_stopped_and_its_leftovers_go(ws):
    """kill -9 at step k of 40: status, jobs and the app say "stopped at step k/40", not done;
    its leftover step_N.tmp + lock are listed by ``llmctl clean`` and removed by the next run, which
    resumes past garbage lines in the metrics."""
    from llmctl.tui.state import list_job_rows

    argv = jobs.stage_argv(("run", "pretrain"), pretrain_args(ws.root, "--max-steps", "40", "--save-every", "4")[2:])
    run_dir = jobs.start_job(ws.runs_dir, "pretrain", argv, workspace=ws.root)
    ckpt_root = ws.checkpoints_dir / "pretrain" / run_dir.name
    deadline = time.monotonic() + 300
    while not (ckpt_root / "step_4" / "manifest.json").exists():
        assert time.monotonic() < deadline and jobs.is_active(runs.read_job(run_dir)), (run_dir / "log.txt").read_text()
        time.sleep(0.05)
    os.killpg(runs.read_job(run_dir)["pgid"], signal.SIGKILL)
    assert jobs.wait_job(run_dir, timeout=30)["state"] == "killed"
    assert runs.read_job(run_dir)["max_steps"] == 40  # recorded by the trainer itself
    step, max_steps = runs.run_progress(run_dir, runs.read_job(run_dir))
    assert max_steps == 40 and 4 <= step < 40
    want = f"stopped at step {step}/40"

    pretrain = next(s for s in stage_statuses(ws) if s.name == "pretrain")
    assert (pretrain.state, pretrain.detail) == ("stopped", f"{want} (killed)")
    status = cli("status", "--workspace", str(ws.root), "--json")
    assert want in status.stdout
    assert want in cli("jobs", "--workspace", str(ws.root)).stdout
    [row] = list_job_rows(ws)
    assert (row.state, row.stopped, row.max_steps) == ("killed", want, 40)

    # what a kill inside a save leaves: an unfinished step folder and its lock, naming a dead pid
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    tmp, lock = ckpt_root / "step_36.tmp", ckpt_root / "step_36.lock"
    tmp.mkdir()
    (tmp / "model.safetensors").write_bytes(b"\0" * 4096)
    lock.write_text(json.dumps({"pid": int(dead.stdout), "host": os.uname().nodename, "stage": "pretrain"}))
    listed = cli("clean", "--workspace", str(ws.root))
    assert listed.returncode == 0 and str(tmp) in listed.stdout and str(lock) in listed.stdout
    assert "llmctl clean --yes" in listed.stdout and tmp.exists() and lock.exists()  # a dry run

    with open(run_dir / "metrics.jsonl", "a") as f:  # garbage --resume must read past
        f.write('[1, 2]\n{"loss": 1}\n{"step": "x"}\n{"step": 2.5}\n')
    again = cli(*pretrain_args(ws.root, "--max-steps", "40", "--save-every", "4", "--resume", "last"))
    assert again.returncode == 0, again.stderr
    assert "removed 2 leftover(s) of killed pretrain runs" in again.stdout
    assert not tmp.exists() and not lock.exists()
    pretrain = next(s for s in stage_statuses(ws) if s.name == "pretrain")
    assert pretrain.state == "done"


def test_non_finite_weights_are_never_a_ready_checkpoint(tmp_path):
    model = GPT.from_preset("tiny", n_embd=64, block_size=64)
    with torch.no_grad():
        model.transformer.h[0].mlp.c_fc.weight[0, 0] = float("nan")
        model.lm_head.weight[1, 1] = float("inf")
    with pytest.raises(NonFiniteWeights) as e:
        save_checkpoint(tmp_path / "run", model, step=3, stage="pretrain")
    assert "weights are not finite" in str(e.value) and "c_fc.weight" in str(e.value)
    assert ready_checkpoints(tmp_path) == [] and not any((tmp_path / "run").glob("step_3*"))


def test_a_non_finite_loss_is_one_line(ws):
    overflow = GPT.from_preset("tiny")
    with torch.no_grad():  # finite weights whose forward pass overflows
        overflow.transformer.h[0].mlp.c_fc.weight.fill_(3e38)
    src = save_checkpoint(ws.checkpoints_dir / "pretrain" / "overflow", overflow, step=0, stage="pretrain")
    line = one_line_error(cli(*pretrain_args(ws.root, "--max-steps", "3", "--init", str(src))))
    assert line.startswith("llmctl: error: non-finite loss at step 1"), line


def test_a_crafted_state_pt_is_refused_in_one_line_and_never_run(ws, tmp_path):
    src = save_checkpoint(ws.checkpoints_dir / "pretrain" / "crafted", GPT.from_preset("tiny", n_embd=64, block_size=64),
                          step=1, stage="pretrain")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (src / "state.pt").write_bytes(pickle.dumps({"step": 1, "extra": Evil()}))
    for args in (["sample", str(src), "--prompt", "hi", "--max-new-tokens", "2", "--workspace", str(ws.root)],
                 pretrain_args(ws.root, "--max-steps", "2", "--resume", str(src))):
        line = one_line_error(cli(*args))
        assert f"{src / 'state.pt'}: not a training state llmctl can load safely" in line
        assert not marker.exists()


def test_a_full_disk_while_saving_a_checkpoint_is_one_line(small_disk, tokenizer, shared_data):
    """A workspace on a 3 MB filesystem: its data fits, the tiny model's checkpoint does not."""
    ws = small_disk / "ws"
    assert cli("init", "--workspace", str(ws)).returncode == 0
    write_tokens(ws / "data", tokenizer, shared_data)
    res = cli(*pretrain_args(ws, "--max-steps", "2", "--save-every", "2"))
    line = one_line_error(res)
    assert f"cannot write checkpoint {ws / 'checkpoints' / 'pretrain'}" in line and "no space left" in line, line
    assert ready_checkpoints(ws / "checkpoints" / "pretrain") == []
    assert not list((ws / "checkpoints" / "pretrain").glob("*/step_*.tmp"))  # nothing half written kept
