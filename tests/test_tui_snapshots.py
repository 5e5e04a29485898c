"""SVG snapshots of the main screens on a deterministic workspace (fixed path, times, clock and GPUs).

Regenerate after an intended change: ``python -m pytest tests/test_tui_snapshots.py --snapshot-update``.
Stage states come from which stages are built, so snapshots change when a stage lands.
"""

from __future__ import annotations

import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from tui_support import FIXED_TIME, FakeNVML, build_workspace, h100, wait_for

from llmctl.core.gpu import GpuPoller
from llmctl.core.stages import STAGES
from llmctl.tui.app import LlmctlApp

SNAP_ROOT = Path("/tmp/llmctl-tui-snapshots/ws")  # shown on screen: must not vary
SIZE = (150, 45)
NOW = FIXED_TIME + 2 * 3600


@pytest.fixture(scope="module")
def snap_ws(shared_data, tokenizer):
    from llmctl.core.workspace import init_workspace

    shutil.rmtree(SNAP_ROOT.parent, ignore_errors=True)
    ws = init_workspace(SNAP_ROOT)
    build_workspace(ws, shared_data, tokenizer)
    yield ws
    shutil.rmtree(SNAP_ROOT.parent, ignore_errors=True)


def snap_app(ws) -> LlmctlApp:
    gpu0 = h100(procs=[(9_999_999, 2 << 30)])
    gpu1 = {**h100(util=0), "temp": "unsupported", "power_mw": "unsupported"}
    fake = FakeNVML([gpu0, gpu1])
    poller = GpuPoller(nvml=fake)
    for u in (5, 20, 45, 80, 95, 60, 70, 37):  # a fixed history for the sparklines
        fake.gpus[0]["util"] = u
        poller.poll_once()
    return LlmctlApp(ws.root, gpu=poller, start_gpu=False, clock=lambda: NOW)


async def drawn(pilot) -> None:
    app = pilot.app
    assert await wait_for(pilot, lambda: app.state is not None and type(app.screen).__name__ == "MainScreen"
                          and app.screen.query_one("#pipeline").row_count == len(STAGES)
                          and app.screen.query_one("#jobs").row_count > 0)
    await settled(pilot, "#pipeline")


async def settled(pilot, focus: str | None = None) -> None:
    """Focus ``focus`` (what has focus decides the cursor colours), stop text cursors blinking (a
    snapshot must not depend on the blink phase), wait until every table has sized its columns
    (DataTable does it when idle), then one more frame."""
    from textual.widgets import DataTable, Input

    app = pilot.app
    await pilot.pause()
    for inp in app.screen.query(Input):
        inp.cursor_blink = False
    if focus:
        app.screen.query_one(focus).focus()
    assert await wait_for(pilot, lambda: not any(t._require_update_dimensions for t in app.screen.query(DataTable)))
    await pilot.pause()


def opened(open_screen: Callable[[LlmctlApp], object], ready: Callable[[Any], bool], focus: str | None,
           *keys: str) -> Callable[[Any], Awaitable[None]]:
    """What a snapshot runs before it is taken: the main screen drawn, ``open_screen(app)``, a wait
    until ``ready(screen)``, ``keys`` pressed, then :func:`settled` with ``focus`` focused."""
    async def run_before(pilot) -> None:
        await drawn(pilot)
        open_screen(pilot.app)
        assert await wait_for(pilot, lambda: ready(pilot.app.screen))
        for key in keys:
            await pilot.press(key)
        await settled(pilot, focus)

    return run_before


def test_main_screen(snap_compare, snap_ws):
    assert snap_compare(snap_app(snap_ws), terminal_size=SIZE, run_before=drawn)


def test_launch_modal(snap_compare, snap_ws):
    run_before = opened(lambda app: app.open_launch("pretrain"), lambda screen: bool(screen.query("#p-max_steps")),
                        "#launch")
    assert snap_compare(snap_app(snap_ws), terminal_size=SIZE, run_before=run_before)


def test_job_screen_curves(snap_compare, snap_ws):
    run_before = opened(lambda app: app.open_job("pretrain/20260101-000000-aaaa"),
                        lambda screen: getattr(screen, "curves", None) is not None and screen.files, ".metric-list")
    assert snap_compare(snap_app(snap_ws), terminal_size=SIZE, run_before=run_before)


def test_rollouts_tab(snap_compare, snap_ws):
    run_before = opened(lambda app: app.open_job("grpo/20260101-020000-cccc"),
                        lambda screen: len(getattr(screen, "files", [])) > 0
                        and len(screen.query_one("#rollouts-view").records) == 6, ".rollout-table", "3")
    assert snap_compare(snap_app(snap_ws), terminal_size=SIZE, run_before=run_before)


def _preview(target: str) -> Callable[[Any], Awaitable[None]]:
    return opened(lambda app: app.open_preview(target), lambda screen: getattr(screen, "pv", None) is not None,
                  ".preview-meta")


def test_preview_sft_rows(snap_compare, snap_ws):
    assert snap_compare(snap_app(snap_ws), terminal_size=SIZE, run_before=_preview("sft_packed"))


def test_preview_jsonl_table(snap_compare, snap_ws):
    assert snap_compare(snap_app(snap_ws), terminal_size=SIZE, run_before=_preview("preferences"))


def test_history(snap_compare, snap_ws):
    run_before = opened(lambda app: app.open_history("pretrain"), lambda screen: bool(getattr(screen, "runs", None)),
                        "#hist-runs")
    assert snap_compare(snap_app(snap_ws), terminal_size=SIZE, run_before=run_before)


def test_eval_browser(snap_compare, snap_ws):
    run_before = opened(lambda app: app.open_evals(), lambda screen: bool(getattr(screen, "examples", None)),
                        "#eval-examples")
    assert snap_compare(snap_app(snap_ws), terminal_size=SIZE, run_before=run_before)


def test_help(snap_compare, snap_ws):
    async def run_before(pilot):
        await drawn(pilot)
        await pilot.press("question_mark")
        await settled(pilot)

    assert snap_compare(snap_app(snap_ws), terminal_size=SIZE, run_before=run_before)
