"""Live curves in the terminal (textual-plotext): the metrics chosen in a list, drawn as lines."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import SelectionList
from textual.widgets.selection_list import Selection
from textual_plotext import PlotextPlot

from llmctl.tui.widgets.text import TextBox

DEFAULT_PICKS = ("train/loss", "eval/loss", "loss", "reward", "rewards/margins", "eval/accuracy", "accuracy")


def default_selection(keys: Sequence[str]) -> list[str]:
    """The metrics shown before the user picks: an RL run's reward (GRPO, PPO log ``reward``: what
    they optimise, where their loss says little), else the losses, else the first known headline key."""
    if "reward" in keys:
        return ["reward"]
    losses = [k for k in keys if k.endswith("loss") and not k.startswith("time")]
    if losses:
        return losses[:2]
    for k in DEFAULT_PICKS:
        if k in keys:
            return [k]
    rest = [k for k in keys if k not in ("time", "lr")]
    return rest[:1] or list(keys[:1])


class CurvePlot(PlotextPlot):
    """A plotext line plot of labelled (x, y) series."""

    def draw(self, series: Sequence[tuple[str, Sequence[float], Sequence[float]]], title: str = "",
             xlabel: str = "step") -> None:
        plt = self.plt
        plt.clear_figure()
        plt.title(title)
        plt.xlabel(xlabel)
        drawn = 0
        for label, xs, ys in series:
            if len(xs):
                plt.plot(list(map(float, xs)), list(map(float, ys)), label=label, marker="braille")
                drawn += 1
        if not drawn:
            plt.title((title + " · " if title else "") + "no points yet")
        self.refresh()


class CurvesView(Horizontal):
    """A metric chooser beside the plot, with a line of latest values under it."""

    class MetricsChanged(Message):
        def __init__(self, view: CurvesView, keys: list[str]) -> None:
            super().__init__()
            self.view = view
            self.keys = keys

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self._keys: list[str] = []
        self._user_picked = False

    def compose(self) -> ComposeResult:
        sl: SelectionList[str] = SelectionList(classes="metric-list")
        sl.border_title = "metrics (space)"
        yield sl
        with Vertical(classes="plot-column"):
            yield CurvePlot(classes="curve-plot")
            yield TextBox("", classes="curve-stats")

    @property
    def selected(self) -> list[str]:
        return list(self.query_one(SelectionList).selected)

    def set_keys(self, keys: Sequence[str]) -> None:
        """Offer the metrics ``keys`` (new ones are added; the choice is kept)."""
        new = [k for k in keys if k not in self._keys]
        if not new:
            return
        sl = self.query_one(SelectionList)
        picks = set(default_selection(list(self._keys) + new)) if not self._user_picked else set()
        self._keys = sorted(set(self._keys) | set(new))
        current = set(sl.selected)
        self._updating = True
        sl.clear_options()
        keep = current if self._user_picked else picks
        sl.add_options([Selection(k, k, k in keep) for k in self._keys])
        self._updating = False

    def on_selection_list_selected_changed(self, event: SelectionList.SelectedChanged) -> None:
        if getattr(self, "_updating", False):
            return
        self._user_picked = True
        self.post_message(self.MetricsChanged(self, self.selected))

    def select(self, keys: Sequence[str]) -> None:
        """Choose the shown metrics programmatically."""
        sl = self.query_one(SelectionList)
        self._user_picked = True
        sl.deselect_all()
        for k in keys:
            if k in self._keys:
                sl.select(k)

    def draw(self, series: Sequence[tuple[str, Sequence[float], Sequence[float]]], title: str = "",
             stats: Text | str = "") -> None:
        self.query_one(CurvePlot).draw(series, title)
        self.query_one(".curve-stats", TextBox).show(stats)
