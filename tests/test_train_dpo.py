"""DPO: response log-probs, TRL metric names, the policy == reference start, and (slow) margins
rising on real HH-RLHF pairs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from rl_support import fresh_model, prefs_workspace, save_sft
from stage_support import run_headless, run_in_process

from llmctl.core import runs
from llmctl.core.metrics import read_metrics
from llmctl.core.rl_params import DPOParams
from llmctl.core.stages import ParamError, get_stage, resolve_params

DPO_KEYS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
            "logps/rejected")


@pytest.fixture
def ws(workspace, shared_data):
    prefs_workspace(workspace, shared_data, max_pairs=100)
    save_sft(workspace, fresh_model())
    return workspace


def test_params_validate():
    stage = get_stage("dpo")
    p = resolve_params(stage, {}, {"beta": "0.2", "loss_type": "ipo"})
    assert isinstance(p, DPOParams) and p.beta == 0.2 and p.loss_type == "ipo"
    for bad in ({"loss_type": "kto"}, {"beta": "0"}, {"label_smoothing": "0.7"}):
        with pytest.raises(ParamError):
            resolve_params(stage, {}, bad)


def test_sequence_logprobs_sum_the_response_tokens(ws):
    """Summed response log-probs of a padded pair batch equal a plain per-row computation."""
    from llmctl.trainers.pref_data import PreferenceDataset, collate_pairs, read_pairs
    from llmctl.trainers.rl_common import sequence_logprobs
    from llmctl.trainers.rl_losses import gather_logprobs

    model = fresh_model(3).eval()
    data = PreferenceDataset(read_pairs(ws.path("data/preferences.jsonl"))[:3], ws.tokenizer(), 64)
    batch = collate_pairs([data[i] for i in range(3)])
    with torch.no_grad():
        got, counts = sequence_logprobs(model, batch["rejected_ids"], batch["rejected_mask"])
        for i in range(3):
            item = data[i]
            row = torch.tensor([item["prompt_ids"] + item["rejected_ids"]])
            lp = gather_logprobs(model(row)[0, :-1], row[0, 1:])
            want = lp[len(item["prompt_ids"]) - 1:].sum()
            torch.testing.assert_close(got[i], want, atol=1e-4, rtol=1e-5)
            assert counts[i].item() == len(item["rejected_ids"])


def test_dpo_cli_headless_logs_trl_names(ws):
    run_dir, rows = run_headless(ws, "dpo", "--max-steps", "2", "--batch-size", "2", "--max-length", "48",
                                 "--eval-pairs", "4", "--eval-every", "1", "--log-every", "1", "--lr", "1e-3")
    train = [r for r in rows if "train/loss" in r]
    assert [r["step"] for r in train] == [1, 2]
    for key in DPO_KEYS:
        assert all(key in r for r in train), key
        assert any("eval/" + key in r for r in rows), key
    # at the first step the policy is the reference: implicit rewards are exactly zero, loss log 2
    assert train[0]["rewards/chosen"] == 0.0 and train[0]["rewards/rejected"] == 0.0
    assert train[0]["train/loss"] == pytest.approx(0.6931, abs=1e-3)
    assert train[1]["rewards/chosen"] != 0.0  # the policy moved
    ck = ws.checkpoints_dir / "dpo" / run_dir.name / "step_2" / "manifest.json"
    assert ck.is_file()


def test_dpo_ipo_runs(ws):

    summary, run_dir, rows = run_in_process(ws, "dpo", DPOParams(max_steps=1, batch_size=2, max_length=48,
                                                                  eval_pairs=2, loss_type="ipo", progress=False))
    # IPO at policy == reference: (0 - 1/(2 beta))^2 = 25 for beta 0.1
    assert rows[0]["train/loss"] == pytest.approx(25.0, rel=1e-4)
    assert summary["checkpoint"]


@pytest.mark.slow
def test_dpo_margins_rise_on_real_pairs(workspace, shared_data):

    ws = prefs_workspace(workspace, shared_data, max_pairs=300)
    save_sft(ws, fresh_model())
    params = DPOParams(max_steps=30, batch_size=8, max_length=64, max_pairs=200, lr=1e-3, warmup_steps=3,
                       beta=0.1, eval_pairs=32, eval_every=0, log_every=1, save_every=0, progress=False)
    _, run_dir, rows = run_in_process(ws, "dpo", params)
    margins = [r["rewards/margins"] for r in rows if "rewards/margins" in r]
    acc = [r["rewards/accuracies"] for r in rows if "rewards/accuracies" in r]
    ev = [r for r in rows if "eval/rewards/margins" in r][-1]
    first, last = sum(margins[:5]) / 5, sum(margins[-5:]) / 5
    print(f"DPO margins {first:.3f} -> {last:.3f}, accuracy {sum(acc[:5]) / 5:.2f} -> {sum(acc[-5:]) / 5:.2f}, "
          f"held-out margin {ev['eval/rewards/margins']:.3f}, accuracy {ev['eval/rewards/accuracies']:.3f}")
    assert last > first + 0.2 and last > 0.2


@pytest.mark.slow
def test_dpo_two_processes_match_one(ws):
    """DDP under torchrun (2 CPU processes, gloo): the same metrics as one process with the same global batch."""
    from llmctl.trainers.dpo import run

    args = dict(max_steps=2, max_length=48, eval_pairs=8, eval_every=2, log_every=1, lr=1e-3, warmup_steps=0)
    one_dir = runs.new_run_dir(ws.runs_dir, "dpo", "one")
    run(ws, DPOParams(**args, batch_size=4, progress=False), one_dir)
    cli = [sys.executable, "-m", "llmctl.core.cli", "run", "dpo", "--nproc", "2", "--workspace", str(ws.root),
           "--batch-size", "2", "--no-progress"]
    for k, v in args.items():
        cli += ["--" + k.replace("_", "-"), str(v)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(runs.ENV_RUN_DIR, None)
    proc = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    two_dir = next(p for p in (ws.runs_dir / "dpo").iterdir() if p.name != "one")
    assert '"world_size": 2' in (two_dir / "provenance.json").read_text()
    one, two = read_metrics(one_dir / "metrics.jsonl"), read_metrics(two_dir / "metrics.jsonl")
    for key in ("train/loss", "grad_norm", *DPO_KEYS, "eval/rewards/margins", "eval/loss"):
        a = [r[key] for r in one if key in r]
        b = [r[key] for r in two if key in r]
        assert len(a) == len(b) > 0, key
        assert b == pytest.approx(a, rel=1e-3, abs=1e-5), key
