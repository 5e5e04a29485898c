"""Fast decoding: a static KV cache, one-token steps replayed as CUDA graphs, sampling on the device.

:func:`llmctl.trainers.generate.generate` is launch-bound on a GPU: each one-token step of a
12-layer model is a few hundred small kernels launched from Python, and the stop test reads the
GPU every step. Here the whole step -- embedding, every layer (its keys and values written into a
preallocated cache at a slot held in a device tensor), the output layer, temperature / top-k /
top-p sampling with pre-drawn uniforms, the EOS bookkeeping and the write of the new token -- reads
and writes only fixed buffers, so it is captured once per batch shape and replayed with one launch.
Modes (``$LLMCTL_DECODE_MODE``, default ``graph``): ``graph`` captures the step's kernels with
``torch.cuda.CUDAGraph``; ``inductor`` compiles the step first (fused kernels) and captures those;
``compile`` leaves graphs to ``torch.compile(mode="reduce-overhead")``; ``eager`` runs the step as
plain PyTorch. The host looks at the ``done`` flags every ``check_every`` steps only.

Layout of one call: prompts left-padded to width ``P`` and prefilled in one pass (slots
``0..P-1``), then token ``t`` is fed at slot ``P + t - 1``. The cache holds ``L >= P +
max_new_tokens`` slots (rounded up, so calls of similar lengths share buffers and graphs); a step
attends over the first ``n_keys`` slots only, ``n_keys`` rounded up to :data:`KEY_BUCKET`, with one
graph per bucket, so early steps do not read the whole cache.

Numerics follow the eager path: with ``dtype`` bf16/fp16 the linear layers run on low-precision
copies of the weights (refreshed every call) exactly as autocast would run them, while the
residual stream, LayerNorms and embeddings stay fp32; the KV cache is in ``dtype``. Without graph
capture (``mode="eager"``, and always on CPU) the same step runs as plain PyTorch, which is what
the CPU tests check against :func:`generate`'s eager loop.
"""

from __future__ import annotations

import contextlib
import math
import os
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from llmctl.core.tokenizer import EOT_ID, N_VOCAB
from llmctl.trainers.generate import last_logits, sample_with, trim_rows
from llmctl.trainers.model import GPT, attention_mask_for

MODES = ("graph", "inductor", "compile", "eager")
DEFAULT_MODE = os.environ.get("LLMCTL_DECODE_MODE", "graph")  # what generate() uses on CUDA
KEY_BUCKET = 64  # a step attends over a multiple of this many cache slots
LEN_BUCKET = 128  # cache lengths are rounded up to a multiple of this
MAX_BUFFERS = 4  # cache shapes kept per model (least recently used dropped first)


@dataclass(frozen=True)
class Sampling:
    """What a captured step does after the logits (part of a graph's key)."""

    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    eos_id: int | None = EOT_ID
    vocab_limit: int = N_VOCAB
    logprobs: bool = False  # record log p(token) under softmax(logits / temperature)


