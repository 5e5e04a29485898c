"""What the screens share: escape goes back, digit keys pick a tab or a panel, ctrl+r reloads."""

from __future__ import annotations

from textual.binding import Binding
from textual.screen import Screen

RELOAD = Binding("ctrl+r", "reload", "Reload")


class SubScreen(Screen):
    """A screen opened over another: escape goes back (the first key of its footer; Textual puts a
    base class's bindings before the subclass's own)."""

    BINDINGS = [Binding("escape", "app.pop_screen", "Back")]


def numbered(action: str, *labels: str, show: bool = True) -> list[Binding]:
    """Keys ``1``, ``2``, … calling ``action`` with each label in lower case: ``1`` → ``tab('curves')``."""
    return [Binding(str(i), f"{action}('{label.lower()}')", label, show=show) for i, label in enumerate(labels, 1)]
