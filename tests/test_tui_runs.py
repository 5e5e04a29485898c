"""What the app shows of runs: an RL job opens on its reward, a long torchrun run id keeps the Jobs
panel's state column on screen, a killed run reads "stopped at step k/N"."""

from __future__ import annotations

import json

import pytest
from test_tui_app import anyio_backend, make_app, ready, ws  # noqa: F401  (fixtures)
from tui_support import screen_text, wait_for, write_run

from llmctl.tui.widgets.curves import CurvesView

pytestmark = pytest.mark.anyio

LONG_ID = "torchrun-6f1c2a9e-5b7d-4c1e-9a3f-0d8e7c6b5a49"


@pytest.fixture
def runs_ws(ws):  # noqa: F811  (the app tests' workspace)
    """The app's test workspace plus a GRPO run and a killed torchrun run."""
    workspace = ws
    rl = write_run(workspace, "grpo", "20260102-000000-rlrl", steps=12, started=2e9)
    with open(rl / "metrics.jsonl", "a", encoding="utf-8") as f:  # what GRPO logs besides a loss
        for i in range(13, 25):
            f.write(json.dumps({"step": i, "loss": 0.1, "reward": i / 24, "kl": 0.01}) + "\n")
    ddp = write_run(workspace, "pretrain", LONG_ID, steps=8, started=2e9 + 1)
    job = json.loads((ddp / "job.json").read_text())
    job.update(state="killed", max_steps=40, exit_code=None)  # recorded by the trainer
    (ddp / "job.json").write_text(json.dumps(job))
    return workspace


async def test_rl_job_opens_on_reward_and_long_ids_keep_the_state_column(runs_ws):
    app = make_app(runs_ws)
    async with app.run_test(size=(150, 45)) as pilot:
        await ready(app, pilot)
        line = next(ln for ln in screen_text(app).splitlines() if "torchrun-6f1c2a9" in ln and "│" in ln)
        assert "killed" in line and "8/40" in line and LONG_ID not in line, line  # the full id is in the detail line
        row = app.state.job(f"pretrain/{LONG_ID}")
        assert row.stopped == "stopped at step 8/40"

        app.open_job(f"pretrain/{LONG_ID}")
        assert await wait_for(pilot, lambda: "stopped at step 8/40" in screen_text(app))
        await pilot.press("escape")

        app.open_job("grpo/20260102-000000-rlrl")
        assert await wait_for(pilot, lambda: getattr(app.screen, "curves", None) is not None
                              and "reward" in app.screen.curves.points)
        assert app.screen.query_one(CurvesView).selected == ["reward"]