class Weights:
    """The tensors one step reads: the model's own (fp32) or low-precision copies of the matmul weights."""

    def __init__(self, model: GPT, dtype: torch.dtype) -> None:
        self.sources: list[torch.Tensor] = []
        self.copies: list[torch.Tensor] = []
        low = dtype != torch.float32

        def mm(t: torch.Tensor | None) -> torch.Tensor | None:  # a matmul operand: cast like autocast does
            if t is None:
                return None
            t = t.detach()
            if not low:
                return t
            c = t.to(dtype)
            self.sources.append(t)
            self.copies.append(c)
            return c

        tr = model.transformer
        self.wte, self.wpe = tr.wte.weight.detach(), tr.wpe.weight.detach()
        self.layers = []
        for blk in tr.h:
            self.layers.append((
                _ln(blk.ln_1), mm(blk.attn.c_attn.weight), mm(blk.attn.c_attn.bias),
                mm(blk.attn.c_proj.weight), mm(blk.attn.c_proj.bias), _ln(blk.ln_2),
                mm(blk.mlp.c_fc.weight), mm(blk.mlp.c_fc.bias), mm(blk.mlp.c_proj.weight), mm(blk.mlp.c_proj.bias),
            ))
        self.ln_f = _ln(tr.ln_f)
        self.head = mm(model.lm_head.weight)
        self.dtype = dtype
        self.n_head = model.config.n_head

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor a step reads."""
        out = [self.wte, self.wpe, *self.ln_f[:2], self.head]
        for layer in self.layers:
            for x in layer:
                out.extend(x[:2] if isinstance(x, tuple) else (x,))
        return [t for t in out if isinstance(t, torch.Tensor)]

    def refresh(self) -> None:
        """Copy the current weights into the low-precision copies (the graphs read those)."""
        with torch.no_grad():
            for dst, src in zip(self.copies, self.sources, strict=True):
                dst.copy_(src)


def _ln(m: torch.nn.LayerNorm) -> tuple[torch.Tensor, torch.Tensor | None, float]:
    return m.weight.detach(), None if m.bias is None else m.bias.detach(), m.eps


class Buffers:
    """Everything a step reads or writes, preallocated for ``B`` rows and ``L`` cache slots."""

    def __init__(self, model: GPT, B: int, L: int, dtype: torch.dtype, device: torch.device) -> None:
        c = model.config
        hd = c.n_embd // c.n_head
        self.B, self.L = B, L
        self.kv = torch.zeros(c.n_layer, 2, B, c.n_head, L, hd, dtype=dtype, device=device)  # keys, values
        self.key_mask = torch.zeros(B, L, dtype=torch.bool, device=device)
        self.slots = torch.arange(L, device=device)
        self.lens = torch.zeros(B, dtype=torch.long, device=device)  # real prompt tokens per row
        self.p = torch.zeros(1, dtype=torch.long, device=device)  # P: slot of the first generated token
        self.t = torch.zeros(1, dtype=torch.long, device=device)  # index of the next token to emit
        self.tok = torch.zeros(B, dtype=torch.long, device=device)  # the last emitted token
        self.done = torch.zeros(B, dtype=torch.bool, device=device)
        self.out = torch.zeros(B, L, dtype=torch.long, device=device)
        self.logp = torch.zeros(B, L, dtype=torch.float32, device=device)
        self.u = torch.zeros(L, B, dtype=torch.float32, device=device)  # uniforms of step t in row t

    def tensors(self) -> list[torch.Tensor]:
        return [self.kv, self.key_mask, self.slots, self.lens, self.p, self.t, self.tok, self.done,
                self.out, self.logp, self.u]


def trunk(w: Weights, buf: Buffers, idx: torch.Tensor, pos: torch.Tensor, write: torch.Tensor, n_keys: int,
          mask: torch.Tensor | None) -> torch.Tensor:
    """Final hidden states (B, T, C) of tokens ``idx`` at positions ``pos``, cached at slots ``write``.

    Each layer writes its keys/values at ``write`` (T,) then attends over slots ``:n_keys`` with
    ``mask`` (B, 1, T, n_keys; boolean, or additive in the compute dtype), or causally when
    ``mask`` is None (a prefill without padding).
    """
    B, T = idx.shape
    C = w.wte.size(1)
    H = w.n_head
    dt = w.dtype
    x = F.embedding(idx, w.wte) + F.embedding(pos, w.wpe)
    for i, (ln1, qkv_w, qkv_b, proj_w, proj_b, ln2, fc_w, fc_b, out_w, out_b) in enumerate(w.layers):
        a = F.layer_norm(x, (C,), ln1[0], ln1[1], ln1[2])
        qkv = F.linear(a.to(dt), qkv_w, qkv_b).view(B, T, 3, H, C // H)
        q = qkv[:, :, 0].transpose(1, 2)
        buf.kv[i].index_copy_(3, write, qkv[:, :, 1:].permute(2, 0, 3, 1, 4))  # keys and values in one write
        keys, values = buf.kv[i, 0, :, :, :n_keys], buf.kv[i, 1, :, :, :n_keys]
        if mask is None:
            y = F.scaled_dot_product_attention(q, keys, values, is_causal=T > 1)
        else:
            y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        x = x + F.linear(y, proj_w, proj_b)
        m = F.layer_norm(x, (C,), ln2[0], ln2[1], ln2[2])
        x = x + F.linear(F.gelu(F.linear(m.to(dt), fc_w, fc_b), approximate="tanh"), out_w, out_b)
    return F.layer_norm(x, (C,), w.ln_f[0], w.ln_f[1], w.ln_f[2])


def emit(buf: Buffers, w: Weights, spec: Sampling, h: torch.Tensor) -> None:
    """Sample token ``t`` of every row from the last position of ``h``; record it; advance ``t``."""
    head = w.head[:spec.vocab_limit]
    logits = last_logits(h.to(head.dtype), head)
    u = buf.u.index_select(0, buf.t).squeeze(0)
    nxt = sample_with(logits, u, spec.temperature, spec.top_k, spec.top_p)
    if spec.eos_id is not None:
        nxt = nxt.masked_fill(buf.done, spec.eos_id)
        buf.done |= nxt == spec.eos_id
    if spec.logprobs:
        scaled = logits / spec.temperature if spec.temperature > 0 else logits
        lp = torch.log_softmax(scaled, dim=-1).gather(1, nxt[:, None])
        buf.logp.index_copy_(1, buf.t, lp)
    buf.out.index_copy_(1, buf.t, nxt[:, None])
    buf.tok.copy_(nxt)
    buf.t += 1


def step(buf: Buffers, w: Weights, spec: Sampling, n_keys: int) -> None:
    """One decoding step on the buffers alone (no host sync): feed ``tok``, emit token ``t``."""
    slot = buf.p + buf.t - 1  # (1,): where the fed token's keys go
    pos = (buf.lens + buf.t - 1)[:, None]
    key_ok = buf.key_mask[:, :n_keys] & (buf.slots[:n_keys] <= slot)
    bias = torch.zeros(key_ok.shape, dtype=w.dtype, device=key_ok.device).masked_fill_(~key_ok, float("-inf"))
    h = trunk(w, buf, buf.tok[:, None], pos, slot, n_keys, bias[:, None, None, :])  # one mask for every layer
    emit(buf, w, spec, h)


@dataclass
class DecodeResult:
    """Each row's new tokens (cut after EOS) and, when asked for, their log-probs."""

    tokens: list[list[int]]
    logprobs: list[list[float]] | None = None
    steps: int = 0  # one-token steps run (including the one after the prefill)


