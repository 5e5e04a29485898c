"""``llmctl clean``: list (and with ``--yes`` remove) what killed runs left behind."""

from __future__ import annotations

from pathlib import Path

import typer

from llmctl.core import clean
from llmctl.core.cli.common import WorkspaceOpt, app, open_workspace
from llmctl.core.render import human_bytes


@app.command("clean")
def clean_command(workspace: Path | None = WorkspaceOpt,
                  yes: bool = typer.Option(False, "--yes", help="Delete what is listed (default: only list it)."),
                  stage: str | None = typer.Option(None, "--stage", help="Only this stage's checkpoints.")) -> None:
    """Unfinished checkpoints (step_N.tmp), locks and prepare temps of killed runs: a dry run unless --yes."""
    ws = open_workspace(workspace, create=False)
    items = clean.leftovers(ws, stage)
    if not items:
        typer.echo("nothing to clean")
        return
    for item in items:
        typer.echo(f"{human_bytes(item.size):>10}  {item.path}  ({item.why})")
    total = human_bytes(sum(i.size for i in items))
    if yes:
        clean.remove(items)
        typer.echo(f"removed {len(items)} leftover(s), {total}")
    else:
        typer.echo(f"{len(items)} leftover(s), {total}: run `llmctl clean --yes` to delete them")
