"""``llmctl verl check`` and ``llmctl verl launch``: real parquet, real subprocesses, verl's own config."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llmctl.core.verl.check import build_responses, check_sources, parquet_files, read_rows
from llmctl.core.verl.convert import VerlConvertParams, run
from llmctl.core.verl.launch import LaunchOptions, build_command, build_overrides, verl_config_dir


def _llmctl(*args: str, ws: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "LLMCTL_WORKSPACE": str(ws)}
    return subprocess.run([sys.executable, "-m", "llmctl.core.cli", *args], env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture
def converted(workspace, tmp_path, shared_data):
    src = tmp_path / "gen"
    for rel, real in (("train/game24.jsonl", "game24.jsonl"), ("train/maze.jsonl", "maze.jsonl"),
                      ("test/sudoku.jsonl", "sudoku.jsonl"), ("test/kor.jsonl", "korPuzzle24Points.jsonl"),
                      ("train/bbeh.jsonl", "BbehMultistepArithmetic.jsonl")):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shared_data / "internbootcamp" / real, src / rel)
    run(workspace, VerlConvertParams(src=str(src)), None)
    return workspace


def test_check_passes_on_supported_sources(converted):
    res = _llmctl("verl", "check", "--json", "--rows-per-source", "5", ws=converted.root)
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads(res.stdout)
    assert report["ok"] and len(report["files"]) == 2
    by = {s["data_source"]: s for s in report["sources"]}
    assert set(by) == {"bootcamp/Game24", "bootcamp/Maze", "bootcamp/Sudoku", "bootcamp/KorPuzzle24Points",
                       "bootcamp/BbehMultistepArithmetic"}
    for s in by.values():
        assert (s["rows"], s["correct_ok"], s["correct_built"], s["wrong_ok"]) == (64, 5, 5, 5), s


def test_check_fails_loudly(converted, tmp_path, shared_data):
    import pyarrow as pa
    import pyarrow.parquet as pq

    base = converted.path("data/verl/bootcamp/train/game24.parquet")
    t = pq.read_table(base)
    ds = t.column("data_source").to_pylist()
    rm = t.column("reward_model").to_pylist()
    ds[0] = "bootcamp/NoSuchPuzzle"  # unknown source
    rm[1] = {"style": "rule", "ground_truth": "{truncated"}  # ground truth that does not parse
    rm[2] = {"style": "rule", "ground_truth": json.dumps({"puzzle": "1 1 1 1", "target": 24})}  # unsolvable
    broken = t.set_column(0, "data_source", pa.array(ds)).set_column(3, "reward_model", pa.array(rm, t.schema.field(
        "reward_model").type))
    bad = tmp_path / "bad.parquet"
    pq.write_table(broken, bad)
    res = _llmctl("verl", "check", str(bad), ws=converted.root)
    assert res.returncode == 1
    assert "bootcamp/NoSuchPuzzle" in res.stdout and "FAIL" in res.stdout
    assert "ground truth does not parse" in res.stdout
    checks = {c.data_source: c for c in check_sources(read_rows(parquet_files([bad])), rows_per_source=64)}
    assert not checks["bootcamp/NoSuchPuzzle"].ok
    g = checks["bootcamp/Game24"]
    assert g.bad_ground_truth == 1 and not g.ok and g.correct_built == 61  # row 3 has no solution


def test_check_math_sources():
    rows = [("openai/gsm8k", "18"), ("llmctl/arithmetic", "-7"), ("HuggingFaceH4/MATH-500", "\\frac{3}{4}"),
            ("lighteval/MATH", "p - q"), ("DigitalLearningGmbH/MATH-lighteval", "\\left( 3, \\frac{\\pi}{2} \\right)")]
    checks = check_sources(rows)
    assert all(c.ok and c.correct_ok == c.wrong_ok == 1 for c in checks), [c.to_json() for c in checks]
    good, bad = build_responses("openai/gsm8k", "18")
    assert "<answer>18</answer>" in good and "<answer>19</answer>" in bad


def _cli(*args: str, ws: Path):
    from typer.testing import CliRunner

    from llmctl.core.cli import app

    return CliRunner().invoke(app, [*args, "--workspace", str(ws.root)])


def test_launch_prints_the_command(converted, tmp_path):
    model = tmp_path / "hf_model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    res = _cli("verl", "launch", "--model", str(model), "--n", "4", "--gpus", "2",
               "--reward-kwarg", "format_weight=0.1", ws=converted)
    assert res.exit_code == 0, res.output
    for piece in ("-m verl.trainer.main_ppo", "algorithm.adv_estimator=grpo", "actor_rollout_ref.rollout.n=4",
                  "trainer.n_gpus_per_node=2", f"actor_rollout_ref.model.path={model}",
                  "reward.custom_reward_function.path=pkg://llmctl.core.verl_reward",
                  "reward.custom_reward_function.name=compute_score",
                  "bootcamp_merged/train/bootcamps.parquet", "bootcamp_merged/test/bootcamps.parquet",
                  "+reward.custom_reward_function.reward_kwargs.format_weight=0.1",
                  "+reward.custom_reward_function.reward_kwargs.bootcamp_convention=verl"):
        assert piece in res.output, piece
    if importlib.util.find_spec("ray") is None:  # verl cannot start here: --run says so, runs nothing
        runs = _cli("verl", "launch", "--model", str(model), "--run", ws=converted)
        assert runs.exit_code == 1
        assert "cannot run here" in runs.output or "not installed" in runs.output
    nodata = _cli("verl", "launch", "--model", str(model), "--train", str(tmp_path / "missing.parquet"),
                  ws=converted)
    assert nodata.exit_code == 1 and "not found" in nodata.output


ALL_TASK_FILES = ("BbehMultistepArithmetic.jsonl", "arc.jsonl", "bbehbooleanexpressions.jsonl", "calcudoku.jsonl",
                  "cipher_merged.jsonl", "game24.jsonl", "korLogicResolution.jsonl", "korPuzzle24Points.jsonl",
                  "korPuzzleWordLadder.jsonl", "maze.jsonl", "minesweeper.jsonl", "sudoku.jsonl")


@pytest.fixture
def all_bootcamps(workspace, tmp_path, shared_data):
    src = tmp_path / "all"
    src.mkdir()
    for name in ALL_TASK_FILES:
        shutil.copy(shared_data / "internbootcamp" / name, src / name)
    run(workspace, VerlConvertParams(src=str(src)), None)
    return workspace


def _check_json(ws, env_extra: dict | None = None) -> dict:
    env = {**os.environ, "LLMCTL_WORKSPACE": str(ws.root), **(env_extra or {})}
    res = subprocess.run([sys.executable, "-m", "llmctl.core.cli", "verl", "check", "--json", "--rows-per-source",
                          "64"], env=env, capture_output=True, text=True, timeout=600)
    return {"rc": res.returncode, **json.loads(res.stdout)}


def test_check_on_all_twelve_shared_files(all_bootcamps):
    """All 12 types pass on every row, Arc's 64 included (each of its task keys has a built-in program)."""
    for env in ({}, {"PYTHONPATH": str(Path(__file__).parent / "standin_internbootcamp")}):
        report = _check_json(all_bootcamps, env)
        by = {s["data_source"]: s for s in report["sources"]}
        assert len(by) == 12
        for s in by.values():
            assert s["verifier"] == "built-in"  # the stand-in lacks them all: built-ins score them
            assert s["correct_ok"] == s["correct_built"] >= 8 and s["wrong_ok"] == s["wrong_built"], s
        assert all(s["ok"] for s in by.values()), [s for s in by.values() if not s["ok"]]
        arc = by["bootcamp/Arc"]
        assert (arc["rows"], arc["correct_ok"], arc["wrong_ok"], arc["unscorable"]) == (64, 64, 64, 0), arc
        assert report["rc"] == 0


