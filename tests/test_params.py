"""Stage parameters: composed groups, options that all do something, llmctl.toml checks, old workspaces."""

from __future__ import annotations

import ast
import dataclasses
import json
import re
import shutil
import tomllib
from pathlib import Path

import pytest
import tomli_w
import typer
from typer.testing import CliRunner

from llmctl.core.cli import app
from llmctl.core.params import Optimiser, Rollout, TokenBatches, compose, param, run_only_names
from llmctl.core.rl_params import DPOParams, GRPOParams, PPOParams, RewardParams
from llmctl.core.stages import ParamError, get_stage, resolve_params
from llmctl.core.status import artifact_statuses, changed_params, stage_statuses
from llmctl.core.train_params import PretrainParams, SFTParams
from llmctl.core.workspace import Workspace, WorkspaceError

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "fixtures" / "workspace_before_params"
SHAPE = {"preset", "n_layer", "n_head", "n_embd", "block_size"}
GRPO_OPTIONS = {
    # its own
    "num_iterations", "loss_type", "scale_rewards", "clip_eps_high",
    # start, model shape (for --init scratch), optimiser, schedule
    "init", "resume", *SHAPE, "lr", "weight_decay", "beta1", "beta2", "grad_clip",
    "max_steps", "warmup_steps", "min_lr_ratio",
    # logging and checkpoints, runtime
    "eval_every", "log_every", "save_every", "keep_last", "progress", "tensorboard", "wandb", "wandb_project",
    "seed", "device", "dtype",
    # rollout
    "train_data", "eval_data", "arithmetic_level", "eval_prompts", "eval_samples", "train_prompts", "prompts_per_step",
    "num_generations", "max_new_tokens", "max_prompt_length", "temperature", "top_k", "top_p",
    "micro_batch_size", "clip_eps", "kl_coef", "format_weight", "samples_per_step",
}


