"""The RL/preference losses against straightforward plain-Python computations (and TRL if present)."""

from __future__ import annotations

import math
import types

import pytest
import torch

from llmctl.trainers import rl_losses as L

B, T = 4, 6


def _fixed(seed: int, *shape: int, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


# trailing-padded completion mask: lengths 6, 4, 1, 3
MASK = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0], [1, 0, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0]],
                    dtype=torch.float64)
LENGTHS = [6, 4, 1, 3]


def _close(a, b, tol: float = 1e-9) -> None:
    a = a.tolist() if isinstance(a, torch.Tensor) else a
    b = b.tolist() if isinstance(b, torch.Tensor) else b
    if isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _close(x, y, tol)
    else:
        assert math.isclose(a, b, rel_tol=tol, abs_tol=tol), (a, b)


def _logsigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def _masked_tokens(x: torch.Tensor) -> list[float]:
    return [x[i, t].item() for i in range(B) for t in range(LENGTHS[i])]


# ---- reductions ------------------------------------------------------------------------------

def test_masked_reductions():
    x = _fixed(0, B, T)
    vals = _masked_tokens(x)
    mean = sum(vals) / len(vals)
    _close(L.masked_sum(x, MASK), sum(vals))
    _close(L.masked_mean(x, MASK), mean)
    _close(L.masked_mean(x, MASK, dim=1), [sum(x[i, :LENGTHS[i]].tolist()) / LENGTHS[i] for i in range(B)])
    var = sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)
    _close(L.masked_var(x, MASK), var)
    _close(L.masked_var(x, MASK, unbiased=False), var * (len(vals) - 1) / len(vals))
    w = L.masked_whiten(x, MASK, eps=0.0)
    _close(_masked_tokens(w), [(v - mean) / math.sqrt(var) for v in vals])
    w2 = L.masked_whiten(x, MASK, shift_mean=False, eps=0.0)
    _close(_masked_tokens(w2), [(v - mean) / math.sqrt(var) + mean for v in vals])
    # an all-zero mask gives 0, not NaN
    assert L.masked_mean(x, torch.zeros_like(MASK)).item() == 0.0


def test_gather_logprobs_and_entropy():
    logits = _fixed(1, 2, 3, 7, scale=3.0)
    tokens = torch.tensor([[0, 6, 3], [2, 2, 5]])
    lp = L.gather_logprobs(logits, tokens)
    ent = L.entropy_from_logits(logits)
    for i in range(2):
        for t in range(3):
            row = logits[i, t].tolist()
            z = math.log(sum(math.exp(v) for v in row))
            _close(lp[i, t].item(), row[tokens[i, t]] - z, 1e-5)
            probs = [math.exp(v - z) for v in row]
            _close(ent[i, t].item(), -sum(p * math.log(p) for p in probs), 1e-5)
    assert lp.dtype == torch.float32


# ---- preference losses -----------------------------------------------------------------------

def test_bradley_terry_loss():
    c, r = _fixed(2, 8), _fixed(3, 8)
    want = sum(-_logsigmoid(a - b) for a, b in zip(c.tolist(), r.tolist(), strict=True)) / 8
    _close(L.bradley_terry_loss(c, r), want)
    m = torch.full((8,), 0.5, dtype=torch.float64)
    want_m = sum(-_logsigmoid(a - b - 0.5) for a, b in zip(c.tolist(), r.tolist(), strict=True)) / 8
    _close(L.bradley_terry_loss(c, r, m), want_m)
    # better-separated scores give lower loss
    assert L.bradley_terry_loss(c + 5, r) < L.bradley_terry_loss(c, r)


@pytest.mark.parametrize("loss_type,smooth", [("sigmoid", 0.0), ("sigmoid", 0.2), ("ipo", 0.0)])
def test_dpo_loss(loss_type: str, smooth: float):
    pc, pr, rc, rr = (_fixed(s, 5, scale=10.0) - 50 for s in (4, 5, 6, 7))
    beta = 0.1
    loss, cr, rj = L.dpo_loss(pc, pr, rc, rr, beta, loss_type=loss_type, label_smoothing=smooth)
    per = []
    for a, b, c, d in zip(pc.tolist(), pr.tolist(), rc.tolist(), rr.tolist(), strict=True):
        h = (a - b) - (c - d)
        if loss_type == "sigmoid":
            per.append(-(1 - smooth) * _logsigmoid(beta * h) - smooth * _logsigmoid(-beta * h))
        else:
            per.append((h - 1 / (2 * beta)) ** 2)
    _close(loss, sum(per) / len(per))
    _close(cr, [beta * (a - c) for a, c in zip(pc.tolist(), rc.tolist(), strict=True)])
    _close(rj, [beta * (b - d) for b, d in zip(pr.tolist(), rr.tolist(), strict=True)])
    assert not cr.requires_grad


