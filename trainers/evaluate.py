"""``llmctl eval``: dev loss / perplexity, GSM8K and arithmetic accuracy of a checkpoint.

Questions are rendered as the chat prompt the SFT and RL stages train on
(``prompts.question_messages`` + ``chat.encode_prompt``), answered by greedy generation and scored
by the shared verifier (``core.verifier.score``). Writes ``runs/eval/<run_id>/results.json`` and
one line per question to ``examples.jsonl`` (prompt, output, parsed answer, gold, score).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from llmctl.core import heldout
from llmctl.core.artifacts import newest_checkpoint
from llmctl.core.atomic import write_json
from llmctl.core.metrics import MetricsWriter
from llmctl.core.runs import METRICS_FILE, write_provenance
from llmctl.core.train_params import EvalParams
from llmctl.core.workspace import Workspace
from llmctl.trainers import heldout as heldout_measure
from llmctl.trainers.batches import fixed_token_batches
from llmctl.trainers.checkpoint import find_checkpoint, load_model
from llmctl.trainers.distributed import dist_env
from llmctl.trainers.generate import generate
from llmctl.trainers.loop import autocast, input_fingerprint, resolve_device, resolve_dtype
from llmctl.trainers.pretrain import EVAL_SEED
from llmctl.trainers.rollout import load_prompt_rows, split_eval

STAGE = "eval"
CANDIDATE_STAGES = ("grpo", "ppo", "dpo", "sft", "pretrain")
RESULTS = "results.json"
EXAMPLES = "examples.jsonl"


def find_eval_checkpoint(ws: Workspace, ckpt: str | None) -> Path:
    """``ckpt`` (a folder or a stage name), else the newest checkpoint of the latest stage that has one."""
    if ckpt:
        return find_checkpoint(ws, ckpt)
    for stage in CANDIDATE_STAGES:
        found = newest_checkpoint(ws.checkpoints_dir / stage)
        if found is not None:
            return found
    raise FileNotFoundError(f"no checkpoint under {ws.checkpoints_dir}; train one or pass --ckpt")


def read_jsonl(path: Path, n: int) -> list[dict[str, Any]]:
    """The first ``n`` records of a JSONL file."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
                if len(rows) >= n:
                    break
    return rows


