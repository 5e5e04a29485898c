"""A newcomer's first stage in the app: a long error line and its hint are readable in the Log tab,
and a stage whose prerequisites are missing says so, with the fix, in the launch form."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_tui_snapshots import SIZE, drawn, settled, snap_app
from tui_support import FIXED_TIME, build_workspace, screen_text, wait_for

from llmctl.tui.widgets.log_view import CONTINUATION, wrap_line

SNAP_ROOT = Path("/tmp/llmctl-tui-newcomer/ws")  # shown on screen: must not vary
RUN = "prepare-sft/20260101-040000-eeee"
HINT = "set LLMCTL_TIKTOKEN_FILE to a local r50k_base.tiktoken file"
ERROR = ("llmctl: error: cannot load r50k_base through tiktoken (ConnectionError: HTTPSConnectionPool(host="
         "'openaipublic.blob.core.windows.net', port=443): Max retries exceeded with url: "
         "/encodings/r50k_base.tiktoken (Caused by NameResolutionError: Failed to resolve "
         "'openaipublic.blob.core.windows.net')); " + HINT)


@pytest.fixture(scope="module")
def newcomer_ws(shared_data, tokenizer):
    """The snapshot workspace plus a prepare-sft run that failed offline on the tokenizer."""
    from llmctl.core.workspace import init_workspace

    shutil.rmtree(SNAP_ROOT.parent, ignore_errors=True)
    ws = init_workspace(SNAP_ROOT)
    build_workspace(ws, shared_data, tokenizer)
    d = ws.runs_dir / RUN
    d.mkdir(parents=True)
    (d / "job.json").write_text(json.dumps({
        "stage": "prepare-sft", "state": "failed", "started": FIXED_TIME + 4 * 3600, "ended": FIXED_TIME + 4 * 3600 + 3,
        "exit_code": 1, "command": ["llmctl", "prepare", "sft"], "run_dir": str(d)}), encoding="utf-8")
    (d / "log.txt").write_text("prepare-sft: sources alpaca, dolly, gsm8k\n" + ERROR + "\n", encoding="utf-8")
    yield ws
    shutil.rmtree(SNAP_ROOT.parent, ignore_errors=True)


def test_wrap_line_keeps_every_character():
    line = "word " * 40 + "x" * 90
    pieces = wrap_line(line, 60)
    assert all(len(p) <= 60 for p in pieces) and len(pieces) > 3
    assert all(p.startswith(CONTINUATION) for p in pieces[1:])
    assert "".join(p.removeprefix(CONTINUATION) for p in pieces) == line
    assert wrap_line("short", 60) == ["short"]


async def _log_tab(pilot) -> None:
    await drawn(pilot)
    pilot.app.open_job(RUN)
    assert await wait_for(pilot, lambda: type(pilot.app.screen).__name__ == "JobScreen"
                          and any(v.total_lines == 2 for v in pilot.app.screen.query("#log-view")))
    await settled(pilot, "#log-view")


def test_log_wraps_a_long_error_and_its_hint(snap_compare, newcomer_ws):
    assert snap_compare(snap_app(newcomer_ws), terminal_size=SIZE, run_before=_log_tab)


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.mark.anyio
async def test_hint_on_screen_and_rewrapped_when_narrower(newcomer_ws):
    app = snap_app(newcomer_ws)
    async with app.run_test(size=SIZE) as pilot:
        await _log_tab(pilot)
        text = " ".join(screen_text(app).split())
        assert "Max retries exceeded" in text and "r50k_base.tiktoken file" in text
        log = app.screen.query_one("#log-view")
        assert log.max_scroll_x == 0  # nothing hides to the right
        wide = log.line_count
        await pilot.resize_terminal(90, 45)
        assert await wait_for(pilot, lambda: log.line_count > wide)
        assert log.max_scroll_x == 0 and all(len(line) <= 90 for line in log.lines)
        assert "".join(line.removeprefix(CONTINUATION) for line in log.lines).endswith(HINT)


def test_launch_form_names_missing_prerequisites(snap_compare, newcomer_ws, monkeypatch):
    monkeypatch.setenv("LLMCTL_TIKTOKEN_FILE", str(SNAP_ROOT.parent / "missing" / "r50k_base.tiktoken"))

    async def run_before(pilot):
        await drawn(pilot)
        pilot.app.open_launch("dpo")  # needs preferences (built) and an SFT checkpoint (not built)
        assert await wait_for(pilot, lambda: bool(pilot.app.screen.query("#launch-prereq"))
                              and pilot.app.screen.query_one("#launch-prereq").display)
        await settled(pilot, "#launch")
        text = " ".join(screen_text(pilot.app).split())
        assert "does not exist" in text and "fix: set LLMCTL_TIKTOKEN_FILE=/path/to/r50k_base.tiktoken" in text
        assert "needs ckpt_sft: not built yet" in text and "fix: run `llmctl run sft` first" in text

    assert snap_compare(snap_app(newcomer_ws), terminal_size=SIZE, run_before=run_before)


@pytest.mark.anyio
async def test_launch_form_quiet_when_all_is_there(newcomer_ws):
    """sft_packed and a pretrain checkpoint exist, the tokenizer file too: nothing to say."""
    app = snap_app(newcomer_ws)
    async with app.run_test(size=SIZE) as pilot:
        await drawn(pilot)
        app.open_launch("sft")
        assert await wait_for(pilot, lambda: bool(app.screen.query("#launch-prereq")))
        screen = app.screen
        assert await wait_for(pilot, lambda: screen.problems is not None)
        assert screen.problems == [] and not screen.query_one("#launch-prereq").display