def _help(*words: str) -> str:
    res = runner.invoke(app, [*words, "--help"], env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    return res.output


def _trainer_sources(module: str) -> str:
    """The source of a trainer module and every llmctl.trainers module it imports, transitively."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = REPO / "trainers" / (name.rpartition(".")[2] + ".py")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("llmctl.trainers."):
                todo.append(node.module)
            elif isinstance(node, ast.ImportFrom) and node.module == "llmctl.trainers":
                todo += [f"llmctl.trainers.{a.name}" for a in node.names]
    return "\n".join((REPO / "trainers" / (n.rpartition(".")[2] + ".py")).read_text() for n in seen)


def test_grpo_help_lists_exactly_the_options_that_change_grpo():
    out = _help("run", "grpo")
    command = typer.main.get_command(app).commands["run"].commands["grpo"]  # what --help lists
    offered = {p.name for p in command.params} - {"workspace", "set_", "detach", "nproc", "gpus"}
    assert offered == GRPO_OPTIONS
    for gone in ("context_length", "batch_size", "grad_accum", "eval_batches", "compile", "dropout", "peak_tflops"):
        assert f"--{gone.replace('_', '-')}" not in out
    src = _trainer_sources("llmctl.trainers.grpo")
    for name in GRPO_OPTIONS:  # each is read by GRPO's trainer or the pieces it uses
        read = ".model_shape(" in src if name in SHAPE else re.search(rf'\.{name}\b|"{name}"', src)
        assert read, f"--{name} is offered by run grpo but GRPO's trainer never reads it"


def test_stages_hold_only_their_groups():
    token_only = {f.name for f in dataclasses.fields(TokenBatches)}
    for cls in (GRPOParams, PPOParams):
        names = {f.name for f in dataclasses.fields(cls)}
        assert not names & token_only and Rollout in cls.__groups__
    for cls in (RewardParams, DPOParams):
        names = {f.name for f in dataclasses.fields(cls)}
        assert not names & (token_only - {"batch_size", "grad_accum"}) and "max_length" in names
    for cls in (PretrainParams, SFTParams):
        assert token_only <= {f.name for f in dataclasses.fields(cls)}
    assert "eval_batches" in {f.name for f in dataclasses.fields(PretrainParams)}
    assert "eval_batches" not in {f.name for f in dataclasses.fields(SFTParams)}  # SFT scores every held-out row
    p = GRPOParams(lr=5e-4)
    assert p.group(Optimiser) == Optimiser(lr=5e-4, weight_decay=0.0)
    assert SFTParams().lr == 3e-4 and PretrainParams().lr == 1e-3  # per-stage defaults of a group field
    assert {"progress", "device", "compile"} <= run_only_names(PretrainParams)
    assert run_only_names(get_stage("prepare-pretrain").load_params_class()) == {
        "on_error", "resume", "workers", "batch_docs", "chunk_tokens", "flush_tokens"}
    with pytest.raises(TypeError, match="a group already holds it"):
        @compose(Optimiser)
        class Twice:
            lr: float = param("again", 1.0)


def test_help_shows_the_built_in_defaults():
    out = _help("run", "grpo")
    assert re.search(r"--lr .*\(default: 0\.001\)", out)
    assert re.search(r"--train-data .*\(default: data/arithmetic_prompts\.jsonl\)", out)
    assert re.search(r"--scale-rewards .*\(default: on\)", out)
    assert "(default: 1000)" in _help("prepare", "rl")  # arithmetic_n


@pytest.mark.parametrize("args, message", [
    (["--lr", "inf"], "lr: inf is not a finite float"),
    (["--lr", "nan"], "lr: nan is not a finite float"),
    (["--set", "weight_decay=-inf"], "weight_decay: '-inf' is not a finite float"),
    (["--context-length", "100000"], "context_length 100000 is longer than the model's block_size 1024"),
])
def test_bad_run_values_are_one_line(workspace, args, message):
    res = runner.invoke(app, ["run", "pretrain", "-w", str(workspace.root), *args])
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1


def _set_toml(ws: Workspace, table: tuple[str, ...], key: str, value: str) -> None:
    """Set ``key`` of ``table`` in the workspace's llmctl.toml to the TOML expression ``value``."""
    cfg = tomllib.loads(ws.config_path.read_text())
    node = cfg
    for name in table:
        node = node.setdefault(name, {})
    node[key] = tomllib.loads(f"v = {value}")["v"]
    ws.config_path.write_text(tomli_w.dumps(cfg))


def _with_toml(ws: Workspace, text: str) -> Path:
    cfg = ws.config_path
    cfg.write_text(cfg.read_text() + "\n" + text + "\n")
    return cfg


@pytest.mark.parametrize("key, value, message", [
    ("arithmetic_n", "true", "arithmetic_n: True is not a valid int"),
    ("gsm8k", "{a = 1}", "gsm8k: {'a': 1} is not a valid str"),
    ("arithmetic_n", str(2**63 - 1), "arithmetic_n = 9223372036854775807 is out of range: it must be >= 0 and <= "
                                     "1000000 (set in"),
    ("seed", "1.5", "seed: 1.5 is not a valid int"),
])
def test_toml_stage_values_are_checked(workspace, key, value, message):
    _set_toml(workspace, ("stages", "prepare-rl"), key, value)
    ws = Workspace.open(workspace.root)
    with pytest.raises(ParamError) as e:
        resolve_params(get_stage("prepare-rl"), ws.stage_config("prepare-rl"), {}, str(ws.config_path))
    assert message in str(e.value) and "llmctl.toml" in str(e.value)
    res = runner.invoke(app, ["prepare", "rl", "-w", str(workspace.root)])
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output


@pytest.mark.parametrize("table, key, value, message", [
    ("paths", "data", "5", "paths.data must be a string, got 5"),
    ("tokenizer", "file", "123", "tokenizer.file must be a string, got 123"),
    ("paths", "data", '"../../x"', "paths.data = '../../x' leaves the workspace"),
    ("tokenizer", "backend", '"fast"', "tokenizer.backend = 'fast': expected one of auto, riptoken, tiktoken"),
])
def test_toml_paths_and_tokenizer_are_checked(workspace, table, key, value, message):
    _set_toml(workspace, (table,), key, value)
    with pytest.raises(WorkspaceError, match=re.escape(message)):
        Workspace.open(workspace.root)
    res = runner.invoke(app, ["status", "-w", str(workspace.root)])
    assert res.exit_code == 1 and str(workspace.config_path) in res.output and message in res.output
    assert "Traceback" not in res.output


def test_absolute_data_path_is_allowed(workspace, tmp_path):
    _set_toml(workspace, ("paths",), "data", f'"{tmp_path / "elsewhere"}"')
    assert Workspace.open(workspace.root).data_dir == tmp_path / "elsewhere"


def test_unknown_keys_and_tables_warn_with_the_closest(workspace):
    _with_toml(workspace, "[stage.grpo]\nlr = 1\n\n[stages.grpoo]\nlr = 1\n")
    text = workspace.config_path.read_text().replace("[stages.prepare-rl]\n", "[stages.prepare-rl]\narithmetic_m = 3\n")
    workspace.config_path.write_text(text)
    notices = Workspace.open(workspace.root).notices
    assert any("unknown table [stage] (did you mean stages?)" in n for n in notices)
    assert any("unknown table [stages.grpoo] (did you mean grpo?)" in n for n in notices)
    assert any("unknown key arithmetic_m in [stages.prepare-rl] (did you mean arithmetic_n?)" in n for n in notices)
    res = runner.invoke(app, ["status", "-w", str(workspace.root)])
    assert res.exit_code == 0 and res.output.count("llmctl: warning:") == 3


def test_workspace_written_before_composition_is_ready(tmp_path):
    root = tmp_path / "old"
    shutil.copytree(FIXTURE, root)
    ws = Workspace.open(root)
    assert len(ws.notices) == 1 and "dropped keys" in ws.notices[0]
    assert "ppo, grpo: batch_size, compile, context_length, dropout, eval_batches, grad_accum, peak_tflops" \
        in ws.notices[0] and "sft: eval_batches" in ws.notices[0]
    arts = artifact_statuses(ws)
    for name in ("rl_prompts_train", "rl_prompts_test", "arithmetic_prompts"):
        assert arts[name].state == "ready", (name, arts[name].reason)
    assert {s.name: s.state for s in stage_statuses(ws, arts)}["prepare-rl"] == "done"
    p = resolve_params(get_stage("grpo"), ws.stage_config("grpo"), {})
    assert p.max_steps == 60 and not hasattr(p, "context_length")
    res = runner.invoke(app, ["status", "--json", "-w", str(root)])
    assert res.exit_code == 0 and res.output.count("llmctl: warning:") == 1
    # `llmctl init` rewrites the file without the dropped keys: no notice after it
    assert runner.invoke(app, ["init", "-w", str(root)]).exit_code == 0
    assert Workspace.open(root).notices == []
    assert "context_length" not in (root / "llmctl.toml").read_text().split("[stages.grpo]")[1].split("[")[0]


def test_a_parameter_that_disappeared_does_not_make_an_artifact_stale(tmp_path):
    root = tmp_path / "old"
    shutil.copytree(FIXTURE, root)
    mpath = root / "data" / "arithmetic_prompts.jsonl.manifest.json"
    manifest = json.loads(mpath.read_text())
    manifest["config_params"]["retired_knob"] = 7  # a parameter an older version recorded
    del manifest["config_params"]["on_error"]  # a (run-only) parameter it did not have yet
    mpath.write_text(json.dumps(manifest))
    ws = Workspace.open(root)
    assert artifact_statuses(ws)["arithmetic_prompts"].state == "ready"
    cls = get_stage("prepare-rl").load_params_class()
    # (the fixture's levels are kept: level 3 was inserted since, so the default list grew by one)
    want = dataclasses.asdict(cls(arithmetic_n=5, arithmetic_levels=manifest["config_params"]["arithmetic_levels"]))
    assert changed_params(cls, want, manifest["config_params"]) == ["arithmetic_n"]
    assert changed_params(cls, dataclasses.asdict(cls()), {}) == []  # new keys at their default


def test_config_params_reach_the_manifest_without_the_environment(workspace, shared_data, monkeypatch):
    from llmctl.core.data.prepare_rl import PrepareRLParams, run

    monkeypatch.delenv("LLMCTL_CONFIG_PARAMS", raising=False)
    text = workspace.config_path.read_text().replace("arithmetic_n = 1000", "arithmetic_n = 3")
    workspace.config_path.write_text(text)
    ws = Workspace.open(workspace.root)
    run(ws, PrepareRLParams(gsm8k=str(shared_data / "gsm8k"), max_examples=2, arithmetic_n=2,
                            arithmetic_levels=[1]), None)
    manifest = json.loads((ws.data_dir / "arithmetic_prompts.jsonl.manifest.json").read_text())
    assert manifest["params"]["arithmetic_n"] == 2 and manifest["config_params"]["arithmetic_n"] == 3
    assert artifact_statuses(ws)["arithmetic_prompts"].state == "ready"
    assert "LLMCTL_CONFIG_PARAMS" not in "".join(p.read_text() for p in (REPO / "core").rglob("*.py"))


@pytest.mark.parametrize("stage", ["pretrain", "sft", "reward", "dpo", "ppo", "grpo", "eval"])
def test_every_option_of_a_training_stage_is_read_by_its_trainer(stage):
    st = get_stage(stage)
    src = _trainer_sources(st.runner.partition(":")[0])
    unread = [f.name for f in dataclasses.fields(st.load_params_class())
              if not (".model_shape(" in src if f.name in SHAPE else re.search(rf'\.{f.name}\b|"{f.name}"', src))]
    assert unread == [], f"run {stage} offers options its trainer never reads: {unread}"
