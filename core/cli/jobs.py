"""``llmctl jobs``: list, follow and cancel jobs."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import typer

from llmctl.core import jobs, runs
from llmctl.core.cli.common import GROUPS, WorkspaceOpt, fail, open_workspace
from llmctl.core.workspace import Workspace


def _find_run(ws: Workspace, ref: str) -> Path:
    """The run folder ``ref`` names (see :func:`llmctl.core.runs.find_run`), or a one-line error exit."""
    try:
        return runs.find_run(ws.runs_dir, ref)
    except runs.RunRefError as e:
        raise fail(str(e)) from None


def _elapsed(job: dict) -> float:
    started, ended = job.get("started"), job.get("ended")
    if not isinstance(started, int | float):
        return 0.0
    return (ended if isinstance(ended, int | float) else time.time()) - started


jobs_app = GROUPS["jobs"]


@jobs_app.callback(invoke_without_command=True)
def jobs_list(ctx: typer.Context, workspace: Path | None = WorkspaceOpt,
              as_json: bool = typer.Option(False, "--json")) -> None:
    """List jobs (running and finished)."""
    if ctx.invoked_subcommand is not None:
        return
    ws = open_workspace(workspace, create=False)
    rows = jobs.list_jobs(ws.runs_dir)
    if as_json:
        out = []
        for r in rows:
            step, max_steps = runs.run_progress(r.path, r.job)
            out.append({"stage": r.stage, "run": r.run_id, "short_id": runs.short_run(r.run_id), "path": str(r.path),
                        **r.job, "step": step, "max_steps": max_steps,
                        "stopped": runs.stopped_at(r.job, step, max_steps)})
        typer.echo(json.dumps(out, indent=2, default=str))
        return
    for r in rows:
        step, max_steps = runs.run_progress(r.path, r.job)
        note = runs.stopped_at(r.job, step, max_steps) or (
            f"step {step}/{max_steps}" if step is not None and max_steps else "")
        typer.echo(f"{r.stage:18} {r.run_id:26} {r.state:10} {_elapsed(r.job):8.1f}s  {note:24} {r.path}")


@jobs_app.command("cancel")
def jobs_cancel(run: str, workspace: Path | None = WorkspaceOpt,
                force: bool = typer.Option(False, "--force", help="SIGKILL instead of a graceful stop.")) -> None:
    """Cancel a running job (SIGTERM: trainers checkpoint first; --force: SIGKILL)."""
    ws = open_workspace(workspace, create=False)
    path = _find_run(ws, run)
    ok = jobs.cancel_job(path, force=force)
    if ok:
        typer.echo(("killed " if force else "sent stop to ") + str(path))
    else:
        typer.echo(f"not running ({jobs.job_state(path).get('state', 'unknown')}): {path}")


def _empty_log_reason(path: Path, job: dict) -> str:
    state = runs.JobState.parse(job.get("state"))
    log = path / runs.LOG_FILE
    if state.active:
        return f"{log} is empty so far: the job is {state} and has printed nothing yet"
    if not log.exists():
        return (f"{path} has no {runs.LOG_FILE}: it was written by an llmctl that kept no log for runs "
                f"outside a job (state {state})")
    return f"{log} is empty: the run ({state}) printed nothing"


@jobs_app.command("logs")
def jobs_logs(run: str, workspace: Path | None = WorkspaceOpt,
              follow: bool = typer.Option(False, "--follow", "-f")) -> None:
    """Print a job's log (and follow it while it runs); RUN is a run id, the short id the app shows, or a prefix."""
    ws = open_workspace(workspace, create=False)
    path = _find_run(ws, run)
    log = path / runs.LOG_FILE
    offset = 0
    while True:
        if log.exists():
            with open(log, "rb") as f:
                f.seek(offset)
                data = f.read()
            offset += len(data)
            sys.stdout.write(data.decode("utf-8", "replace"))
            sys.stdout.flush()
        job = jobs.job_state(path)
        if not follow or not jobs.is_active(job):
            break
        time.sleep(0.5)
    if offset == 0:
        typer.echo(f"llmctl: {_empty_log_reason(path, jobs.job_state(path))}", err=True)
