"""The static-cache decoder against the eager reference: greedy tokens, sampled tokens, log-probs, EOS.

Everything runs on the CPU in fp32 (the same step code the GPU captures, without the capture);
the CUDA-graph and compile tests skip without a GPU.
"""

from __future__ import annotations

import pytest
import torch

from llmctl.core.tokenizer import N_VOCAB
from llmctl.trainers.decode import KEY_BUCKET, DecodeEngine, engine_for, fast_generate, first_divergence, step
from llmctl.trainers.generate import generate
from llmctl.trainers.heads import PolicyModel
from llmctl.trainers.model import GPT, GPTConfig
from llmctl.trainers.rl_losses import gather_logprobs
from llmctl.trainers.rollout import pack


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(n_layer=3, n_head=2, n_embd=64, block_size=256)).eval()


def assert_same_greedy(model: GPT, prompts: list[list[int]], fast: list[list[int]], eager: list[list[int]]) -> None:
    """Equal rows, or a failure naming each differing row, its step and the logit gap there."""
    bad = {i: first_divergence(model, p, f, e) for i, (p, f, e) in enumerate(zip(prompts, fast, eager, strict=True))
           if f != e}
    assert not bad, f"fast and eager greedy tokens differ: {bad}"


def test_greedy_tokens_equal_the_eager_path(model, prompts):
    assert len({len(p) for p in prompts}) == len(prompts)  # ragged: left padding in the prefill
    eager = generate(model, prompts, 60, temperature=0.0, eos_id=None, fast=False)
    fast = generate(model, prompts, 60, temperature=0.0, eos_id=None, fast=True)
    assert all(len(r) == 60 for r in fast)
    assert_same_greedy(model, prompts, fast, eager)
    same_len = [p[:6] for p in prompts]  # no padding: the prefill attends causally without a mask
    assert_same_greedy(model, same_len, generate(model, same_len, 40, temperature=0.0, eos_id=None, fast=True),
                       generate(model, same_len, 40, temperature=0.0, eos_id=None, fast=False))


def test_log_probs_are_those_the_trainers_compute(model, prompts):
    """Greedy and sampled (temperature, top-k): each token's log-prob under softmax(logits / T) equals,
    within 1e-5, what the RL trainers compute by teacher forcing (PolicyModel at the same temperature)."""
    policy = PolicyModel(model)
    for temperature, top_k in ((0.0, None), (0.7, 40), (1.3, None)):
        res = fast_generate(model, prompts, 30, temperature=temperature, top_k=top_k, seed=5, eos_id=None,
                            logprobs=True)
        ids, att, cmask, start = pack(prompts, res.tokens, "cpu")
        with torch.no_grad():
            logits, _ = policy(ids, att, start, temperature if temperature > 0 else 1.0)
        ref = gather_logprobs(logits, ids[:, start:])
        got = torch.tensor(res.logprobs)
        assert got.shape == ref.shape
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


def test_seeded_sampling_equals_the_eager_path(prompts):
    """On the CPU both draw the same uniforms from the seed: the same tokens, top-k and top-p included.

    The logits agree to rounding only, so a uniform within ~1e-7 of a CDF step could pick the
    neighbouring token; a fresh model's near-uniform 50k-way distribution is all such steps, so
    this model's output layer is sharpened (embedding x 30, as a trained model's logits spread).
    """
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=3, n_head=2, n_embd=64, block_size=256)).eval()
    with torch.no_grad():
        model.transformer.wte.weight.mul_(30.0)
    for kw in ({"temperature": 1.0}, {"temperature": 0.8, "top_k": 20}, {"temperature": 1.0, "top_p": 0.9},
               {"temperature": 0.7, "top_k": 50, "top_p": 0.8}):
        eager = generate(model, prompts, 25, seed=11, eos_id=None, fast=False, **kw)
        assert generate(model, prompts, 25, seed=11, eos_id=None, fast=True, **kw) == eager, kw
    a = generate(model, prompts, 10, temperature=1.0, seed=1, fast=True)
    assert a == generate(model, prompts, 10, temperature=1.0, seed=1, fast=True)
    assert all(t < N_VOCAB for row in a for t in row)


@pytest.mark.parametrize("check_every", [1, 4, 16])
def test_rows_stop_at_eos_whenever_the_host_checks(model, prompts, check_every):
    greedy = generate(model, prompts, 40, temperature=0.0, eos_id=None, fast=False)
    stop = greedy[1][5]  # pretend row 1's sixth token is the end token
    eager = generate(model, prompts, 40, temperature=0.0, eos_id=stop, fast=False)
    res = fast_generate(model, prompts, 40, temperature=0.0, eos_id=stop, check_every=check_every, logprobs=True)
    assert res.tokens == eager
    assert len(res.tokens[1]) <= 6 and res.tokens[1][-1] == stop
    assert [len(x) for x in res.logprobs] == [len(x) for x in res.tokens]
    if all(stop in r for r in greedy):  # every row stops: the loop ends within check_every steps of the last stop
        assert res.steps < max(len(r) for r in eager) + check_every