class DecodeEngine:
    """The fast decoder of one model: weights per dtype, buffers per shape, captured steps."""

    def __init__(self, model: GPT) -> None:
        self.config = model.config
        self.device = next(model.parameters()).device
        self.signature = _signature(model)
        self.weights: dict[torch.dtype, Weights] = {}
        self.buffers: OrderedDict[tuple[int, int, torch.dtype], Buffers] = OrderedDict()
        self.steps: dict[tuple[Any, ...], Any] = {}  # (B, L, dtype, spec, n_keys, mode) -> replayable step
        self.pool: Any = None
        self.compiled: Any = None  # the step under torch.compile ("inductor" mode)
        self.can_capture = self.device.type == "cuda"  # without CUDA every mode runs the step eagerly

    # ---- buffers and captured steps ----
    def _buffers(self, model: GPT, B: int, L: int, dtype: torch.dtype) -> Buffers:
        key = (B, L, dtype)
        if key in self.buffers:
            self.buffers.move_to_end(key)
            return self.buffers[key]
        while len(self.buffers) >= MAX_BUFFERS:
            old, _ = self.buffers.popitem(last=False)
            self.steps = {k: v for k, v in self.steps.items() if k[:3] != old}
        buf = self.buffers[key] = Buffers(model, B, L, dtype, self.device)
        return buf

    def _runner(self, buf: Buffers, w: Weights, spec: Sampling, n_keys: int, mode: str) -> Any:
        """A no-argument callable doing one step: a replayed graph, a compiled function or the eager step."""
        key = (buf.B, buf.L, w.dtype, spec, n_keys, mode)
        fn = self.steps.get(key)
        if fn is not None:
            return fn
        if mode == "eager":
            fn = lambda: step(buf, w, spec, n_keys)  # noqa: E731
        elif mode == "compile":  # torch.compile's own CUDA graphs (cudagraph trees)
            for t in buf.tensors() + w.tensors():
                torch._dynamo.mark_static_address(t)
            compiled = torch.compile(step, mode="reduce-overhead", fullgraph=True)
            fn = lambda: compiled(buf, w, spec, n_keys)  # noqa: E731
        elif mode == "inductor":  # fused kernels (one compile, shapes symbolic), captured here like "graph"
            if self.compiled is None:
                self.compiled = torch.compile(step, dynamic=True, fullgraph=True)
            fn = self._capture(buf, w, spec, n_keys, self.compiled)
        else:
            fn = self._capture(buf, w, spec, n_keys, step)
        self.steps[key] = fn
        return fn

    def _capture(self, buf: Buffers, w: Weights, spec: Sampling, n_keys: int, fn: Any) -> Any:
        """``fn`` (the step) on these buffers as a replayable graph. Call before the prefill: the
        warm-up runs it (at slot 0, position 0) and writes into the buffers."""
        buf.p.zero_()
        buf.lens.zero_()

        def reset() -> None:  # every warm-up step feeds slot 0: nothing runs past the buffers
            buf.t.fill_(1)

        return self._graph(lambda: fn(buf, w, spec, n_keys), reset)

    def _graph(self, call: Any, reset: Any) -> Any:
        """Warm ``call`` up on a side stream (``reset`` before each run), then capture it as a CUDA
        graph; return its replay."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                reset()
                call()
        torch.cuda.current_stream(self.device).wait_stream(side)
        reset()
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            call()
        return graph.replay

    # ---- one call ----
    @torch.no_grad()
    def run(self, model: GPT, rows: Sequence[Sequence[int]], max_new_tokens: int, spec: Sampling, *,
            seed: int | None = None, dtype: torch.dtype = torch.float32, mode: str | None = None,
            check_every: int | None = None) -> DecodeResult:
        """Generate after each of ``rows`` (non-empty prompts that fit ``block_size - max_new_tokens``).

        The host reads the ``done`` flags every ``check_every`` steps (default 16 on CUDA; 1 on
        the CPU, where reading them costs nothing).
        """
        device = self.device
        mode = mode or DEFAULT_MODE
        if mode not in MODES:
            raise ValueError(f"unknown decode mode {mode!r}; modes: {', '.join(MODES)}")
        if not self.can_capture:
            mode = "eager"
        if check_every is None:
            check_every = 16 if device.type == "cuda" else 1
        w = self.weights.get(dtype)
        if w is None:
            w = self.weights[dtype] = Weights(model, dtype)
        w.refresh()
        B = len(rows)
        lens = [len(r) for r in rows]
        P = max(lens)
        L = _round_up(P + max_new_tokens, LEN_BUCKET)
        buf = self._buffers(model, B, L, dtype)
        # every step this call can run, captured before the prefill writes the buffers
        runners: dict[int, Any] = {}
        for t in range(1, max_new_tokens):
            n_keys = self._n_keys(P + t, L, mode)
            if n_keys not in runners:
                runners[n_keys] = self._runner(buf, w, spec, n_keys, mode)

        # the prompts, left-padded, in one pass
        idx = torch.zeros(B, P, dtype=torch.long)
        for i, r in enumerate(rows):
            idx[i, P - len(r):] = torch.tensor(r, dtype=torch.long)
        idx = idx.to(device, non_blocking=True)
        lens_t = torch.tensor(lens, dtype=torch.long).to(device, non_blocking=True)
        cols = torch.arange(P, device=device)[None]
        pad = P - lens_t[:, None]
        real = cols >= pad
        positions = (cols - pad).clamp(min=0)
        buf.key_mask.zero_()
        buf.key_mask[:, :P] = real
        buf.key_mask[:, P:] = True
        buf.lens.copy_(lens_t)
        buf.p.fill_(P)
        buf.t.zero_()
        buf.done.zero_()
        if spec.temperature > 0:
            gen = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
            buf.u[:max_new_tokens] = torch.rand(max_new_tokens, B, device=device, generator=gen)
        mask = None if P == min(lens) else attention_mask_for(P, attention_mask=real, device=device)
        h = trunk(w, buf, idx, positions, cols[0], P, mask)
        emit(buf, w, spec, h[:, -1:])

        n = 1
        for t in range(1, max_new_tokens):
            if spec.eos_id is not None and t % check_every == 0 and bool(buf.done.all()):
                break
            runners[self._n_keys(P + t, L, mode)]()
            n += 1
        out = buf.out[:, :n].tolist()
        tokens = trim_rows(out, spec.eos_id)
        logprobs = None
        if spec.logprobs:
            lp = buf.logp[:, :n].tolist()
            logprobs = [row[:len(tk)] for row, tk in zip(lp, tokens, strict=True)]
        return DecodeResult(tokens, logprobs, n)

    @staticmethod
    def _n_keys(filled: int, L: int, mode: str) -> int:
        """Cache slots a step attends over once ``filled`` slots hold keys (one graph per bucket)."""
        return L if mode in ("compile", "inductor") else min(L, _round_up(filled, KEY_BUCKET))


def _round_up(n: int, k: int) -> int:
    return int(math.ceil(n / k) * k)


def _signature(model: GPT) -> tuple[Any, ...]:
    return tuple((p.data_ptr(), p.dtype, p.device) for p in model.parameters())


_ENGINES: weakref.WeakKeyDictionary[GPT, DecodeEngine] = weakref.WeakKeyDictionary()


def engine_for(model: GPT) -> DecodeEngine:
    """The model's decode engine (made on first use, remade when its parameters moved)."""
    eng = _ENGINES.get(model)
    if eng is None or eng.signature != _signature(model):
        eng = _ENGINES[model] = DecodeEngine(model)
    return eng