def test_dpo_loss_gradient_prefers_chosen():
    pc = torch.zeros(3, requires_grad=True)
    pr = torch.zeros(3, requires_grad=True)
    loss, _, _ = L.dpo_loss(pc, pr, torch.zeros(3), torch.zeros(3), beta=0.5)
    loss.backward()
    assert (pc.grad < 0).all() and (pr.grad > 0).all()  # descent raises chosen, lowers rejected
    with pytest.raises(ValueError):
        L.dpo_loss(pc, pr, pc, pr, 0.1, loss_type="hinge-ish")


# ---- KL / GRPO -------------------------------------------------------------------------------

def test_kl_estimators():
    lp, ref = _fixed(8, B, T, scale=0.5) - 2, _fixed(9, B, T, scale=0.5) - 2
    k3 = L.kl_estimate(lp, ref, "k3")
    k1 = L.kl_estimate(lp, ref, "k1")
    for i in range(B):
        for t in range(T):
            d = ref[i, t].item() - lp[i, t].item()
            _close(k3[i, t].item(), math.exp(d) - d - 1)
            _close(k1[i, t].item(), -d)
    assert (k3 >= 0).all()
    _close(L.kl_estimate(lp, lp, "k3"), torch.zeros(B, T))


def test_grpo_advantages():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5, 2.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    G = 4
    adv = L.grpo_advantages(rewards, G)
    dr = L.dr_grpo_advantages(rewards, G)
    std = L.group_std(rewards, G)
    r = rewards.tolist()
    for g in range(3):
        grp = r[g * G:(g + 1) * G]
        mean = sum(grp) / G
        sd = math.sqrt(sum((x - mean) ** 2 for x in grp) / (G - 1))
        for k in range(G):
            _close(adv[g * G + k].item(), (grp[k] - mean) / (sd + 1e-4))
            _close(dr[g * G + k].item(), grp[k] - mean)
            _close(std[g * G + k].item(), sd)
    assert (adv[4:8] == 0).all()  # a zero-std group has no signal
    with pytest.raises(ValueError):
        L.grpo_advantages(rewards, 5)


def _grpo_reference(lp, old, ref, adv, eps, beta, loss_type, max_len):
    per_seq, tot, n, kl_all, clip_all = [], 0.0, 0, [], []
    for i in range(B):
        s = 0.0
        for t in range(LENGTHS[i]):
            ratio = math.exp(lp[i][t] - old[i][t])
            a = adv[i]
            term = -min(ratio * a, max(min(ratio, 1 + eps), 1 - eps) * a)
            d = ref[i][t] - lp[i][t]
            k = math.exp(d) - d - 1
            term += beta * k
            kl_all.append(k)
            clip_all.append(1.0 if (ratio < 1 - eps and a < 0) or (ratio > 1 + eps and a > 0) else 0.0)
            s += term
            tot += term
            n += 1
        per_seq.append(s / LENGTHS[i])
    if loss_type == "grpo":
        loss = sum(per_seq) / B
    elif loss_type == "dr_grpo":
        loss = tot / (B * max_len)
    else:
        loss = tot / n
    return loss, sum(kl_all) / len(kl_all), sum(clip_all) / len(clip_all)


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "bnpo"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_grpo_loss(loss_type: str, beta: float):
    lp = _fixed(10, B, T, scale=0.3) - 1.5
    old = lp + _fixed(11, B, T, scale=0.3)  # ratios far enough from 1 that some clip
    ref = lp + _fixed(12, B, T, scale=0.2)
    adv = torch.tensor([1.0, -0.5, 2.0, -1.5], dtype=torch.float64)
    loss, stats = L.grpo_loss(lp, old, ref, adv, MASK, clip_eps=0.2, kl_coef=beta, loss_type=loss_type,
                              max_completion_length=8)
    want, kl, clip = _grpo_reference(lp.tolist(), old.tolist(), ref.tolist(), adv.tolist(), 0.2, beta,
                                     loss_type, 8)
    _close(loss, want)
    _close(stats["kl"], kl)
    _close(stats["clip_fraction"], clip)
    assert 0 < clip < 1


