"""What a newcomer sees when a source cannot be read: one llmctl line, fast when offline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _llmctl(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmctl.core.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd)


def test_bad_local_file_prints_only_llmctls_line(workspace, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "input": "", "output": "b"}\n{"instruction": broken\n')
    res = _llmctl("prepare", "sft", "-w", str(workspace.root), "--sources", "alpaca", "--alpaca", str(bad))
    assert res.returncode == 1
    lines = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("llmctl: error:"), lines
    assert "bad.jsonl:2: invalid JSON" in lines[0]
    assert "pyarrow" not in res.stderr and "Failed to load JSON" not in res.stderr


def test_hub_id_offline_setting_fails_at_once_naming_local_files(workspace):
    res = _llmctl("prepare", "sft", "-w", str(workspace.root), "--sources", "alpaca", "--alpaca", "tatsu-lab/alpaca",
                  env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(workspace.root / "hf-home")})
    assert res.returncode == 1
    assert "Retrying" not in res.stderr
    err = res.stderr.strip().splitlines()
    assert len(err) == 1, err
    assert "tatsu-lab/alpaca[train]: no network (HF_HUB_OFFLINE is set)" in err[0]
    assert "pass a local .jsonl/.json/.parquet file or folder" in err[0]


def test_hub_id_unreachable_endpoint_is_probed_once_not_retried(workspace):
    # port 9 (discard) on loopback refuses at once: the probe names it, datasets never retries
    res = _llmctl("prepare", "sft", "-w", str(workspace.root), "--sources", "alpaca", "--alpaca", "tatsu-lab/alpaca",
                  env={"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(workspace.root / "hf-home"),
                       "HF_HUB_OFFLINE": "", "HF_DATASETS_OFFLINE": "", "HTTPS_PROXY": "", "https_proxy": ""})
    assert res.returncode == 1
    assert "Retrying" not in res.stderr
    assert "no network (cannot connect to 127.0.0.1:9" in res.stderr
    assert "pass a local .jsonl/.json/.parquet file or folder" in res.stderr


def test_probe_reads_offline_variables(monkeypatch):
    from llmctl.core.data import hf_sources

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    assert hf_sources.hub_offline_reason() == "HF_DATASETS_OFFLINE is set"
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert hf_sources.hub_offline_reason().startswith("cannot connect to 127.0.0.1:9")


def test_preflight_names_what_a_stage_lacks_with_the_fix(workspace, monkeypatch, tmp_path):
    from llmctl.core.data.preflight import stage_problems
    from llmctl.core.stages import get_stage, resolve_params

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    stage = get_stage("prepare-sft")
    params = resolve_params(stage, {"sources": ["alpaca", "gsm8k"], "alpaca": str(tmp_path / "nope.jsonl")}, {})
    got = [str(p) for p in stage_problems(workspace, stage, params)]
    assert got == [f"--alpaca {tmp_path / 'nope.jsonl'}: no such file or folder; fix: fix the path given to --alpaca",
                   "--gsm8k openai/gsm8k: a hub id, and no network (HF_HUB_OFFLINE is set); fix: give --gsm8k a "
                   "local .jsonl/.json/.parquet file with the same fields (a copy in the Hugging Face cache loads too)"]
    sft = get_stage("sft")
    assert [str(p) for p in stage_problems(workspace, sft, None)] == [
        "needs sft_packed: not built yet; fix: run `llmctl prepare sft` first"]
    monkeypatch.setenv("LLMCTL_TIKTOKEN_FILE", str(tmp_path / "r50k_base.tiktoken"))
    assert "fix: set LLMCTL_TIKTOKEN_FILE=" in str(stage_problems(workspace, sft, None)[0])