def release(model: GPT) -> None:
    """Drop the model's decode buffers and captured graphs (frees their GPU memory)."""
    _ENGINES.pop(model, None)


def fast_generate(model: GPT, rows: Sequence[Sequence[int]], max_new_tokens: int, *, temperature: float = 1.0,
                  top_k: int | None = None, top_p: float | None = None, eos_id: int | None = EOT_ID,
                  seed: int | None = None, dtype: torch.dtype | None = None, vocab_limit: int = N_VOCAB,
                  mode: str | None = None, check_every: int | None = None, logprobs: bool = False) -> Any:
    """:func:`generate`'s contract on the static-cache decoder; rows must already fit the model.

    Returns the rows' new tokens, or a :class:`DecodeResult` with their log-probs when ``logprobs``
    (log p of each sampled token under ``softmax(logits / temperature)`` over the first
    ``vocab_limit`` ids: the distribution the trainers score). ``mode``: ``graph`` (the step's
    kernels captured as CUDA graphs), ``inductor`` (the step compiled by ``torch.compile``, its fused
    kernels captured the same way), ``compile`` (``torch.compile(mode="reduce-overhead")``: its own
    graphs) or ``eager``; default ``$LLMCTL_DECODE_MODE`` or ``graph``; always eager on CPU.
    """
    if max_new_tokens < 1 or not rows:
        empty: list[list[int]] = [[] for _ in rows]
        return DecodeResult(empty, [[] for _ in rows]) if logprobs else empty
    spec = Sampling(float(temperature) if temperature > 0 else 0.0, top_k if top_k and top_k > 0 else None,
                    top_p if top_p is not None and 0.0 < top_p < 1.0 else None, eos_id, vocab_limit, logprobs)
    dtype = dtype or torch.float32
    was_training = model.training
    try:
        model.eval()
        device_type = next(model.parameters()).device.type
        with torch.autocast(device_type=device_type, enabled=False):  # the step casts for itself
            res = engine_for(model).run(model, rows, max_new_tokens, spec, seed=seed, dtype=dtype, mode=mode,
                                        check_every=check_every)
    finally:
        model.train(was_training)
    return res if logprobs else res.tokens


