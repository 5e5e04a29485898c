"""The control center driven through Textual's Pilot against real workspaces and real jobs."""

from __future__ import annotations

import contextlib
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from tui_support import FakeNVML, build_workspace, h100, screen_text, start_training_job, wait_for

from llmctl.core import jobs as core_jobs
from llmctl.core.gpu import GpuPoller
from llmctl.core.stages import STAGES, get_stage
from llmctl.tui.app import LlmctlApp

SIZE = (150, 45)
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def ws(workspace, shared_data, tokenizer):
    build_workspace(workspace, shared_data, tokenizer)
    return workspace


def make_app(ws, gpus=None, **kw) -> LlmctlApp:
    poller = GpuPoller(nvml=FakeNVML(gpus if gpus is not None else [h100()]), interval=1.0)
    return LlmctlApp(ws.root, gpu=poller, refresh_s=0.3, idle_refresh_s=0.6, **kw)


async def ready(app, pilot) -> None:
    """Wait until the workspace has been read and drawn on the main screen.

    Rows in the tables are not enough: a DataTable measures its columns when it goes idle, so until
    then long names are cut; wait until every stage name is on screen in full.
    """
    def drawn() -> bool:
        if app.state is None or not app.state.jobs or type(app.screen).__name__ != "MainScreen":
            return False
        s = app.screen
        if s.query_one("#pipeline").row_count != len(STAGES) or s.query_one("#jobs").row_count == 0:
            return False
        text = screen_text(app)
        return all(st.name in text for st in STAGES)

    assert await wait_for(pilot, drawn)


async def shown(app, pilot, screen: str, selector: str) -> bool:
    """Wait until ``screen`` is on top with ``selector`` composed in it."""
    return await wait_for(pilot, lambda: type(app.screen).__name__ == screen and bool(app.screen.query(selector)))


async def type_into(app, pilot, selector: str, text: str) -> None:
    """Click an input, clear it and type ``text`` key by key (cursor blink off: Pilot waits on idle)."""
    widget = app.screen.query_one(selector)
    widget.cursor_blink = False
    widget.scroll_visible(animate=False)  # a long form scrolls
    await pilot.pause()
    await pilot.click(selector)
    await pilot.press("home", "ctrl+k", *list(text))


def stop(run) -> None:
    if core_jobs.is_active(core_jobs.job_state(run)):
        core_jobs.cancel_job(run, force=True)
        core_jobs.wait_job(run, timeout=10)


@contextlib.contextmanager
def live_job(ws, delay: float) -> Iterator[Path]:
    """A long pretrain job running in the background: its run folder; killed on the way out."""
    run = start_training_job(ws, steps=3000, delay=delay)
    try:
        yield run
    finally:
        stop(run)


async def job_active(app, pilot, run: Path) -> bool:
    """Wait until the app lists the job of ``run`` as active."""
    key = f"pretrain/{run.name}"
    return await wait_for(pilot, lambda: app.state.job(key) is not None and app.state.job(key).active)


async def test_main_screen_shows_everything(ws):
    app = make_app(ws)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        assert await wait_for(pilot, lambda: "NVIDIA H100" in screen_text(app))
        text = screen_text(app)
        for st in STAGES:
            assert st.name in text
        for name in ("pile_train", "sft_packed", "preferences", "verl_data", "ckpt_pretrain"):
            assert name in text
        assert "ready" in text and "missing" in text
        assert "010000-bbbb" in text and "40/40" in text  # a finished job with its progress
        assert "util" in text and "30.0 GB/80.0 GB" in text
        assert app.screen.query_one("#pipeline").row_count == len(STAGES)
        await pilot.press("2", "down")
        assert "pile_dev" in str(app.screen.query_one("#artifact-detail").render())


