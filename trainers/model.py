"""The GPT-2 model: pre-LayerNorm blocks, GELU MLP, learned positions, tied embeddings.

One model serves every stage. Besides plain next-token training it supports:

* packed rows: ``position_ids`` restart per example and ``doc_ids`` keep attention inside each
  example (a block-diagonal causal mask given to ``F.scaled_dot_product_attention``);
* padded batches: ``attention_mask`` (1 = real token) hides padding keys; positions are derived
  from it when not given, so left-padded prompts behave like unpadded ones;
* a KV cache for generation (:class:`KVCache`);
* per-token log-probs (:meth:`GPT.token_logprobs`) and the final hidden states for value or
  reward heads (``forward(..., return_hidden=True)`` or :meth:`GPT.hidden_states`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmctl.core.tokenizer import PADDED_VOCAB


@dataclass
class GPTConfig:
    """The model's shape. ``vocab_size`` is r50k's 50257 padded to 50304."""

    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    block_size: int = 1024
    vocab_size: int = PADDED_VOCAB
    dropout: float = 0.0
    bias: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GPTConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class KVCache:
    """Keys and values of every layer for generation, preallocated for ``max_len`` positions.

    ``key_mask[b, j]`` says whether slot ``j`` of row ``b`` holds a real token (padding slots are
    never attended to): set it for the new slots before each forward pass. ``pos`` is the number
    of slots filled; a forward pass with a cache writes its ``T`` new positions at
    ``pos .. pos+T-1`` and advances ``pos``. Pass ``position_ids`` explicitly when rows are padded.
    Set ``all_real`` when every slot filled so far and every future one holds a real token (no
    padding): one-token steps then attend without a mask.
    """

    def __init__(self, config: GPTConfig, batch_size: int, max_len: int, *, device: Any = "cpu") -> None:
        hd = config.n_embd // config.n_head
        self.shape = (config.n_layer, batch_size, config.n_head, max_len, hd)
        self.k: torch.Tensor | None = None  # allocated on first use, in the dtype of the keys (autocast)
        self.v: torch.Tensor | None = None
        self.key_mask = torch.zeros(batch_size, max_len, dtype=torch.bool, device=device)
        self.max_len = max_len
        self.pos = 0
        self.all_real = False

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this layer's new keys/values; return all keys/values so far."""
        if self.k is None or self.k.dtype != k.dtype:
            self.k = torch.zeros(self.shape, device=k.device, dtype=k.dtype)
            self.v = torch.zeros(self.shape, device=k.device, dtype=k.dtype)
        t = k.size(2)
        end = self.pos + t
        if end > self.max_len:
            raise ValueError(f"KV cache full: {end} positions > max_len {self.max_len}")
        self.k[layer, :, :, self.pos:end] = k
        self.v[layer, :, :, self.pos:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, layer: int, kv_cache: KVCache | None) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, -1).transpose(1, 2)
        k = k.view(B, T, self.n_head, -1).transpose(1, 2)
        v = v.view(B, T, self.n_head, -1).transpose(1, 2)
        if kv_cache is not None:
            k, v = kv_cache.update(layer, k, v)
        drop = self.dropout if self.training else 0.0
        if mask is None:  # plain causal (a single query sees every key given): SDPA's fastest kernel
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=T > 1)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, layer: int, kv_cache: KVCache | None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), mask, layer, kv_cache)
        return x + self.mlp(self.ln_2(x))


def attention_mask_for(T: int, *, doc_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                       kv_cache: KVCache | None = None, device: Any = None) -> torch.Tensor | None:
    """The boolean SDPA mask (B, 1, T, S) (True = may attend), or None for plain causal attention."""
    if kv_cache is not None:
        start = kv_cache.pos
        S = start + T
        key_ok = kv_cache.key_mask[:, :S]
        if T == 1:  # one new token (decoding): every filled slot is in its past
            return None if kv_cache.all_real else key_ok[:, None, None, :]
        q_pos = torch.arange(start, S, device=key_ok.device)[:, None]
        k_pos = torch.arange(S, device=key_ok.device)[None, :]
        mask = (k_pos <= q_pos)[None] & key_ok[:, None, :]  # (B, T, S)
        pad_q = ~key_ok[:, start:S, None]  # a padding query sees itself only (no empty softmax row)
        return (mask | ((k_pos == q_pos)[None] & pad_q))[:, None]
    if doc_ids is None and attention_mask is None:
        return None
    causal = torch.ones(T, T, dtype=torch.bool, device=device).tril()
    mask = causal[None]
    if doc_ids is not None:
        mask = mask & (doc_ids[:, :, None] == doc_ids[:, None, :])
    if attention_mask is not None:
        keys = attention_mask.bool()
        # a padding query sees itself only, so no row of the mask is empty (no NaN from softmax)
        eye = torch.eye(T, dtype=torch.bool, device=keys.device)[None]
        mask = (mask & keys[:, None, :]) | (eye & ~keys[:, :, None])
    return mask[:, None]


