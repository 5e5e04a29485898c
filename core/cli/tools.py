"""``llmctl gpus`` and ``llmctl preview``: headless views printed with rich (never textual)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from llmctl.core.cli.common import WorkspaceOpt, app, fail, open_workspace, user_errors
from llmctl.core.data.prepare_sft import check_gsm8k_row, rows_with_source
from llmctl.core.gpu import GpuPoller
from llmctl.core.previews import preview, render, resolve_target
from llmctl.core.render import human_bytes
from llmctl.core.workspace import Workspace, WorkspaceError


def _na(v: Any, fmt: str = "{:.0f}", unit: str = "") -> str:
    return "n/a" if v is None else fmt.format(v) + unit


def gpu_table(snap: Any) -> Any:
    """A rich renderable of a GPU snapshot (or the 'GPU unavailable' line)."""
    if not snap.available:
        return Text(f"GPU unavailable: {snap.reason}", style="yellow")
    t = Table(title=f"GPUs · driver {snap.driver or 'n/a'} · CUDA {snap.cuda or 'n/a'}", title_justify="left")
    for col in ("gpu", "name", "util", "memory", "temp", "power", "processes"):
        t.add_column(col)
    for g in snap.gpus:
        mem = "n/a" if g.mem_used is None else f"{human_bytes(g.mem_used)} / {human_bytes(g.mem_total)}"
        power = _na(g.power_w, "{:.0f}", " W") + ("" if g.power_limit_w is None else f" / {g.power_limit_w:.0f} W")
        if g.processes is None:
            procs = "n/a"
        else:
            procs = "\n".join(f"{p.pid} {p.name or '?'} {human_bytes(p.used_bytes) if p.used_bytes else 'n/a'}"
                              + (f" [{p.job}]" if p.job else "") for p in g.processes) or "-"
        t.add_row(str(g.index), g.name or "n/a", _na(g.util, unit="%"), mem, _na(g.temp_c, unit="°C"), power,
                  procs if not g.error else f"[red]{g.error}[/]")
    return t


@app.command("gpus")
def gpus(workspace: Optional[Path] = WorkspaceOpt,
         watch: bool = typer.Option(False, "--watch", help="Refresh every second until Ctrl-C."),
         as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
         interval: float = typer.Option(1.0, "--interval", help="Seconds between refreshes with --watch.")) -> None:
    """GPU utilisation, memory, temperature, power and the jobs on each GPU (NVML)."""
    try:
        runs_dir = Workspace.open(workspace, create=False).runs_dir
    except WorkspaceError:
        runs_dir = None  # GPUs are worth showing without a workspace
    poller = GpuPoller(runs_dir=runs_dir, interval=interval)
    try:
        if as_json and not watch:
            typer.echo(json.dumps(poller.poll_once().to_json(), indent=2))
            return
        if not watch:
            Console().print(gpu_table(poller.poll_once()))
            return
        with Live(gpu_table(poller.poll_once()), refresh_per_second=4) as live:
            while True:
                time.sleep(interval)
                snap = poller.poll_once()
                if as_json:
                    typer.echo(json.dumps(snap.to_json()))
                else:
                    live.update(gpu_table(snap))
    except KeyboardInterrupt:
        pass
    finally:
        poller.close()

@app.command("preview")
def preview_cmd(artifact: str = typer.Argument(..., help="Artifact name (e.g. pile_train, sft_packed) or a path."),
                row: int = typer.Option(0, "--row", "-r", help="First row (token window for flat token files)."),
                count: Optional[int] = typer.Option(None, "--count", "-n", help="Rows to show."),
                check_gsm8k: bool = typer.Option(
                    False, "--check-gsm8k", help="Packed SFT rows: check every GSM8K example of the rows "
                    "shown (trained span exactly <think>…</think><answer>N</answer> + EOT, question "
                    "untrained); exit 1 naming the row and example on a mismatch."),
                workspace: Optional[Path] = WorkspaceOpt) -> None:
    """Show an artifact: decoded tokens, packed SFT rows with the trained span, JSONL/Parquet rows, manifests."""
    ws = open_workspace(workspace, create=False)
    try:
        path = resolve_target(ws, artifact)
        tok = ws.tokenizer() if path.suffix in (".h5", ".hdf5") else None
        pv = preview(path, start=row, count=count, tokenizer=tok)
    except (*user_errors(), ValueError, KeyError) as e:
        raise fail(str(e)) from None
    console = Console()
    for r in render(pv):
        console.print(r)
    if check_gsm8k:
        if pv.kind != "sft-h5":
            raise fail(f"--check-gsm8k needs packed SFT rows; {path.name} is {pv.kind}")
        shown = range(pv.start, pv.start + pv.count)
        try:
            checked = [e for r in shown for e in check_gsm8k_row(path, r, tok)]
        except ValueError as e:
            raise fail(f"GSM8K check failed: {e}") from None
        if not checked:
            later = [r for r in rows_with_source(path, "gsm8k") if r >= pv.start]
            hint = f"; the next row with one is {later[0]} (--row {later[0]})" if later else ""
            raise fail(f"GSM8K check: no GSM8K example in rows {shown.start}..{shown.stop - 1}{hint}")
        typer.echo(f"GSM8K check: {len(checked)} example(s) in rows {shown.start}..{shown.stop - 1} ok: each "
                   "trained span is exactly <think>…</think><answer>N</answer><|endoftext|> and no question "
                   "token is trained")
