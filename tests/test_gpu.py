"""GPU monitor: NVML faked only at its boundary (this machine has no GPU), real pynvml state, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from tui_support import FakeNVML, h100

from llmctl.core.gpu import GpuPoller, gpus_in_use, match_job, read_gpus


def test_fields_units_and_history():
    fake = FakeNVML([h100(util=10)])
    p = GpuPoller(nvml=fake)
    for u in (10, 50, 90):
        fake.gpus[0]["util"] = u
        snap = p.poll_once()
    g = snap.gpus[0]
    assert snap.available and snap.driver == "550.54.15" and snap.cuda == "12.4"
    assert g.name == "NVIDIA H100 80GB HBM3" and g.util == 90
    assert g.mem_used == 30 << 30 and g.mem_total == 80 << 30 and g.mem_pct == pytest.approx(37.5)
    assert g.temp_c == 54 and g.power_w == 250 and g.power_limit_w == 700
    assert g.fan_pct is None  # unsupported by the fake: n/a, not an error
    assert p.history(0, "util") == [10.0, 50.0, 90.0]
    assert fake.init_calls == 1  # initialised once, whatever the number of polls
    json.dumps(snap.to_json())


def test_unsupported_fields_are_none_never_errors():
    gpu = {**h100(), "util": "unsupported", "temp": "unsupported", "power_mw": "unsupported",
           "mem_used": "unsupported", "procs": "unsupported"}
    snap = GpuPoller(nvml=FakeNVML([gpu])).poll_once()
    g = snap.gpus[0]
    assert snap.available
    assert (g.util, g.temp_c, g.power_w, g.mem_used, g.mem_pct, g.processes) == (None, None, None, None, None, None)
    assert g.name and g.power_limit_w == 700


def test_missing_driver_is_a_state():
    fake = FakeNVML(init_error="Driver Not Loaded")
    p = GpuPoller(nvml=fake)
    snap = p.poll_once()
    assert not snap.available and snap.reason == "Driver Not Loaded"
    assert snap.status_line == "GPU unavailable: Driver Not Loaded"
    p.poll_once()
    assert fake.init_calls == 1


def test_real_pynvml_on_this_machine():
    """The same code against the real library: a GPU box reports GPUs, this one a clear reason."""
    snap = read_gpus()
    if snap.available:
        assert snap.gpus and all(g.index == i for i, g in enumerate(snap.gpus))
    else:
        assert snap.reason and "GPU unavailable: " in snap.status_line


def test_processes_mapped_to_running_jobs(workspace):
    from llmctl.core.jobs import cancel_job, start_job, wait_job

    run = start_job(workspace.runs_dir, "pretrain", [sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            job = json.loads((run / "job.json").read_text())
            if job.get("pid"):
                break
            time.sleep(0.05)
        pid = job["pid"]
        fake = FakeNVML([h100(procs=[(pid, 2 << 30), (9_999_999, 1 << 30)]), h100()])
        snap = GpuPoller(nvml=fake, runs_dir=workspace.runs_dir).poll_once()
        procs = {p.pid: p for p in snap.gpus[0].processes}
        assert procs[pid].job == f"pretrain/{run.name}" and procs[pid].used_bytes == 2 << 30
        assert procs[9_999_999].job is None  # a pid we cannot see (another container's)
        assert gpus_in_use(snap, workspace.runs_dir) == {0: f"pretrain/{run.name}"}
        assert match_job(pid, {job["supervisor_pid"]: "x"}) == "x"  # found through its parent
    finally:
        cancel_job(run, force=True)
        wait_job(run, timeout=10)


def test_thread_polls_and_stops():
    fake = FakeNVML([h100()])
    seen = []
    p = GpuPoller(nvml=fake, interval=0.02)
    p.add_listener(seen.append)
    p.start()
    deadline = time.monotonic() + 10
    while len(seen) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    p.close()
    assert len(seen) >= 3 and not p.running and fake.shutdown_calls == 1
    assert fake.init_calls == 1


def test_thread_stops_by_itself_without_driver():
    p = GpuPoller(nvml=FakeNVML(init_error="NVML Shared Library Not Found"), interval=0.01)
    p.start()
    p._thread.join(timeout=5)
    assert not p.running and p.snapshot.reason == "NVML Shared Library Not Found"


def test_cli_gpus_json_and_text(workspace):
    env_ws = ["--workspace", str(workspace.root)]
    out = subprocess.run([sys.executable, "-m", "llmctl.core.cli", "gpus", "--json", *env_ws],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert "available" in data and isinstance(data["gpus"], list)
    if not data["available"]:
        assert data["reason"]
        txt = subprocess.run([sys.executable, "-m", "llmctl.core.cli", "gpus", *env_ws],
                             capture_output=True, text=True, timeout=60)
        assert "GPU unavailable:" in txt.stdout
