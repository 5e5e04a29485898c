"""Checkpoint previews show the values a run used; the config file's only where they differ."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from llmctl.core.previews import flatten_meta, preview


def _ckpt(ws):
    step = ws.checkpoints_dir / "grpo" / "20260101-000000-aaaa" / "step_32"
    step.mkdir(parents=True)
    (step / "model.safetensors").write_bytes(b"\0" * 64)
    used = {"lr": 5e-4, "max_steps": 32, "kl_coef": 0.2, "seed": 1337}
    config = {"lr": 0.001, "max_steps": 60, "kl_coef": 0.2, "seed": 1337}
    (step / "manifest.json").write_text(json.dumps({
        "artifact": "step_32", "config_params": config, "counts": {"step": 32}, "params": used,
        "stage": "grpo"}), encoding="utf-8")
    return step


def test_used_values_first_with_the_config_value_beside_them(workspace):
    pv = preview(_ckpt(workspace))
    pairs = flatten_meta(pv.meta)
    keys = [k for k, _ in pairs]
    assert not any("config_params" in k for k in keys)
    params = [(k, v) for k, v in pairs if k.startswith("manifest.params.")]
    assert params == [("manifest.params.lr", "0.0005  (llmctl.toml: 0.001)"),
                      ("manifest.params.max_steps", "32  (llmctl.toml: 60)"),
                      ("manifest.params.kl_coef", "0.2"), ("manifest.params.seed", "1337")]
    assert keys.index("manifest.stage") < keys.index("manifest.params.lr")


def test_cli_preview_of_a_checkpoint(workspace):
    step = _ckpt(workspace)
    res = subprocess.run([sys.executable, "-m", "llmctl.core.cli", "preview", "ckpt_grpo", "-w", str(workspace.root)],
                         capture_output=True, text=True, env={**os.environ, "COLUMNS": "120"})
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert str(step) in out
    lr = next(line for line in out.splitlines() if "manifest.params.lr" in line)
    assert "0.0005  (llmctl.toml: 0.001)" in lr
    assert out.index("manifest.params.lr") < out.index("manifest.params.kl_coef")
    assert "config_params" not in out
