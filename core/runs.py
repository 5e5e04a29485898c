"""Run folders: ``runs/<stage>/<run_id>/`` with job.json, log.txt, metrics.jsonl and provenance."""

from __future__ import annotations

import json
import os
import platform
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from llmctl.core import atomic

ENV_RUN_DIR = "LLMCTL_RUN_DIR"
JOB_FILE = "job.json"
LOG_FILE = "log.txt"
METRICS_FILE = "metrics.jsonl"
SAMPLES_FILE = "samples.jsonl"
PROVENANCE_FILE = "provenance.json"


def new_run_id() -> str:
    """A sortable, unique run id: ``YYYYmmdd-HHMMSS-xxxx``."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def new_run_dir(runs_dir: str | os.PathLike[str], stage: str, run_id: str | None = None) -> Path:
    """Create and return ``runs/<stage>/<run_id>``."""
    path = Path(runs_dir) / stage / (run_id or new_run_id())
    path.mkdir(parents=True, exist_ok=False)
    return path


def current_run_dir() -> Path | None:
    """The run folder this process works in, from ``$LLMCTL_RUN_DIR``."""
    raw = os.environ.get(ENV_RUN_DIR)
    return Path(raw) if raw else None


def read_job(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    try:
        return json.loads((Path(run_dir) / JOB_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def update_job(run_dir: str | os.PathLike[str], /, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into the run's job.json (atomically)."""
    job = read_job(run_dir) or {}
    job.update(fields)
    atomic.write_json(Path(run_dir) / JOB_FILE, job)
    return job


def git_commit(cwd: str | os.PathLike[str] | None = None) -> str | None:
    """The git commit of the llmctl source tree, when it is a git checkout."""
    here = Path(cwd) if cwd else Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def package_versions(names: tuple[str, ...] = ("llmctl", "torch", "numpy", "h5py", "tiktoken", "riptoken",
                                               "datasets", "pyarrow", "transformers", "textual")) -> dict[str, str]:
    out = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            continue
    return out


def write_provenance(run_dir: str | os.PathLike[str], *, stage: str, params: dict[str, Any],
                     seed: int | None = None, tokenizer: dict[str, Any] | None = None,
                     inputs: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """Record what produced this run: config, seed, commit, versions, tokenizer, inputs."""
    prov = {
        "stage": stage,
        "params": params,
        "seed": seed,
        "git_commit": git_commit(),
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "argv": sys.argv,
        "tokenizer": tokenizer,
        "inputs": inputs or {},
        "time": time.time(),
        **extra,
    }
    atomic.write_json(Path(run_dir) / PROVENANCE_FILE, prov)
    return prov


@dataclass
class RunInfo:
    """A run folder and its job record, as listed by the CLI and the TUI."""

    path: Path
    stage: str
    run_id: str
    job: dict[str, Any]

    @property
    def state(self) -> str:
        return self.job.get("state", "unknown")


def list_runs(runs_dir: str | os.PathLike[str], stage: str | None = None) -> list[RunInfo]:
    """Every run folder (of one stage, or all), oldest first."""
    root = Path(runs_dir)
    stages = [root / stage] if stage else sorted(p for p in root.glob("*") if p.is_dir())
    out = []
    for sdir in stages:
        if not sdir.is_dir():
            continue
        for rdir in sorted(sdir.iterdir()):
            if rdir.is_dir():
                job = read_job(rdir)
                if job is not None:
                    out.append(RunInfo(rdir, sdir.name, rdir.name, job))
    out.sort(key=lambda r: (r.job.get("started") or 0, r.run_id))
    return out
