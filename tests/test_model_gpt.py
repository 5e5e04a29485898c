"""The GPT model: shapes, tied weights, packed rows, padding masks, loss masks, log-probs."""

from __future__ import annotations

import math

import pytest
import torch

from llmctl.core.train_params import MODEL_PRESETS
from llmctl.trainers.model import GPT, GPTConfig, cross_entropy


def small(**kw) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=64, **kw))


@pytest.fixture(scope="module")
def text_ids(tokenizer, shared_data) -> list[int]:
    text = (shared_data / "pile-sample" / "tinyshakespeare.txt").read_text(encoding="utf-8")[:4000]
    return tokenizer.encode(text)


def test_forward_shapes_loss_and_tied_weights(text_ids):
    m = small()
    x = torch.tensor([text_ids[:16], text_ids[16:32]])
    y = torch.tensor([text_ids[1:17], text_ids[17:33]])
    logits = m(x)
    assert logits.shape == (2, 16, 50304)
    logits2, loss = m(x, y)
    assert torch.equal(logits, logits2)
    assert abs(loss.item() - math.log(50304)) < 0.5  # near uniform at init
    assert m.lm_head.weight is m.transformer.wte.weight
    assert m.num_params() == sum(p.numel() for p in m.parameters()) - 64 * 32


def test_cross_entropy_equals_torch_loss_and_gradient():
    torch.manual_seed(0)
    logits = (torch.randn(12, 300) * 3).requires_grad_()
    targets = torch.randint(0, 300, (12,))
    targets[[2, 7]] = -1
    loss = cross_entropy(logits, targets)
    (2 * loss).backward()
    ref_logits = logits.detach().clone().requires_grad_()
    ref = torch.nn.functional.cross_entropy(ref_logits, targets, ignore_index=-1)
    (2 * ref).backward()
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(logits.grad, ref_logits.grad)
    assert torch.count_nonzero(logits.grad[[2, 7]]) == 0
    half = logits.detach().bfloat16().requires_grad_()
    cross_entropy(half, targets).backward()
    assert half.grad.dtype == torch.bfloat16


def test_presets_and_overrides():
    assert set(MODEL_PRESETS) >= {"tiny", "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"}
    assert MODEL_PRESETS["gpt2"] == {"n_layer": 12, "n_head": 12, "n_embd": 768, "block_size": 1024}
    m = GPT.from_preset("tiny", n_layer=1, block_size=32, n_embd=0)
    assert (m.config.n_layer, m.config.block_size, m.config.n_embd) == (1, 32, MODEL_PRESETS["tiny"]["n_embd"])
    assert m.config.vocab_size == 50304
    with pytest.raises(ValueError, match="unknown model preset"):
        GPT.from_preset("gpt5")
    with pytest.raises(ValueError, match="divisible"):
        GPT.from_preset("tiny", n_head=3)


def test_packed_row_equals_examples_run_alone(text_ids):
    """doc_ids keep attention inside each example; restarted positions make it match a solo run."""
    m = small()
    a, b = text_ids[:10], text_ids[40:53]
    row = torch.tensor([a + b])
    doc = torch.tensor([[0] * len(a) + [1] * len(b)])
    pos = torch.tensor([list(range(len(a))) + list(range(len(b)))])
    packed = m(row, doc_ids=doc, position_ids=pos)
    alone_a, alone_b = m(torch.tensor([a])), m(torch.tensor([b]))
    torch.testing.assert_close(packed[:, : len(a)], alone_a, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(packed[:, len(a):], alone_b, atol=1e-5, rtol=1e-5)
    # without the mask the second example does see the first
    leaky = m(row, position_ids=pos)
    assert (leaky[:, len(a):] - alone_b).abs().max() > 1e-3


def test_left_padding_with_attention_mask_matches_unpadded(text_ids):
    m = small()
    ids = text_ids[:12]
    padded = torch.tensor([[0, 0, 0] + ids])
    mask = torch.tensor([[0, 0, 0] + [1] * len(ids)])
    out = m(padded, attention_mask=mask)[:, 3:]
    torch.testing.assert_close(out, m(torch.tensor([ids])), atol=1e-5, rtol=1e-5)


def test_masked_positions_contribute_exactly_zero_gradient(text_ids):
    m = small()
    x = torch.tensor([text_ids[:24]])
    y = torch.tensor([text_ids[1:25]])
    loss_mask = torch.zeros(1, 24, dtype=torch.long)
    loss_mask[:, 10:18] = 1

    def grads(targets):
        m.zero_grad(set_to_none=True)
        h = m.hidden_states(x)
        logits = m.lm_head(h)
        logits.retain_grad()
        t = targets.masked_fill(loss_mask == 0, -1)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), t.flatten(), ignore_index=-1)
        loss.backward()
        return logits.grad, [p.grad.clone() for p in m.parameters()]

    # the model's own loss_mask path equals the explicit masked loss
    _, loss = m(x, y, loss_mask=loss_mask)
    ce = torch.nn.functional.cross_entropy(m(x)[0, 10:18], y[0, 10:18])
    torch.testing.assert_close(loss, ce)
    g_logits, g1 = grads(y)
    assert torch.count_nonzero(g_logits[0, :10]) == 0 and torch.count_nonzero(g_logits[0, 18:]) == 0
    assert torch.count_nonzero(g_logits[0, 10:18]) > 0
    # changing the targets where the mask is 0 changes no gradient, bit for bit
    y2 = y.clone()
    y2[loss_mask == 0] = 7
    _, g2 = grads(y2)
    assert all(torch.equal(a, b) for a, b in zip(g1, g2, strict=True))

    # the forward's loss_mask path runs the head on the trained positions only: same loss and
    # gradients as the full-width masked loss, and the targets under mask 0 are never read
    def model_grads(targets):
        m.zero_grad(set_to_none=True)
        logits, loss = m(x, targets, loss_mask=loss_mask)
        assert logits.shape == (8, m.config.vocab_size)
        loss.backward()
        return [p.grad.clone() for p in m.parameters()]

    gm = model_grads(y)
    for a, b in zip(g1, gm, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(gm, model_grads(y2), strict=True))


def test_token_logprobs_and_hidden_states(text_ids):
    m = small()
    x = torch.tensor([text_ids[:20]])
    y = torch.tensor([text_ids[1:21]])
    lp = m.token_logprobs(x, y)
    ref = torch.log_softmax(m(x).float(), -1).gather(-1, y[..., None])[..., 0]
    torch.testing.assert_close(lp, ref, atol=1e-5, rtol=1e-5)
    y_ign = y.clone()
    y_ign[0, :5] = -1
    assert torch.all(m.token_logprobs(x, y_ign)[0, :5] == 0)
    logits, h = m(x, return_hidden=True)
    assert h.shape == (1, 20, 32)
    torch.testing.assert_close(m.lm_head(h), logits)
    _, loss, h2 = m(x, y, return_hidden=True)
    assert torch.equal(h, h2) and loss.ndim == 0


def test_dropout_only_in_training(text_ids):
    m = small(dropout=0.5)
    x = torch.tensor([text_ids[:8]])
    m.eval()
    assert torch.equal(m(x), m(x))
    m.train()
    assert not torch.equal(m(x), m(x))
