"""``llmctl verl check`` and ``llmctl verl launch`` (``verl convert`` is generated from its stage)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from llmctl.core.cli.common import GROUPS, WorkspaceOpt, fail, open_workspace
from llmctl.core.rewards.compute_score import reward_settings
from llmctl.core.tokenizer import Tokenizer
from llmctl.core.verl.check import check_sources, parquet_files, read_rows, unknown_hint
from llmctl.core.verl.launch import (
    LaunchOptions,
    build_command,
    drop_unscorable,
    shell_line,
    source_report,
    verl_missing,
    workspace_files,
)


def _reward_kwargs(items: list[str] | None) -> dict:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--reward-kwarg {item!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


verl_app = GROUPS["verl"]

@verl_app.command("check")
def check(
    parquet: list[Path] = typer.Argument(None, help="Parquet files or folders (default: the workspace's "
                                                    "data/verl/*_merged)."),
    rows_per_source: int = typer.Option(20, "--rows-per-source", help="Rows scored per data_source "
                                                                      "(every row's ground truth is parsed)."),
    reward_kwarg: list[str] = typer.Option(None, "--reward-kwarg", help="KEY=VALUE passed to compute_score "
                                                                        "(as verl's reward_kwargs)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    workspace: Path | None = WorkspaceOpt,
) -> None:
    """Score a right and a wrong answer for every data_source; exit 1 unless all score 1 and 0."""
    try:
        if parquet:
            files = parquet_files(parquet)
        else:
            ws = open_workspace(workspace, create=False)
            files = parquet_files(sorted(ws.path("data/verl").glob("*_merged")) or [ws.path("data/verl")])
        checks = check_sources(read_rows(files), rows_per_source=rows_per_source,
                               reward_kwargs=_reward_kwargs(reward_kwarg))
    except (FileNotFoundError, ValueError, OSError) as e:
        raise fail(str(e)) from None
    if not checks:
        raise fail(f"no data rows in {', '.join(str(f) for f in files[:3])}{' …' if len(files) > 3 else ''}: "
                   "nothing to check (convert data first: llmctl verl convert …)")
    bad = [c for c in checks if not c.ok]
    if as_json:
        typer.echo(json.dumps({"files": [str(f) for f in files], "ok": not bad,
                               "sources": [c.to_json() for c in checks]}, indent=2))
    else:
        _print_table(files, checks)
    if bad:
        raise typer.Exit(1)

@verl_app.command("launch")
def launch(
    model: str = typer.Option(..., "--model", help="Model path for verl: a Hugging Face folder "
                                                   "(e.g. from `llmctl export hf CKPT OUT`) or a hub id."),
    train: list[str] = typer.Option(None, "--train", help="Train parquet (repeatable; default: "
                                                          "data/verl/*_merged/train/*.parquet)."),
    val: list[str] = typer.Option(None, "--val", help="Validation parquet (repeatable; default: "
                                                      "data/verl/*_merged/test/*.parquet)."),
    n: int = typer.Option(8, "--n", help="Responses per prompt (the GRPO group)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Prompts per step (data.train_batch_size)."),
    mini_batch_size: int = typer.Option(32, "--mini-batch-size", help="PPO mini-batch (prompts)."),
    micro_batch_size: int = typer.Option(8, "--micro-batch-size", help="Micro-batch per GPU."),
    max_prompt_length: int = typer.Option(512, "--max-prompt-length"),
    max_response_length: int = typer.Option(512, "--max-response-length"),
    lr: float = typer.Option(1e-6, "--lr"),
    gpus: int = typer.Option(1, "--gpus", help="GPUs per node."),
    nnodes: int = typer.Option(1, "--nnodes"),
    epochs: int = typer.Option(1, "--epochs"),
    rollout: str = typer.Option("vllm", "--rollout", help="verl rollout engine (vllm or sglang)."),
    reward_ref: str = typer.Option("pkg", "--reward-ref", help="pkg (pkg://llmctl.core.verl_reward) or "
                                                               "file (this install's module file)."),
    reward_kwarg: list[str] = typer.Option(None, "--reward-kwarg", help="KEY=VALUE for compute_score "
                                                                        "(e.g. format_weight=0.1)."),
    set_: list[str] = typer.Option(None, "--set", help="Extra verl Hydra override KEY=VALUE (repeatable)."),
    run: bool = typer.Option(False, "--run", help="Run the command (needs verl installed)."),
    bootcamp_convention: str = typer.Option("verl", "--bootcamp-convention",
                                            help="InternBootcamp scoring: verl (upstream's training reward: "
                                                 "answers under 100 characters or without </think> score 0) "
                                                 "or eval (upstream's evaluation script)."),
    drop_unscorable: bool = typer.Option(False, "--drop-unscorable",
                                         help="Drop (and count) training rows no verifier here can score, "
                                              "instead of refusing to launch."),
    workspace: Path | None = WorkspaceOpt,
) -> None:
    """Print the verl GRPO command for this workspace (or run it with --run).

    Refuses rows whose data_source has no verifier here (or drops and counts them with
    --drop-unscorable), and reports per data_source how many rows verl's max_prompt_length filter drops."""
    ws = open_workspace(workspace, create=False)
    if not train:
        train_default, val_default = workspace_files(ws)
        train = train_default
        val = val or val_default
    run_name = time.strftime("%Y%m%d-%H%M%S")
    try:
        kwargs = {"bootcamp_convention": bootcamp_convention, **_reward_kwargs(reward_kwarg)}
        _check_reward_kwargs(kwargs)
        opts = LaunchOptions(
            model=model, train_files=[str(Path(p).resolve()) for p in train],
            val_files=[str(Path(p).resolve()) for p in (val or [])], n=n, train_batch_size=batch_size,
            ppo_mini_batch_size=mini_batch_size, micro_batch_size_per_gpu=micro_batch_size,
            max_prompt_length=max_prompt_length, max_response_length=max_response_length, lr=lr,
            gpus=gpus, nnodes=nnodes, epochs=epochs, rollout_engine=rollout, reward_ref=reward_ref,
            reward_kwargs=kwargs, extra=list(set_ or []),
            save_dir=str(ws.checkpoints_dir / "verl" / run_name), experiment_name=f"llmctl-grpo-{run_name}")
        argv = build_command(opts)
    except (ValueError, RuntimeError) as e:
        raise fail(f"{e} (convert data first: llmctl verl convert …)") from None
    if Path(model).exists() and not (Path(model) / "config.json").is_file():
        typer.echo(f"warning: {model} has no config.json; verl expects a Hugging Face model folder "
                   "(llmctl export hf CKPT OUT)", err=True)
    missing = [p for p in opts.train_files + opts.val_files if not Path(p).is_file()]
    if missing:
        raise fail(f"parquet file(s) not found: {', '.join(missing)}")
    argv = _vet_rows(opts, ws.path("data/verl/launch") / run_name, drop_unscorable, ws.tokenizer())
    missing_mods = verl_missing()
    hint = ("verl is not installed here: pip install -e '.[verl]' in the llmctl clone (verl==0.9.1; add its "
            "GPU dependencies on the GPU machine)"
            if "verl" in missing_mods else
            f"verl is installed but cannot run here (missing: {', '.join(missing_mods)}); install verl's "
            "dependencies (pip install 'verl==0.9.1') on the GPU machine")
    if not run:
        typer.echo(shell_line(argv))
        if missing_mods:
            typer.echo(f"# {hint}, then rerun with --run", err=True)
        return
    if missing_mods:
        raise fail(hint + "; run without --run to print the command")
    typer.echo(shell_line(argv), err=True)
    raise typer.Exit(subprocess.call(argv, env=dict(os.environ)))


