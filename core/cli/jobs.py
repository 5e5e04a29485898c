"""``llmctl jobs``: list, follow and cancel jobs."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer

from llmctl.core.cli.common import GROUPS, WorkspaceOpt, fail, open_workspace


def _find_run(ws, ref: str) -> Path:
    from llmctl.core.jobs import list_jobs

    p = Path(ref)
    if p.is_dir():
        return p
    matches = [r.path for r in list_jobs(ws.runs_dir) if r.run_id == ref or r.run_id.startswith(ref)
               or f"{r.stage}/{r.run_id}" == ref]
    if not matches:
        raise FileNotFoundError(f"no run {ref!r} under {ws.runs_dir}")
    return matches[-1]



jobs_app = GROUPS["jobs"]

@jobs_app.callback(invoke_without_command=True)
def jobs_list(ctx: typer.Context, workspace: Path | None = WorkspaceOpt,
              as_json: bool = typer.Option(False, "--json")) -> None:
    """List jobs (running and finished)."""
    if ctx.invoked_subcommand is not None:
        return
    import json

    from llmctl.core.jobs import list_jobs

    ws = open_workspace(workspace, create=False)
    rows = list_jobs(ws.runs_dir)
    if as_json:
        typer.echo(json.dumps([{"stage": r.stage, "run": r.run_id, "path": str(r.path), **r.job} for r in rows],
                              indent=2, default=str))
        return
    for r in rows:
        j = r.job
        end = j.get("ended") or time.time()
        el = end - (j.get("started") or end)
        typer.echo(f"{r.stage:18} {r.run_id:26} {j.get('state', '?'):10} {el:8.1f}s  {r.path}")

@jobs_app.command("cancel")
def jobs_cancel(run: str, workspace: Path | None = WorkspaceOpt,
                force: bool = typer.Option(False, "--force", help="SIGKILL instead of a graceful stop.")) -> None:
    """Cancel a running job (SIGTERM: trainers checkpoint first; --force: SIGKILL)."""
    from llmctl.core.jobs import cancel_job

    ws = open_workspace(workspace, create=False)
    try:
        path = _find_run(ws, run)
    except FileNotFoundError as e:
        raise fail(str(e)) from None
    ok = cancel_job(path, force=force)
    typer.echo(("sent stop to " if ok else "not running: ") + str(path))

@jobs_app.command("logs")
def jobs_logs(run: str, workspace: Path | None = WorkspaceOpt,
              follow: bool = typer.Option(False, "--follow", "-f")) -> None:
    """Print a job's log (and follow it while it runs)."""
    from llmctl.core.jobs import is_active, job_state

    ws = open_workspace(workspace, create=False)
    try:
        path = _find_run(ws, run)
    except FileNotFoundError as e:
        raise fail(str(e)) from None
    log = path / "log.txt"
    offset = 0
    while True:
        if log.exists():
            with open(log, "rb") as f:
                f.seek(offset)
                data = f.read()
            offset += len(data)
            sys.stdout.write(data.decode("utf-8", "replace"))
            sys.stdout.flush()
        if not follow or not is_active(job_state(path)):
            break
        time.sleep(0.5)
