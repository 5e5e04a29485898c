"""Shared fixtures: the real data folder, the tokenizer file and a fresh workspace."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LLMCTL_SHARED_DATA", REPO.parent / "shared" / "data")).resolve()
TOKENIZER_FILE = SHARED_DATA / "tokenizer" / "r50k_base.tiktoken"

PROMPT_TEXTS = ("First Citizen:\nBefore we proceed any further, hear me speak.", "All:\nSpeak, speak.",
                "You are all resolved rather to die than to famish?", "Resolved. resolved.",
                "First, you know Caius Marcius is chief enemy to the people.")

if TOKENIZER_FILE.exists():
    os.environ.setdefault("LLMCTL_TIKTOKEN_FILE", str(TOKENIZER_FILE))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``: the real public datasets tests build their fixtures from."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tokenizer_file(shared_data: Path) -> Path:
    return shared_data / "tokenizer" / "r50k_base.tiktoken"


@pytest.fixture(scope="session")
def tokenizer(tokenizer_file: Path):
    from llmctl.core.tokenizer import get_tokenizer

    return get_tokenizer(tokenizer_file)


@pytest.fixture(scope="session")
def prompts(tokenizer) -> list[list[int]]:
    """Five real lines of different lengths (Shakespeare), as token ids: prompts to generate from."""
    return [tokenizer.encode(t) for t in PROMPT_TEXTS]


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A fresh, initialised workspace in a temporary folder (also set as $LLMCTL_WORKSPACE)."""
    from llmctl.core.workspace import init_workspace

    root = tmp_path / "ws"
    monkeypatch.setenv("LLMCTL_WORKSPACE", str(root))
    return init_workspace(root)


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Hugging Face cache of the test's own (``$HF_HOME``, ``$HF_DATASETS_CACHE``)."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf" / "datasets"))
    return tmp_path / "hf"


@pytest.fixture
def small_disk(tmp_path: Path):
    """A real 2 MB filesystem (tmpfs) to fill up; skipped, with the reason, where mounting is refused."""
    mnt = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {res.stderr.strip() or res.returncode}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
