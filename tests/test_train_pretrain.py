"""Pretraining: metrics, provenance, checkpoints, exact resume, NaN guard, SIGTERM, overfitting."""

from __future__ import annotations

import json
import math
import time

import pytest
import torch
from stage_support import make_token_files

from llmctl.core import jobs
from llmctl.core.artifacts import ready_checkpoints
from llmctl.core.metrics import read_metrics
from llmctl.core.status import artifact_statuses
from llmctl.core.train_params import PretrainParams
from llmctl.trainers import pretrain
from llmctl.trainers.checkpoint import load_checkpoint, read_weights, save_checkpoint
from llmctl.trainers.loop import NonFiniteLoss
from llmctl.trainers.model import GPT
from llmctl.trainers.optim import make_optimizer

FAST = dict(preset="tiny", n_embd=64, block_size=64, context_length=64, batch_size=2, log_every=1,
            eval_batches=2, warmup_steps=2, lr=3e-3, progress=False)


def run_stage(ws, run_id: str, **kw):
    run_dir = ws.runs_dir / "pretrain" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    return pretrain.run(ws, PretrainParams(**{**FAST, **kw}), run_dir), run_dir


@pytest.fixture
def ws(workspace, tokenizer, shared_data):
    make_token_files(workspace, tokenizer, shared_data)
    return workspace


def test_run_writes_metrics_provenance_and_ready_checkpoints(ws):
    summary, run_dir = run_stage(ws, "r1", max_steps=4, eval_every=2, save_every=2, keep_last=1)
    assert summary["step"] == 4 and summary["tokens"] == 4 * 2 * 64
    rows = read_metrics(run_dir / "metrics.jsonl")
    train = [r for r in rows if "train/loss" in r]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    assert {"train/loss", "lr", "grad_norm", "tokens_per_s", "tokens"} <= set(train[0])
    assert "mfu" not in train[0]  # n/a on CPU
    assert [r["step"] for r in rows if "eval/loss" in r] == [2, 4]
    prov = json.loads((run_dir / "provenance.json").read_text())
    assert prov["seed"] == 1337 and prov["params"]["max_steps"] == 4 and prov["model"]["n_embd"] == 64
    assert prov["tokenizer"]["name"] == "r50k_base" and "pile_train" in prov["inputs"]
    assert "torch" in prov["packages"] and "git_commit" in prov
    steps = ready_checkpoints(ws.checkpoints_dir / "pretrain")
    assert [p.name for p in steps] == ["step_4"]  # last 1; the best (lowest eval loss) is the same one
    assert steps[0].parent.name == run_dir.name
    man = json.loads((steps[0] / "manifest.json").read_text())
    assert man["counts"]["step"] == 4 and man["counts"]["tokens"] == 512
    assert man["counts"]["eval_loss"] == pytest.approx(summary["eval_loss"])
    assert artifact_statuses(ws)["ckpt_pretrain"].state == "ready"


def test_resume_is_bitwise_exact(ws):
    _, run_a = run_stage(ws, "full", max_steps=6, eval_every=3, save_every=3, keep_last=5)
    mid = ws.checkpoints_dir / "pretrain" / "full" / "step_3"
    _, run_b = run_stage(ws, "resumed", max_steps=6, eval_every=3, save_every=3, keep_last=5, resume=str(mid))
    strip = [{k: v for k, v in r.items() if k not in ("time", "tokens_per_s")}
             for r in read_metrics(run_a / "metrics.jsonl")]
    again = [{k: v for k, v in r.items() if k not in ("time", "tokens_per_s")}
             for r in read_metrics(run_b / "metrics.jsonl")]
    assert again == strip  # steps 1-3 carried over, 4-6 recomputed: the same numbers, bit for bit
    wa, _ = read_weights(ws.checkpoints_dir / "pretrain" / "full" / "step_6")
    wb, _ = read_weights(ws.checkpoints_dir / "pretrain" / "resumed" / "step_6")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # resuming in the same run folder cuts its metrics back to the checkpoint first
    _, run_c = run_stage(ws, "full", max_steps=6, eval_every=3, save_every=3, keep_last=5, resume=str(mid))
    assert [{k: v for k, v in r.items() if k not in ("time", "tokens_per_s")}
            for r in read_metrics(run_c / "metrics.jsonl")] == strip


