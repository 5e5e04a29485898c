"""The preference/RL skeleton on its own: the log / eval / save cadence, cancel, the NaN guard and
resume, with a step that does no training (the trainer tests cover the algorithms)."""

from __future__ import annotations

import pytest
import torch
from rl_support import fresh_model, save_sft

from llmctl.core import runs
from llmctl.core.metrics import read_metrics
from llmctl.core.rl_params import RewardParams
from llmctl.trainers import rl_trainer
from llmctl.trainers.checkpoint import load_checkpoint
from llmctl.trainers.loop import Cancelled, NonFiniteLoss, session

PARAMS = dict(max_steps=5, log_every=2, eval_every=2, save_every=3, keep_last=10, progress=False)


def _log_index(r):
    return lambda: {"i": float(r.step)}


def _run(ws, run_dir, params, make_step=_log_index, **loop):
    """One run of the skeleton; by default its step logs its index (and updates nothing)."""
    with session(ws, params, run_dir, "reward") as s:
        gpt, resume, start, ref_src = rl_trainer.start_policy(s)
        r = rl_trainer.begin(s, gpt, gpt, total_steps=params.max_steps, resume=resume, start=start, inputs={},
                             reference=ref_src, counts={"eval_x": "eval/x", "last_i": "i"})
        return r, rl_trainer.train(r, rl_trainer.Loop(
            step=make_step(r), progress=lambda row: f"i {row['i']}",
            summary=lambda row, ev: {"i": row.get("i"), "eval_x": ev.get("eval/x")},
            evaluate=lambda: {"eval/x": float(r.step)}, **loop))


def test_cadence_counts_and_summary(workspace):
    save_sft(workspace, fresh_model())
    run_dir = runs.new_run_dir(workspace.runs_dir, "reward", "a")
    r, summary = _run(workspace, run_dir, RewardParams(**PARAMS), eval_first=True)
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [x["step"] for x in rows if "i" in x] == [2, 4, 5]  # every log_every steps, and the last
    assert [x["step"] for x in rows if "eval/x" in x] == [0, 2, 4, 5]  # eval_first, every eval_every, the last
    ck = workspace.checkpoints_dir / "reward" / "a"
    assert sorted(p.name for p in ck.iterdir()) == ["step_3", "step_5"]
    _, state = load_checkpoint(ck / "step_5")
    assert state["step"] == 5 and state["extra"]["reference"] == r.reference
    assert summary == {"step": 5, "i": 4.0, "eval_x": 5.0, "checkpoint": str(ck / "step_5"),
                       "checkpoints": str(ck)}


def test_cancel_checkpoints_and_resume_continues(workspace):
    save_sft(workspace, fresh_model())
    run_dir = runs.new_run_dir(workspace.runs_dir, "reward", "a")

    def stop_after_two(r):
        def step():
            if r.step == 1:
                r.s.stop.requested = "SIGTERM"  # what the app's cancel does
            return {"i": float(r.step)}
        return step

    with pytest.raises(Cancelled, match="stopped at step 2"):
        _run(workspace, run_dir, RewardParams(**PARAMS), stop_after_two)
    ck = workspace.checkpoints_dir / "reward" / "a" / "step_2"
    assert (ck / "manifest.json").is_file()
    # --resume continues at step 2 with the source run's metrics, cut back to that step
    resumed = runs.new_run_dir(workspace.runs_dir, "reward", "b")
    r, summary = _run(workspace, resumed, RewardParams(**PARAMS, resume=str(ck)))
    assert r.resumed and summary["step"] == 5
    assert [x["step"] for x in read_metrics(resumed / "metrics.jsonl") if "i" in x] == [2, 4, 5]


def test_non_finite_loss_stops_with_a_checkpoint(workspace):
    save_sft(workspace, fresh_model())
    run_dir = runs.new_run_dir(workspace.runs_dir, "reward", "a")

    def nan_at_two(r):
        def step():
            r.gpt.lm_head.weight.sum().backward()
            norm, _ = r.update(float("nan") if r.step == 1 else 1.0)
            return {"i": norm}
        return step

    with pytest.raises(NonFiniteLoss) as err:
        _run(workspace, run_dir, RewardParams(**PARAMS), nan_at_two)
    assert err.value.step == 2 and err.value.checkpoint.name == "step_1"
    bad = [x for x in read_metrics(run_dir / "metrics.jsonl") if x.get("warning") == "non-finite loss"]
    assert [x["step"] for x in bad] == [2]
    assert torch.isfinite(load_checkpoint(err.value.checkpoint)[0].lm_head.weight).all()
