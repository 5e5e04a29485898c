"""Supervise one job: run its command, record pid, exit code and final state in job.json.

Started by :func:`llmctl.core.jobs.start_job` as ``python -m llmctl.core.supervisor RUN_DIR`` in a
new process session. SIGTERM to the session reaches the command (which checkpoints and exits) and
this process, which then waits for the command and records the job as cancelled. The command gets
SIGTERM as well when this process dies (``PR_SET_PDEATHSIG`` on Linux), so a supervisor killed
with -9 does not leave an orphaned trainer behind.
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
from collections.abc import Callable

from llmctl.core import runs
from llmctl.core.jobs import process_identity

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> Callable[[], None] | None:
    """A pre-exec hook asking the kernel to SIGTERM the child when its parent dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None

    def hook() -> None:
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)

    return hook


def main(run_dir: str) -> int:
    """Run the job recorded in ``run_dir``'s job.json and record how it ended; returns its exit code."""
    job = runs.read_job(run_dir) or {}
    argv = job.get("command")
    if not argv:
        runs.mark_failed(run_dir, "job.json has no command")
        return 2
    cancelled = False

    def on_term(signum, frame):  # the command got the same signal from the group
        nonlocal cancelled
        cancelled = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    print(f"$ {' '.join(argv)}", flush=True)
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent())  # noqa: PLW1509
    except OSError as e:
        runs.mark_failed(run_dir, str(e))
        print(f"llmctl: cannot start job: {e}", flush=True)
        return 127
    runs.mark_running(run_dir, pid=proc.pid, pid_identity=process_identity(proc.pid, argv))
    while True:
        try:
            code = proc.wait()
            break
        except InterruptedError:
            continue
    asked = bool((runs.read_job(run_dir) or {}).get("cancel_requested"))
    try:
        job = runs.finish(run_dir, code, cancelled=cancelled or asked)
    except runs.TransitionRefused:  # a forced cancel recorded the end first
        job = runs.read_job(run_dir) or {}
    print(f"[llmctl] job {job.get('state')} (exit code {code})", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
