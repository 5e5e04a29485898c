"""The CLI: init, status, generated stage options, parameter errors, light start-up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib

from typer.testing import CliRunner

from llmctl.core.cli import app
from llmctl.core.stages import ARTIFACTS, STAGES

runner = CliRunner()


def test_init_writes_config(tmp_path):
    ws = tmp_path / "ws"
    res = runner.invoke(app, ["init", "--workspace", str(ws)])
    assert res.exit_code == 0, res.output
    cfg = tomllib.loads((ws / "llmctl.toml").read_text())
    assert cfg["paths"]["data"] == "data"
    for sub in ("data", "runs", "checkpoints"):
        assert (ws / sub).is_dir()
    built = [s.name for s in STAGES if s.built]
    assert set(built) <= set(cfg["stages"])


def test_status_json_lists_every_stage_and_artifact(workspace):
    res = runner.invoke(app, ["status", "--json", "--workspace", str(workspace.root)])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert [s["name"] for s in data["stages"]] == [s.name for s in STAGES]
    assert {a["name"] for a in data["artifacts"]} == {a.name for a in ARTIFACTS}
    states = {s["name"]: s["state"] for s in data["stages"]}
    for st in STAGES:
        if not st.built:
            assert states[st.name] == "not built"
    assert all(a["state"] == "missing" for a in data["artifacts"])


def test_status_without_workspace_is_clear(tmp_path):
    res = runner.invoke(app, ["status", "--workspace", str(tmp_path / "none")])
    assert res.exit_code == 1
    assert "no workspace" in res.output


def test_unknown_set_key_and_bad_config_value(workspace):
    built = [s for s in STAGES if s.built]
    if not built:
        return
    st = built[0]
    res = runner.invoke(app, [*st.command, "--workspace", str(workspace.root), "--set", "no_such_param=1"])
    assert res.exit_code == 2 and "unknown parameter" in res.output


def test_help_is_light():
    code = ("import sys; from llmctl.core.cli import app; "
            "import typer.main; "
            "bad = [m for m in ('torch', 'datasets', 'textual', 'transformers', 'llmctl.trainers') if m in sys.modules]; "
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
    res = subprocess.run([sys.executable, "-m", "llmctl.core.cli", "--help"], capture_output=True, text=True,
                         env={**os.environ, "COLUMNS": "120"})
    assert res.returncode == 0 and "prepare" in res.stdout and "run" in res.stdout


def test_unwritable_workspace_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    res = runner.invoke(app, ["init", "--workspace", str(blocker / "ws")])
    assert res.exit_code == 1
    assert "cannot create workspace" in res.output and str(blocker) in res.output