async def test_launch_real_stage_saves_params_and_runs(ws, shared_data):
    if not get_stage("prepare-rl").built:
        pytest.skip("prepare-rl is not built yet")
    app = make_app(ws)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        assert app.screen.query_one("#pipeline").select_key("prepare-rl")
        await pilot.press("s")
        assert await shown(app, pilot, "LaunchScreen", "#p-gsm8k")
        for field, value in (("gsm8k", str(shared_data / "gsm8k")), ("max_examples", "12"), ("arithmetic_n", "4")):
            await type_into(app, pilot, f"#p-{field}", value)
        await pilot.press("ctrl+l")
        assert await wait_for(pilot, lambda: type(app.screen).__name__ == "JobScreen")
        screen = app.screen
        assert await wait_for(pilot, lambda: screen.job.get("state") in core_jobs.TERMINAL_STATES, timeout=60)
        assert screen.job["state"] == "done", screen.job
        assert await wait_for(pilot, lambda: "arithmetic" in screen_text(app) or screen.query_one("#log-view").total_lines)
        saved = tomllib.loads(ws.config_path.read_text())["stages"]["prepare-rl"]
        assert saved["max_examples"] == 12 and saved["arithmetic_n"] == 4 and saved["gsm8k"] == str(shared_data / "gsm8k")
        assert await wait_for(pilot, lambda: app.state.artifacts["arithmetic_prompts"].state == "ready")
        # the pipeline row follows once the app re-reads the run folder (every few seconds)
        assert await wait_for(pilot, lambda: app.state.stage("prepare-rl").state == "done")
        await pilot.press("4")
        assert await wait_for(pilot, lambda: "job.json" in screen_text(app))


async def test_launch_rejects_bad_params(ws):
    if not get_stage("prepare-rl").built:
        pytest.skip("prepare-rl is not built yet")
    app = make_app(ws)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        before = len(app.state.jobs)
        app.open_launch("prepare-rl")
        assert await shown(app, pilot, "LaunchScreen", "#p-arithmetic_n")
        await type_into(app, pilot, "#p-arithmetic_n", "-1")
        await pilot.press("ctrl+l")
        await pilot.pause()
        assert type(app.screen).__name__ == "LaunchScreen"
        assert "must be >= 0" in str(app.screen.query_one("#launch-error").render())
        await pilot.press("escape")
        assert len(core_jobs.list_jobs(ws.runs_dir)) == before


async def test_live_job_curves_log_rollouts_then_cancel(ws):
    with live_job(ws, delay=0.03) as run:
        app = make_app(ws)
        async with app.run_test(size=SIZE) as pilot:
            await ready(app, pilot)
            assert await job_active(app, pilot, run)
            jobs = app.screen.query_one("#jobs")
            jobs.focus()
            assert await wait_for(pilot, lambda: jobs.select_key(f"pretrain/{run.name}"))
            await pilot.press("o")
            assert await wait_for(pilot, lambda: type(app.screen).__name__ == "JobScreen")
            screen = app.screen
            assert await wait_for(pilot, lambda: screen.curves is not None and screen.curves.rows >= 5)
            first = screen.curves.rows
            assert "train/loss" in screen.query_one("#curves-view").selected
            assert await wait_for(pilot, lambda: screen.curves.rows > first + 5)  # the curve keeps growing
            assert "step" in screen_text(app)
            await pilot.press("2")
            assert await wait_for(pilot, lambda: screen.query_one("#log-view").total_lines > 5)
            await pilot.press("3")
            assert await wait_for(pilot, lambda: len(screen.query_one("#rollouts-view").records) > 3)
            assert "What is" in screen_text(app)
            await pilot.press("c")
            assert await wait_for(pilot, lambda: screen.job.get("state") in core_jobs.TERMINAL_STATES, timeout=30)
            assert screen.job["state"] == "cancelled"
            await pilot.press("2")
            assert await wait_for(pilot, lambda: "caught SIGTERM" in screen_text(app))


async def test_quitting_keeps_jobs_and_reopening_reattaches(ws):
    with live_job(ws, delay=0.05) as run:
        app = make_app(ws)
        async with app.run_test(size=SIZE) as pilot:
            await ready(app, pilot)
            await pilot.press("q")
        assert core_jobs.is_active(core_jobs.job_state(run))
        app2 = make_app(ws)
        async with app2.run_test(size=SIZE) as pilot:
            await ready(app2, pilot)
            assert await job_active(app2, pilot, run)
            assert await wait_for(pilot, lambda: "running" in screen_text(app2))
            assert app2.state.stage("pretrain").state == "running"


