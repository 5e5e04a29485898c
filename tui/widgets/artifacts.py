"""Artifacts: state (with stale / failed reasons), size, counts and age."""

from __future__ import annotations

from typing import Any

from rich.text import Text

from llmctl.core.stages import ARTIFACT_BY_NAME
from llmctl.tui.state import WorkspaceState, fmt_age, fmt_bytes, fmt_counts, style_for
from llmctl.tui.widgets.pipeline import MARK
from llmctl.tui.widgets.table import KeyedTable


class ArtifactsTable(KeyedTable):
    """One row per declared artifact; the row key is the artifact name."""

    COLUMNS = ("artifact", "state", "size", "counts", "age")
    BORDER_TITLE = "Artifacts"

    def show(self, state: WorkspaceState) -> bool:
        rows: list[tuple[str, list[Any]]] = []
        for name, a in state.artifacts.items():
            st = Text(f"{MARK.get(a.state, '?')} {a.state}", style=style_for(a.state))
            rows.append((name, [Text(name, style="bold"), st, fmt_bytes(a.size), fmt_counts(a.counts, limit=2),
                                fmt_age(a.created, state.time).removesuffix(" ago")]))
        return self.set_rows(rows)


def artifact_summary(name: str, state: WorkspaceState | None) -> Text:
    """Path, reason and full counts of an artifact, for the detail strip."""
    spec = ARTIFACT_BY_NAME.get(name)
    if spec is None or state is None or name not in state.artifacts:
        return Text("")
    a = state.artifacts[name]
    out = Text()
    out.append(name, style="bold")
    out.append(f"  {spec.help}", style="italic")
    out.append(f"  made by {spec.stage}", style="dim")
    out.append("\n")
    out.append(a.state, style=style_for(a.state))
    if a.reason:
        out.append(f" ({a.reason})", style=style_for(a.state))
    out.append(f"  {a.path}", style="dim")
    if a.counts:
        out.append("\n" + fmt_counts(a.counts, limit=8), style="dim")
    return out
