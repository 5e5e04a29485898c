"""Rich rendering of workspace status for the terminal."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.table import Table

from llmctl.core.artifacts import ArtifactStatus
from llmctl.core.status import StageStatus
from llmctl.core.workspace import Workspace

STATE_STYLE = {
    "ready": "green", "done": "green", "can run": "cyan", "running": "yellow", "building": "yellow",
    "stale": "magenta", "stopped": "magenta", "failed": "red", "missing": "dim", "waiting": "dim", "not built": "dim italic",
}


def human_bytes(n: float | None) -> str:
    if not n:
        return "-"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def human_age(created: float | None) -> str:
    if not created:
        return "-"
    s = max(0.0, time.time() - created)
    for div, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if s >= div:
            return f"{s / div:.0f}{unit} ago"
    return f"{s:.0f}s ago"


def human_counts(counts: dict[str, Any], limit: int = 4) -> str:
    parts = []
    for k, v in counts.items():
        if isinstance(v, bool) or not isinstance(v, int | float):
            continue
        parts.append(f"{k}={v:,}" if isinstance(v, int) else f"{k}={v:.4g}")
        if len(parts) >= limit:
            break
    return " ".join(parts) or "-"


def render_status(ws: Workspace, stages: list[StageStatus], arts: dict[str, ArtifactStatus]) -> None:
    """Print the stage and artifact tables."""
    console = Console()
    console.print(f"[bold]workspace[/] {ws.root}")
    t = Table(title="stages", title_justify="left")
    for col in ("stage", "state", "needs", "makes", "detail"):
        t.add_column(col)
    for s in stages:
        style = STATE_STYLE.get(s.state, "")
        t.add_row(s.name, f"[{style}]{s.state}[/]", ", ".join(s.needs) or "-", ", ".join(s.makes),
                  s.detail or (s.running_job or ""))
    console.print(t)
    a = Table(title="artifacts", title_justify="left")
    for col in ("artifact", "state", "size", "counts", "age", "path"):
        a.add_column(col)
    for st in arts.values():
        style = STATE_STYLE.get(st.state, "")
        state = f"[{style}]{st.state}[/]" + (f" ({st.reason})" if st.reason else "")
        a.add_row(st.name, state, human_bytes(st.size), human_counts(st.counts), human_age(st.created),
                  st.path)
    console.print(a)