def arithmetic_rows(ws: Workspace, params: EvalParams) -> tuple[list[dict[str, Any]], str]:
    """Arithmetic questions from the prompts file (filtered by level; with ``arithmetic_heldout``, the
    prompts a GRPO/PPO run of the same seed holds out), else freshly generated."""
    path = ws.path(params.arithmetic_data)
    if params.arithmetic_heldout:
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing (run `llmctl prepare rl`); --arithmetic-heldout needs it")
        rows = load_prompt_rows([path], params.arithmetic_level)
        return split_eval(rows, params.arithmetic_heldout, params.seed)[1], f"{path} (held out, seed {params.seed})"
    if path.exists():
        rows = [r for r in read_jsonl(path, 10**9) if not params.arithmetic_level
                or int(r.get("level", 0)) == params.arithmetic_level]
        return rows[: params.arithmetic_n], str(path)
    from llmctl.core.data.arithmetic import MAX_LEVEL, generate_problems

    levels = [params.arithmetic_level] if params.arithmetic_level else list(range(1, MAX_LEVEL + 1))
    per = -(-params.arithmetic_n // len(levels))
    rows = [r for lv in levels for r in generate_problems(per, lv, seed=params.seed)]
    return rows[: params.arithmetic_n], "generated"


def encode_question(question: str, tok: Any, chat: bool) -> tuple[list[int], str]:
    """Prompt ids and text for one question: the chat prompt, or the bare formatted question."""
    from llmctl.core.data.prompts import format_question, question_messages

    if chat:
        from llmctl.core.data.chat import encode_prompt, render_prompt

        messages = question_messages(question)
        return encode_prompt(messages, tok), render_prompt(messages)
    text = format_question(question) + "\n"
    return tok.encode(text), text


def answer_questions(model: Any, tok: Any, rows: list[dict[str, Any]], params: EvalParams, task: str,
                     dtype: torch.dtype) -> list[dict[str, Any]]:
    """Greedy answers to ``rows`` (``prompt``, ``gold``) scored by the verifier; one record per row."""
    from llmctl.core.rewards.verifier import score

    out = []
    for i in range(0, len(rows), params.batch_size):
        chunk = rows[i:i + params.batch_size]
        encoded = [encode_question(r["prompt"], tok, params.chat) for r in chunk]
        completions = generate(model, [ids for ids, _ in encoded], params.max_new_tokens, temperature=0.0,
                               eos_id=tok.eot_id, dtype=dtype)
        for j, (r, (_, text), ids) in enumerate(zip(chunk, encoded, completions, strict=True), start=i):
            body = ids[:-1] if ids and ids[-1] == tok.eot_id else ids
            output = tok.decode(body)
            res = score(output, str(r["gold"]))
            out.append({"task": task, "index": r.get("index", j), "prompt": text, "output": output,
                        "parsed": res.extracted, "gold": str(r["gold"]), "score": res.correct,
                        "format": res.format, "stopped": bool(ids) and ids[-1] == tok.eot_id,
                        **({"level": r["level"]} if "level" in r else {})})
    return out


def heldout_tables(ws: Workspace, model: Any, ckpt: Path, tok: Any, rows: list[dict[str, Any]], params: EvalParams,
                   device: torch.device, dtype: torch.dtype) -> dict[str, dict[str, Any]]:
    """The held-out table of the checkpoint on ``rows`` (``{"checkpoint": table}``), or, with a
    ``baseline``, ``{"before": baseline's, "after": checkpoint's}`` on the same questions and seeds."""
    prompts = [encode_question(r["prompt"], tok, params.chat)[0] for r in rows]

    def measure(m: Any) -> dict[str, Any]:
        outs = heldout_measure.measure(m, prompts, rows, tok, k=params.samples, temperature=params.temperature,
                                       max_new_tokens=params.max_new_tokens, batch_size=params.batch_size,
                                       dtype=dtype, seed=params.seed * 1_000_003)
        return heldout.table(outs, params.samples, params.temperature)

    if not params.baseline:
        return {"checkpoint": measure(model)}
    base = find_checkpoint(ws, params.baseline)
    before = {"ckpt": str(base), **measure(load_model(base, device))}
    return {"before": before, "after": {"ckpt": str(ckpt), **measure(model)}}


def run(ws: Workspace, params: EvalParams, run_dir: Path) -> dict[str, Any]:
    """Evaluate a checkpoint; return (and write) the results."""
    if dist_env().rank != 0:  # evaluation runs on one process
        return {}
    t0 = time.time()
    device = resolve_device(params.device)
    dtype = resolve_dtype(params.dtype, device)
    ckpt = find_eval_checkpoint(ws, params.ckpt)
    model = load_model(ckpt, device)
    tok = ws.tokenizer()
    manifest = json.loads((ckpt / "manifest.json").read_text())
    step = int(manifest.get("counts", {}).get("step", 0))
    results: dict[str, Any] = {"ckpt": str(ckpt), "ckpt_stage": manifest.get("stage"), "ckpt_step": step}
    inputs: dict[str, Any] = {"ckpt": str(ckpt)}
    print(f"eval: {ckpt} ({model.num_params() / 1e6:.1f}M parameters) on {device}", flush=True)

    dev_path = ws.path(params.dev_data)
    if params.dev_batches and dev_path.exists():
        T = min(params.context_length or model.config.block_size, model.config.block_size)
        batches = fixed_token_batches(dev_path, T, params.batch_size, params.dev_batches, EVAL_SEED, device)
        tot = n = 0.0
        with torch.no_grad(), autocast(device, dtype):
            for b in batches:
                _, loss = model(b["x"], b["y"])
                tot += float(loss) * b["y"].numel()
                n += b["y"].numel()
        results["dev_loss"] = tot / n
        results["dev_perplexity"] = math.exp(min(results["dev_loss"], 50.0))
        results["dev_tokens"] = int(n)
        inputs["pile_dev"] = input_fingerprint(dev_path)
        print(f"eval: dev loss {results['dev_loss']:.4f} (perplexity {results['dev_perplexity']:.1f})", flush=True)

    examples: list[dict[str, Any]] = []
    tasks: list[tuple[str, list[dict[str, Any]], str]] = []
    gsm_path = ws.path(params.gsm8k_data)
    if params.gsm8k_n:
        if gsm_path.exists():
            tasks.append(("gsm8k", read_jsonl(gsm_path, params.gsm8k_n), str(gsm_path)))
            inputs["rl_prompts_test"] = input_fingerprint(gsm_path)
        else:
            print(f"eval: {gsm_path} is missing (run `llmctl prepare rl`); skipping GSM8K", flush=True)
    if params.arithmetic_n:
        rows, source = arithmetic_rows(ws, params)
        tasks.append(("arithmetic", rows, source))
        inputs["arithmetic_prompts"] = input_fingerprint(Path(source)) if source != "generated" else "generated"
        results["arithmetic_level"] = params.arithmetic_level
    for task, rows, source in tasks:
        done = answer_questions(model, tok, rows, params, task, dtype)
        correct = sum(r["score"] for r in done)
        results[f"{task}_n"] = len(done)
        results[f"{task}_correct"] = int(correct)
        results[f"{task}_accuracy"] = correct / len(done) if done else 0.0
        results[f"{task}_format"] = sum(r["format"] for r in done) / len(done) if done else 0.0
        results[f"{task}_source"] = source
        examples += done
        print(f"eval: {task} accuracy {results[f'{task}_accuracy']:.3f} ({int(correct)}/{len(done)})", flush=True)
        if task == "arithmetic" and (params.samples or params.baseline):
            tables = results["heldout"] = heldout_tables(ws, model, ckpt, tok, rows, params, device, dtype)
            lines = (heldout.change_lines(tables["before"], tables["after"]) if "before" in tables else
                     [heldout.summary_line(tables["checkpoint"])])
            for line in lines:
                print(f"eval: {line}", flush=True)

    results.update(max_new_tokens=params.max_new_tokens, chat=params.chat, seconds=round(time.time() - t0, 2))
    write_provenance(run_dir, stage=STAGE, params=dataclasses.asdict(params), seed=params.seed, tokenizer=tok.describe(),
                     inputs=inputs)
    with open(run_dir / (EXAMPLES + ".tmp"), "w", encoding="utf-8") as f:
        for r in examples:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    (run_dir / (EXAMPLES + ".tmp")).replace(run_dir / EXAMPLES)
    with MetricsWriter(run_dir / METRICS_FILE) as m:
        m.log(step, {f"eval/{k}": v for k, v in results.items()
                     if k in ("dev_loss", "gsm8k_accuracy", "arithmetic_accuracy")})
    write_json(run_dir / RESULTS, results)
    print(f"eval: results in {run_dir / RESULTS}", flush=True)
    return results
