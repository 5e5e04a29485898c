"""verl reads what we make: its own RLHFDataset loads our converted parquet, and the prompts it
renders with our exported tokenizer and chat template equal ours token for token."""

from __future__ import annotations

import pytest

pytest.importorskip("verl", reason="verl 0.9.1 is a test extra (see .ci/run)")
rl_dataset = pytest.importorskip("verl.utils.dataset.rl_dataset", reason="verl's dataset deps missing")


def test_rlhf_dataset_renders_our_prompts(workspace, shared_data, tmp_path, monkeypatch):
    import pyarrow.parquet as pq
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer
    from typer.testing import CliRunner

    from llmctl.core.cli import app
    from llmctl.core.data.chat import encode_prompt
    from llmctl.trainers.checkpoint import save_checkpoint
    from llmctl.trainers.export_hf import export_hf
    from llmctl.trainers.model import GPT

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    runner = CliRunner()
    ws = str(workspace.root)
    res = runner.invoke(app, ["prepare", "rl", "-w", ws, "--gsm8k", str(shared_data / "gsm8k"),
                              "--max-examples", "24", "--arithmetic-n", "8", "--arithmetic-levels", "1"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["verl", "convert", "-w", ws, "--from", "rl-prompts"])
    assert res.exit_code == 0, res.output
    parquets = sorted((workspace.data_dir / "verl").rglob("*.parquet"))
    assert parquets

    model = GPT.from_preset("tiny")
    step = save_checkpoint(tmp_path / "ckpt", model, step=0, stage="sft")
    hf_dir = export_hf(step, tmp_path / "hf_model")
    tok = AutoTokenizer.from_pretrained(str(hf_dir))

    config = OmegaConf.create({"prompt_key": "prompt", "max_prompt_length": 1024, "filter_overlong_prompts": True,
                               "filter_overlong_prompts_workers": 1, "truncation": "error",
                               "cache_dir": str(tmp_path / "verl_cache")})
    files = [str(p) for p in parquets if "merged" not in str(p)]
    ds = rl_dataset.RLHFDataset(data_files=files, tokenizer=tok, config=config)
    expected_rows = sum(pq.read_metadata(f).num_rows for f in files)
    assert len(ds) == expected_rows  # nothing filtered: verl's template path tokenized every prompt
    ours = workspace.tokenizer()
    for i in range(len(ds)):
        item = ds[i]
        messages = list(item["raw_prompt"])
        theirs = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(theirs, dict) or hasattr(theirs, "input_ids"):
            theirs = theirs["input_ids"]
        assert list(theirs) == encode_prompt(messages, ours), f"row {i} ({item['data_source']}) renders differently"
        assert item["data_source"] in ("openai/gsm8k", "llmctl/arithmetic")
