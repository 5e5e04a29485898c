"""``llmctl`` with no command: the control center (a Textual app).

The app reads everything from the workspace (run folders, manifests, metrics) in thread workers
and starts or cancels jobs only through :mod:`llmctl.core.jobs`, so closing it never stops a job
and reopening re-attaches to what runs. GPU figures come from one :class:`GpuPoller` thread.
Heavy screens (curves) import their widgets only when opened, keeping the first frame light.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.message import Message
from textual.signal import Signal

from llmctl.core import jobs as core_jobs
from llmctl.core.gpu import GpuPoller, GpuSnapshot
from llmctl.core.workspace import Workspace
from llmctl.tui.commands import LlmctlCommands
from llmctl.tui.state import WorkspaceState, load_state

CANCEL_GRACE_S = 30.0  # after SIGTERM, a job still running this long is killed


class WorkspaceUpdated(Message):
    """A fresh :class:`WorkspaceState`, read in a worker."""

    def __init__(self, state: WorkspaceState) -> None:
        super().__init__()
        self.state = state


class GpuUpdated(Message):
    """A fresh GPU snapshot from the poller thread."""

    def __init__(self, snapshot: GpuSnapshot) -> None:
        super().__init__()
        self.snapshot = snapshot


class LlmctlApp(App):
    """The llmctl control center."""

    CSS_PATH = "app.tcss"
    TITLE = "llmctl"
    COMMANDS = App.COMMANDS | {LlmctlCommands}
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark,f1", "help", "Help"),
    ]

    def __init__(self, workspace_root: str | os.PathLike[str], *, gpu: GpuPoller | None = None,
                 clock: Callable[[], float] | None = None, refresh_s: float = 1.0, idle_refresh_s: float = 3.0,
                 gpu_interval: float = 1.0, start_gpu: bool = True, cancel_grace_s: float = CANCEL_GRACE_S) -> None:
        super().__init__()
        self.root = Path(workspace_root).absolute()
        try:
            self.runs_dir = Workspace.open(self.root, create=False).runs_dir
        except Exception:
            self.runs_dir = self.root / "runs"
        self.clock = clock or time.time
        self.gpu = gpu if gpu is not None else GpuPoller(interval=gpu_interval, runs_dir=self.runs_dir)
        if self.gpu.runs_dir is None:
            self.gpu.runs_dir = self.runs_dir
        self.start_gpu = start_gpu
        self.refresh_s = refresh_s
        self.idle_refresh_s = idle_refresh_s
        self.cancel_grace_s = cancel_grace_s
        self.state: WorkspaceState | None = None
        self.gpu_snapshot: GpuSnapshot = self.gpu.snapshot
        self.state_signal: Signal[WorkspaceState] = Signal(self, "workspace-state")
        self.gpu_signal: Signal[GpuSnapshot] = Signal(self, "gpu-snapshot")
        self._refreshing = threading.Lock()
        self._last_refresh = 0.0

    # -- lifecycle -------------------------------------------------------------------------------
    def on_mount(self) -> None:
        from llmctl.tui.screens.main import MainScreen

        self.push_screen(MainScreen())
        self.gpu.add_listener(self._gpu_polled)
        # the first frame paints before any file or NVML work starts
        self.call_after_refresh(self._start_background)

    def _start_background(self) -> None:
        if self.start_gpu:
            self.gpu.start()
        self.refresh_state()
        self.set_interval(self.refresh_s, self._tick)
        self.set_timer(2.0, self._warm_up)

    @work(thread=True, group="warm-up", exit_on_error=False)
    def _warm_up(self) -> None:
        """Import what the job screen needs (plots, arrays, the JSON reader) while nobody waits."""
        import numpy  # noqa: F401
        import pyarrow.json  # noqa: F401

        import llmctl.tui.screens.job  # noqa: F401

    def on_unmount(self) -> None:
        self.gpu.remove_listener(self._gpu_polled)
        self.gpu.close()  # jobs are not ours to stop: they run in their own sessions

    def _gpu_polled(self, snap: GpuSnapshot) -> None:  # the poller's thread
        self.post_message(GpuUpdated(snap))

    def on_gpu_updated(self, message: GpuUpdated) -> None:
        self.gpu_snapshot = message.snapshot
        self.gpu_signal.publish(message.snapshot)

    def _tick(self) -> None:
        busy = self.state is not None and bool(self.state.running)
        if busy or time.monotonic() - self._last_refresh >= self.idle_refresh_s:
            self.refresh_state()

    @work(thread=True, group="workspace", exit_on_error=False)
    def refresh_state(self) -> None:
        """Re-read the workspace in a thread and post the result."""
        if not self._refreshing.acquire(blocking=False):
            return
        try:
            self._last_refresh = time.monotonic()
            state = load_state(self.root, self.clock())
        finally:
            self._refreshing.release()
        self.post_message(WorkspaceUpdated(state))

    def on_workspace_updated(self, message: WorkspaceUpdated) -> None:
        self.state = message.state
        self.state_signal.publish(message.state)

    # -- navigation ------------------------------------------------------------------------------
    def action_help(self) -> None:
        from llmctl.tui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def open_launch(self, stage: str) -> None:
        from llmctl.tui.screens.launch import LaunchScreen

        def launched(run_dir: Path | None) -> None:
            if run_dir is not None:
                self.refresh_state()
                self.open_job(str(run_dir))

        self.push_screen(LaunchScreen(stage), launched)

    def open_preview(self, artifact: str) -> None:
        from llmctl.tui.screens.preview import PreviewScreen

        self.push_screen(PreviewScreen(artifact))

    def open_job(self, key: str) -> None:
        from llmctl.tui.screens.job import JobScreen

        run_dir = self.resolve_run(key)
        if run_dir is None:
            self.notify(f"no run folder for {key}", severity="error")
            return
        self.push_screen(JobScreen(run_dir))

    def open_history(self, stage: str) -> None:
        from llmctl.tui.screens.history import HistoryScreen

        self.push_screen(HistoryScreen(stage))

    def open_playground(self, checkpoint: str | None = None) -> None:
        from llmctl.tui.screens.playground import PlaygroundScreen

        self.push_screen(PlaygroundScreen(checkpoint))

    def open_evals(self) -> None:
        from llmctl.tui.screens.evals import EvalScreen

        self.push_screen(EvalScreen())

    # -- jobs ------------------------------------------------------------------------------------
    def resolve_run(self, key: str) -> Path | None:
        """A run folder from ``<stage>/<run_id>`` or a path."""
        p = Path(key)
        if p.is_absolute() and p.is_dir():
            return p
        cand = self.runs_dir / key
        return cand if cand.is_dir() else None

    def start_stage_job(self, stage_name: str, *, nproc: int = 1, gpus: list[int] | None = None) -> Path:
        """Start a stage as a job exactly like ``llmctl <command> --detach`` (params from llmctl.toml)."""
        from llmctl.core.stages import get_stage

        stage = get_stage(stage_name)
        args = ["--workspace", str(self.root)]
        argv = core_jobs.stage_argv(stage.command, args, nproc)
        run_dir = core_jobs.start_job(self.runs_dir, stage.name, argv, gpus=gpus, workspace=self.root)
        self.notify(f"started {stage.name}: {run_dir.name}", title="job started")
        self.refresh_state()
        return run_dir

    def cancel_job(self, key: str, *, force: bool = False) -> bool:
        """Graceful stop (SIGTERM: trainers checkpoint); killed after ``cancel_grace_s`` if still running."""
        run_dir = self.resolve_run(key)
        if run_dir is None:
            return False
        if not core_jobs.is_active(core_jobs.job_state(run_dir)):
            self.notify(f"{key} is not running", severity="warning")
            return False
        ok = core_jobs.cancel_job(run_dir, force=force)
        if ok and not force:
            self.notify(f"stop sent to {run_dir.name}; it is killed if still running in {self.cancel_grace_s:.0f}s",
                        title="cancelling")
            self.set_timer(self.cancel_grace_s, lambda: self._escalate(run_dir))
        elif ok:
            self.notify(f"killed {run_dir.name}", title="killed", severity="warning")
        self.refresh_state()
        return ok

    def _escalate(self, run_dir: Path) -> None:
        if core_jobs.is_active(core_jobs.job_state(run_dir)):
            core_jobs.cancel_job(run_dir, force=True)
            self.notify(f"{run_dir.name} did not stop in time: killed", severity="warning")
            self.refresh_state()

    def rerun_job(self, key: str) -> Path | None:
        """Start the same command again in a new run folder."""
        run_dir = self.resolve_run(key)
        job = core_jobs.job_state(run_dir) if run_dir else {}
        if not job.get("command"):
            self.notify(f"{key}: no command recorded", severity="error")
            return None
        if core_jobs.is_active(job):
            self.notify(f"{key} is still running", severity="warning")
            return None
        new = core_jobs.start_job(self.runs_dir, job.get("stage") or Path(key).parent.name, list(job["command"]),
                                  gpus=job.get("gpus"), workspace=self.root)
        self.notify(f"re-running as {new.name}", title="job started")
        self.refresh_state()
        return new


def run_app(workspace_root: str | os.PathLike[str]) -> None:
    """Open the control center on a workspace (called by ``llmctl`` with no command)."""
    LlmctlApp(workspace_root).run()
