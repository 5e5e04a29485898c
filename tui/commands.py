"""Command palette entries (ctrl+p): start a stage, preview an artifact, open a job, open a screen."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from textual.command import DiscoveryHit, Hit, Hits, Provider

from llmctl.core.stages import ARTIFACTS, STAGES


class LlmctlCommands(Provider):
    """Stages, artifacts, recent jobs and the screens of the control center."""

    def _commands(self) -> list[tuple[str, Callable[[], Any], str]]:
        app: Any = self.app
        out: list[tuple[str, Callable[[], Any], str]] = []
        for s in STAGES:
            out.append((f"Start stage {s.name}", partial(app.open_launch, s.name), s.help))
        for a in ARTIFACTS:
            out.append((f"Preview artifact {a.name}", partial(app.open_preview, a.name), f"{a.path} · {a.help}"))
        for s in STAGES:
            out.append((f"Run history {s.name}", partial(app.open_history, s.name), "past runs side by side"))
        state = getattr(app, "state", None)
        for j in (state.jobs[:20] if state else []):
            out.append((f"Open job {j.key}", partial(app.open_job, j.key), f"{j.state}"))
        out.append(("Sampling playground", app.open_playground, "generate from a checkpoint"))
        out.append(("Evaluation browser", app.open_evals, "per-example eval results"))
        out.append(("Help", app.action_help, "keys and screens"))
        return out

    async def discover(self) -> Hits:
        for text, cmd, help_ in self._commands():
            yield DiscoveryHit(text, cmd, help=help_)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for text, cmd, help_ in self._commands():
            score = matcher.match(text)
            if score > 0:
                yield Hit(score, matcher.highlight(text), cmd, text=text, help=help_)
