"""Export to transformers: GPT2LMHeadModel logits, tokenizer files and the chat template."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from llmctl.core.cli import app
from llmctl.core.data.chat import encode_chat, encode_prompt
from llmctl.core.data.prompts import format_answer, question_messages
from llmctl.trainers.checkpoint import save_checkpoint
from llmctl.trainers.generate import generate
from llmctl.trainers.model import GPT, GPTConfig

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tokenizer_file):
    root = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=64))
    with torch.no_grad():  # non-trivial biases / norms so every tensor's mapping is exercised
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    ckpt = save_checkpoint(root / "ckpt" / "run", model, step=3, stage="sft")
    from llmctl.trainers.export_hf import export_hf

    out = export_hf(ckpt, root / "hf", ranks_file=str(tokenizer_file))
    return model.eval(), out


def test_logits_and_greedy_generation_match(exported, tokenizer, shared_data):
    model, out = exported
    hf = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    assert hf.config.vocab_size == 50257 and hf.config.n_positions == 64
    text = (shared_data / "pile-sample" / "tinyshakespeare.txt").read_text(encoding="utf-8")[:2000]
    ids = torch.tensor([tokenizer.encode(text)[:48]])
    with torch.no_grad():
        ours = model(ids)[..., :50257]
        theirs = hf(ids).logits
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        hf_out = hf.generate(ids[:, :8], max_new_tokens=10, do_sample=False, eos_token_id=None, pad_token_id=50256)
    assert hf_out[0, 8:].tolist() == generate(model, [ids[0, :8].tolist()], 10, temperature=0.0, eos_id=None)[0]


def test_tokenizer_files_match_r50k(exported, tokenizer, shared_data):
    _, out = exported
    merges = (out / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
    ref = [line for line in (shared_data / "tokenizer" / "vocab.bpe").read_text(encoding="utf-8").splitlines()[1:] if line]
    assert merges == ref  # rebuilt from the ranks alone, equal to GPT-2's published merges
    vocab = json.loads((out / "vocab.json").read_text(encoding="utf-8"))
    assert vocab == json.loads((shared_data / "tokenizer" / "encoder.json").read_text(encoding="utf-8"))
    tok = transformers.AutoTokenizer.from_pretrained(out)
    text = (shared_data / "pile-sample" / "wiki_demo.txt").read_text(encoding="utf-8")[:3000]
    assert tok(text)["input_ids"] == tokenizer.encode(text)
    assert tok.eos_token_id == 50256


def test_chat_template_renders_our_format(exported, tokenizer, shared_data):
    _, out = exported
    tok = transformers.AutoTokenizer.from_pretrained(out)
    row = json.loads((shared_data / "gsm8k" / "test.jsonl").read_text(encoding="utf-8").splitlines()[0])
    messages = [{"role": "system", "content": "You are a careful math tutor."}, *question_messages(row["question"])]
    full = messages + [{"role": "assistant", "content": format_answer("Add them.", "18")}]

    def ids(x):
        return x["input_ids"] if hasattr(x, "keys") else list(x)

    assert ids(tok.apply_chat_template(full, tokenize=True)) == encode_chat(full, tokenizer)[0]
    prompt = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    assert ids(prompt) == encode_prompt(messages, tokenizer)


def test_cli_export(exported, tmp_path, workspace):
    model, _ = exported
    ckpt = save_checkpoint(workspace.checkpoints_dir / "sft" / "r1", model, step=1, stage="sft")
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["export", "hf", "sft", str(out), "--workspace", str(workspace.root)])
    assert res.exit_code == 0, res.output
    info = json.loads((out / "llmctl_export.json").read_text())
    assert info["checkpoint"] == str(ckpt) and info["vocab_rows"] == 50257
    again = CliRunner().invoke(app, ["export", "hf", "sft", str(out), "--workspace", str(workspace.root)])
    assert again.exit_code != 0 and "--force" in again.output
    padded = CliRunner().invoke(app, ["export", "hf", str(ckpt), str(out), "--padded-vocab", "--force",
                                      "--workspace", str(workspace.root)])
    assert padded.exit_code == 0, padded.output
    assert json.loads((out / "config.json").read_text())["vocab_size"] == 50304