def test_check_refuses_an_arc_task_without_a_program():
    (c,) = check_sources([("bootcamp/Arc", json.dumps({"input_grid": [[1]], "task_key": "00000000"}))])
    assert not c.ok and c.unscorable == 1
    assert all("does not support this row" in p for p in c.problems)


def test_check_says_what_to_do_about_an_unknown_type():
    from llmctl.core.verl.check import unknown_hint

    (c,) = check_sources([("bootcamp/NoSuchPuzzle", "{}")])
    assert not c.ok and c.verifier == "none"
    assert "llmctl/core/rewards/bootcamp/" in c.problems[0] and "--drop-unscorable" in c.problems[0]
    # a source that is neither ours nor bootcamp: verl's default scorers, installed from the clone
    assert "pip install -e '.[verl]'" in unknown_hint("acme/unknown")


def _with_unknown_rows(ws, tmp_path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    merged = ws.path("data/verl/bootcamp_merged/train/bootcamps.parquet")
    t = pq.read_table(merged)
    ds = t.column("data_source").to_pylist()
    ds[0] = ds[5] = "bootcamp/NoSuchPuzzle"
    out = tmp_path / "with_unknown.parquet"
    pq.write_table(t.set_column(0, "data_source", pa.array(ds)), out)
    return out


def test_launch_refuses_or_drops_rows_without_a_verifier(converted, tmp_path):
    import pyarrow.parquet as pq

    bad = _with_unknown_rows(converted, tmp_path)
    refused = _cli("verl", "launch", "--model", "m", "--train", str(bad), ws=converted)
    assert refused.exit_code == 1
    assert "bootcamp/NoSuchPuzzle: 2 of" in refused.output and "zero reward" in refused.output
    dropped = _cli("verl", "launch", "--model", "m", "--train", str(bad), "--drop-unscorable", ws=converted)
    assert dropped.exit_code == 0, dropped.output
    assert "dropped 2 train rows of bootcamp/NoSuchPuzzle" in dropped.output
    kept = [line for line in dropped.output.split() if "data.train_files=" in line][0].split("=", 1)[1]
    table = pq.read_table(kept)
    assert table.num_rows == pq.read_table(bad).num_rows - 2
    assert "bootcamp/NoSuchPuzzle" not in table.column("data_source").to_pylist()


def test_launch_reports_rows_the_prompt_length_filter_drops(converted, tokenizer):
    import pyarrow.parquet as pq

    from llmctl.core.data.chat import encode_prompt

    merged = converted.path("data/verl/bootcamp_merged/train/bootcamps.parquet")
    t = pq.read_table(merged, columns=["data_source", "prompt"]).to_pylist()
    over = {}
    for r in t:
        if len(encode_prompt(r["prompt"], tokenizer)) > 300:
            over[r["data_source"]] = over.get(r["data_source"], 0) + 1
    assert over  # real bootcamp prompts are long
    res = _cli("verl", "launch", "--model", "m", "--max-prompt-length", "300", ws=converted)
    assert res.exit_code == 0, res.output
    for ds, n in over.items():
        total = sum(1 for r in t if r["data_source"] == ds)
        assert f"train {ds}: {n} of {total} rows have prompts over max_prompt_length=300" in res.output


def test_launch_refuses_bad_reward_settings(converted):
    for kw in ("format_score=5", "format_weight=nan", "ans_threshold=128", "bootcamp_convention=train"):
        res = _cli("verl", "launch", "--model", "m", "--reward-kwarg", kw, ws=converted)
        assert res.exit_code == 1 and kw.split("=")[0] in res.output, res.output


def _compose(overrides: list[str]):
    pytest.importorskip("hydra", reason="hydra-core is not installed (pip install hydra-core omegaconf)")
    cfg_dir = verl_config_dir()
    if cfg_dir is None:
        pytest.skip("verl is not installed: pip install 'verl==0.9.1' --no-deps hydra-core omegaconf")
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(cfg_dir), version_base=None):
        cfg = compose(config_name="ppo_trainer", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True)