async def test_rerun_a_finished_job(ws):
    run = start_training_job(ws, steps=3, delay=0.0)
    core_jobs.wait_job(run, timeout=30)
    app = make_app(ws)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        jobs = app.screen.query_one("#jobs")
        jobs.focus()
        assert jobs.select_key(f"pretrain/{run.name}")
        await pilot.press("r")
        assert await wait_for(pilot, lambda: len([j for j in app.state.jobs if j.stage == "pretrain"]) == 4)
        new = max((j for j in app.state.jobs if j.stage == "pretrain"), key=lambda j: j.started or 0)
        assert new.run_id != run.name and new.command == core_jobs.job_state(run)["command"]
        core_jobs.wait_job(new.run_dir, timeout=30)


async def test_previews_page_through_real_artifacts(ws):
    app = make_app(ws)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        app.open_preview("rl_prompts_train")
        assert await wait_for(pilot, lambda: getattr(app.screen, "pv", None) is not None)
        assert app.screen.preview_state == {"kind": "jsonl", "start": 0, "count": 20, "total": 30}
        await pilot.press("n")
        assert await wait_for(pilot, lambda: app.screen.preview_state["start"] == 20)
        assert app.screen.preview_state["count"] == 10
        await pilot.press("b")
        assert await wait_for(pilot, lambda: app.screen.preview_state["start"] == 0)
        await pilot.press("escape")
        app.open_preview("sft_packed")
        assert await wait_for(pilot, lambda: getattr(app.screen, "pv", None) is not None)
        assert "trained" in screen_text(app) and app.screen.pv.kind == "sft-h5"
        await pilot.press("escape")
        app.open_preview("verl_data")
        assert await wait_for(pilot, lambda: getattr(app.screen, "pv", None) is not None)
        assert app.screen.pv.kind == "parquet-dir" and "reward_model" in screen_text(app)


async def test_history_compares_runs(ws):
    app = make_app(ws)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        app.open_history("pretrain")
        assert await wait_for(pilot, lambda: getattr(app.screen, "runs", None))
        screen = app.screen
        assert [r.run_id for r in screen.runs] == ["20260101-010000-bbbb", "20260101-000000-aaaa"]
        assert set(screen.marked) == {r.run_id for r in screen.runs}
        text = screen_text(app)
        assert "parameters that differ" in text and "lr" in text and "mfu 31.0%" in text
        await pilot.press("m")
        assert screen.query_one("#hist-curves").selected != ["eval/loss", "train/loss"]


async def test_eval_browser_filters(ws):
    app = make_app(ws)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await pilot.press("e")
        assert await wait_for(pilot, lambda: getattr(app.screen, "examples", None))
        screen = app.screen
        table = screen.query_one("#eval-examples")
        assert table.row_count == 12
        await pilot.press("f")
        assert screen.filter == "correct" and table.row_count == 4
        await pilot.press("f")
        assert screen.filter == "wrong" and table.row_count == 8
        assert "mean score 0.333" in screen_text(app)


async def test_playground_runs_the_sample_command(ws):
    app = make_app(ws)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await pilot.press("g")
        assert await wait_for(pilot, lambda: "checkpoint(s)" in screen_text(app))
        await type_into(app, pilot, "#play-prompt", "What is 2+2?")
        await pilot.press("ctrl+g")
        # the fixture's checkpoint holds no real weights: the subprocess's own error is shown, no crash
        assert await wait_for(pilot, lambda: "exited with code" in screen_text(app) or "done" in screen_text(app),
                              timeout=60)
        log = app.screen.query_one("#play-out")
        lines = ["".join(seg.text for seg in strip) for strip in log.lines]
        assert any("> What is 2+2?" in x for x in lines) and len(lines) > 1


async def test_help_and_command_palette(ws):
    app = make_app(ws)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await pilot.press("question_mark")
        assert type(app.screen).__name__ == "HelpScreen" and "command palette" in screen_text(app)
        await pilot.press("escape")
        await pilot.press("ctrl+p")
        assert await wait_for(pilot, lambda: type(app.screen).__name__ == "CommandPalette"
                              and bool(app.screen.query("CommandInput")))
        app.screen.query_one("CommandInput").cursor_blink = False
        await pilot.press(*list("sft_packed"))
        assert await wait_for(pilot, lambda: "Preview artifact sft_packed" in screen_text(app))
        await pilot.press("down", "enter")
        assert await wait_for(pilot, lambda: type(app.screen).__name__ == "PreviewScreen")
        assert app.screen.target == "sft_packed"


