"""Help: what each screen shows and the keys that act on it."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

KEYS = (
    ("Everywhere", (("ctrl+p", "command palette: start a stage, preview an artifact, open a job or screen"),
                    ("? / f1", "this help"), ("escape", "back"), ("q", "quit (jobs keep running)"))),
    ("Main screen", (("tab / 1 2 3", "move between pipeline, artifacts and jobs"),
                     ("enter", "act on the highlighted row (start / preview / open)"),
                     ("s", "start the highlighted stage: edit its parameters, GPUs, launch"),
                     ("p", "preview the highlighted artifact"), ("o", "open the highlighted job"),
                     ("c", "cancel the highlighted job (graceful, then killed)"), ("r", "re-run it"),
                     ("h", "run history of the stage"), ("g", "sampling playground"),
                     ("e", "evaluation browser"))),
    ("Job screen", (("1 2 3 4", "curves, log, rollouts, files"), ("space", "pick metrics in the list"),
                    ("c / k", "cancel / kill now"), ("r", "re-run"), ("h", "history of this stage"))),
    ("Preview", (("n / b", "next / previous page"), ("home / end", "first / last page"),
                 ("enter", "in a folder: preview the file"))),
    ("History", (("space", "mark a run for the overlay"), ("m", "next metric"))),
    ("Playground", (("ctrl+g", "generate"),)),
    ("Evals", (("f", "filter: all / correct / wrong"),)),
)

ABOUT = ("Data flows one way: sources → prepared artifacts → training stages → checkpoints and metrics → "
         "this screen. Every stage is a command (`llmctl prepare rl`, `llmctl run grpo`, …); starting one "
         "here runs exactly that command as a job in runs/<stage>/<run>/, which keeps running when you quit.")


def help_table() -> Table:
    t = Table(show_header=False, box=None, padding=(0, 2))
    t.add_column(style="bold cyan", no_wrap=True)
    t.add_column()
    for section, keys in KEYS:
        t.add_row(Text(section, style="bold underline"), "")
        for k, what in keys:
            t.add_row(k, what)
        t.add_row("", "")
    return t


class HelpScreen(ModalScreen):
    """Keys and screens, closed with escape."""

    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box") as box:
            box.border_title = "llmctl help"
            yield Static(Text(ABOUT, style="italic"), id="help-about")
            yield Static(help_table(), id="help-keys")

    def action_dismiss(self) -> None:  # type: ignore[override]
        self.dismiss()
