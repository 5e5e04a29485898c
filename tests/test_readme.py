"""The README is true: its set-up commands are what CI runs, its commands exist."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _bash_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_two_setup_commands_and_ci_runs_the_test_command():
    readme = (REPO / "README.md").read_text()
    blocks = _bash_blocks(readme)
    app_cmd = next(b for b in blocks if b.endswith("&& llmctl"))
    test_cmd = next(b for b in blocks if "pytest" in b)
    assert app_cmd.startswith("pip install torch==2.13.0 && ")
    assert test_cmd.startswith("pip install torch==2.13.0 && ")
    ci = (REPO / ".ci" / "run").read_text()
    assert test_cmd in ci.splitlines(), "CI must run the README's test command verbatim"


def test_documented_commands_exist():
    readme = (REPO / "README.md").read_text()
    cmds = set()
    for block in _bash_blocks(readme):
        for line in block.splitlines():
            m = re.match(r"\s*llmctl ((?:[a-z][a-z-]*)(?: [a-z][a-z-]*)?)", line)
            if m:
                cmds.add(m.group(1))
    for cmd in sorted(cmds):
        words = cmd.split()
        res = subprocess.run([sys.executable, "-m", "llmctl.core.cli", *words, "--help"],
                             capture_output=True, text=True)
        if res.returncode != 0 and len(words) == 2:  # "llmctl status something": second word is an argument
            res = subprocess.run([sys.executable, "-m", "llmctl.core.cli", words[0], "--help"],
                                 capture_output=True, text=True)
        assert res.returncode == 0, f"README mentions `llmctl {cmd}` but it fails: {res.stderr[-500:]}"
