"""Artifacts: atomic writes, manifests, locks, failures and staleness."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from llmctl.core.artifacts import (
    ArtifactBusy,
    ArtifactWriter,
    artifact_status,
    check_free_space,
    lock_path,
    manifest_path,
    newest_checkpoint,
)


def test_commit_makes_ready_with_manifest(tmp_path):
    out = tmp_path / "a.jsonl"
    with ArtifactWriter(out, stage="s", params={"n": 1}) as w:
        w.tmp.write_text('{"x": 1}\n')
        assert artifact_status(out).state == "building"
        w.commit(counts={"rows": 1})
    st = artifact_status(out)
    assert st.state == "ready" and st.counts == {"rows": 1}
    assert not lock_path(out).exists() and not w.tmp.exists()
    man = json.loads(manifest_path(out).read_text())
    assert man["stage"] == "s" and man["params"] == {"n": 1} and man["bytes"] == out.stat().st_size


def test_failure_keeps_previous_artifact(tmp_path):
    out = tmp_path / "a.jsonl"
    with ArtifactWriter(out, stage="s") as w:
        w.tmp.write_text("old\n")
        w.commit()
    with pytest.raises(RuntimeError), ArtifactWriter(out, stage="s") as w:
        w.tmp.write_text("half")
        raise RuntimeError("disk on fire")
    assert out.read_text() == "old\n"
    assert not w.tmp.exists()
    st = artifact_status(out)
    assert st.state == "ready"  # the old complete artifact stays ready


def test_failed_first_build_is_failed_not_ready(tmp_path):
    out = tmp_path / "b.h5"
    with pytest.raises(ValueError), ArtifactWriter(out, stage="s") as w:
        w.tmp.write_bytes(b"x")
        raise ValueError("bad line")
    st = artifact_status(out)
    assert st.state == "failed" and "bad line" in st.reason


def test_file_without_manifest_is_not_ready(tmp_path):
    out = tmp_path / "c.h5"
    out.write_bytes(b"half")
    assert artifact_status(out).state == "failed"


def test_second_writer_refused_and_dead_lock_ignored(tmp_path):
    out = tmp_path / "d.jsonl"
    holder = subprocess.Popen([sys.executable, "-c", f"""
import time
from llmctl.core.artifacts import ArtifactWriter
with ArtifactWriter({str(out)!r}, stage="s") as w:
    print("locked", flush=True)
    time.sleep(30)
"""], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ArtifactBusy, match=f"pid {holder.pid}"), ArtifactWriter(out, stage="s"):
            pass
        assert artifact_status(out).state == "building"
    finally:
        holder.kill()
        holder.wait()
    # the lock of a killed writer no longer blocks
    with ArtifactWriter(out, stage="s") as w:
        w.tmp.write_text("ok\n")
        w.commit()
    assert artifact_status(out).state == "ready"


def test_folder_artifact(tmp_path):
    out = tmp_path / "verl"
    with ArtifactWriter(out, stage="verl-convert") as w:
        (w.tmp / "train").mkdir(parents=True)
        (w.tmp / "train" / "x.parquet").write_bytes(b"PAR1")
        w.commit(counts={"files": 1})
    assert (out / "manifest.json").exists()
    assert artifact_status(out).state == "ready"


def test_checkpoints_newest_ready(tmp_path):
    root = tmp_path / "checkpoints" / "sft"
    for run, step, ready in (("r1", 10, True), ("r1", 20, False), ("r2", 5, True)):
        d = root / run / f"step_{step}"
        d.mkdir(parents=True)
        if ready:
            (d / "manifest.json").write_text("{}")
            time.sleep(0.01)
    assert newest_checkpoint(root) == root / "r2" / "step_5"
    st = artifact_status(root, kind="checkpoint")
    assert st.state == "ready" and st.counts["checkpoints"] == 2


def test_free_space_check(tmp_path):
    check_free_space(tmp_path, 1, "test")
    with pytest.raises(OSError, match="needs about"):
        check_free_space(tmp_path / "nope" / "deeper", 1 << 60, "prepare pretrain")
