"""Helpers shared by the reward / DPO / PPO / GRPO tests: real-data workspaces and warm starts."""

from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn.functional as F

# tiny preset, narrower: the 50k-wide output layer dominates a CPU step, so half the width is
# about half the time; the trainers are the same.
SHAPE = {"n_layer": 2, "n_head": 2, "n_embd": 64, "block_size": 256}


def prefs_workspace(ws, shared_data: Path, max_pairs: int):
    """Real HH-RLHF pairs through ``prepare prefs`` (the local helpful-base file, seeded 80/20 split)."""
    from llmctl.core.data.prepare_prefs import PreparePrefsParams
    from llmctl.core.data.prepare_prefs import run as prepare

    params = PreparePrefsParams(hh_rlhf=[str(shared_data / "hh-rlhf" / "helpful-base-test.jsonl.gz")],
                                ultrafeedback=[], max_pairs=max_pairs, test_fraction=0.2)
    prepare(ws, params)
    return ws


def rl_workspace(ws, shared_data: Path, arithmetic_n: int = 200, levels: tuple[int, ...] = (1,)):
    """GSM8K prompt files and the arithmetic curriculum through ``prepare rl`` (local GSM8K copy)."""
    from llmctl.core.data.prepare_rl import PrepareRLParams
    from llmctl.core.data.prepare_rl import run as prepare

    params = PrepareRLParams(gsm8k=str(shared_data / "gsm8k"), arithmetic_n=arithmetic_n,
                             arithmetic_levels=list(levels), max_examples=200)
    prepare(ws, params)
    return ws


def save_sft(ws, model, name: str = "fresh", step: int = 0) -> Path:
    """Save ``model`` as a ready SFT checkpoint (the RL stages' default start)."""
    from llmctl.trainers.checkpoint import save_checkpoint

    return save_checkpoint(ws.checkpoints_dir / "sft" / name, model, step=step, stage="sft")


def fresh_model(seed: int = 0, **shape: int):
    from llmctl.trainers.model import GPT, GPTConfig

    torch.manual_seed(seed)
    return GPT(GPTConfig(**{**SHAPE, **shape}))


@functools.lru_cache(maxsize=2)
def _arithmetic_sft_state(steps: int, batch_size: int, lr: float, seed: int) -> dict[str, torch.Tensor]:
    from llmctl.core.data.arithmetic import arithmetic_sft_examples
    from llmctl.core.data.chat import encode_chats
    from llmctl.core.tokenizer import EOT_ID, get_tokenizer

    tok = get_tokenizer()
    model = fresh_model(seed)
    examples = encode_chats(arithmetic_sft_examples(steps * batch_size, 1, seed=seed + 11), tok)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.95))
    for step in range(steps):
        batch = examples[step * batch_size:(step + 1) * batch_size]
        T = max(len(ids) for ids, _ in batch)
        ids = torch.full((len(batch), T), EOT_ID)
        mask = torch.zeros(len(batch), T, dtype=torch.bool)
        for b, (row, m) in enumerate(batch):
            ids[b, :len(row)] = torch.tensor(row)
            mask[b, :len(m)] = torch.tensor(m, dtype=torch.bool)
        h = model.hidden_states(ids[:, :-1])
        sel = mask[:, 1:]
        loss = F.cross_entropy(model.lm_head(h[sel]), ids[:, 1:][sel])  # answer tokens only
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def arithmetic_sft(ws, steps: int = 80, batch_size: int = 32, lr: float = 3e-3, seed: int = 0) -> Path:
    """A short SFT on arithmetic level 1 (real curriculum rows, worked answers), saved as the
    workspace's SFT checkpoint. Cached per test session, so GRPO and PPO tests share the work."""
    model = fresh_model(seed)
    model.load_state_dict(_arithmetic_sft_state(steps, batch_size, lr, seed))
    return save_sft(ws, model, name="arith", step=steps)


def reward_rise(stage: str, train: list[dict], extra: str) -> dict[str, tuple[float, float]]:
    """Mean reward, format and correctness over the first and the last four training rows of an
    on-policy run, printed (with ``extra``) and returned as ``{key: (first, last)}``."""
    def mean(key: str, part: list[dict]) -> float:
        return sum(r[key] for r in part) / len(part)

    means = {k: (mean(k, train[:4]), mean(k, train[-4:])) for k in ("reward", "rewards/format", "rewards/correct")}
    print(f"{stage} reward {means['reward'][0]:.3f} -> {means['reward'][1]:.3f}, "
          f"format {means['rewards/format'][0]:.3f} -> {means['rewards/format'][1]:.3f}, "
          f"correct {means['rewards/correct'][0]:.3f} -> {means['rewards/correct'][1]:.3f}, {extra}")
    return means


# a 12-step on-policy run on level-1 arithmetic after the short SFT (held-out check greedy only)
SHORT_RUN = dict(max_steps=12, max_new_tokens=24, micro_batch_size=64, kl_coef=0.0, format_weight=0.5,
                 eval_prompts=32, eval_samples=0, eval_every=0, save_every=0, log_every=1, progress=False,
                 arithmetic_level=1, samples_per_step=8)


def run_after_short_sft(workspace, shared_data: Path, stage: str, params) -> list[dict]:
    """The metrics rows of ``stage`` run with ``params`` on the arithmetic prompts, starting from the
    50-step arithmetic SFT (made once per session)."""
    from stage_support import run_in_process

    ws = rl_workspace(workspace, shared_data)
    arithmetic_sft(ws, steps=50)
    return run_in_process(ws, stage, params)[2]