def test_overrides_compose_with_verls_own_config(tmp_path):
    opts = LaunchOptions(model=str(tmp_path / "my model"), train_files=["/d/a.parquet", "/d/b,c.parquet"],
                         val_files=["/d/t.parquet"], n=4, gpus=2, reward_kwargs={"format_weight": 0.1},
                         save_dir=str(tmp_path / "ckpt"), extra=["trainer.save_freq=5"])
    cfg = _compose(build_overrides(opts))
    assert cfg["algorithm"]["adv_estimator"] == "grpo"
    assert cfg["data"]["train_files"] == ["/d/a.parquet", "/d/b,c.parquet"]
    assert cfg["data"]["val_files"] == "/d/t.parquet"
    assert cfg["actor_rollout_ref"]["model"]["path"] == str(tmp_path / "my model")
    assert cfg["actor_rollout_ref"]["rollout"]["n"] == 4
    assert cfg["trainer"]["n_gpus_per_node"] == 2 and cfg["trainer"]["save_freq"] == 5
    assert cfg["reward"]["custom_reward_function"] == {"path": "pkg://llmctl.core.verl_reward",
                                                       "name": "compute_score",
                                                       "reward_kwargs": {"format_weight": 0.1}}
    assert build_command(opts)[1:3] == ["-m", "verl.trainer.main_ppo"]


def test_a_wrong_key_fails_composition():
    pytest.importorskip("hydra", reason="hydra-core is not installed (pip install hydra-core omegaconf)")
    from hydra.errors import ConfigCompositionException

    opts = LaunchOptions(model="m", train_files=["/a.parquet"], val_files=[], extra=["trainer.n_gpu_per_node=1"])
    with pytest.raises(ConfigCompositionException):
        _compose(build_overrides(opts))
