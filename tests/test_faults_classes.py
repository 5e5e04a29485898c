"""Fault classes, not instances: every prepare stage and ``verl convert`` against hostile input, a
symlink at its temporary name, a full disk and a SIGKILL at its renames, on tiny real fixtures."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from faults_support import (
    BAD_LINE,
    FAULTS,
    STAGE_IDS,
    STAGES,
    error_line,
    fixture,
    hostile,
    invoke,
    real_lines,
    run_killed_at,
    snapshot,
)

from llmctl.core.artifacts import artifact_status, read_manifest

pytestmark = pytest.mark.usefixtures("_quiet")


@pytest.fixture
def _quiet(monkeypatch, tmp_path):
    monkeypatch.delenv("LLMCTL_RUN_DIR", raising=False)
    monkeypatch.setenv("LLMCTL_NO_PROGRESS", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def _skipped(ws: Path, rel: str) -> int:
    man = read_manifest(ws / rel) or {}
    return int(man.get("counts", {}).get("skipped", 0))


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("case", STAGES, ids=STAGE_IDS)
def test_input_fault_is_one_line_naming_file_line_field(case, fault, shared_data, tmp_path):
    src, line, fld = hostile(case, shared_data, tmp_path / "in", fault)
    code, _, err = invoke(case.argv(tmp_path / "ws", src))
    assert code != 0
    msg = error_line(err)
    assert src.name in msg, msg
    if line is not None:
        assert f"{src.name}:{line}:" in msg, msg
    if fld is not None:
        assert f"field '{fld}'" in msg, msg
    if fault in ("truncated", "corrupt") and case.gz:
        assert re.search(rf"{re.escape(src.name)}:\d+: (truncated|corrupt) gzip stream", msg), msg
    if fault == "empty":
        assert re.search(r"empty|no records|no documents", msg), msg
    for rel in case.artifacts:
        assert artifact_status(tmp_path / "ws" / rel).state != "ready"


@pytest.mark.parametrize("fault", [f for f in FAULTS if f != "empty"])
@pytest.mark.parametrize("case", STAGES, ids=STAGE_IDS)
def test_input_fault_skip_is_counted_honestly(case, fault, shared_data, tmp_path):
    src, _, _ = hostile(case, shared_data, tmp_path / "in", fault)
    ws = tmp_path / "ws"
    code, out, err = invoke([*case.argv(ws, src), "--on-error", "skip"])
    if code != 0:  # the loss passed the skip cap, or nothing was left: it says so
        assert "records skipped" in err or re.search(r"no (documents|records|rows|training pairs|examples)", error_line(err)), err
        assert "Traceback" not in err
        assert all(artifact_status(ws / rel).state != "ready" for rel in case.artifacts)
        return
    first = case.artifacts[0]
    assert _skipped(ws, first) >= 1, read_manifest(ws / first)
    if fault in ("not_json", "wrong_type", "non_utf8"):
        assert _skipped(ws, first) == 1
        examples = read_manifest(ws / first)["errors"]["skipped_examples"]
        assert any(f"{src.name}:{BAD_LINE}:" in e for e in examples), examples


@pytest.mark.parametrize("case", STAGES, ids=STAGE_IDS)
def test_symlinked_temp_is_never_followed(case, shared_data, tmp_path):
    ws = tmp_path / "ws"
    src = fixture(case, shared_data, tmp_path / "in")
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim.bin"
    victim.write_bytes(b"not yours")
    (ws / "data").mkdir(parents=True)
    for rel in case.artifacts:
        tmp = ws / (rel + ".tmp")
        tmp.symlink_to(outside if case.name == "verl" else victim)
    code, _, err = invoke(case.argv(ws, src))
    assert code == 0, err
    assert victim.read_bytes() == b"not yours" and sorted(p.name for p in outside.iterdir()) == ["victim.bin"]
    for rel in case.artifacts:
        p = ws / rel
        assert not p.is_symlink() and not (ws / (rel + ".tmp")).exists()
        assert artifact_status(p).state == "ready"


@pytest.mark.parametrize("case", STAGES, ids=STAGE_IDS)
def test_full_disk_is_one_line_naming_path_and_space(case, shared_data, small_disk, tmp_path):
    ws = small_disk / "ws"
    src = fixture(case, shared_data, tmp_path / "in", name="first")
    code, _, err = invoke(case.argv(ws, src))
    assert code == 0, err
    before = snapshot(ws, case.artifacts)
    bigger = fixture(case, shared_data, tmp_path / "in2", lines=real_lines(shared_data, case.real, 400), name="second")
    filler = small_disk / "filler.bin"
    filler.write_bytes(b"\0" * max(0, shutil.disk_usage(small_disk).free - (64 << 10)))
    code, _, err = invoke(case.argv(ws, bigger))
    assert code != 0
    msg = error_line(err)
    assert str(ws / "data") in msg and re.search(r"needs about [\d.]+ [kMG]?B", msg) and "free" in msg, msg
    assert snapshot(ws, case.artifacts) == before
    assert not list((ws / "data").glob("*.tmp")), list((ws / "data").iterdir())
    filler.unlink()


@pytest.mark.parametrize("case", STAGES, ids=STAGE_IDS)
def test_kill_at_each_artifact_rename_then_rerun(case, shared_data, tmp_path):
    """SIGKILL a real run as it renames each finished artifact into place: the earlier artifacts
    keep their bytes; the group is never half new and ready; the next run succeeds."""
    ws = tmp_path / "ws"
    first = fixture(case, shared_data, tmp_path / "in", name="first")
    code, _, err = invoke(case.argv(ws, first))
    assert code == 0, err
    before = snapshot(ws, case.artifacts)
    second = fixture(case, shared_data, tmp_path / "in2",
                     lines=[json.dumps(json.loads(x)).encode() for x in
                            (ws.parent / "in" / first.name).read_bytes().splitlines()[::-1]], name="second")
    names = "|".join(re.escape(Path(rel).name) for rel in case.artifacts)
    for nth in range(1, len(case.artifacts) + 1):
        res = run_killed_at(case.argv(ws, second), rf"\.tmp -> .*/({names})$", nth)
        assert res.returncode == -9, res.stderr
        ready = [artifact_status(ws / rel).state == "ready" for rel in case.artifacts]
        now = snapshot(ws, case.artifacts)
        if all(ready):  # nothing was committed: every earlier artifact is as it was
            assert now == before
        else:  # mid-commit: none of the group reads as ready
            assert not any(ready), ready
        code, _, err = invoke(case.argv(ws, second))
        assert code == 0, err
        assert all(artifact_status(ws / rel).state == "ready" for rel in case.artifacts)
        before = snapshot(ws, case.artifacts)
        assert not list((ws / "data").glob("*.tmp")) and not list((ws / "data").glob("*.old"))
