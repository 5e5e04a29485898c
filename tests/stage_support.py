"""Helpers the stage tests share: the CLI run in this process or headless in a fresh one, JSONL read
back, token files from real text, a trainer run in this process."""

from __future__ import annotations

import gzip
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from llmctl.core import runs
from llmctl.core.cli import app
from llmctl.core.metrics import read_metrics
from llmctl.core.workspace import init_workspace

runner = CliRunner()

def invoke(args: list[str], mp: pytest.MonkeyPatch):
    """Run the CLI in-process (each run makes its own run folder)."""
    mp.delenv(runs.ENV_RUN_DIR, raising=False)
    res = runner.invoke(app, args)
    mp.delenv(runs.ENV_RUN_DIR, raising=False)
    return res


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a ``.jsonl`` (or ``.jsonl.gz``) file, blank lines passed over."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(x) for x in f if x.strip()]


def run_headless(ws: Any, stage: str, *args: str) -> tuple[Path, list[dict[str, Any]]]:
    """``llmctl run STAGE ARGS --no-progress`` in a fresh interpreter, which must succeed: the
    stage's one run folder and its metrics rows."""
    argv = [sys.executable, "-m", "llmctl.core.cli", "run", stage, "--workspace", str(ws.root), "--no-progress",
            *args]
    env = {k: v for k, v in os.environ.items() if k != runs.ENV_RUN_DIR}
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (run_dir,) = list((ws.runs_dir / stage).iterdir())
    return run_dir, read_metrics(run_dir / "metrics.jsonl")


def make_token_files(ws: Any, tokenizer: Any, shared_data: Path, chars: int = 120_000) -> None:
    """pile_train.h5 / pile_dev.h5 from real text (tinyshakespeare), 90/10."""
    text = (shared_data / "pile-sample" / "tinyshakespeare.txt").read_text(encoding="utf-8")[:chars]
    ids = np.asarray(tokenizer.encode(text), dtype=np.int32)
    cut = len(ids) * 9 // 10
    for name, arr in (("pile_train.h5", ids[:cut]), ("pile_dev.h5", ids[cut:])):
        with h5py.File(ws.data_dir / name, "w") as f:
            f.create_dataset("tokens", data=arr)


def run_in_process(ws: Any, stage: str, params: Any) -> tuple[dict[str, Any], Path, list[dict[str, Any]]]:
    """The trainer of ``stage`` run here with ``params`` in a new run folder: its summary, the
    folder and the metrics rows."""
    run = importlib.import_module(f"llmctl.trainers.{stage}").run
    run_dir = runs.new_run_dir(ws.runs_dir, stage)
    summary = run(ws, params, run_dir)
    return summary, run_dir, read_metrics(run_dir / "metrics.jsonl")


def prepare(root: Path, what: str, **params: Any) -> dict[str, Any]:
    """``llmctl prepare WHAT`` in a new workspace at ``root`` (with its own Hugging Face cache) whose
    llmctl.toml holds ``params`` for the stage, given as flags too (a list value gives its flag once
    per item); it must succeed. Then ``llmctl status --json``, parsed."""
    ws = init_workspace(root)
    ws.config["stages"].setdefault(f"prepare-{what}", {}).update(params)
    ws.save_config()
    flags = []
    for k, v in params.items():
        for item in v if isinstance(v, list) else [v]:
            flags += ["--" + k.replace("_", "-"), str(item)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HOME", str(root.parent / "hf"))
        res = invoke(["prepare", what, "--workspace", str(root), *flags], mp)
        assert res.exit_code == 0, res.output
        status = invoke(["status", "--json", "--workspace", str(root)], mp)
    return json.loads(status.output)
