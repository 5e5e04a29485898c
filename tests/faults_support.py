"""What the fault tests share: every prepare stage and ``verl convert`` on tiny real fixtures cut
from ``../shared/data``, each made hostile in one way; the CLI run in process or as a real
subprocess that SIGKILLs itself at a chosen rename."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from typer.testing import CliRunner

N_RECORDS = 40  # records per fixture file
BAD_LINE = 5  # the line a single-record fault hits


@dataclass(frozen=True)
class StageCase:
    """One stage as a user runs it on one local JSON-lines file."""

    name: str
    real: str  # file under shared/data the fixture is cut from
    suffix: str  # the fixture's file name ending
    field: str  # a string field every record needs
    artifacts: tuple[str, ...]  # workspace paths it makes, together
    gz: bool = True  # whether the stage reads .jsonl.gz
    extra: tuple[str, ...] = field(default_factory=tuple)

    def argv(self, ws: Path, src: Path) -> list[str]:
        """The command line for workspace ``ws`` reading ``src``."""
        head = {
            "pretrain": ["prepare", "pretrain", "--inputs", str(src)],
            "sft": ["prepare", "sft", "--sources", "dolly", "--dolly", str(src), "--seq-len", "1024"],
            "prefs": ["prepare", "prefs", "--hh-rlhf", str(src), "--ultrafeedback", "", "--test-fraction", "0.2"],
            "rl": ["prepare", "rl", "--gsm8k-train", str(src), "--gsm8k-test", str(src.parent / "rl_test.jsonl"),
                   "--arithmetic-n", "3"],
            "verl": ["verl", "convert", "--src", str(src)],
        }[self.name]
        return [*head, "--workspace", str(ws), *self.extra]


STAGES = (
    StageCase("pretrain", "pile-sample/c4_demo.jsonl", ".jsonl", "text", ("data/pile_train.h5",)),
    StageCase("sft", "dolly/databricks-dolly-15k.head49.jsonl", ".jsonl", "instruction", ("data/sft_packed.h5",)),
    StageCase("prefs", "hh-rlhf/helpful-base-test.jsonl.gz", ".jsonl", "chosen",
              ("data/preferences.jsonl", "data/preferences_test.jsonl")),
    StageCase("rl", "gsm8k/train.jsonl", ".jsonl", "question",
              ("data/rl_prompts_train.jsonl", "data/rl_prompts_test.jsonl", "data/arithmetic_prompts.jsonl")),
    StageCase("verl", "internbootcamp/cipher_merged.jsonl", ".jsonl", "prompt", ("data/verl",), gz=False),
)
STAGE_IDS = [s.name for s in STAGES]


def real_lines(shared: Path, rel: str, n: int = N_RECORDS, skip: int = 0) -> list[bytes]:
    """``n`` lines of a real file (gunzipped where it is .gz)."""
    p = shared / rel
    raw = gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
    return [ln for ln in raw.split(b"\n") if ln.strip()][skip:skip + n]


def fixture(case: StageCase, shared: Path, folder: Path, lines: list[bytes] | None = None,
            name: str = "input") -> Path:
    """The stage's input file (plus, for ``rl``, its held-out file) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    if case.name == "rl":
        (folder / "rl_test.jsonl").write_bytes(b"\n".join(real_lines(shared, "gsm8k/test.jsonl", 10)) + b"\n")
    src = folder / (name + case.suffix)
    src.write_bytes(b"\n".join(real_lines(shared, case.real) if lines is None else lines) + b"\n")
    return src


def set_field(line: bytes, key: str, value: object) -> bytes:
    rec = json.loads(line)
    rec[key] = value
    return json.dumps(rec).encode()


