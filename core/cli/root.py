"""The app's own commands: no command opens the control center; ``init`` and ``status``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from llmctl.core.cli.common import WorkspaceOpt, app, fail, open_workspace
from llmctl.core.render import render_status
from llmctl.core.status import artifact_statuses, stage_statuses
from llmctl.core.workspace import WorkspaceError, init_workspace


@app.callback(invoke_without_command=True)
def main_callback(ctx: typer.Context, workspace: Path | None = WorkspaceOpt) -> None:
    """With no command, open the control center on the workspace."""
    if ctx.invoked_subcommand is None:
        ws = open_workspace(workspace, create=True)
        from llmctl.tui.app import run_app

        run_app(ws.root)


@app.command()
def init(workspace: Path | None = WorkspaceOpt) -> None:
    """Create a workspace with llmctl.toml holding paths and every stage's parameters."""
    try:
        ws = init_workspace(workspace)
    except WorkspaceError as e:
        raise fail(str(e)) from None
    for notice in ws.notices:
        typer.echo(f"llmctl: warning: {notice}", err=True)
    typer.echo(f"workspace ready at {ws.root} (config: {ws.config_path})")


@app.command()
def status(workspace: Path | None = WorkspaceOpt,
           as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Every stage and artifact: missing / building / ready / stale / failed, size, counts, age."""
    ws = open_workspace(workspace, create=False)
    arts = artifact_statuses(ws)
    stages = stage_statuses(ws, arts)
    if as_json:
        typer.echo(json.dumps({"workspace": str(ws.root),
                               "stages": [s.to_json() for s in stages],
                               "artifacts": [a.to_json() for a in arts.values()]}, indent=2))
        return

    render_status(ws, stages, arts)