def test_non_finite_loss_stops_with_a_checkpoint(ws):
    torch.manual_seed(0)
    bad = GPT.from_preset("tiny", n_embd=64, block_size=64)
    with torch.no_grad():  # finite weights whose forward pass overflows
        bad.transformer.h[0].mlp.c_fc.weight.fill_(3e38)
    src = save_checkpoint(ws.checkpoints_dir / "pretrain" / "broken", bad, step=0, stage="pretrain")
    with pytest.raises(NonFiniteLoss) as e:
        run_stage(ws, "nan", max_steps=5, init=str(src))
    assert e.value.step == 1
    assert e.value.checkpoint is not None and (e.value.checkpoint / "manifest.json").exists()
    assert e.value.checkpoint.parent.name == "nan"
    rows = read_metrics(ws.runs_dir / "pretrain" / "nan" / "metrics.jsonl")
    assert rows[-1]["step"] == 1 and rows[-1]["train/loss"] is None


def test_non_finite_loss_read_at_log_cadence_keeps_the_weights_that_produced_it(ws, monkeypatch):
    """The NaN flag lives on the device and is read at log/save points only; from the bad step on the
    fused optimizer skips every update, so the run still stops before any later checkpoint with the
    weights that produced the NaN (those of a clean run at the step before)."""
    kw = dict(max_steps=8, log_every=5, save_every=2, keep_last=10, eval_every=0)
    run_stage(ws, "clean", **kw)
    forward, calls = GPT.forward, []

    def poisoned(self, *a, **k):
        out = forward(self, *a, **k)
        if self.training:
            calls.append(1)
            if len(calls) == 3:  # step 3's loss (and so its gradients) become NaN
                return out[0], out[1] * float("nan")
        return out

    monkeypatch.setattr(GPT, "forward", poisoned)
    with pytest.raises(NonFiniteLoss) as e:
        run_stage(ws, "late-nan", **kw)
    assert e.value.step == 3 and e.value.checkpoint.name == "step_2"
    assert len(calls) == 4  # read at the save point after step 4: one more step ran, its update skipped
    saved = [p.name for p in ready_checkpoints(ws.checkpoints_dir / "pretrain") if p.parent.name == "late-nan"]
    assert saved == ["step_2"]
    rows = read_metrics(ws.runs_dir / "pretrain" / "late-nan" / "metrics.jsonl")
    assert rows[-1]["step"] == 3 and rows[-1]["train/loss"] is None
    wa, _ = read_weights(ws.checkpoints_dir / "pretrain" / "clean" / "step_2")
    wb, _ = read_weights(e.value.checkpoint)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_sigterm_writes_a_checkpoint_and_cancels(ws):
    args = ["--preset", "tiny", "--n-embd", "64", "--block-size", "64", "--context-length", "32",
            "--batch-size", "1", "--max-steps", "100000", "--log-every", "1", "--save-every", "0",
            "--eval-every", "0", "--no-progress", "--workspace", str(ws.root)]
    run_dir = jobs.start_job(ws.runs_dir, "pretrain", jobs.stage_argv(("run", "pretrain"), args), workspace=ws.root)
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(read_metrics(metrics)) < 2:
        time.sleep(0.2)
    assert len(read_metrics(metrics)) >= 2, (run_dir / "log.txt").read_text()
    assert jobs.cancel_job(run_dir)
    job = jobs.wait_job(run_dir, timeout=120)
    assert job["state"] == "cancelled", (run_dir / "log.txt").read_text()
    ready = ready_checkpoints(ws.checkpoints_dir / "pretrain")
    assert len(ready) == 1 and ready[0].parent.name == run_dir.name
    _, state = load_checkpoint(ready[0])
    last = read_metrics(metrics)[-1]["step"]
    assert state["step"] == last >= 2
    assert "stopped" in (run_dir / "log.txt").read_text()


@pytest.mark.slow
def test_tiny_model_overfits_a_fixed_batch(tokenizer, shared_data):
    text = (shared_data / "pile-sample" / "tinyshakespeare.txt").read_text(encoding="utf-8")[:5000]
    ids = tokenizer.encode(text)
    rows = torch.tensor([ids[i * 65:(i + 1) * 65] for i in range(4)])
    torch.manual_seed(0)
    model = GPT.from_preset("tiny", block_size=64)
    opt = make_optimizer(model, 3e-3, weight_decay=0.0)
    losses = []
    for _ in range(30):
        _, loss = model(rows[:, :-1], rows[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[0] > math.log(50304) - 0.5
    assert losses[-1] < 2.5, losses
