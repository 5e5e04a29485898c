"""The report card's chart choice: headline curves first, per-phase timings left out."""

from __future__ import annotations

from llmctl.core.cli.report import MAX_CHARTS_PER_RUN, _chart_groups

# the metric keys a GRPO run logs (trainers/grpo.py), sorted as summarize_metrics gives them
GRPO_KEYS = sorted(["reward", "reward_std", "frac_reward_zero_std", "rewards/correct", "rewards/format", "kl",
                    "clip_fraction", "entropy", "loss", "completions/mean_length", "completions/clipped_ratio",
                    "grad_norm", "lr", "time/generation", "time/reward", "time/update", "rollout_tokens_per_s",
                    "eval/accuracy", "eval/format", "eval/mean_length"])


def test_grpo_report_leads_with_reward_and_held_out_accuracy():
    titles = [t for t, _ in _chart_groups(GRPO_KEYS)]
    assert titles[:4] == ["reward", "rewards/correct", "eval/accuracy", "kl"]
    assert len(titles) == MAX_CHARTS_PER_RUN and not any(t.startswith("time/") for t in titles)
    assert titles[4:] == sorted(titles[4:])  # the rest alphabetically


def test_train_and_eval_losses_share_the_first_chart():
    groups = _chart_groups(["eval/loss", "lr", "mfu", "time/step", "tokens_per_s", "train/loss"])
    assert groups == [("loss", ["eval/loss", "train/loss"]), ("tokens_per_s", ["tokens_per_s"]), ("mfu", ["mfu"]),
                      ("lr", ["lr"])]