@torch.no_grad()
def first_divergence(model: GPT, prompt: Sequence[int], a: Sequence[int], b: Sequence[int],
                     dtype: torch.dtype | None = None) -> dict[str, Any] | None:
    """Where two greedy continuations of ``prompt`` first differ, and by how much the reference
    (eager, teacher-forced) logits separate the two tokens there; None when they agree.

    ``logit_gap`` = logit[a_t] - logit[b_t] and ``top2_gap`` (the margin between the two best
    logits) measure how close to a tie the step was: rounding differences flip near-ties only.
    """
    t = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)
    if t is None:
        return None if len(a) == len(b) else {"step": min(len(a), len(b)), "reason": "different lengths"}
    device = next(model.parameters()).device
    idx = torch.tensor([list(prompt) + list(a[:t])], device=device)[:, -model.config.block_size:]
    was = model.training
    model.eval()
    try:
        low = dtype not in (None, torch.float32)
        with torch.autocast(device.type, dtype=dtype) if low else contextlib.nullcontext():
            logits = model(idx)[0, -1].float()
    finally:
        model.train(was)
    top = torch.topk(logits, 2).values
    return {"step": t, "a": int(a[t]), "b": int(b[t]), "logit_gap": float(logits[a[t]] - logits[b[t]]),
            "top2_gap": float(top[0] - top[1])}
