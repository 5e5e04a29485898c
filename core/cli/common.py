"""What every command module shares: the Typer app and its groups, the workspace option, one-line errors."""

from __future__ import annotations

from pathlib import Path

import typer

from llmctl.core.artifacts import ArtifactBusy
from llmctl.core.data.records import InputError, TooManyErrors
from llmctl.core.runs import RunStopped
from llmctl.core.stages import ParamError, StageNotBuilt
from llmctl.core.tokenizer import TokenizerError
from llmctl.core.workspace import Workspace, WorkspaceError

app = typer.Typer(
    help="llmctl: prepare data, train (pretrain, SFT, reward, DPO, PPO, GRPO), evaluate and watch it all.",
    no_args_is_help=False,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
GROUPS: dict[str, typer.Typer] = {
    "prepare": typer.Typer(help="Build datasets into workspace artifacts.", no_args_is_help=True),
    "run": typer.Typer(help="Train a stage (foreground, or --detach as a job).", no_args_is_help=True),
    "verl": typer.Typer(help="Hand RL over to verl: convert data, check rewards, launch.", no_args_is_help=True),
    "jobs": typer.Typer(help="List, follow and cancel jobs.", no_args_is_help=False),
}
for _name, _grp in GROUPS.items():
    app.add_typer(_grp, name=_name)

WorkspaceOpt = typer.Option(None, "--workspace", "-w", help="Workspace folder (default $LLMCTL_WORKSPACE or ./workspace).")

# Errors that are the user's input, shown as one line without a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ParamError, StageNotBuilt, FileNotFoundError, PermissionError)


def user_errors() -> tuple[type[BaseException], ...]:
    """Every error shown as one line: the user's input, the workspace, a busy artifact, the OS."""
    return USER_ERRORS + (InputError, TooManyErrors, TokenizerError, WorkspaceError, ArtifactBusy, OSError, RunStopped)


def fail(msg: str, code: int = 1) -> typer.Exit:
    """Print ``llmctl: error: msg`` to stderr and return the Exit to raise."""
    typer.echo(f"llmctl: error: {msg}", err=True)
    return typer.Exit(code)


def open_workspace(path: Path | None, create: bool = True) -> Workspace:
    """The workspace at ``path`` (or the default), or a one-line error exit; prints its notices."""
    try:
        ws = Workspace.open(path, create=create)
    except WorkspaceError as e:
        raise fail(str(e)) from None
    for notice in ws.notices:
        typer.echo(f"llmctl: warning: {notice}", err=True)
    return ws


