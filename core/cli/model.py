"""``llmctl sample CKPT --prompt …`` and ``llmctl export hf CKPT OUT``.

CKPT is a checkpoint folder (``step_N``, a run folder or a stage folder, absolute or
workspace-relative) or a stage name (``sft``: its newest ready checkpoint). torch and the
trainers are imported inside the commands only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from llmctl.core.cli.common import WorkspaceOpt, app, fail, open_workspace, user_errors
from llmctl.core.data.chat import encode_prompt, render_prompt
from llmctl.core.data.prompts import user_messages
from llmctl.core.workspace import Workspace


def resolve_ckpt(ws: Workspace, ref: str) -> Path:
    """A ready step folder for ``ref``: a path, or a stage name meaning its newest checkpoint."""
    from llmctl.trainers.checkpoint import find_checkpoint

    return find_checkpoint(ws, ref)


@app.command("sample")
def sample(
    ckpt: str = typer.Argument(..., help="Checkpoint folder, or a stage name for its newest checkpoint."),
    prompt: list[str] = typer.Option(["\n"], "--prompt", "-p", help="Prompt text (repeat for a batch)."),
    chat: bool = typer.Option(False, "--chat", help="Render each prompt as a user turn of the chat template "
                              "(the format SFT/RL trained on)."),
    math: Optional[bool] = typer.Option(None, "--math/--no-math",
                                        help="With --chat: prefix the math instruction training used "
                                             "[default: when the prompt reads as a math question]."),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", "-n"),
    temperature: float = typer.Option(0.8, "--temperature", "-t", help="0 = greedy."),
    top_k: int = typer.Option(50, "--top-k", help="0 = off."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling mass (1 = off)."),
    num_samples: int = typer.Option(1, "--num-samples", help="Samples per prompt."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    device: str = typer.Option("auto", "--device"),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per sample."),
    workspace: Optional[Path] = WorkspaceOpt,
) -> None:
    """Sample text from a checkpoint (batched, KV cache). With --chat each prompt is rendered as
    training rendered it: a user turn of the chat template, and for a math question the shared
    instruction before it."""
    ws = open_workspace(workspace, create=False)
    try:
        from llmctl.trainers.checkpoint import load_model
        from llmctl.trainers.generate import generate
        from llmctl.trainers.loop import resolve_device, resolve_dtype

        path = resolve_ckpt(ws, ckpt)
        dev = resolve_device(device)
        model = load_model(path, dev)
        tok = ws.tokenizer()
        texts, ids = [], []
        for p in prompt:
            if chat:
                msgs = user_messages(p, math)
                text, enc = render_prompt(msgs), encode_prompt(msgs, tok)
            else:
                text, enc = p, tok.encode(p)
            for _ in range(num_samples):
                texts.append(text)
                ids.append(enc or [tok.eot_id])
        outs = generate(model, ids, max_new_tokens, temperature=temperature, top_k=top_k or None,
                        top_p=top_p if top_p < 1.0 else None, eos_id=tok.eot_id, seed=seed,
                        dtype=resolve_dtype("auto", dev))
    except user_errors() + (ValueError,) as e:
        raise fail(str(e)) from None
    for text, out in zip(texts, outs, strict=True):
        stopped = bool(out) and out[-1] == tok.eot_id
        completion = tok.decode(out[:-1] if stopped else out)
        if as_json:
            typer.echo(json.dumps({"prompt": text, "completion": completion, "tokens": len(out),
                                   "stopped": stopped, "checkpoint": str(path)}, ensure_ascii=False))
        else:
            typer.echo(typer.style(text, bold=True) + completion)
            typer.echo("-" * 40)

export_app = typer.Typer(help="Export a checkpoint to other formats.", no_args_is_help=True)
app.add_typer(export_app, name="export")

@export_app.command("hf")
def export_hf_cmd(
    ckpt: str = typer.Argument(..., help="Checkpoint folder, or a stage name for its newest checkpoint."),
    out: Path = typer.Argument(..., help="Output folder (transformers format)."),
    padded_vocab: bool = typer.Option(False, "--padded-vocab",
                                      help="Keep all 50304 embedding rows instead of the 50257 real tokens."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output folder."),
    workspace: Optional[Path] = WorkspaceOpt,
) -> None:
    """Write a folder that transformers loads as GPT2LMHeadModel, with tokenizer and chat template."""
    ws = open_workspace(workspace, create=False)
    if out.exists() and any(out.iterdir() if out.is_dir() else [out]) and not force:
        raise fail(f"{out} exists; pass --force to replace it")
    try:
        from llmctl.trainers.export_hf import export_hf

        path = resolve_ckpt(ws, ckpt)
        written = export_hf(path, out, ranks_file=ws.tokenizer_file(), pad_vocab=padded_vocab)
    except user_errors() + (ValueError,) as e:
        raise fail(str(e)) from None
    typer.echo(f"exported {path} -> {written} (load with transformers.AutoModelForCausalLM.from_pretrained)")
