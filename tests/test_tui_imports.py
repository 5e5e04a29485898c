"""First screens stay light: ``llmctl --help``, ``llmctl status`` and the app's first frame import
neither torch nor datasets (nor the trainers), and the headless commands never import textual.
Each check runs in a fresh interpreter and reads its ``sys.modules``."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from tui_support import build_workspace

HEAVY = ("torch", "datasets", "transformers", "llmctl.trainers")

CLI_PROBE = textwrap.dedent("""
    import atexit, json, runpy, sys
    atexit.register(lambda: sys.stderr.write("MODULES=" + json.dumps(sorted(sys.modules)) + "\\n"))
    sys.argv = ["llmctl", *json.loads(sys.argv[1])]
    runpy.run_module("llmctl.core.cli", run_name="__main__")
""")

APP_PROBE = textwrap.dedent("""
    import asyncio, json, sys
    from llmctl.tui.app import LlmctlApp

    app = LlmctlApp(sys.argv[1])
    start = app._start_background
    seen = {}

    def first_frame():  # the main screen has been painted; no file or NVML work has started yet
        seen["frame"] = sorted(sys.modules)
        start()

    app._start_background = first_frame

    async def main():
        async with app.run_test(size=(120, 40)) as pilot:
            for _ in range(600):
                if app.state is not None and "llmctl.tui.screens.job" in sys.modules:  # state read, warmed up
                    break
                await pilot.pause(0.05)
            print("STATE=" + str(app.state is not None))
            print("FRAME=" + json.dumps(seen["frame"]))
            print("MODULES=" + json.dumps(sorted(sys.modules)))

    asyncio.run(main())
""")


def modules_of(output: str) -> set[str]:
    line = next(x for x in output.splitlines() if x.startswith("MODULES="))
    return set(json.loads(line[len("MODULES="):]))


def run_cli(*args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    out = subprocess.run([sys.executable, "-c", CLI_PROBE, json.dumps(list(args))], capture_output=True,
                         text=True, timeout=120)
    return out, modules_of(out.stderr)


@pytest.fixture(scope="module")
def ws(tmp_path_factory, shared_data, tokenizer):
    from llmctl.core.workspace import init_workspace

    ws = init_workspace(tmp_path_factory.mktemp("imports") / "ws")
    build_workspace(ws, shared_data, tokenizer)
    return ws


def test_help_is_light():
    out, mods = run_cli("--help")
    assert out.returncode == 0 and "prepare" in out.stdout
    assert not mods & set(HEAVY) and "textual" not in mods


def test_status_is_light(ws):
    out, mods = run_cli("status", "--workspace", str(ws.root))
    assert out.returncode == 0, out.stderr
    assert not mods & set(HEAVY) and "textual" not in mods


@pytest.mark.parametrize("args", [("gpus", "--json"), ("preview", "rl_prompts_train", "--row", "2"),
                                  ("preview", "sft_packed")])
def test_headless_commands_never_import_textual(ws, args):
    out, mods = run_cli(*args, "--workspace", str(ws.root))
    assert out.returncode == 0, out.stderr
    assert "textual" not in mods and not mods & set(HEAVY)


def test_first_frame_is_light(ws):
    out = subprocess.run([sys.executable, "-c", APP_PROBE, str(ws.root)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "STATE=True" in out.stdout
    frame = set(json.loads(next(x for x in out.stdout.splitlines() if x.startswith("FRAME="))[6:]))
    assert "textual" in frame and not frame & set(HEAVY)
    assert "textual_plotext" not in frame and "numpy" not in frame  # loaded after the first frame
    later = modules_of(out.stdout)  # after reading the workspace and warming up the job screen
    assert not later & set(HEAVY)
