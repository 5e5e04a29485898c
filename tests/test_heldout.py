"""The held-out table's arithmetic (core/heldout.py) and its measurement on a real model (trainers/heldout.py)."""

from __future__ import annotations

import pytest

from llmctl.core import heldout


def test_table_folds_outcomes_per_level():
    outs = [heldout.outcome(1, 1, correct=8, k=8, fmt=1.0, length=10),
            heldout.outcome(0, 1, correct=2, k=8, fmt=0.5, length=20),
            heldout.outcome(0, 3, correct=0, k=8, fmt=1.0, length=30)]
    tab = heldout.table(outs, 8, 1.0)
    assert tab["n"] == 3 and tab["all"]["greedy"] == pytest.approx(1 / 3)
    assert tab["all"]["pass@1"] == pytest.approx((1 + 0.25 + 0) / 3)  # mean of right/k per prompt
    assert tab["all"]["pass@k"] == pytest.approx(2 / 3)  # prompts with at least one right sample
    assert tab["levels"]["1"]["pass@1"] == pytest.approx(0.625) and tab["levels"]["3"]["n"] == 1
    m = heldout.metrics(tab)
    assert m["eval/accuracy"] == tab["all"]["greedy"] and m["eval/level_3/pass@1"] == 0.0
    assert "pass@1" not in heldout.table(outs, 0, 1.0)["all"]  # greedy only without samples
    before = tab
    after = heldout.table([heldout.outcome(1, 1, 8, 8), heldout.outcome(1, 1, 4, 8), heldout.outcome(0, 3, 1, 8)], 8, 1.0)
    assert heldout.change_lines(before, after) == ["held-out pass@1 (T=1, k=8): 0.42 -> 0.54",
                                                   "held-out greedy accuracy: 0.33 -> 0.67"]
    rows = heldout.side_by_side({"after": after, "before": before})
    assert rows[0] == ["held-out (3 prompts)", "before", "after"]
    assert ["level 3 pass@1", "0.00", "0.12"] in rows


def test_measure_matches_the_verifier_on_a_real_model(workspace, shared_data):
    """On a fresh tiny model and real arithmetic prompts: greedy and sampled outcomes agree with
    scoring the generated texts one by one, and the same seed gives the same table."""
    from rl_support import fresh_model, rl_workspace

    from llmctl.core.rewards.verifier import score
    from llmctl.trainers import heldout as measure
    from llmctl.trainers.generate import generate
    from llmctl.trainers.rollout import decode_completion, load_prompt_rows, prompt_ids

    ws = rl_workspace(workspace, shared_data)
    tok = ws.tokenizer()
    rows = load_prompt_rows([ws.path("data/arithmetic_prompts.jsonl")], 1)[:5]
    prompts = [prompt_ids(r, tok, 128) for r in rows]
    model = fresh_model()
    outs = measure.measure(model, prompts, rows, tok, k=3, temperature=1.0, max_new_tokens=6, batch_size=2, seed=7)
    again = measure.measure(model, prompts, rows, tok, k=3, temperature=1.0, max_new_tokens=6, batch_size=2, seed=7)
    assert outs == again and len(outs) == 5 and all(o["k"] == 3 and o["level"] == 1 for o in outs)
    greedy = generate(model, prompts, 6, temperature=0.0)
    for o, ids, r in zip(outs, greedy, rows, strict=True):
        assert o["greedy"] == float(score(decode_completion(ids, tok), r["gold"]).correct)
