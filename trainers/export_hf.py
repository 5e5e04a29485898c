"""``llmctl export hf CKPT OUT``: a folder transformers loads as ``GPT2LMHeadModel`` + tokenizer.

Weights: our linear layers become GPT-2's ``Conv1D`` (weights transposed); ``lm_head`` stays tied
to ``wte``. The embedding is sliced from the padded 50304 rows to r50k's 50257 real tokens (the
standard GPT-2 shape; the 47 padding rows are never inputs or targets), so the logits of every
real token equal ours exactly; ``pad_vocab=True`` keeps all 50304 rows instead. A model trained
without biases gets zero biases (GPT-2 always has them).

Tokenizer: ``vocab.json`` and ``merges.txt`` are rebuilt from the r50k ranks file through GPT-2's
byte-to-unicode mapping (each merge is recovered by replaying BPE on the token's bytes with the
lower ranks), ``tokenizer_config.json`` carries the chat template (``core.chat.chat_template_jinja``)
and EOT as bos/eos/pad; ``tokenizer.json`` is added when the ``tokenizers`` package is installed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from llmctl.core.atomic import atomic_path
from llmctl.core.tokenizer import EOT_ID, EOT_TOKEN, N_VOCAB
from llmctl.trainers.checkpoint import load_checkpoint, unwrap_model
from llmctl.trainers.model import GPT

CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable unicode characters."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


def _merge_parts(ranks: dict[bytes, int], token: bytes, max_rank: int) -> list[bytes]:
    """Replay BPE on ``token`` with merges ranked below ``max_rank``; a mergeable token ends in 2 parts."""
    parts = [bytes([b]) for b in token]
    while len(parts) > 1:
        best, best_rank = -1, max_rank
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < best_rank:
                best, best_rank = i, r
        if best < 0:
            break
        parts[best:best + 2] = [parts[best] + parts[best + 1]]
    return parts


def vocab_and_merges(ranks: dict[bytes, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """HF byte-level ``vocab`` (string -> id, EOT included) and ``merges`` in rank order."""
    enc = bytes_to_unicode()

    def s(b: bytes) -> str:
        return "".join(enc[x] for x in b)

    vocab = {s(tok): rank for tok, rank in ranks.items()}
    vocab[EOT_TOKEN] = EOT_ID
    merges = []
    for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(tok) < 2:
            continue
        parts = _merge_parts(ranks, tok, rank)
        if len(parts) != 2:
            raise ValueError(f"token {tok!r} (rank {rank}) is not a merge of two lower-ranked tokens")
        merges.append((s(parts[0]), s(parts[1])))
    return vocab, merges


def hf_state_dict(model: GPT, vocab_rows: int) -> dict[str, torch.Tensor]:
    """Our weights under GPT-2's names and layouts (``lm_head`` left out: it is tied to ``wte``)."""
    c = model.config
    out: dict[str, torch.Tensor] = {}
    for name, t in model.state_dict().items():
        if name == "lm_head.weight":
            continue
        t = t.detach().float().cpu()
        if name.endswith(CONV1D):
            t = t.t()
        if name == "transformer.wte.weight":
            t = t[:vocab_rows]
        out[name] = t.contiguous()
    if not c.bias:  # GPT-2 always has biases: zeros are the same function
        for i in range(c.n_layer):
            pre = f"transformer.h.{i}."
            for ln in ("ln_1", "ln_2"):
                out[pre + f"{ln}.bias"] = torch.zeros(c.n_embd)
            out[pre + "attn.c_attn.bias"] = torch.zeros(3 * c.n_embd)
            out[pre + "attn.c_proj.bias"] = torch.zeros(c.n_embd)
            out[pre + "mlp.c_fc.bias"] = torch.zeros(4 * c.n_embd)
            out[pre + "mlp.c_proj.bias"] = torch.zeros(c.n_embd)
        out["transformer.ln_f.bias"] = torch.zeros(c.n_embd)
    return out


def hf_config(model: GPT, vocab_rows: int) -> dict[str, Any]:
    c = model.config
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": vocab_rows, "n_positions": c.block_size, "n_ctx": c.block_size,
        "n_embd": c.n_embd, "n_layer": c.n_layer, "n_head": c.n_head, "n_inner": None,
        "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5, "initializer_range": 0.02,
        "resid_pdrop": c.dropout, "embd_pdrop": c.dropout, "attn_pdrop": c.dropout,
        "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
        "bos_token_id": EOT_ID, "eos_token_id": EOT_ID, "pad_token_id": EOT_ID,
        "tie_word_embeddings": True, "use_cache": True, "torch_dtype": "float32",
    }


def write_tokenizer(out: Path, ranks: dict[bytes, int], model_max_length: int, chat_template: str) -> None:
    """vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json (+ tokenizer.json)."""
    vocab, merges = vocab_and_merges(ranks)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    special = {"bos_token": EOT_TOKEN, "eos_token": EOT_TOKEN, "unk_token": EOT_TOKEN, "pad_token": EOT_TOKEN}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "GPT2Tokenizer", "model_max_length": model_max_length, "add_prefix_space": False,
        "add_bos_token": False, "clean_up_tokenization_spaces": False, "errors": "replace", **special,
        "added_tokens_decoder": {str(EOT_ID): {"content": EOT_TOKEN, "lstrip": False, "rstrip": False,
                                               "normalized": True, "single_word": False, "special": True}},
        "chat_template": chat_template,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n",
                                               encoding="utf-8")
    try:
        from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    except ImportError:
        return
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tk.decoder = decoders.ByteLevel()
    tk.post_processor = processors.ByteLevel(trim_offsets=False)
    tk.add_special_tokens([AddedToken(EOT_TOKEN, special=True, normalized=True)])
    tk.save(str(out / "tokenizer.json"))


def export_hf(ckpt: str | os.PathLike[str], out: str | os.PathLike[str], *, ranks_file: str | None = None,
              pad_vocab: bool = False) -> Path:
    """Write a transformers GPT-2 folder for checkpoint ``ckpt`` at ``out`` (atomically); return it."""
    from llmctl.core.data.chat import chat_template_jinja
    from llmctl.core.tokenizer import get_tokenizer, read_ranks_file

    model, state = load_checkpoint(ckpt, "cpu")
    model = unwrap_model(model)
    tok = get_tokenizer(ranks_file)
    ranks = read_ranks_file(ranks_file or tok.source)[0] if (ranks_file or tok.source != "tiktoken") \
        else dict(tok.reference._mergeable_ranks)
    rows = model.config.vocab_size if pad_vocab else N_VOCAB
    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True, exist_ok=True)
        save_file(hf_state_dict(model, rows), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(hf_config(model, rows), indent=2) + "\n", encoding="utf-8")
        gen = {"bos_token_id": EOT_ID, "eos_token_id": EOT_ID, "pad_token_id": EOT_ID}
        (tmp / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n", encoding="utf-8")
        write_tokenizer(tmp, ranks, model.config.block_size, chat_template_jinja())
        (tmp / "llmctl_export.json").write_text(json.dumps({
            "checkpoint": str(state["path"]), "step": state["step"], "vocab_rows": rows,
            "padded_vocab": model.config.vocab_size, "tokenizer": tok.describe(),
        }, indent=2) + "\n", encoding="utf-8")
    return out