def _check_reward_kwargs(kwargs: dict) -> None:
    """Refuse bad reward settings here, not on the GPU node (ValueError names the setting)."""
    reward_settings(**kwargs)


def _vet_rows(opts: LaunchOptions, out_dir: Path, drop: bool, tok: Tokenizer) -> list[str]:
    """Refuse (or drop) rows with no verifier; report rows verl's prompt-length filter drops."""
    files = {"train": opts.train_files, **({"val": opts.val_files} if opts.val_files else {})}
    for split, paths in files.items():
        report = source_report(paths, opts.max_prompt_length, tok)
        for ds, r in sorted(report.items()):
            if r.over_length:
                typer.echo(f"warning: {split} {ds}: {r.over_length} of {r.rows} rows have prompts over "
                           f"max_prompt_length={opts.max_prompt_length} tokens; verl drops them "
                           "(raise --max-prompt-length to keep them)", err=True)
        bad = {ds: r.unscorable for ds, r in report.items() if r.unscorable}
        if bad and not drop:
            lines = [f"{ds}: {n} of {report[ds].rows} rows; to fix: {unknown_hint(ds)}" for ds, n in sorted(bad.items())]
            raise fail(f"{split} rows with no verifier here (they would train on zero reward):\n  " + "\n  ".join(lines))
        if bad:
            new, dropped = drop_unscorable(paths, out_dir / split)
            for ds, n in sorted(dropped.items()):
                typer.echo(f"dropped {n} {split} rows of {ds} (no verifier here)", err=True)
            if split == "train":
                opts.train_files = new
            else:
                opts.val_files = new
    return build_command(opts)


def _print_table(files: list[Path], checks) -> None:
    t = Table(title=f"verl check: {len(files)} file(s)", show_lines=False)
    for col in ("data_source", "verifier", "rows", "bad GT", "right→1", "wrong→0", "status"):
        t.add_column(col, justify="right" if col in ("rows", "bad GT", "right→1", "wrong→0") else "left",
                     no_wrap=col == "data_source")
    for c in checks:
        right = f"{c.correct_ok}/{c.correct_built}" if c.correct_built else "-"
        wrong = f"{c.wrong_ok}/{c.wrong_built}" if c.wrong_built else "-"
        status = "[green]ok[/]" if c.ok and not c.notes else ("[yellow]unchecked[/]" if c.ok else "[red]FAIL[/]")
        t.add_row(escape(c.data_source), escape(c.verifier), str(c.rows), str(c.bad_ground_truth), right, wrong, status)

    con = Console(width=None if sys.stdout.isatty() else 110)
    con.print(t)
    for c in checks:
        for p in c.problems:
            con.print(f"[red]FAIL[/] {escape(c.data_source)}: {escape(p)}", highlight=False)
        for note in c.notes:
            con.print(f"[yellow]note[/] {escape(c.data_source)}: {escape(note)}", highlight=False)
    bad = sum(1 for c in checks if not c.ok)
    con.print(f"[red]{bad} of {len(checks)} data_source(s) failed[/]" if bad else
              f"[green]all {len(checks)} data_source(s) score right 1 and wrong 0[/]")
