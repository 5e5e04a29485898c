"""``llmctl eval``: dev loss, GSM8K and arithmetic accuracy, results.json and per-example JSONL."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from llmctl.core.cli import app
from llmctl.core.data.prompts import parse_gsm8k_gold
from llmctl.core.status import artifact_statuses
from llmctl.core.train_params import EvalParams
from llmctl.trainers import evaluate
from llmctl.trainers.checkpoint import save_checkpoint
from llmctl.trainers.model import GPT, GPTConfig


@pytest.fixture
def ws(workspace, tokenizer, shared_data):
    torch.manual_seed(0)
    save_checkpoint(workspace.checkpoints_dir / "sft" / "r1", GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32,
                                                                            block_size=128)), step=4, stage="sft")
    text = (shared_data / "pile-sample" / "wiki_demo.txt").read_text(encoding="utf-8")[:20000]
    with h5py.File(workspace.data_dir / "pile_dev.h5", "w") as f:
        f.create_dataset("tokens", data=np.asarray(tokenizer.encode(text), dtype=np.int32))
    rows = [json.loads(line) for line in (shared_data / "gsm8k" / "test.jsonl").read_text().splitlines()[:3]]
    with open(workspace.data_dir / "rl_prompts_test.jsonl", "w") as f:
        for i, r in enumerate(rows):  # the prepare-rl format
            f.write(json.dumps({"prompt": r["question"], "gold": parse_gsm8k_gold(r["answer"]),
                                "data_source": "openai/gsm8k", "index": i}) + "\n")
    return workspace


def test_eval_writes_results_and_examples(ws):
    run_dir = ws.runs_dir / "eval" / "e1"
    run_dir.mkdir(parents=True)
    params = EvalParams(gsm8k_n=3, arithmetic_n=4, arithmetic_level=1, max_new_tokens=6, batch_size=4,
                        dev_batches=2, context_length=64)
    res = evaluate.run(ws, params, run_dir)
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved == res
    assert res["ckpt"].endswith("sft/r1/step_4") and res["ckpt_stage"] == "sft" and res["ckpt_step"] == 4
    assert res["gsm8k_n"] == 3 and res["arithmetic_n"] == 4 and res["arithmetic_source"] == "generated"
    assert 0.0 <= res["gsm8k_accuracy"] <= 1.0 and res["arithmetic_correct"] <= 4
    assert res["dev_tokens"] == 2 * 4 * 64 and res["dev_perplexity"] == pytest.approx(np.exp(res["dev_loss"]))
    examples = [json.loads(line) for line in (run_dir / "examples.jsonl").read_text().splitlines()]
    assert [e["task"] for e in examples] == ["gsm8k"] * 3 + ["arithmetic"] * 4
    first = examples[0]
    assert {"prompt", "output", "parsed", "gold", "score", "format"} <= set(first)
    assert first["prompt"].startswith("User:\nSolve the following math problem") and first["prompt"].endswith(
        "Assistant:\n")
    assert all(e["level"] == 1 for e in examples[3:])
    assert (run_dir / "provenance.json").exists()
    assert artifact_statuses(ws)["eval_results"].state == "ready"


def test_eval_cli_uses_the_newest_checkpoint(ws):
    res = CliRunner().invoke(app, ["eval", "--workspace", str(ws.root), "--gsm8k-n", "0", "--arithmetic-n", "2",
                                   "--max-new-tokens", "4", "--dev-batches", "1", "--context-length", "32"])
    assert res.exit_code == 0, res.output
    out = next((ws.runs_dir / "eval").glob("*/results.json"))
    data = json.loads(out.read_text())
    assert data["ckpt_stage"] == "sft" and "gsm8k_n" not in data and data["arithmetic_n"] == 2
    # the checkpoint as a positional argument: a folder or a stage name
    for ref in ("checkpoints/sft/r1", "sft"):
        res = CliRunner().invoke(app, ["eval", ref, "--workspace", str(ws.root), "--gsm8k-n", "0",
                                       "--arithmetic-n", "1", "--max-new-tokens", "2", "--dev-batches", "0"])
        assert res.exit_code == 0, res.output
        assert "sft/r1/step_4" in res.output
    res = CliRunner().invoke(app, ["eval", "ppo", "--workspace", str(ws.root)])
    assert res.exit_code != 0 and "no ready ppo checkpoint" in res.output


def test_sample_cli(ws):
    # --no-math: the plain chat turn (a math question gets the training instruction by default)
    args = ["sample", "sft", "--prompt", "What is 2 + 2?", "--chat", "--no-math", "-n", "5", "--seed", "1", "--json",
            "--num-samples", "2", "--workspace", str(ws.root)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.output.splitlines() if line.startswith("{")]
    assert len(rows) == 2 and rows[0]["prompt"] == "User:\nWhat is 2 + 2?<|endoftext|>Assistant:\n"
    assert all(r["tokens"] <= 5 for r in rows)
    assert CliRunner().invoke(app, args).output == res.output  # seeded
    bad = CliRunner().invoke(app, ["sample", "dpo", "--workspace", str(ws.root)])
    assert bad.exit_code != 0 and "no ready dpo checkpoint" in bad.output
