"""``llmctl prepare …`` and ``llmctl run …``: one command per stage, generated from the declarations.

Every parameter field of a stage becomes an option; defaults come from ``llmctl.toml``.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any, Optional

import typer

from llmctl.core import clean, jobs, runs
from llmctl.core.cli.common import GROUPS, WorkspaceOpt, app, fail, open_workspace, user_errors
from llmctl.core.params import field_default
from llmctl.core.render import human_bytes
from llmctl.core.stages import (
    STAGES,
    ParamError,
    Stage,
    StageNotBuilt,
    field_type,
    resolve_params,
)
from llmctl.core.workspace import Workspace


def _option_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def _help(f: dataclasses.Field) -> str:
    """The field's help text with its built-in default (``llmctl.toml`` may set another)."""
    text = f.metadata.get("help", "")
    value = field_default(f)
    if value is None or value == [] or value == "":
        return text
    if isinstance(value, bool):
        shown = "on" if value else "off"
    elif isinstance(value, list):
        shown = ",".join(map(str, value))
    else:
        shown = str(value)
    return f"{text} (default: {shown})"


def _stage_parameters(stage: Stage) -> list[inspect.Parameter]:
    params: list[inspect.Parameter] = []
    try:
        cls = stage.load_params_class()
    except StageNotBuilt:
        cls = None
    if cls is not None:
        for f in dataclasses.fields(cls):
            typ, is_list = field_type(f, cls)
            help_ = _help(f)
            if typ is bool:
                opt = typer.Option(None, f"{_option_name(f.name)}/--no-{f.name.replace('_', '-')}", help=help_,
                                   show_default=False)
                ann: Any = Optional[bool]
            elif f.metadata.get("argument"):
                # a field may be an optional positional argument: metadata={"argument": True}
                opt = typer.Argument(None, help=help_, show_default=False)
                ann = Optional[typ if typ in (int, float, str) else str]
            else:
                # a field may name its own flag: metadata={"flag": "--from"} (e.g. a Python keyword)
                opt = typer.Option(None, f.metadata.get("flag") or _option_name(f.name), help=help_,
                                   show_default=False)
                base = typ if typ in (int, float, str) else str
                ann = Optional[list[base]] if is_list else Optional[base]  # type: ignore[valid-type]
            params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=ann))
    common = [
        ("workspace", Optional[Path], WorkspaceOpt),
        ("set_", Optional[list[str]], typer.Option(None, "--set", help="Override a parameter: KEY=VALUE (repeatable).")),
        ("detach", bool, typer.Option(False, "--detach", help="Run as a background job in its own run folder.")),
    ]
    if stage.trains:
        common += [
            ("nproc", int, typer.Option(1, "--nproc", help="Processes (GPUs) under torchrun.")),
            ("gpus", Optional[str], typer.Option(None, "--gpus", help="GPU ids to use, e.g. 0,1.")),
        ]
    for name, ann, opt in common:
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=ann))
    return params