def test_grpo_loss_without_reference_and_gradient():
    lp = (_fixed(13, B, T, scale=0.3) - 1.5).requires_grad_(True)
    adv = torch.tensor([1.0, -0.5, 2.0, -1.5], dtype=torch.float64)
    loss, stats = L.grpo_loss(lp, lp.detach(), None, adv, MASK, 0.2, 0.0)
    assert stats["kl"].item() == 0.0 and stats["clip_fraction"].item() == 0.0
    loss.backward()
    # on-policy (ratio 1): d loss / d logp_t = -A_i / (B * len_i) on real tokens, 0 on padding
    for i in range(B):
        for t in range(T):
            want = -adv[i].item() / (B * LENGTHS[i]) if t < LENGTHS[i] else 0.0
            _close(lp.grad[i, t].item(), want)
    with pytest.raises(ValueError):
        L.grpo_loss(lp, lp.detach(), None, adv, MASK, 0.2, 0.1)


# ---- PPO -------------------------------------------------------------------------------------

def test_per_token_rewards():
    lp, ref = _fixed(14, B, T) - 2, _fixed(15, B, T) - 2
    scores = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    rew, kl = L.per_token_rewards(scores, lp, ref, MASK, kl_coef=0.1)
    for i in range(B):
        for t in range(T):
            k = lp[i, t].item() - ref[i, t].item() if t < LENGTHS[i] else 0.0
            want = -0.1 * k + (scores[i].item() if t == LENGTHS[i] - 1 else 0.0)
            _close(rew[i, t].item(), want)
            _close(kl[i, t].item(), k)


def _gae_reference(rewards, values, gamma, lam):
    advs, rets = [], []
    for i in range(B):
        n = LENGTHS[i]
        a_row, last = [0.0] * T, 0.0
        for t in reversed(range(n)):
            nv = values[i][t + 1] if t + 1 < n else 0.0
            delta = rewards[i][t] + gamma * nv - values[i][t]
            last = delta + gamma * lam * last
            a_row[t] = last
        advs.append(a_row)
        rets.append([a_row[t] + values[i][t] if t < n else 0.0 for t in range(T)])
    return advs, rets


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.8), (1.0, 1.0)])
def test_gae(gamma: float, lam: float):
    rewards, values = _fixed(16, B, T), _fixed(17, B, T)
    adv, ret = L.gae(rewards, values, MASK, gamma, lam)
    want_a, want_r = _gae_reference(rewards.tolist(), values.tolist(), gamma, lam)
    _close(adv, want_a)
    _close(ret, want_r)
    if gamma == lam == 1.0:  # Monte-Carlo: return = sum of rewards to the end of the sequence
        for i in range(B):
            for t in range(LENGTHS[i]):
                _close(ret[i, t].item(), sum(rewards[i, t:LENGTHS[i]].tolist()))


def test_ppo_policy_loss():
    lp, old = _fixed(18, B, T, scale=0.3) - 1, _fixed(19, B, T, scale=0.3) - 1
    adv = _fixed(20, B, T)
    loss, stats = L.ppo_policy_loss(lp, old, adv, MASK, clip_eps=0.2)
    terms, clipped, sq = [], [], []
    for i in range(B):
        for t in range(LENGTHS[i]):
            ratio = math.exp(lp[i, t].item() - old[i, t].item())
            a = adv[i, t].item()
            l1, l2 = -a * ratio, -a * min(max(ratio, 0.8), 1.2)
            terms.append(max(l1, l2))
            clipped.append(1.0 if l2 > l1 else 0.0)
            sq.append((lp[i, t].item() - old[i, t].item()) ** 2)
    _close(loss, sum(terms) / len(terms))
    _close(stats["clip_fraction"], sum(clipped) / len(clipped))
    _close(stats["approx_kl"], 0.5 * sum(sq) / len(sq))


