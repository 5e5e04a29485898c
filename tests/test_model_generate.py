"""Generation: KV cache equals recomputation, per-row lengths, sampling controls, EOT stop."""

from __future__ import annotations

import pytest
import torch

from llmctl.trainers.generate import generate, sample_next
from llmctl.trainers.model import GPT, GPTConfig, KVCache


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=64)).eval()


@pytest.fixture(scope="module")
def prompts(prompts: list[list[int]]) -> list[list[int]]:
    return prompts[:3]


def test_kv_cache_matches_full_recompute(model, prompts):
    assert len({len(p) for p in prompts}) == 3  # really ragged
    cached = generate(model, prompts, 20, temperature=0.0, eos_id=None)
    full = generate(model, prompts, 20, temperature=0.0, eos_id=None, use_cache=False)
    assert cached == full
    assert all(len(r) == 20 for r in cached)


def test_kv_cache_matches_full_recompute_without_padding(model, prompts):
    same_len = [p[:8] for p in prompts]  # no padding: decoding steps attend without a mask
    cached = generate(model, same_len, 30, temperature=0.0, eos_id=None)
    assert cached == generate(model, same_len, 30, temperature=0.0, eos_id=None, use_cache=False)
    sampled = generate(model, same_len, 10, temperature=1.0, top_k=50, seed=3, eos_id=None)
    assert sampled == generate(model, same_len, 10, temperature=1.0, top_k=50, seed=3, eos_id=None, use_cache=False)


def test_rows_do_not_depend_on_the_batch(model, prompts):
    batch = generate(model, prompts, 12, temperature=0.0, eos_id=None)
    alone = [generate(model, [p], 12, temperature=0.0, eos_id=None)[0] for p in prompts]
    assert batch == alone


def test_seeded_sampling_is_reproducible_and_top_k_1_is_greedy(model, prompts):
    a = generate(model, prompts, 10, temperature=1.0, top_k=40, top_p=0.9, seed=7)
    b = generate(model, prompts, 10, temperature=1.0, top_k=40, top_p=0.9, seed=7)
    assert a == b
    greedy = generate(model, prompts, 10, temperature=0.0, eos_id=None)
    assert generate(model, prompts, 10, temperature=0.7, top_k=1, seed=3, eos_id=None) == greedy
    assert all(t < 50257 for row in a for t in row)  # padded vocab never sampled


def test_stops_at_eos_per_row(model, prompts):
    greedy = generate(model, prompts, 8, temperature=0.0, eos_id=None)
    stop = greedy[0][2]  # pretend row 0's third token is the end token
    out = generate(model, prompts, 8, temperature=0.0, eos_id=stop)
    assert len(out[0]) <= 3 and out[0][-1] == stop
    for g, o in zip(greedy, out, strict=True):
        assert o == (g[: g.index(stop) + 1] if stop in g else g)


def test_sample_next_top_p_and_top_k():
    logits = torch.log(torch.tensor([[0.6, 0.25, 0.1, 0.05]]))
    gen = torch.Generator().manual_seed(0)
    draws = {int(sample_next(logits, 1.0, top_p=0.5, generator=gen)) for _ in range(50)}
    assert draws == {0}
    draws = {int(sample_next(logits, 1.0, top_p=0.8, generator=gen)) for _ in range(200)}
    assert draws == {0, 1}
    draws = {int(sample_next(logits, 1.0, top_k=3, generator=gen)) for _ in range(300)}
    assert draws == {0, 1, 2}
    assert int(sample_next(logits, 0.0)) == 0


def test_long_prompts_are_cropped_and_limits_checked(model):
    long = list(range(1, 200))
    out = generate(model, [long], 10, temperature=0.0, eos_id=None)
    assert out == generate(model, [long[-54:]], 10, temperature=0.0, eos_id=None)
    with pytest.raises(ValueError, match="block_size"):
        generate(model, [[1, 2]], 64)
    with pytest.raises(ValueError, match="at least one token"):
        generate(model, [[1], []], 4)
    assert generate(model, [[1], [2]], 0) == [[], []]


def test_left_padding_leaves_no_nan_in_the_cache(model):
    """Padding queries attend to themselves, so no softmax row is empty on any attention kernel."""
    idx = torch.tensor([[0, 0, 5, 6, 7], [1, 2, 3, 4, 5]])
    real = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], dtype=torch.bool)
    pos = (torch.arange(5)[None] - torch.tensor([[2], [0]])).clamp(min=0)
    cache = KVCache(model.config, 2, 8)
    cache.key_mask[:, :5] = real
    with torch.no_grad():
        h = model.hidden_states(idx, position_ids=pos, kv_cache=cache)
    assert cache.pos == 5
    assert not (torch.isnan(h).any() or torch.isnan(cache.k).any() or torch.isnan(cache.v).any())
