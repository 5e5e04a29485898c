"""``llmctl sample --chat`` renders a prompt the way SFT/GRPO trained on it (chat + math instruction)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from llmctl.core.data.chat import render_prompt
from llmctl.core.data.prompts import GSM8K_INSTRUCTION, is_math_question, question_messages, user_messages

pytestmark = pytest.mark.filterwarnings("ignore")


def test_math_questions_get_the_training_instruction():
    assert is_math_question("What is 3 + 4?") and is_math_question("Tom has 3 apples. How many are left?")
    assert not is_math_question("Write a poem about the sea.") and not is_math_question("Who are you?")
    assert user_messages("What is 3 + 4?") == question_messages("What is 3 + 4?")
    assert user_messages("Who are you?") == [{"role": "user", "content": "Who are you?"}]
    assert user_messages("Who are you?", math=True) == question_messages("Who are you?")
    assert user_messages("What is 3 + 4?", math=False)[0]["content"] == "What is 3 + 4?"
    already = question_messages("What is 1 + 1?")[0]["content"]
    assert user_messages(already) == question_messages("What is 1 + 1?")


def _sample(ws, *args: str) -> list[dict]:
    res = subprocess.run([sys.executable, "-m", "llmctl.core.cli", "sample", *args, "--json", "-w", str(ws.root)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    return [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]


def test_demo_sft_model_answers_in_its_trained_format(workspace):
    """A model SFT-trained on the demo's arithmetic rows (level 1, worked answers), sampled greedily
    by stage name as the README does: the prompt is the training prompt and the reply its format."""
    from rl_support import arithmetic_sft

    arithmetic_sft(workspace)
    [out] = _sample(workspace, "sft", "--prompt", "What is 3 + 4?", "--chat", "--temperature", "0",
                    "--max-new-tokens", "40")
    assert out["prompt"] == render_prompt(question_messages("What is 3 + 4?"))
    assert out["prompt"].startswith("User:\n" + GSM8K_INSTRUCTION)
    assert re.fullmatch(r"<think>.*</think><answer>-?\d+</answer>", out["completion"], flags=re.S), out
    assert out["stopped"]
    [raw] = _sample(workspace, "sft", "--prompt", "What is 3 + 4?", "--chat", "--no-math", "--temperature", "0",
                    "--max-new-tokens", "8")
    assert raw["prompt"] == render_prompt([{"role": "user", "content": "What is 3 + 4?"}])


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.mark.anyio
async def test_playground_prompts_as_training_did(workspace):
    """The app's playground (chat format on, its default) shows the instruction-prefixed user turn and
    the model's reply in its trained format."""
    from rl_support import arithmetic_sft
    from tui_support import FakeNVML, h100, wait_for

    from llmctl.core.gpu import GpuPoller
    from llmctl.tui.app import LlmctlApp

    arithmetic_sft(workspace)
    app = LlmctlApp(workspace.root, gpu=GpuPoller(nvml=FakeNVML([h100()])), start_gpu=False)
    async with app.run_test(size=(150, 45)) as pilot:
        await pilot.pause()
        app.open_playground()
        assert await wait_for(pilot, lambda: type(app.screen).__name__ == "PlaygroundScreen"
                              and any("checkpoint(s)" in str(s.render()) for s in app.screen.query("#play-status")))
        app.screen.query_one("#play-prompt").value = "What is 3 + 4?"
        app.screen.query_one("#play-extra").value = "--temperature 0 --max-new-tokens 40"
        app.screen.action_generate()
        status = app.screen.query_one("#play-status")
        assert await wait_for(pilot, lambda: str(status.render()) in ("done",) or "exited" in str(status.render()),
                              timeout=300)
        text = "\n".join("".join(seg.text for seg in strip) for strip in app.screen.query_one("#play-out").lines)
        assert str(status.render()) == "done", text
        assert GSM8K_INSTRUCTION[:40] in text and re.search(r"<answer>-?\d+</answer>", text), text
