"""Helpers for the TUI / GPU / preview tests: a fake NVML module, real small artifacts, run folders.

The only stand-in is :class:`FakeNVML`, a pynvml-shaped module object handed to ``GpuPoller`` at
the NVML boundary (this machine has no GPU). Everything else is real: artifacts are written from
``../shared/data`` with the real tokenizer and the real ArtifactWriter (or the real stage runners
when they are built), jobs are real subprocesses started through ``core.jobs``.
"""

from __future__ import annotations

import io
import json
import sys
import textwrap
from pathlib import Path
from typing import Any

FIXED_TIME = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC: manifests and runs of snapshot workspaces


# ---- NVML ---------------------------------------------------------------------------------------

class NVMLError(Exception):
    """Like ``pynvml.NVMLError``."""


class NVMLError_NotSupported(NVMLError):  # noqa: N801 (pynvml's naming)
    def __str__(self) -> str:
        return "Not Supported"


class _Obj:
    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)


class FakeNVML:
    """A pynvml-like module: ``gpus`` is a list of dicts (name, util, mem_used, mem_total, temp,
    power_mw, limit_mw, procs=[(pid, bytes)]); a value of ``"unsupported"`` raises NotSupported,
    and ``init_error`` makes ``nvmlInit`` fail like a missing driver."""

    NVML_TEMPERATURE_GPU = 0
    NVMLError = NVMLError

    def __init__(self, gpus: list[dict[str, Any]] | None = None, init_error: str | None = None,
                 driver: str = "550.54.15") -> None:
        self.gpus = gpus if gpus is not None else []
        self.init_error = init_error
        self.driver = driver
        self.init_calls = 0
        self.shutdown_calls = 0

    def _v(self, h: int, key: str) -> Any:
        v = self.gpus[h].get(key)
        if v == "unsupported":
            raise NVMLError_NotSupported()
        return v

    def nvmlInit(self) -> None:  # noqa: N802
        self.init_calls += 1
        if self.init_error:
            raise NVMLError(self.init_error)

    def nvmlShutdown(self) -> None:  # noqa: N802
        self.shutdown_calls += 1

    def nvmlSystemGetDriverVersion(self) -> str:  # noqa: N802
        return self.driver

    def nvmlSystemGetCudaDriverVersion(self) -> int:  # noqa: N802
        return 12040

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:  # noqa: N802
        if i >= len(self.gpus):
            raise NVMLError("Invalid Argument")
        return i

    def nvmlDeviceGetName(self, h: int) -> bytes:  # noqa: N802
        return str(self._v(h, "name")).encode()

    def nvmlDeviceGetUUID(self, h: int) -> str:  # noqa: N802
        return f"GPU-fake-{h}"

    def nvmlDeviceGetUtilizationRates(self, h: int) -> Any:  # noqa: N802
        u = self._v(h, "util")
        return _Obj(gpu=u, memory=u // 2 if isinstance(u, int) else 0)

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:  # noqa: N802
        used = self._v(h, "mem_used")
        return _Obj(used=used, total=self.gpus[h]["mem_total"], free=self.gpus[h]["mem_total"] - used)

    def nvmlDeviceGetTemperature(self, h: int, kind: int) -> int:  # noqa: N802
        return self._v(h, "temp")

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:  # noqa: N802
        return self._v(h, "power_mw")

    def nvmlDeviceGetEnforcedPowerLimit(self, h: int) -> int:  # noqa: N802
        return self._v(h, "limit_mw")

    def nvmlDeviceGetFanSpeed(self, h: int) -> int:  # noqa: N802
        raise NVMLError_NotSupported()

    def nvmlDeviceGetComputeRunningProcesses(self, h: int) -> list[Any]:  # noqa: N802
        procs = self._v(h, "procs")
        return [_Obj(pid=pid, usedGpuMemory=used) for pid, used in procs or []]

    def nvmlDeviceGetGraphicsRunningProcesses(self, h: int) -> list[Any]:  # noqa: N802
        self._v(h, "procs")
        return []


def h100(util: int = 37, procs: list[tuple[int, int]] | None = None) -> dict[str, Any]:
    return {"name": "NVIDIA H100 80GB HBM3", "util": util, "mem_used": 30 << 30, "mem_total": 80 << 30,
            "temp": 54, "power_mw": 250_000, "limit_mw": 700_000, "procs": procs or []}


# ---- artifacts from the shared data --------------------------------------------------------------

def texts_from(shared: Path, n: int = 12) -> list[str]:
    """``n`` real documents: C4 demo rows."""
    out = []
    with open(shared / "pile-sample" / "c4_demo.jsonl", encoding="utf-8") as f:
        for line in f:
            out.append(json.loads(line)["text"])
            if len(out) >= n:
                break
    return out


def write_tokens_h5(path: Path, texts: list[str], tokenizer: Any, created: float | None = None) -> int:
    """A flat token file in the prepare-pretrain layout (``tokens`` int32 + EOT after each doc)."""
    import h5py
    import numpy as np

    from llmctl.core.artifacts import ArtifactWriter

    ids: list[int] = []
    for t in tokenizer.encode_batch(texts):
        ids.extend(t)
        ids.append(tokenizer.eot_id)
    extra = {"created": created} if created else {}
    with ArtifactWriter(path, stage="prepare-pretrain") as w:
        with h5py.File(w.tmp, "w") as f:
            f.create_dataset("tokens", data=np.asarray(ids, dtype=np.int32))
            f.attrs["tokenizer"] = json.dumps(tokenizer.describe())
            f.attrs["n_tokens"] = len(ids)
            f.attrs["n_documents"] = len(texts)
        w.commit(counts={"tokens": len(ids), "documents": len(texts)}, **extra)
    return len(ids)


def write_sft_h5(path: Path, shared: Path, tokenizer: Any, seq_len: int = 128, n: int = 8,
                 created: float | None = None) -> int:
    """Packed chat rows (``tokens``, ``loss_mask``, ``example_ids``) from real Alpaca records."""
    import h5py
    import numpy as np

    from llmctl.core.artifacts import ArtifactWriter

    recs = json.loads((shared / "alpaca" / "alpaca_small.json").read_text(encoding="utf-8"))[:n]
    rows_t, rows_m, rows_e = [], [], []
    cur_t: list[int] = []
    cur_m: list[int] = []
    cur_e: list[int] = []
    for i, r in enumerate(recs):
        prompt = tokenizer.encode(f"User:\n{r['instruction']}\nAssistant:\n")
        answer = tokenizer.encode(r["output"]) + [tokenizer.eot_id]
        ex_t = (prompt + answer)[:seq_len]
        ex_m = ([0] * len(prompt) + [1] * len(answer))[:seq_len]
        if len(cur_t) + len(ex_t) > seq_len:
            rows_t.append(cur_t)
            rows_m.append(cur_m)
            rows_e.append(cur_e)
            cur_t, cur_m, cur_e = [], [], []
        cur_t += ex_t
        cur_m += ex_m
        cur_e += [i] * len(ex_t)
    rows_t.append(cur_t)
    rows_m.append(cur_m)
    rows_e.append(cur_e)
    pad = seq_len
    tok = np.full((len(rows_t), pad), tokenizer.eot_id, dtype=np.int32)
    mask = np.zeros((len(rows_t), pad), dtype=np.uint8)
    exs = np.full((len(rows_t), pad), -1, dtype=np.int32)
    for j, (t, m, e) in enumerate(zip(rows_t, rows_m, rows_e, strict=True)):
        tok[j, :len(t)], mask[j, :len(m)], exs[j, :len(e)] = t, m, e
    extra = {"created": created} if created else {}
    with ArtifactWriter(path, stage="prepare-sft") as w:
        with h5py.File(w.tmp, "w") as f:
            f.create_dataset("tokens", data=tok)
            f.create_dataset("loss_mask", data=mask)
            f.create_dataset("example_ids", data=exs)
            f.attrs["seq_len"] = seq_len
            f.attrs["tokenizer"] = json.dumps(tokenizer.describe())
        w.commit(counts={"rows": len(rows_t), "examples": len(recs)}, **extra)
    return len(rows_t)


def write_jsonl(path: Path, rows: list[dict[str, Any]], stage: str, created: float | None = None) -> None:
    from llmctl.core.artifacts import ArtifactWriter

    extra = {"created": created} if created else {}
    with ArtifactWriter(path, stage=stage) as w:
        w.tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        w.commit(counts={"rows": len(rows)}, **extra)


def gsm8k_rows(shared: Path, n: int = 30, split: str = "train") -> list[dict[str, Any]]:
    out = []
    with open(shared / "gsm8k" / f"{split}.jsonl", encoding="utf-8") as f:
        for i, line in enumerate(f):
            r = json.loads(line)
            out.append({"prompt": r["question"], "gold": r["answer"].rsplit("####", 1)[-1].strip(),
                        "data_source": "openai/gsm8k", "index": i})
            if len(out) >= n:
                break
    return out


def preference_rows(shared: Path, n: int = 20) -> list[dict[str, Any]]:
    out = []
    with open(shared / "ultrafeedback" / "ultrafeedback_binarized.eval_clean.jsonl", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            out.append({"prompt": [{"role": "user", "content": r["prompt"]}],
                        "chosen": [{"role": "assistant", "content": r["chosen"]}],
                        "rejected": [{"role": "assistant", "content": r["rejected"]}],
                        "source": "ultrafeedback"})
            if len(out) >= n:
                break
    return out


def write_verl_parquet(folder: Path, shared: Path, n: int = 25, created: float | None = None) -> None:
    """verl's gsm8k schema (data_source, prompt chat list, ability, reward_model, extra_info)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from llmctl.core.artifacts import ArtifactWriter

    rows = gsm8k_rows(shared, n)
    extra = {"created": created} if created else {}
    with ArtifactWriter(folder, stage="verl-convert") as w:
        for split in ("train", "test"):
            d = w.tmp / "gsm8k_for_verl" / split
            d.mkdir(parents=True)
            table = pa.Table.from_pylist([
                {"data_source": r["data_source"], "prompt": [{"role": "user", "content": r["prompt"]}],
                 "ability": "math", "reward_model": {"style": "rule", "ground_truth": r["gold"]},
                 "extra_info": {"split": split, "index": r["index"]}} for r in rows])
            pq.write_table(table, d / f"{split}.parquet", row_group_size=10)
        w.commit(counts={"files": 2, "rows": 2 * len(rows)}, **extra)


def write_checkpoint(ws: Any, stage: str, run: str, step: int, created: float | None = None) -> Path:
    d = ws.checkpoints_dir / stage / run / f"step_{step}"
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"n_layer": 2, "n_head": 2, "n_embd": 128}), encoding="utf-8")
    (d / "model.safetensors").write_bytes(b"\0" * 1024)
    man = {"stage": stage, "step": step, "created": created or FIXED_TIME, "counts": {"step": step}}
    (d / "manifest.json").write_text(json.dumps(man), encoding="utf-8")
    return d


def write_run(ws: Any, stage: str, run_id: str, *, state: str = "done", steps: int = 50, started: float = FIXED_TIME,
              params: dict[str, Any] | None = None, samples: int = 0, loss0: float = 4.0) -> Path:
    """A finished run folder: job.json, log.txt, metrics.jsonl, provenance.json (+ samples.jsonl)."""
    import math

    d = ws.runs_dir / stage / run_id
    d.mkdir(parents=True)
    job = {"stage": stage, "state": state, "started": started, "ended": started + 10 * steps,
           "exit_code": 0 if state == "done" else 1, "command": ["llmctl", "run", stage], "run_dir": str(d)}
    (d / "job.json").write_text(json.dumps(job), encoding="utf-8")
    (d / "log.txt").write_text("".join(f"step {i} loss {loss0 * math.exp(-i / 30):.4f}\n" for i in range(steps)),
                               encoding="utf-8")
    with open(d / "metrics.jsonl", "w", encoding="utf-8") as f:
        for i in range(1, steps + 1):
            row = {"step": i, "time": i * 1.0, "train/loss": round(loss0 * math.exp(-i / 30) + 0.5, 4),
                   "lr": 6e-4, "tokens_per_s": 12000.0 + i, "mfu": 0.31}
            if i % 10 == 0:
                row["eval/loss"] = round(loss0 * math.exp(-i / 30) + 0.7, 4)
            f.write(json.dumps(row) + "\n")
    prov = {"stage": stage, "params": params or {"max_steps": steps, "lr": 6e-4, "batch_size": 8}, "seed": 1}
    (d / "provenance.json").write_text(json.dumps(prov), encoding="utf-8")
    if samples:
        with open(d / "samples.jsonl", "w", encoding="utf-8") as f:
            for i in range(samples):
                f.write(json.dumps({"step": i, "prompt": f"What is {i} + {i}?", "completion": f"<answer>{2 * i}</answer>",
                                    "extracted": str(2 * i), "gold": str(2 * i), "reward": 1.0,
                                    "reward/format": 0.1, "reward/correct": 0.9}) + "\n")
    return d


def write_eval(ws: Any, run_id: str, shared: Path, n: int = 12) -> Path:
    d = ws.runs_dir / "eval" / run_id
    d.mkdir(parents=True)
    rows = gsm8k_rows(shared, n, split="test")
    with open(d / "gsm8k.jsonl", "w", encoding="utf-8") as f:
        for i, r in enumerate(rows):
            parsed = r["gold"] if i % 3 == 0 else "7"
            f.write(json.dumps({"prompt": r["prompt"], "output": f"The answer is {parsed}.", "parsed": parsed,
                                "gold": r["gold"], "score": float(parsed == r["gold"])}) + "\n")
    (d / "results.json").write_text(json.dumps({"gsm8k/accuracy": 0.33, "gsm8k/n": n, "checkpoint": "sft/x/step_50"}),
                                    encoding="utf-8")
    (d / "job.json").write_text(json.dumps({"stage": "eval", "state": "done", "started": FIXED_TIME,
                                            "ended": FIXED_TIME + 30, "exit_code": 0}), encoding="utf-8")
    return d


def build_workspace(ws: Any, shared: Path, tokenizer: Any, created: float | None = FIXED_TIME) -> None:
    """A deterministic workspace with one of every kind of artifact and a few finished runs."""
    write_tokens_h5(ws.path("data/pile_train.h5"), texts_from(shared, 12), tokenizer, created)
    write_tokens_h5(ws.path("data/pile_dev.h5"), texts_from(shared, 14)[12:], tokenizer, created)
    write_sft_h5(ws.path("data/sft_packed.h5"), shared, tokenizer, created=created)
    write_jsonl(ws.path("data/preferences.jsonl"), preference_rows(shared, 20), "prepare-prefs", created)
    write_jsonl(ws.path("data/rl_prompts_train.jsonl"), gsm8k_rows(shared, 30), "prepare-rl", created)
    write_verl_parquet(ws.path("data/verl"), shared, created=created)
    write_checkpoint(ws, "pretrain", "20260101-000000-aaaa", 50, created)
    write_run(ws, "pretrain", "20260101-000000-aaaa", steps=50)
    write_run(ws, "pretrain", "20260101-010000-bbbb", steps=40, started=FIXED_TIME + 3600,
              params={"max_steps": 40, "lr": 3e-4, "batch_size": 8}, loss0=4.5)
    write_run(ws, "grpo", "20260101-020000-cccc", steps=20, started=FIXED_TIME + 7200, samples=6)
    write_eval(ws, "20260101-030000-dddd", shared)


# ---- a real job that trains like a trainer does ----------------------------------------------------

JOB_SCRIPT = textwrap.dedent('''
    import json, math, os, signal, sys, time
    from pathlib import Path
    from llmctl.core.metrics import MetricsWriter
    run = Path(os.environ["LLMCTL_RUN_DIR"])
    steps, delay = int(sys.argv[1]), float(sys.argv[2])
    stop = False
    def term(*_):
        global stop
        stop = True
    signal.signal(signal.SIGTERM, term)
    (run / "provenance.json").write_text(json.dumps({"stage": "pretrain", "params": {"max_steps": steps}}))
    m = MetricsWriter(run / "metrics.jsonl")
    with open(run / "samples.jsonl", "a") as s:
        for i in range(1, steps + 1):
            if stop:
                print("caught SIGTERM: checkpoint saved at step", i - 1, flush=True)
                sys.exit(130)  # like a trainer's Cancelled: the supervisor records "cancelled"
            loss = 4.0 * math.exp(-i / 20) + 0.5
            m.log(i, {"train/loss": loss, "lr": 1e-3, "tokens_per_s": 1000.0 + i})
            s.write(json.dumps({"step": i, "prompt": f"What is {i} + 1?", "completion": f"{i + 1}",
                                "extracted": str(i + 1), "gold": str(i + 1), "reward": 1.0}) + "\\n")
            s.flush()
            print(f"step {i}/{steps} loss {loss:.4f}", flush=True)
            time.sleep(delay)
    print("done", flush=True)
''')


def start_training_job(ws: Any, steps: int = 400, delay: float = 0.05, stage: str = "pretrain") -> Path:
    """Start a real subprocess through core.jobs that logs, writes metrics and rollouts, obeys SIGTERM."""
    from llmctl.core.jobs import start_job

    script = ws.root / "fake_trainer.py"
    script.write_text(JOB_SCRIPT, encoding="utf-8")
    return start_job(ws.runs_dir, stage, [sys.executable, str(script), str(steps), str(delay)], workspace=ws.root)


# ---- looking at the screen ---------------------------------------------------------------------------

def screen_text(app: Any) -> str:
    """The current screen as plain text (what a person would read)."""
    from rich.console import Console

    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True,
                      color_system="truecolor", record=True, legacy_windows=False, safe_box=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text(styles=False)


async def wait_for(pilot: Any, cond: Any, timeout: float = 20.0, step: float = 0.1) -> bool:
    """Pause the pilot until ``cond()`` is true (or time out): polling, not a timed assertion."""
    import time as _time

    deadline = _time.monotonic() + timeout
    while _time.monotonic() < deadline:
        if cond():
            return True
        await pilot.pause(step)
    return bool(cond())