def hostile(case: StageCase, shared: Path, folder: Path, fault: str) -> tuple[Path, int | None, str | None]:
    """``(file, the line the error must name or None, the field it must name or None)``."""
    lines = real_lines(shared, case.real)
    k = BAD_LINE - 1
    if fault == "not_json":
        lines[k] = b'{"this is": not JSON'
        return fixture(case, shared, folder, lines), BAD_LINE, None
    if fault == "wrong_type":
        lines[k] = set_field(lines[k], case.field, 12345)
        return fixture(case, shared, folder, lines), BAD_LINE, case.field
    if fault == "non_utf8":
        key = f'"{case.field}": "'.encode()
        assert key in lines[k], (case.name, lines[k][:80])
        lines[k] = lines[k].replace(key, key + b"caf\xe9 \xff", 1)
        return fixture(case, shared, folder, lines), BAD_LINE, case.field
    if fault == "empty":
        src = fixture(case, shared, folder)
        src.write_bytes(b"")
        return src, None, None
    if fault in ("truncated", "corrupt"):
        data = b"\n".join(lines) + b"\n"
        if case.gz:
            blob = bytearray(gzip.compress(data))
            if fault == "truncated":
                blob = blob[: len(blob) * 6 // 10]
            else:
                mid = len(blob) // 2
                blob[mid:mid + 64] = bytes(64)
            fixture(case, shared, folder, lines)
            src = folder / ("input" + case.suffix + ".gz")
            (folder / ("input" + case.suffix)).unlink()
            src.write_bytes(bytes(blob))
            return src, None, None
        blob = bytearray(data)  # verl reads plain .jsonl: a cut last record, or a run of zero bytes
        if fault == "truncated":
            cut = len(blob) * 6 // 10
            src = fixture(case, shared, folder, [bytes(blob[:cut])])
            return src, blob[:cut].count(b"\n") + 1, None
        start = len(b"\n".join(lines[:k])) + 1
        blob[start + 10:start + 74] = bytes(64)
        src = fixture(case, shared, folder, [bytes(blob).rstrip(b"\n")])
        return src, BAD_LINE, None
    raise ValueError(fault)


FAULTS = ("truncated", "corrupt", "non_utf8", "not_json", "wrong_type", "empty")


def invoke(argv: list[str]) -> tuple[int, str, str]:
    """Run the CLI in this process: (exit code, stdout, stderr)."""
    from llmctl.core.cli import app

    res = CliRunner().invoke(app, argv)
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res.exit_code, res.stdout, res.stderr


def error_line(stderr: str) -> str:
    """The one error line a failed command printed (asserting there is exactly one, no traceback)."""
    assert "Traceback" not in stderr, stderr
    errs = [ln for ln in stderr.splitlines() if ln.startswith("llmctl: error:")]
    assert len(errs) == 1, stderr
    return errs[0]


KILL_AT_RENAME = r"""
import os, re, signal, sys
pattern, nth = re.compile(sys.argv[1]), int(sys.argv[2])
real_replace, seen = os.replace, [0]
def replace(src, dst, *a, **kw):
    if pattern.search(os.fspath(src) + " -> " + os.fspath(dst)):
        seen[0] += 1
        if seen[0] == nth:
            os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst, *a, **kw)
os.replace = replace
sys.argv = ["llmctl", *sys.argv[3:]]
from llmctl.core.cli import main
main()
"""


def run_killed_at(argv: list[str], pattern: str, nth: int = 1) -> subprocess.CompletedProcess:
    """Run the CLI as a real subprocess that SIGKILLs itself at the ``nth`` rename matching
    ``pattern`` (on ``"src -> dst"``)."""
    env = {**os.environ, "LLMCTL_NO_PROGRESS": "1"}
    env.pop("LLMCTL_RUN_DIR", None)
    return subprocess.run([sys.executable, "-c", KILL_AT_RENAME, pattern, str(nth), *argv], capture_output=True,
                          text=True, timeout=300, env=env)


def snapshot(ws: Path, paths: tuple[str, ...]) -> dict[str, bytes]:
    """Every file of the given artifacts (and their manifests), by workspace-relative path."""
    out = {}
    for rel in paths:
        p = ws / rel
        files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else []
        man = p.with_name(p.name + ".manifest.json")
        for f in files + ([man] if man.is_file() else []):
            out[str(f.relative_to(ws))] = f.read_bytes()
    return out
