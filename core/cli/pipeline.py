"""``llmctl report`` and ``llmctl demo``: whole-workspace commands."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from llmctl.core import jobs
from llmctl.core.cli import demo as demo_mod
from llmctl.core.cli.common import WorkspaceOpt, app, fail, open_workspace
from llmctl.core.cli.report import build_report


@app.command()
def report(workspace: Optional[Path] = WorkspaceOpt,
           out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output file (default <workspace>/report.md)."),
           html: bool = typer.Option(False, "--html", help="One self-contained HTML file instead of Markdown.")) -> None:
    """A report card of the workspace: artifacts, runs, metrics, curves, evaluation."""
    ws = open_workspace(workspace, create=False)
    try:
        path = build_report(ws, out, fmt="html" if html else "md")
    except OSError as e:
        raise fail(str(e)) from None
    typer.echo(f"report written to {path}")

@app.command()
def demo(workspace: Optional[Path] = WorkspaceOpt,
         corpus: Optional[list[str]] = typer.Option(None, "--corpus", help="Text files/globs to pretrain on first (optional)."),
         detach: bool = typer.Option(False, "--detach", help="Run the demo as a job (watch it in the app)."),
         fast: bool = typer.Option(False, "--fast", help="Fewer steps (a smoke run)."),
         stop_after: str = typer.Option("eval", "--stop-after", metavar="STAGE",
                                        help="Stop after this stage: data, pretrain, sft, grpo or eval."),
         seed: int = typer.Option(0, "--seed", help="Seed of every training stage and of the held-out split."),
         preset: str = typer.Option("tiny", "--preset", help="Model preset of the first trained model (e.g. small "
                                    "on a GPU, with --corpus)."),
         ) -> None:
    """An offline end-to-end pipeline: arithmetic SFT then GRPO on the tiny model (a few minutes)."""
    if stop_after not in demo_mod.STOP_POINTS:
        raise fail(f"demo: --stop-after must be one of {', '.join(demo_mod.STOP_POINTS)}, got {stop_after!r}")
    ws = open_workspace(workspace, create=True)
    if detach:
        args = ["demo", "--workspace", str(ws.root), "--stop-after", stop_after, "--seed", str(seed),
                "--preset", preset] + (["--fast"] if fast else [])
        for c in corpus or []:
            args += ["--corpus", c]
        run_dir = jobs.start_job(ws.runs_dir, "demo", jobs.cli_argv(*args),
                                 workspace=ws.root)
        typer.echo(f"started the demo as a job: {run_dir}")
        return
    try:
        demo_mod.run_demo(ws, corpus=list(corpus or []), fast=fast, stop_after=stop_after, seed=seed, preset=preset,
                          echo=typer.echo)
    except Exception as e:  # noqa: BLE001 - one clear line, details with LLMCTL_DEBUG
        if os.environ.get("LLMCTL_DEBUG"):
            raise
        raise fail(f"demo: {e}") from None
