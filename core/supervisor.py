"""Supervise one job: run its command, record pid, exit code and final state in job.json.

Started by :func:`llmctl.core.jobs.start_job` as ``python -m llmctl.core.supervisor RUN_DIR`` in a
new process session. SIGTERM to the session reaches the command (which checkpoints and exits) and
this process, which then waits for the command and records the job as cancelled.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from llmctl.core import runs


def main(run_dir: str) -> int:
    job = runs.read_job(run_dir) or {}
    argv = job.get("command")
    if not argv:
        runs.update_job(run_dir, state="failed", error="job.json has no command", ended=time.time())
        return 2
    cancelled = False

    def on_term(signum, frame):  # the command got the same signal from the group
        nonlocal cancelled
        cancelled = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    print(f"$ {' '.join(argv)}", flush=True)
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    except OSError as e:
        runs.update_job(run_dir, state="failed", error=str(e), ended=time.time())
        print(f"llmctl: cannot start job: {e}", flush=True)
        return 127
    runs.update_job(run_dir, state="running", pid=proc.pid)
    while True:
        try:
            code = proc.wait()
            break
        except InterruptedError:
            continue
    state = "done" if code == 0 else ("cancelled" if cancelled else "failed")
    runs.update_job(run_dir, state=state, exit_code=code, ended=time.time())
    print(f"[llmctl] job {state} (exit code {code})", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
