"""``llmctl prepare pretrain`` on real shards built from pile-sample: round trips, splits, bad input,
kill + resume, locking."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import zstandard
from typer.testing import CliRunner

from llmctl.core.artifacts import ArtifactWriter, read_manifest
from llmctl.core.cli import app

runner = CliRunner()
BLANK = " \t\r\n\x0b\x0c"


@pytest.fixture(autouse=True)
def _own_run_dirs(monkeypatch):
    """Each in-process CLI call makes its own run folder (the CLI exports LLMCTL_RUN_DIR)."""
    monkeypatch.delenv("LLMCTL_RUN_DIR", raising=False)
    monkeypatch.setenv("LLMCTL_NO_PROGRESS", "1")


# ---- real documents and shards --------------------------------------------------------------------

@pytest.fixture(scope="module")
def c4(shared_data) -> list[str]:
    return [json.loads(line)["text"] for line in open(shared_data / "pile-sample" / "c4_demo.jsonl", encoding="utf-8")]


def jsonl_bytes(texts: list[str], set_name: str = "Pile-CC") -> bytes:
    return b"".join(json.dumps({"text": t, "meta": {"pile_set_name": set_name}}).encode() + b"\n" for t in texts)


def write_zst(path: Path, data: bytes) -> Path:
    path.write_bytes(zstandard.ZstdCompressor(level=3, write_checksum=True).compress(data))
    return path


def txt_docs(raw: bytes, mode: str) -> list[str]:
    """The documents a .txt holds under each --txt-docs mode (written independently of the reader)."""
    lines = [ln.removesuffix("\r") for ln in raw.decode("utf-8").split("\n")]
    if raw.endswith(b"\n"):
        lines.pop()
    if mode == "file":
        return ["\n".join(lines)]
    if mode == "lines":
        return [ln for ln in lines if ln.strip(BLANK)]
    out, cur = [], []
    for ln in lines:
        if ln.strip(BLANK):
            cur.append(ln)
        elif cur:
            out.append("\n".join(cur))
            cur = []
    if cur:
        out.append("\n".join(cur))
    return out


def decoded_docs(path: Path, tok) -> list[str]:
    with h5py.File(path, "r") as f:
        t = f["tokens"][:]
    ends = np.flatnonzero(t == tok.eot_id)
    assert len(ends) == 0 or ends[-1] == len(t) - 1, "file does not end with EOT"
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [tok.decode(t[s:e]) for s, e in zip(starts, ends, strict=True)]


def tokens_of(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return f["tokens"][:]


def prepare(ws, *args: str, code: int = 0):
    res = runner.invoke(app, ["prepare", "pretrain", "--workspace", str(ws.root), *args])
    assert res.exit_code == code, res.output
    return res


# ---- good input -----------------------------------------------------------------------------------

def test_jsonl_zst_with_meta_round_trip_attrs_manifest_and_status(workspace, tokenizer, c4, tmp_path):
    shard = write_zst(tmp_path / "00.jsonl.zst", jsonl_bytes(c4))
    workspace.config["stages"]["prepare-pretrain"]["inputs"] = [str(shard)]
    workspace.save_config()
    res = prepare(workspace)
    out = workspace.path("data/pile_train.h5")
    assert "pile_train.h5" in res.output and f"{len(c4):,} documents" in res.output
    assert decoded_docs(out, tokenizer) == c4
    toks = tokens_of(out)
    assert (toks == 50256).sum() == len(c4)
    with h5py.File(out) as f:
        d, a = f["tokens"], f.attrs
        assert d.dtype == np.int32 and d.compression is None and d.maxshape == (None,)
        assert a["n_tokens"] == len(toks) and a["n_documents"] == len(c4) and a["split"] == "train"
        assert json.loads(a["tokenizer"]) == tokenizer.describe()
        src = json.loads(a["sources"])
        assert src == [{"name": str(shard), "size": shard.stat().st_size, "sha256_scope": "full",
                        "sha256": hashlib.sha256(shard.read_bytes()).hexdigest()}]
        assert json.loads(a["parameters"])["inputs"] == [str(shard)]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", a["created"])
        assert "progress" not in a
    man = read_manifest(out)
    assert man["counts"] == {"tokens": len(toks), "documents": len(c4), "skipped": 0}
    assert man["stage"] == "prepare-pretrain" and man["tokenizer"]["eot_id"] == 50256
    assert not out.with_name("pile_train.h5.tmp").exists()
    st = runner.invoke(app, ["status", "--json", "--workspace", str(workspace.root)])
    arts = {a["name"]: a for a in json.loads(st.stdout)["artifacts"]}
    assert arts["pile_train"]["state"] == "ready", arts["pile_train"]
    assert arts["pile_dev"]["state"] == "missing"
    metrics = [json.loads(ln) for ln in next(workspace.runs_dir.glob("prepare-pretrain/*/metrics.jsonl")).open()]
    assert metrics[-1]["prepare/tokens"] == len(toks) and metrics[-1]["prepare/tokens_per_s"] > 0


def test_plain_and_gzip_jsonl_through_a_glob_in_order(workspace, tokenizer, c4, tmp_path):
    d = tmp_path / "shards"
    d.mkdir()
    (d / "a.jsonl").write_bytes(jsonl_bytes(c4[:100]))
    with gzip.open(d / "b.jsonl.gz", "wb") as f:
        f.write(jsonl_bytes(c4[100:200]))
    write_zst(d / "c.jsonl.zst", jsonl_bytes(c4[200:]))
    prepare(workspace, "--inputs", str(d / "*.jsonl*"))
    assert decoded_docs(workspace.path("data/pile_train.h5"), tokenizer) == c4
    first = tokens_of(workspace.path("data/pile_train.h5"))
    prepare(workspace, "--inputs", str(d / "*.jsonl*"), "--workers", "2", "--batch-docs", "7")  # own threads
    assert np.array_equal(tokens_of(workspace.path("data/pile_train.h5")), first)
    prepare(workspace, "--inputs", str(d), "--num-shards", "2", "--split", "val")  # a folder, first 2 files
    assert decoded_docs(workspace.path("data/pile_dev.h5"), tokenizer) == c4[:200]


@pytest.mark.parametrize("mode", ["file", "lines", "paragraphs"])
def test_txt_docs_modes(workspace, tokenizer, shared_data, tmp_path, mode):
    files = [shared_data / "pile-sample" / "gutenberg-972-devils-dictionary.txt",  # CRLF
             shared_data / "pile-sample" / "wiki_demo.txt"]
    raw0 = files[0].read_bytes()
    local = tmp_path / "devil.txt.zst"  # also a compressed .txt
    write_zst(local, raw0)
    prepare(workspace, "--inputs", str(local), "--inputs", str(files[1]), "--txt-docs", mode)
    want = txt_docs(raw0, mode) + txt_docs(files[1].read_bytes(), mode)
    got = decoded_docs(workspace.path("data/pile_train.h5"), tokenizer)
    assert len(got) == len(want)
    assert got == want
    assert all("\r" not in d for d in got[: len(txt_docs(raw0, mode))])


def test_val_fraction_writes_both_files_with_a_seeded_split(workspace, tokenizer, c4, tmp_path):
    shard = write_zst(tmp_path / "s.jsonl.zst", jsonl_bytes(c4))
    prepare(workspace, "--inputs", str(shard), "--val-fraction", "0.2", "--seed", "5")
    train = decoded_docs(workspace.path("data/pile_train.h5"), tokenizer)
    dev = decoded_docs(workspace.path("data/pile_dev.h5"), tokenizer)
    assert sorted(train + dev) == sorted(c4)
    assert 0.1 * len(c4) < len(dev) < 0.3 * len(c4)
    assert [d for d in c4 if d in set(dev)] == dev  # order kept
    for name in ("pile_train.h5", "pile_dev.h5"):
        assert read_manifest(workspace.path(f"data/{name}"))["counts"]["documents"] == len(train if "train" in name else dev)
    prepare(workspace, "--inputs", str(shard), "--val-fraction", "0.2", "--seed", "5")
    assert decoded_docs(workspace.path("data/pile_dev.h5"), tokenizer) == dev  # deterministic
    prepare(workspace, "--inputs", str(shard), "--val-fraction", "0.2", "--seed", "6")
    assert decoded_docs(workspace.path("data/pile_dev.h5"), tokenizer) != dev
    prepare(workspace, "--inputs", str(shard), "--val-fraction", "0.2", "--out", "x.h5", code=2)


def test_a_val_split_that_takes_every_document_says_so(workspace, shared_data):
    """wiki_demo.txt has no blank line: as paragraphs it is one document, and at this seed the val
    split takes it. The error says that (not "no documents found") and how to fix it; by lines it works."""
    wiki = str(shared_data / "pile-sample" / "wiki_demo.txt")
    res = prepare(workspace, "--inputs", wiki, "--txt-docs", "paragraphs", "--val-fraction", "0.05", code=1)
    assert "wiki_demo.txt: all 1 document(s) went to the val split (--val-fraction 0.05), none to train on" in res.output
    assert "--txt-docs paragraphs made 1" in res.output and "no documents found" not in res.output
    prepare(workspace, "--inputs", wiki, "--txt-docs", "lines", "--val-fraction", "0.05")
    assert read_manifest(workspace.path("data/pile_train.h5"))["counts"]["documents"] > 20


def test_max_tokens_stops_after_the_document_that_reaches_it(workspace, tokenizer, c4, tmp_path):
    shard = write_zst(tmp_path / "s.jsonl.zst", jsonl_bytes(c4))
    prepare(workspace, "--inputs", str(shard), "--max-tokens", "20000", "--batch-docs", "16")
    toks = tokens_of(workspace.path("data/pile_train.h5"))
    docs = decoded_docs(workspace.path("data/pile_train.h5"), tokenizer)
    assert docs == c4[:len(docs)]
    last = len(tokenizer.encode(docs[-1])) + 1
    assert len(toks) >= 20000 and len(toks) - last < 20000


def test_out_override_and_fsspec_url_inputs(workspace, tokenizer, c4, tmp_path):
    import fsspec

    with fsspec.open("memory://bucket/shards/p0.jsonl.zst", "wb") as f:  # a non-local filesystem
        f.write(zstandard.ZstdCompressor().compress(jsonl_bytes(c4[:50])))
    prepare(workspace, "--inputs", "memory://bucket/shards/*.jsonl.zst", "--out", str(tmp_path / "o.h5"))
    assert decoded_docs(tmp_path / "o.h5", tokenizer) == c4[:50]
    man = read_manifest(tmp_path / "o.h5")
    name = man["sources"][0]["name"]
    assert name.startswith("memory://") and name.endswith("/bucket/shards/p0.jsonl.zst")
    assert man["inputs"] == {name: {"url": name, "size": man["sources"][0]["size"]}}  # no local path/mtime


# ---- bad input ------------------------------------------------------------------------------------

def _bad_lines(c4: list[str]) -> dict[str, tuple[bytes, str]]:
    """name -> (the bad line, the reason the error must give)."""
    return {
        "not_json": (b'{"text": "an unterminated', "not JSON"),
        "missing_text": (b'{"meta": {"pile_set_name": "Pile-CC"}}', "field 'text': missing"),
        "text_not_string": (b'{"text": 42}', "field 'text': expected a string, got int"),
        "invalid_utf8": (b'{"text": "caf\xe9 au lait"}', "field 'text': invalid UTF-8"),
        "empty_doc": (b'{"text": "  \\n "}', "field 'text': empty document"),
        "not_an_object": (b'["text"]', "expected a JSON object"),
    }


@pytest.mark.parametrize("kind", ["not_json", "missing_text", "text_not_string", "invalid_utf8", "empty_doc",
                                  "not_an_object"])
def test_bad_record_fails_naming_shard_line_and_reason(workspace, c4, tmp_path, kind):
    line, reason = _bad_lines(c4)[kind]
    lines = jsonl_bytes(c4[:40]).split(b"\n")[:-1]
    lines.insert(17, line)  # becomes line 18
    shard = write_zst(tmp_path / "bad.jsonl.zst", b"\n".join(lines) + b"\n")
    res = prepare(workspace, "--inputs", str(shard), code=1)
    assert f"bad.jsonl.zst:18: {reason}" in res.output
    assert read_manifest(workspace.path("data/pile_train.h5")) is None
    assert json.loads(workspace.path("data/pile_train.h5.failed.json").read_text())["error"].count("bad.jsonl.zst:18")


def test_invalid_utf8_in_txt_names_the_line(workspace, shared_data, tmp_path):
    raw = (shared_data / "pile-sample" / "wiki_demo.txt").read_bytes().split(b"\n")
    raw[3] = raw[3][:50] + b"\xff\xfe" + raw[3][50:]
    p = tmp_path / "wiki.txt"
    p.write_bytes(b"\n".join(raw))
    res = prepare(workspace, "--inputs", str(p), "--txt-docs", "lines", code=1)
    assert "wiki.txt:4: invalid UTF-8" in res.output


def _truncated(tmp_path: Path, c4: list[str]) -> tuple[Path, int]:
    data = jsonl_bytes(c4)
    cctx = zstandard.ZstdCompressor(level=3, write_checksum=True)
    full = cctx.compress(data)
    shard = tmp_path / "trunc.jsonl.zst"
    shard.write_bytes(full[: int(len(full) * 0.6)])
    return shard, len(c4)


def test_truncated_zst_fails_naming_the_last_good_line(workspace, c4, tmp_path):
    shard, _ = _truncated(tmp_path, c4)
    res = prepare(workspace, "--inputs", str(shard), code=1)
    m = re.search(r"trunc\.jsonl\.zst:(\d+): truncated zstd stream \(it ends inside a frame\) after line (\d+), "
                  r"the last good line", res.output)
    assert m and m.group(1) == m.group(2) and 0 < int(m.group(1)) < len(c4), res.output


def test_corrupt_zst_fails_naming_the_shard(workspace, c4, tmp_path):
    full = bytearray(zstandard.ZstdCompressor(level=3, write_checksum=True).compress(jsonl_bytes(c4)))
    mid = len(full) // 2
    full[mid:mid + 64] = bytes(64)
    shard = tmp_path / "corrupt.jsonl.zst"
    shard.write_bytes(bytes(full))
    res = prepare(workspace, "--inputs", str(shard), code=1)
    assert re.search(r"corrupt\.jsonl\.zst:\d+: corrupt zstd stream \(.+\) after line \d+", res.output), res.output


def test_skip_counts_and_reports_every_bad_line(workspace, tokenizer, c4, tmp_path):
    bad = _bad_lines(c4)
    good = jsonl_bytes(c4).split(b"\n")[:-1]
    lines = list(good)
    lines.insert(50, bad["not_json"][0])  # line 51
    lines.insert(200, bad["missing_text"][0])  # line 201
    shard = write_zst(tmp_path / "mixed.jsonl.zst", b"\n".join(lines) + b"\n")
    res = prepare(workspace, "--inputs", str(shard), "--on-error", "skip", "--batch-docs", "64",
                  "--flush-tokens", "5000")
    out = workspace.path("data/pile_train.h5")
    assert decoded_docs(out, tokenizer) == c4
    assert "mixed.jsonl.zst:51: not JSON" in res.output and "mixed.jsonl.zst:201: field 'text': missing" in res.output
    man = read_manifest(out)
    assert man["counts"]["skipped"] == 2
    assert [s.split(": ", 1)[0].rsplit("/", 1)[-1] for s in man["skipped_records"]] == \
        ["mixed.jsonl.zst:51", "mixed.jsonl.zst:201"]
    with h5py.File(out) as f:
        assert f.attrs["n_skipped"] == 2 and len(f["skipped"]) == 2


def test_skip_keeps_the_lines_before_a_truncation(workspace, tokenizer, c4, tmp_path):
    shard, _ = _truncated(tmp_path, c4)
    res = prepare(workspace, "--inputs", str(shard), "--on-error", "skip")
    docs = decoded_docs(workspace.path("data/pile_train.h5"), tokenizer)
    assert 0 < len(docs) < len(c4) and docs == c4[:len(docs)]
    assert f"trunc.jsonl.zst:{len(docs)}: truncated zstd stream" in res.output
    assert read_manifest(workspace.path("data/pile_train.h5"))["counts"]["skipped"] == 1


def test_skip_fails_past_the_threshold_and_keeps_what_was_written(workspace, c4, tmp_path):
    lines = jsonl_bytes(c4).split(b"\n")[:-1]
    for i in range(10, 300, 25):  # 12 bad of 312 (> 1%)
        lines.insert(i, b"not json at all")
    shard = write_zst(tmp_path / "noisy.jsonl.zst", b"\n".join(lines) + b"\n")
    res = prepare(workspace, "--inputs", str(shard), "--on-error", "skip", code=1)
    assert "records skipped (> 1.0%)" in res.output and "noisy.jsonl.zst:11: not JSON" in res.output
    assert read_manifest(workspace.path("data/pile_train.h5")) is None
    tmp = workspace.path("data/pile_train.h5.tmp")
    with h5py.File(tmp) as f:  # kept for --resume, with its progress record
        assert json.loads(f.attrs["progress"])["seen"] >= 0


def test_invalid_parameters_are_refused(workspace, tmp_path):
    for args in (["--split", "test"], ["--txt-docs", "sentences"], ["--val-fraction", "1.5"],
                 ["--on-error", "ignore"], ["--batch-docs", "0"]):
        res = prepare(workspace, "--inputs", "x.jsonl", *args, code=2)
        assert "prepare-pretrain" in res.output
    res = prepare(workspace, "--inputs", str(tmp_path / "missing.jsonl.zst"), code=1)
    assert "missing.jsonl.zst: no such file" in res.output
    res = prepare(workspace, "--inputs", str(tmp_path / "*.jsonl"), code=1)
    assert "matched no files" in res.output
    (tmp_path / "empty.txt").write_bytes(b"\n \n")
    res = prepare(workspace, "--inputs", str(tmp_path / "empty.txt"), "--txt-docs", "lines", code=1)
    assert "empty.txt: no documents found" in res.output
    (tmp_path / "data.parquet").write_bytes(b"x")
    res = prepare(workspace, "--inputs", str(tmp_path / "data.parquet"), code=1)
    assert "unsupported file type" in res.output


# ---- kill, resume, restart, lock ------------------------------------------------------------------

@pytest.fixture(scope="module")
def big_shard(tmp_path_factory, shared_data, c4) -> Path:
    """Most of pile-sample as one .jsonl.zst (~9k documents, ~700k tokens)."""
    d = shared_data / "pile-sample"
    docs = list(c4)
    docs += txt_docs((d / "wiki_demo.txt").read_bytes(), "lines")
    for name in ("tinyshakespeare.txt", "gutenberg-972-devils-dictionary.txt"):
        docs += txt_docs((d / name).read_bytes(), "paragraphs")
    return write_zst(tmp_path_factory.mktemp("big") / "pile.jsonl.zst", jsonl_bytes(docs))


# the run to kill uses small batches and blocks, so it lasts long enough to be killed after some blocks;
# the other runs differ only in run-only parameters (batch_docs, flush_tokens, workers), which a resume may change
FAST_ARGS = ["--chunk-tokens", "65536"]
SLOW_ARGS = [*FAST_ARGS, "--batch-docs", "16", "--flush-tokens", "20000", "--workers", "1"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, big_shard) -> tuple[np.ndarray, int]:
    """Tokens and document count of an uninterrupted run on big_shard."""
    from llmctl.core.workspace import init_workspace

    ws = init_workspace(tmp_path_factory.mktemp("ref") / "ws")
    prepare(ws, "--inputs", str(big_shard), *FAST_ARGS)
    out = ws.path("data/pile_train.h5")
    return tokens_of(out), read_manifest(out)["counts"]["documents"]


def _start_and_kill(ws, shard: Path, sig: int = signal.SIGKILL) -> subprocess.Popen:
    tmp = ws.path("data/pile_train.h5.tmp")
    env = {**os.environ, "LLMCTL_NO_PROGRESS": "1"}
    env.pop("LLMCTL_RUN_DIR", None)
    proc = subprocess.Popen([sys.executable, "-m", "llmctl.core.cli", "prepare", "pretrain", "--workspace",
                             str(ws.root), "--inputs", str(shard), *SLOW_ARGS],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if tmp.exists() and tmp.stat().st_size > 400_000:  # some blocks written, most of the input left
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed: " + proc.stdout.read().decode()
    proc.send_signal(sig)
    proc.wait(timeout=30)
    return proc


def _progress(path: Path) -> dict:
    with h5py.File(path) as f:
        return json.loads(f.attrs["progress"])


def test_killed_run_resumes_to_exactly_the_uninterrupted_result(workspace, big_shard, uninterrupted):
    want, n_docs = uninterrupted
    proc = _start_and_kill(workspace, big_shard)
    assert proc.returncode == -signal.SIGKILL
    out = workspace.path("data/pile_train.h5")
    assert not out.exists() and read_manifest(out) is None
    st = runner.invoke(app, ["status", "--json", "--workspace", str(workspace.root)])
    assert {a["name"]: a["state"] for a in json.loads(st.stdout)["artifacts"]}["pile_train"] != "ready"
    prog = _progress(workspace.path("data/pile_train.h5.tmp"))
    assert 0 < prog["counts"]["train"][0] < len(want)

    res = prepare(workspace, "--inputs", str(big_shard), *FAST_ARGS, "--resume")
    assert "resuming pile_train.h5.tmp" in res.output
    got = tokens_of(out)
    assert len(got) == len(want) and np.array_equal(got, want)
    assert read_manifest(out)["counts"]["documents"] == n_docs


def test_plain_rerun_after_a_kill_restarts_cleanly(workspace, big_shard, uninterrupted):
    _start_and_kill(workspace, big_shard)
    res = prepare(workspace, "--inputs", str(big_shard), *FAST_ARGS)
    assert "discarding the partial pile_train.h5.tmp" in res.output
    assert np.array_equal(tokens_of(workspace.path("data/pile_train.h5")), uninterrupted[0])


def test_sigterm_writes_the_buffer_and_resume_completes(workspace, big_shard, uninterrupted):
    proc = _start_and_kill(workspace, big_shard, signal.SIGTERM)
    out = proc.stdout.read().decode()
    assert proc.returncode == 130, out
    assert "interrupted" in out
    failed = json.loads(workspace.path("data/pile_train.h5.failed.json").read_text())
    assert failed["partial"].endswith("pile_train.h5.tmp")
    res = prepare(workspace, "--inputs", str(big_shard), *FAST_ARGS, "--resume", "--batch-docs", "500")
    assert "resuming" in res.output
    assert np.array_equal(tokens_of(workspace.path("data/pile_train.h5")), uninterrupted[0])


def test_resume_with_other_parameters_is_refused(workspace, c4, tmp_path):
    shard = write_zst(tmp_path / "s.jsonl.zst", jsonl_bytes(c4[:50] + [""]))  # fails at line 51
    prepare(workspace, "--inputs", str(shard), code=1)
    assert workspace.path("data/pile_train.h5.tmp").exists()
    res = prepare(workspace, "--inputs", str(shard), "--resume", "--seed", "99", code=1)
    assert "cannot resume pile_train.h5.tmp" in res.output
    res = prepare(workspace, "--inputs", str(shard), "--resume", "--on-error", "skip")  # run-only: allowed
    assert "resuming" in res.output
    assert read_manifest(workspace.path("data/pile_train.h5"))["counts"] == {"tokens": len(tokens_of(
        workspace.path("data/pile_train.h5"))), "documents": 50, "skipped": 1}


def test_second_writer_is_refused_while_the_first_holds_the_lock(workspace, c4, tmp_path):
    shard = write_zst(tmp_path / "s.jsonl.zst", jsonl_bytes(c4[:20]))
    with ArtifactWriter(workspace.path("data/pile_train.h5"), stage="prepare-pretrain"):
        res = prepare(workspace, "--inputs", str(shard), code=1)
        assert f"pile_train.h5 is being written by pid {os.getpid()}" in res.output
    prepare(workspace, "--inputs", str(shard))