async def test_gpu_in_use_is_flagged_when_launching(ws):
    with live_job(ws, delay=0.05) as run:
        pid = None
        for _ in range(200):
            pid = core_jobs.job_state(run).get("pid")
            if pid:
                break
            time.sleep(0.05)
        app = make_app(ws, gpus=[h100(procs=[(pid, 1 << 30)]), h100()])
        async with app.run_test(size=SIZE) as pilot:
            await ready(app, pilot)
            assert await wait_for(pilot, lambda: f"→ pretrain/{run.name}" in screen_text(app))
            app.open_launch("sft")
            assert await shown(app, pilot, "LaunchScreen", "#gpu-select")
            assert f"in use by pretrain/{run.name}" in screen_text(app)
            sel = app.screen.query_one("#gpu-select")
            assert list(sel.selected) == [1]  # the busy GPU is not preselected
            sel.select(0)
            await pilot.press("ctrl+l")
            await pilot.pause()
            assert "already in use" in str(app.screen.query_one("#launch-error").render())
            assert type(app.screen).__name__ == "LaunchScreen"


@pytest.mark.slow
async def test_real_training_job_from_the_app(ws):
    """A real pretrain run (tiny, CPU) launched from the modal: curve, cancel with checkpoint, then sample it."""
    if not get_stage("pretrain").built:
        pytest.skip("pretrain is not built yet")
    app = make_app(ws, gpus=[])
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        app.open_launch("pretrain")
        assert await shown(app, pilot, "LaunchScreen", "#p-max_steps")
        for field, value in (("max_steps", "500"), ("batch_size", "1"), ("context_length", "32"),
                             ("log_every", "1"), ("eval_every", "0"), ("save_every", "0")):
            await type_into(app, pilot, f"#p-{field}", value)
        await pilot.press("ctrl+l")
        assert await wait_for(pilot, lambda: type(app.screen).__name__ == "JobScreen")
        screen = app.screen
        try:
            assert await wait_for(pilot, lambda: screen.curves is not None and screen.curves.rows >= 3, timeout=120)
            assert "train/loss" in screen.curves.points
            await pilot.press("c")
            assert await wait_for(pilot, lambda: screen.job.get("state") in core_jobs.TERMINAL_STATES, timeout=60)
            assert screen.job["state"] == "cancelled"
        finally:
            stop(screen.run_dir)
        await pilot.press("escape")
        ckpts = sorted((ws.checkpoints_dir / "pretrain" / screen.run_dir.name).glob("step_*/manifest.json"))
        assert ckpts, "a cancelled trainer leaves a checkpoint"
        app.open_playground(str(ckpts[-1].parent))
        assert await wait_for(pilot, lambda: "checkpoint(s)" in screen_text(app))
        await type_into(app, pilot, "#play-prompt", "Hello")
        await pilot.press("ctrl+g")
        assert await wait_for(pilot, lambda: "done" in str(app.screen.query_one("#play-status").render()),
                              timeout=120)



async def test_evals_screen_shows_a_grpo_runs_heldout_table_before_and_after(workspace, shared_data):
    """A real (tiny) GRPO run keeps its held-out table before its first step and after its last; the
    evals screen lists the run and shows the two side by side."""
    from rl_support import fresh_model, rl_workspace, save_sft
    from stage_support import run_in_process

    from llmctl.core.rl_params import GRPOParams

    rl_workspace(workspace, shared_data)
    save_sft(workspace, fresh_model())
    params = GRPOParams(max_steps=2, prompts_per_step=2, num_generations=4, max_new_tokens=8, eval_prompts=4,
                        eval_samples=4, eval_every=0, save_every=0, progress=False, arithmetic_level=1)
    params.validate()
    _, run_dir, _ = run_in_process(workspace, "grpo", params)
    app = make_app(workspace)
    async with app.run_test(size=SIZE) as pilot:
        assert await wait_for(pilot, lambda: app.state is not None and type(app.screen).__name__ == "MainScreen")
        await pilot.press("e")
        assert await wait_for(pilot, lambda: "pass@1 (T=1, k=4)" in screen_text(app))
        text = screen_text(app)
        assert f"grpo/{run_dir.name}" in text
        header = next(line for line in text.splitlines() if "held-out (4 prompts)" in line)
        assert header.index("before") < header.index("after")
        for label in ("greedy accuracy", "pass@4", "format rate", "mean length (tokens)"):
            assert label in text
