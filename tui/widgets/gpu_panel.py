"""GPUs: utilisation, memory, temperature, power with a short history, and the jobs on each GPU."""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Sparkline

from llmctl.core.gpu import GpuInfo, GpuSnapshot
from llmctl.tui.state import fmt_bytes
from llmctl.tui.widgets.text import TextBox


def _na(v: float | None, fmt: str = "{:.0f}", unit: str = "") -> str:
    return "n/a" if v is None else fmt.format(v) + unit


def _bar(pct: float | None, width: int = 12) -> Text:
    if pct is None:
        return Text("n/a".ljust(width), style="dim")
    full = int(round(max(0.0, min(100.0, pct)) / 100 * width))
    style = "green" if pct < 60 else ("yellow" if pct < 90 else "red")
    return Text("█" * full, style=style) + Text("░" * (width - full), style="dim")


def gpu_text(g: GpuInfo) -> Text:
    """Name, util, memory, temperature and power of one GPU; n/a where unsupported."""
    out = Text()
    out.append(f"GPU {g.index}", style="bold")
    out.append(f" {g.name or 'n/a'}")
    if g.error:
        out.append(f"  {g.error}", style="red")
        return out
    out.append(f"  {_na(g.temp_c, unit='°C')}  {_na(g.power_w, unit=' W')}"
               + ("" if g.power_limit_w is None else f"/{g.power_limit_w:.0f} W"), style="dim")
    out.append("\nutil ")
    out.append_text(_bar(g.util))
    out.append(f" {_na(g.util, unit='%'):>4}   mem ")
    out.append_text(_bar(g.mem_pct))
    mem = "n/a" if g.mem_used is None else f"{fmt_bytes(g.mem_used)}/{fmt_bytes(g.mem_total)}"
    out.append(f" {mem}")
    return out


def procs_text(g: GpuInfo) -> Text:
    if g.processes is None:
        return Text("processes: n/a (not visible here)", style="dim")
    if not g.processes:
        return Text("no processes", style="dim")
    out = Text()
    for i, p in enumerate(g.processes):
        if i:
            out.append("\n")
        out.append(f"pid {p.pid} {p.name or '?'} {fmt_bytes(p.used_bytes) if p.used_bytes else 'n/a'}")
        if p.job:
            out.append(f" → {p.job}", style="bold cyan")
        else:
            out.append(" (not an llmctl job)", style="dim")
    return out


class GpuCard(Vertical):
    """One GPU: a text block, a utilisation sparkline and its processes."""

    def __init__(self, g: GpuInfo, history: list[float]) -> None:
        super().__init__(classes="gpu-card")
        self.index = g.index
        self._data = (g, history)
        self._ready = False

    def compose(self) -> ComposeResult:
        g, history = self._data
        yield TextBox(gpu_text(g), classes="gpu-info")
        yield Sparkline(history or [0.0], classes="gpu-spark")
        yield TextBox(procs_text(g), classes="gpu-procs")

    def on_mount(self) -> None:
        self._ready = True
        self.show(*self._data)

    def show(self, g: GpuInfo, history: list[float]) -> None:
        self._data = (g, history)
        if not self._ready:
            return  # applied on mount
        info, spark, procs = self.query(".gpu-info"), self.query(".gpu-spark"), self.query(".gpu-procs")
        if not (info and spark and procs):
            return  # children not mounted yet, or the card is being removed: the next sample applies
        info.first(TextBox).show(gpu_text(g))
        line = spark.first(Sparkline)
        if list(line.data or []) != (history or [0.0]):
            line.data = history or [0.0]
        procs.first(TextBox).show(procs_text(g))


class GpuPanel(VerticalScroll):
    """All GPUs, or a clear 'GPU unavailable: <reason>' state."""

    BORDER_TITLE = "GPUs"

    def __init__(self, history: Callable[[int], list[float]] | None = None, **kw) -> None:
        super().__init__(**kw)
        self._history = history or (lambda i: [])
        self._count = -1
        self._last_time = -1.0

    def compose(self) -> ComposeResult:
        yield TextBox("GPU: waiting for the first sample…", id="gpu-status", classes="gpu-status")

    def show(self, snap: GpuSnapshot) -> None:
        if snap.time == self._last_time:
            return
        self._last_time = snap.time
        status = self.query_one("#gpu-status", TextBox)
        self.set_class(not snap.available, "unavailable")
        if not snap.available:
            status.show(Text(f"GPU unavailable: {snap.reason}\njobs run on the CPU", style="yellow"))
            if self._count != 0:
                self.query(GpuCard).remove()
                self._count = 0
            return
        status.show(Text(f"driver {snap.driver or 'n/a'} · CUDA {snap.cuda or 'n/a'}", style="dim"))
        if len(snap.gpus) != self._count:
            self.query(GpuCard).remove()
            self.mount_all([GpuCard(g, self._history(g.index)) for g in snap.gpus])
            self._count = len(snap.gpus)
            return
        for card, g in zip(self.query(GpuCard), snap.gpus, strict=False):
            card.show(g, self._history(g.index))