def test_buffers_and_weights_are_reused_safely(prompts):
    """Calls of other shapes in between, and weights changed in place (an optimizer step), never leak
    into a result: each call equals the eager path on the weights of that moment."""
    torch.manual_seed(1)
    m = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=256)).eval()
    first = generate(m, prompts, 20, temperature=0.0, eos_id=None, fast=True)
    generate(m, [p[:3] for p in prompts[:2]], 50, temperature=0.0, eos_id=None, fast=True)  # another shape
    generate(m, [prompts[0] * 3], 5, temperature=1.0, seed=0, fast=True)
    assert generate(m, prompts, 20, temperature=0.0, eos_id=None, fast=True) == first
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(1.5)
    changed = generate(m, prompts, 20, temperature=0.0, eos_id=None, fast=True)
    assert changed == generate(m, prompts, 20, temperature=0.0, eos_id=None, fast=False)
    assert changed != first


def test_rows_do_not_depend_on_the_batch(model, prompts):
    batch = generate(model, prompts, 16, temperature=0.0, eos_id=None, fast=True)
    assert batch == [generate(model, [p], 16, temperature=0.0, eos_id=None, fast=True)[0] for p in prompts]


def test_bf16_copies_track_the_weights(prompts):
    """In bf16 the step reads low-precision copies of the matmul weights: refreshed every call."""
    torch.manual_seed(2)
    m = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=128)).eval()
    a = generate(m, prompts, 12, temperature=0.0, eos_id=None, fast=True, dtype=torch.bfloat16)
    with torch.no_grad():
        m.lm_head.weight.mul_(-1.0)
    b = generate(m, prompts, 12, temperature=0.0, eos_id=None, fast=True, dtype=torch.bfloat16)
    assert a != b
    ref = generate(m, prompts, 12, temperature=0.0, eos_id=None, fast=False, dtype=torch.bfloat16)
    same = sum(x == y for x, y in zip(b, ref, strict=True))
    assert same >= len(prompts) - 1, (b, ref)  # bf16 rounding may flip a near-tie on one row


def test_step_traces_as_one_graph(model, prompts):
    """The one-token step has no graph break and no host sync: what reduce-overhead compiles and captures."""
    eng = engine_for(model)
    fast_generate(model, prompts, 4, temperature=0.7, top_k=10, top_p=0.9, seed=0)
    (B, L, dtype), buf = next(reversed(eng.buffers.items()))
    w = eng.weights[dtype]
    spec = next(k[3] for k in eng.steps if k[:3] == (B, L, dtype))
    torch._dynamo.reset()
    for dynamic in (False, True):  # "compile" mode traces it with static shapes, "inductor" with symbolic ones
        compiled = torch.compile(step, backend="aot_eager", fullgraph=True, dynamic=dynamic)
        t0 = int(buf.t)
        with torch.no_grad():
            compiled(buf, w, spec, KEY_BUCKET)
        assert int(buf.t) == t0 + 1


def test_graph_mode_bookkeeping_with_a_stand_in_capture(prompts, monkeypatch):
    """'graph' mode on the CPU with the CUDA calls stood in for: the warm-ups really run (and write
    into the buffers) before the prefill, one graph per attended-key bucket, each replay one step."""
    graphs = []

    def stand_in(self, call, reset):
        for _ in range(2):
            reset()
            call()
        reset()
        graphs.append(call)
        return call  # replaying a graph = running the captured step again on the same buffers

    monkeypatch.setattr(DecodeEngine, "_graph", stand_in)
    torch.manual_seed(4)
    m = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=256)).eval()
    engine_for(m).can_capture = True
    eager = generate(m, prompts, 100, temperature=0.0, eos_id=None, fast=False)
    assert_same_greedy(m, prompts, fast_generate(m, prompts, 100, temperature=0.0, eos_id=None, mode="graph"), eager)
    P = max(len(p) for p in prompts)
    assert len(graphs) == len({-(-(P + t) // KEY_BUCKET) for t in range(1, 100)})  # buckets of attended slots
    n = len(graphs)
    assert fast_generate(m, prompts, 100, temperature=0.0, eos_id=None, mode="graph") == eager
    assert len(graphs) == n  # the same shape replays what it captured
    kw = dict(temperature=0.9, top_k=30, seed=2, eos_id=eager[0][3])
    assert fast_generate(m, prompts, 60, mode="graph", **kw) == fast_generate(m, prompts, 60, mode="eager", **kw)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA-graph capture needs a GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_graphs_replay_the_eager_step(prompts, dtype, monkeypatch):
    torch.manual_seed(0)
    m = GPT(GPTConfig(n_layer=3, n_head=2, n_embd=64, block_size=256)).cuda().eval()
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    kw = dict(temperature=0.0, eos_id=None, dtype=dtype)
    eager_static = fast_generate(m, prompts, 80, mode="eager", **kw)
    graph = fast_generate(m, prompts, 80, mode="graph", **kw)
    assert graph == eager_static
    if dtype == torch.float32:
        assert_same_greedy(m, prompts, graph, generate(m, prompts, 80, fast=False, **kw))
    sampled = [fast_generate(m, prompts, 40, temperature=0.9, top_k=50, seed=3, mode=mode)
               for mode in ("eager", "graph")]
    assert sampled[0] == sampled[1]