def test_ppo_value_loss():
    v, old, ret = _fixed(21, B, T), _fixed(22, B, T), _fixed(23, B, T)
    loss, stats = L.ppo_value_loss(v, old, ret, MASK, clip_range=0.2)
    terms, clipped = [], []
    for i in range(B):
        for t in range(LENGTHS[i]):
            vv, oo, rr = v[i, t].item(), old[i, t].item(), ret[i, t].item()
            vc = oo + min(max(vv - oo, -0.2), 0.2)
            terms.append(max((vv - rr) ** 2, (vc - rr) ** 2))
            clipped.append(1.0 if (vc - rr) ** 2 > (vv - rr) ** 2 else 0.0)
    _close(loss, 0.5 * sum(terms) / len(terms))
    _close(stats["value_clip_fraction"], sum(clipped) / len(clipped))


def test_explained_variance():
    v, ret = _fixed(24, B, T), _fixed(25, B, T)
    rv, vv = _masked_tokens(ret), _masked_tokens(v)
    n = len(rv)

    def var(xs):
        m = sum(xs) / n
        return sum((x - m) ** 2 for x in xs) / n

    _close(L.explained_variance(v, ret, MASK), 1 - var([r - x for r, x in zip(rv, vv, strict=True)]) / var(rv))
    _close(L.explained_variance(ret, ret, MASK), 1.0)
    assert math.isnan(L.explained_variance(v, torch.ones(B, T), MASK).item())


# ---- TRL (only where it is installed) ---------------------------------------------------------

def test_against_trl_utils():
    utils = pytest.importorskip("trl.trainer.utils", exc_type=ImportError)
    logits = _fixed(26, 2, 5, 11, scale=2.0).float()
    tokens = torch.randint(0, 11, (2, 5), generator=torch.Generator().manual_seed(0))
    if hasattr(utils, "selective_log_softmax"):
        _close(L.gather_logprobs(logits, tokens), utils.selective_log_softmax(logits, tokens), 1e-5)
    if hasattr(utils, "entropy_from_logits"):
        _close(L.entropy_from_logits(logits), utils.entropy_from_logits(logits), 1e-5)


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "bnpo"])
def test_against_trl_grpo_loss(loss_type: str):
    """Call TRL's GRPOTrainer._compute_loss with a minimal stand-in trainer (skips if its API moved)."""
    mod = pytest.importorskip("trl.trainer.grpo_trainer", exc_type=ImportError)
    lp = (_fixed(27, B, T, scale=0.3) - 1.5).float()
    old = lp + _fixed(28, B, T, scale=0.3).float()
    ref = lp + _fixed(29, B, T, scale=0.2).float()
    adv = torch.tensor([1.0, -0.5, 2.0, -1.5])
    mask = MASK.float()

    class _Acc:
        num_processes = 1

        def reduce(self, x, reduction="sum"):
            return x

        def gather(self, x):
            return x

        gather_for_metrics = gather

    from collections import defaultdict

    args = types.SimpleNamespace(use_bias_correction_kl=False, delta=None)
    fake = types.SimpleNamespace(
        top_entropy_quantile=1.0, off_policy_mask_threshold=None, importance_sampling_level="token",
        beta=0.04, args=args, loss_type=loss_type, epsilon_low=0.2, epsilon_high=0.2, use_vllm=False,
        model=types.SimpleNamespace(training=True), current_gradient_accumulation_steps=1,
        max_completion_length=T, _entropy_bonus_enabled=False, aux_loss_enabled=False,
        _metrics={"train": defaultdict(list)}, accelerator=_Acc(),
        _get_per_token_logps_and_entropies=lambda *a, **k: (lp, torch.zeros_like(lp), None),
    )
    inputs = {"prompt_ids": torch.zeros(B, 1, dtype=torch.long), "prompt_mask": torch.ones(B, 1),
              "completion_ids": torch.zeros(B, T, dtype=torch.long), "completion_mask": mask,
              "advantages": adv, "old_per_token_logps": old, "ref_per_token_logps": ref}
    try:
        trl_loss = mod.GRPOTrainer._compute_loss(fake, None, inputs)
    except (AttributeError, KeyError, TypeError) as e:
        pytest.skip(f"TRL's GRPO internals differ in this version: {e}")
    ours, stats = L.grpo_loss(lp, old, ref, adv, mask, 0.2, 0.04, loss_type=loss_type, max_completion_length=T)
    _close(ours, trl_loss, 1e-5)
    _close(stats["kl"], fake._metrics["train"]["kl"][-1], 1e-5)
    _close(stats["clip_fraction"], fake._metrics["train"]["clip_ratio/region_mean"][-1], 1e-5)