class GPT(nn.Module):
    """GPT-2 language model. ``forward`` returns logits, or ``(logits, loss)`` given targets."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by depth
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> GPT:
        """A fresh model of a preset from ``llmctl.core.train_params.MODEL_PRESETS``.

        Shape overrides of 0 or None keep the preset's value; ``dropout``/``bias``/``vocab_size``
        may be overridden too.
        """
        from llmctl.core.train_params import SHAPE_FIELDS, resolve_model_shape

        shape = resolve_model_shape(name, **{k: v or 0 for k, v in overrides.items() if k in SHAPE_FIELDS})
        rest = {k: v for k, v in overrides.items() if k not in SHAPE_FIELDS and v is not None}
        return cls(GPTConfig(**shape, **rest))

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count (tied embedding counted once; position embedding excluded by default)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wpe.weight.numel()
        return n

    def hidden_states(self, idx: torch.Tensor, *, position_ids: torch.Tensor | None = None,
                      doc_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                      kv_cache: KVCache | None = None) -> torch.Tensor:
        """Final (LayerNormed) hidden states (B, T, n_embd), before the output layer."""
        B, T = idx.size()
        if position_ids is None:
            if attention_mask is not None and kv_cache is None:
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp_(min=0)
            else:
                start = kv_cache.pos if kv_cache is not None else 0
                position_ids = torch.arange(start, start + T, device=idx.device)[None]
        mask = attention_mask_for(T, doc_ids=doc_ids, attention_mask=attention_mask, kv_cache=kv_cache,
                                  device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(position_ids))
        for i, block in enumerate(self.transformer.h):
            x = block(x, mask, i, kv_cache)
        if kv_cache is not None:
            kv_cache.pos += T
        return self.transformer.ln_f(x)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, *,
                loss_mask: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                doc_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                kv_cache: KVCache | None = None, return_hidden: bool = False) -> Any:
        """Logits (B, T, vocab); with ``targets`` also the mean cross-entropy ``(logits, loss)``.

        ``targets`` equal to -1 are ignored (the loss is 0 when all are); with ``loss_mask`` (B, T)
        the loss averages only where it is 1 (masked positions contribute exactly zero gradient), and only those
        positions go through the output layer, so the logits returned are then (N, vocab) for
        the N trained positions in row-major order (the 50k-wide head dominates a small model's
        step; SFT trains on the answers only). ``return_hidden`` appends the final hidden states
        to the returned tuple.
        """
        h = self.hidden_states(idx, position_ids=position_ids, doc_ids=doc_ids, attention_mask=attention_mask,
                               kv_cache=kv_cache)
        if targets is None:
            logits = self.lm_head(h)
            return (logits, h) if return_hidden else logits
        out = h
        if loss_mask is not None:
            targets = targets.masked_fill(loss_mask == 0, -1)
            if not torch.compiler.is_compiling():  # compiled graphs keep static shapes: full width there
                keep = targets != -1
                out, targets = h[keep], targets[keep]
        logits = self.lm_head(out)
        loss = cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        return (logits, loss, h) if return_hidden else (logits, loss)

    def token_logprobs(self, idx: torch.Tensor, targets: torch.Tensor, **kw: Any) -> torch.Tensor:
        """log p(targets[b, t] | idx[b, :t+1]) as (B, T) float32; 0 where targets is -1.

        Keyword arguments (``attention_mask``, ``position_ids``, ``doc_ids``) go to the forward pass.
        """
        logits = self(idx, **kw)
        return logprobs_from_logits(logits, targets)

    @torch.no_grad()
    def estimate_flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (6N + attention), as in the PaLM appendix / nanoGPT."""
        c = self.config
        return 6 * self.num_params() + 12 * c.n_layer * c.n_embd * seq_len


class _CrossEntropy(torch.autograd.Function):
    """Mean cross-entropy over targets != -1 (0 when there are none) whose backward reuses the
    forward's log-softmax buffer.

    ``F.cross_entropy`` keeps the log-probs, then in backward allocates a zero-filled gradient for
    them and a second buffer for the logits' gradient: three (N, V) buffers besides the logits.
    Here the log-probs buffer becomes the gradient in place (``exp`` gives the softmax, minus one at
    each target, times ``1 / n``): one buffer. Same math; the graph can be backpropagated once.
    """

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(logits, dim=-1, dtype=torch.float32)
        valid = targets != -1
        safe = targets.clamp(min=0)[:, None]
        n = valid.sum()
        loss = -(logp.gather(1, safe).squeeze(1) * valid).sum() / n.clamp(min=1)
        ctx.logp, ctx.in_dtype = logp, logits.dtype
        ctx.save_for_backward(safe, valid, n)
        return loss

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor) -> tuple[torch.Tensor, None]:
        safe, valid, n = ctx.saved_tensors
        if ctx.logp is None:
            raise RuntimeError("cross_entropy: its buffers were reused by the first backward pass")
        grad, ctx.logp = ctx.logp.exp_(), None  # softmax, in place
        grad.scatter_add_(1, safe, torch.full(safe.shape, -1.0, device=grad.device))
        grad.mul_((valid * (grad_loss / n.clamp(min=1)))[:, None])
        return grad.to(ctx.in_dtype), None


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``F.cross_entropy(logits.float(), targets, ignore_index=-1)`` for (N, V) logits, with less memory traffic,
    and 0 (not 0/0 = NaN) when every target is -1: an SFT window holding no answer token adds nothing.

    Under ``torch.compile`` (which fuses the loss itself) this is ``F.cross_entropy``'s sum over the count.
    """
    if torch.compiler.is_compiling():
        n = (targets != -1).sum().clamp(min=1)
        return F.cross_entropy(logits.float(), targets, ignore_index=-1, reduction="sum") / n
    return _CrossEntropy.apply(logits, targets)


def logprobs_from_logits(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-token log-probs of ``targets`` under ``logits`` (B, T, V) -> (B, T); 0 where target is -1."""
    B, T, V = logits.shape
    nll = F.cross_entropy(logits.reshape(B * T, V).float(), targets.reshape(B * T), ignore_index=-1,
                          reduction="none")
    return -nll.view(B, T)
