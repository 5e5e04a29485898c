"""The pipeline: every stage in dependency order with its state, what it needs and what it makes."""

from __future__ import annotations

from typing import Any

from rich.text import Text

from llmctl.core.stages import STAGE_BY_NAME, need_names
from llmctl.tui.state import WorkspaceState, style_for
from llmctl.tui.widgets.table import KeyedTable

MARK = {"ready": "✓", "stale": "!", "building": "…", "failed": "✗", "missing": "·"}


def artifact_mark(name: str, state: WorkspaceState) -> Text:
    """``✓ name`` coloured by the artifact's state."""
    a = state.artifacts.get(name)
    st = a.state if a else "missing"
    return Text(f"{MARK.get(st, '?')}{name}", style=style_for(st) or "")


def needs_text(needs: list[str], state: WorkspaceState) -> Text:
    out = Text()
    for i, need in enumerate(needs):
        if i:
            out.append(", ")
        names, optional = need_names(need)
        for j, n in enumerate(names):
            if j:
                out.append("|", style="dim")
            out.append_text(artifact_mark(n, state))
        if optional:
            out.append("?", style="dim")
    return out or Text("-", style="dim")


def makes_text(makes: list[str], state: WorkspaceState) -> Text:
    out = Text()
    for i, n in enumerate(makes):
        if i:
            out.append(", ")
        out.append_text(artifact_mark(n, state))
    return out


def stage_state_text(state: str) -> Text:
    icon = {"running": "▶ ", "done": "✓ ", "failed": "✗ ", "stale": "! ", "stopped": "■ ", "can run": "○ ",
            "waiting": "… ", "not built": "  "}.get(state, "")
    return Text(icon + state, style=style_for(state))


class PipelineTable(KeyedTable):
    """Stages in pipeline order; the row key is the stage name."""

    COLUMNS = ("stage", "state", "makes", "needs")
    BORDER_TITLE = "Pipeline"

    def show(self, state: WorkspaceState) -> bool:
        rows: list[tuple[str, list[Any]]] = []
        for s in state.stages:
            rows.append((s.name, [Text(s.name, style="bold"), stage_state_text(s.state),
                                  makes_text(s.makes, state), needs_text(s.needs, state)]))
        return self.set_rows(rows)


def stage_summary(name: str, state: WorkspaceState | None) -> Text:
    """Three lines about a stage for the strip under the pipeline: what, state, needs -> makes."""
    st = STAGE_BY_NAME.get(name)
    if st is None:
        return Text("")
    out = Text()
    out.append(f"{name}", style="bold")
    out.append(f"  {st.help}", style="italic")
    if st.trains:
        out.append("  (GPU, torchrun)", style="dim")
    if state is not None:
        s = state.stage(name)
        if s is not None:
            out.append("\n")
            out.append_text(stage_state_text(s.state))
            detail = s.detail
            if s.state == "running" and s.running_job:
                detail = "job " + "/".join(s.running_job.rsplit("/", 2)[-2:])
            if detail:
                out.append(f": {detail}", style=style_for(s.state))
            out.append("\nneeds ", style="dim")
            out.append_text(needs_text(s.needs, state))
            out.append("  →  makes ", style="dim")
            out.append_text(makes_text(s.makes, state))
    return out