def _parse_sets(items: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ParamError(f"--set {item!r}: expected KEY=VALUE")
        out[key.strip().replace("-", "_")] = value
    return out


def _strip_flags(argv: list[str], flags: dict[str, int]) -> list[str]:
    """argv without the given flags (and their values: flag -> number of values)."""
    out, skip = [], 0
    for a in argv:
        if skip:
            skip -= 1
            continue
        name = a.split("=", 1)[0]
        if name in flags:
            skip = 0 if "=" in a else flags[name]
            continue
        out.append(a)
    return out


def _clean_leftovers(ws: Workspace, stage: str) -> None:
    """Remove the unfinished checkpoints and locks that killed runs of ``stage`` left (provably dead)."""
    items = clean.checkpoint_leftovers(ws.checkpoints_dir / stage)
    if items:
        freed = clean.remove(items)
        print(f"llmctl: removed {len(items)} leftover(s) of killed {stage} runs ({human_bytes(freed)})", flush=True)


def execute_stage(stage: Stage, ws: Workspace, params: Any, run_dir: Path | None = None) -> dict[str, Any] | None:
    """Run a stage in this process, in a run folder, recording its job state.

    Without a supervisor writing the run's log.txt (a foreground run, the demo's stages), this
    process copies what it prints there, so every run has its log.
    """
    own = run_dir is None
    if run_dir is None:
        env_dir = runs.current_run_dir()
        if env_dir is not None:
            run_dir, own = env_dir, False
        elif int(os.environ.get("WORLD_SIZE", "1")) > 1:
            rid = "torchrun-" + os.environ.get("TORCHELASTIC_RUN_ID", "local")
            run_dir = ws.runs_dir / stage.name / rid
            run_dir.mkdir(parents=True, exist_ok=True)
            own = os.environ.get("RANK", "0") == "0"
        else:
            run_dir = runs.new_run_dir(ws.runs_dir, stage.name)
    saved_env = {runs.ENV_RUN_DIR: os.environ.get(runs.ENV_RUN_DIR)}
    os.environ[runs.ENV_RUN_DIR] = str(run_dir)
    if own:
        runs.begin(run_dir, stage=stage.name, command=sys.argv, state=runs.JobState.RUNNING, pid=os.getpid(),
                   pid_identity=jobs.process_identity(os.getpid()), foreground=True)
    supervised = bool((runs.read_job(run_dir) or {}).get("supervisor_pid"))
    log = runs.LogTee(run_dir / runs.LOG_FILE) if not supervised and os.environ.get("RANK", "0") == "0" else None
    try:
        if stage.trains and os.environ.get("RANK", "0") == "0":
            _clean_leftovers(ws, stage.name)
        result = stage.load_runner()(ws, params, run_dir)
    except BaseException as e:
        if log is not None:
            log.note(f"llmctl: {type(e).__name__}: {e}")
        if own:
            runs.finish(run_dir, 130 if isinstance(e, KeyboardInterrupt) else 1,
                        cancelled=isinstance(e, KeyboardInterrupt), error=f"{type(e).__name__}: {e}")
        raise
    finally:
        if log is not None:
            log.close()
        for key, value in saved_env.items():  # a later in-process call gets its own run folder
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    if own:
        runs.finish(run_dir, 0)
    return result


def _make_stage_command(stage: Stage):
    def command(**kwargs: Any) -> None:
        workspace = kwargs.pop("workspace")
        sets = kwargs.pop("set_")
        detach = kwargs.pop("detach")
        nproc = kwargs.pop("nproc", 1)
        gpus = kwargs.pop("gpus", None)
        ws = open_workspace(workspace, create=True)
        try:
            overrides = {k: v for k, v in kwargs.items() if v is not None}
            overrides.update(_parse_sets(sets))
            params = resolve_params(stage, ws.stage_config(stage.name), overrides)
        except (ParamError, StageNotBuilt) as e:
            raise fail(str(e), 2) from None
        gpu_list = [int(g) for g in gpus.split(",") if g.strip()] if gpus else None
        under_torchrun = "LOCAL_RANK" in os.environ
        if detach or (nproc > 1 and not under_torchrun):
            args = _strip_flags(sys.argv[1:], {"--detach": 0, "--nproc": 1, "--gpus": 1})
            args = args[len(stage.command):] if tuple(args[:len(stage.command)]) == stage.command else args
            if "--workspace" not in args and "-w" not in args:
                args += ["--workspace", str(ws.root)]
            argv = jobs.stage_argv(stage.command, args, nproc)
            if detach:
                run_dir = jobs.start_job(ws.runs_dir, stage.name, argv, gpus=gpu_list, workspace=ws.root)
                typer.echo(f"started {stage.name} as a job: {run_dir}")
                typer.echo(f"  follow: llmctl jobs logs {run_dir.name} --follow   cancel: llmctl jobs cancel {run_dir.name}")
                return
            env = dict(os.environ)
            if gpu_list is not None:
                env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpu_list))
            run_dir = runs.new_run_dir(ws.runs_dir, stage.name)
            env[runs.ENV_RUN_DIR] = str(run_dir)
            runs.begin(run_dir, stage=stage.name, command=argv, state=runs.JobState.RUNNING, pid=os.getpid(),
                       pid_identity=jobs.process_identity(os.getpid()), foreground=True)
            code = subprocess.call(argv, env=env)
            runs.finish(run_dir, code)
            raise typer.Exit(code)
        if gpu_list is not None:
            os.environ.setdefault("CUDA_VISIBLE_DEVICES", ",".join(map(str, gpu_list)))
        try:
            execute_stage(stage, ws, params)
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None
        except user_errors() as e:
            if os.environ.get("LLMCTL_DEBUG"):
                traceback.print_exc()
            raise fail(str(e)) from None

    command.__signature__ = inspect.Signature(_stage_parameters(stage))  # type: ignore[attr-defined]
    command.__name__ = stage.name.replace("-", "_")
    command.__doc__ = stage.help + ("" if stage.built else "  [not built yet]") + (
        f"\n\nDefaults shown are built in; the stages.{stage.name} table of llmctl.toml overrides them.")
    return command


def _register_stages() -> None:
    for stage in STAGES:
        cmd = _make_stage_command(stage)
        if len(stage.command) == 2:
            GROUPS[stage.command[0]].command(stage.command[1], help=cmd.__doc__)(cmd)
        else:
            app.command(stage.command[0], help=cmd.__doc__)(cmd)


_register_stages()
