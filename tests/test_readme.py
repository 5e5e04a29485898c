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


# ---- every command in the README's code blocks, run ---------------------------------------------------
#
# Each README line maps to how it is run here: in a temporary folder (so `ws` and `demo-ws` are fresh
# workspaces), with the README's own words, local copies of the hub datasets it names (`swap`), and
# tiny sizes appended (`add`; a repeated option's last value wins), checking the exit code and a key
# line. A line that needs the network, GPUs or hours with no small form is run with --help only and
# listed in HELP_ONLY with the reason. A README line missing from both fails the test.

SHARED = REPO.parent / "shared" / "data"
TINY_TRAIN = ["--preset", "tiny", "--max-steps", "2", "--batch-size", "2", "--context-length", "64",
              "--eval-every", "0", "--save-every", "0"]
TINY_RL = ["--max-steps", "1", "--prompts-per-step", "2", "--num-generations", "2", "--max-new-tokens", "8",
           "--eval-prompts", "2", "--eval-every", "0", "--save-every", "0"]
PLANS: dict[str, dict] = {
    # "The whole pipeline with real datasets"
    "llmctl init --workspace ws": {"key": "ws"},
    "llmctl prepare pretrain -w ws --inputs 'pile/train/*.jsonl.zst'": {
        "swap": {"pile/train/*.jsonl.zst": str(SHARED / "pile-sample" / "c4_demo.jsonl")},
        "add": ["--max-tokens", "20000"], "key": "pile_train.h5:"},
    "llmctl prepare pretrain -w ws --inputs pile/val.jsonl.zst --split val": {
        "swap": {"pile/val.jsonl.zst": str(SHARED / "pile-sample" / "wiki_demo.txt")},
        "add": ["--max-tokens", "5000"], "key": "pile_dev.h5:"},
    "llmctl prepare sft -w ws --sources alpaca --sources dolly --sources gsm8k": {
        "add": ["--alpaca", str(SHARED / "alpaca" / "alpaca_small.json"),
                "--dolly", str(SHARED / "dolly" / "databricks-dolly-15k.head49.jsonl"),
                "--gsm8k", str(SHARED / "gsm8k" / "train.jsonl"), "--max-examples", "12", "--seq-len", "256"],
        "key": "sft_packed.h5:"},
    "llmctl prepare prefs -w ws --hh-rlhf Anthropic/hh-rlhf:helpful-base --ultrafeedback "
    "HuggingFaceH4/ultrafeedback_binarized": {
        "swap": {"Anthropic/hh-rlhf:helpful-base": str(SHARED / "hh-rlhf" / "helpful-base-test.jsonl.gz"),
                 "HuggingFaceH4/ultrafeedback_binarized":
                     str(SHARED / "ultrafeedback" / "ultrafeedback_binarized.eval_clean.jsonl")},
        "add": ["--max-pairs", "40"], "key": "preferences:"},
    "llmctl prepare rl -w ws": {
        "add": ["--gsm8k", str(SHARED / "gsm8k"), "--max-examples", "40", "--arithmetic-n", "40"],
        "key": "rl prompts:"},
    "llmctl run pretrain -w ws --preset gpt2 --max-steps 20000 --batch-size 16 --context-length 1024": {
        "add": TINY_TRAIN, "key": "pretrain step 2/2"},
    "llmctl run sft -w ws": {"add": TINY_TRAIN + ["--context-length", "256"], "key": "sft step 2/2"},
    "llmctl run grpo -w ws --train-data data/rl_prompts_train.jsonl": {"add": TINY_RL, "key": "grpo step 1/1"},
    "llmctl eval -w ws": {"add": ["--gsm8k-n", "2", "--arithmetic-n", "2", "--dev-batches", "1",
                                  "--max-new-tokens", "8"], "key": "results in"},
    "llmctl status -w ws": {"key": "ckpt_ppo"},
    # "RL with verl"
    "llmctl verl convert -w ws --src InternBootcamp/generated": {
        "swap": {"InternBootcamp/generated": str(SHARED / "internbootcamp" / "game24.jsonl")},
        "key": "verl convert (bootcamp): 1 files"},
    "llmctl verl convert -w ws --from rl-prompts": {"key": "verl convert (rl-prompts)"},
    "llmctl verl check -w ws": {"key": "ok"},
    "llmctl export hf sft hf-model -w ws": {"key": "exported"},
    "llmctl verl launch -w ws --model hf-model --n 8 --gpus 8": {"key": "verl.trainer.main_ppo"},
    # "For example"
    "llmctl jobs -w ws": {"key": ""},
    "llmctl preview sft_packed -w ws --row 3": {"key": "sft_packed.h5"},
    # the tiny SFT rows hold their first GSM8K example in row 5 (row 3 of the full datasets has one)
    "llmctl preview sft_packed -w ws --row 3 --check-gsm8k": {"swap": {"3": "5"}, "key": "ok"},
    "llmctl gpus --json": {"key": "{"},
    # "Try it offline in a few minutes" (the whole demo is tests/test_demo.py's; here up to its data)
    "llmctl demo --workspace demo-ws": {"add": ["--stop-after", "data"], "key": "demo stopped after data"},
    "llmctl demo --workspace demo-ws --detach": {"add": ["--stop-after", "data"], "key": "started the demo as a job",
                                                 "wait_job": "demo-ws"},
    "llmctl report --workspace demo-ws": {"key": "report"},
    'llmctl sample grpo -w demo-ws --prompt "What is 3 + 4?" --chat --temperature 0': {
        "before": "grpo_checkpoint", "add": ["--max-new-tokens", "40"], "key": "<answer>"},
}
HELP_ONLY: dict[str, str] = {  # README line -> why it runs with --help only here
    "llmctl run reward -w ws": "a real run is tests/test_train_reward.py's (the README's sizes take hours on a CPU)",
    "llmctl run dpo -w ws": "a real run is tests/test_train_dpo.py's (the README's sizes take hours on a CPU)",
    "llmctl run ppo -w ws --reward reward_model": "needs the reward model above; a real run is "
                                                  "tests/test_train_ppo.py's (hours at the README's sizes)",
}


def _readme_lines() -> list[str]:
    out = []
    for block in _bash_blocks((REPO / "README.md").read_text()):
        for line in block.splitlines():
            cmd = line.split("  #")[0].strip()
            if cmd.startswith("llmctl "):
                out.append(cmd)
    return out


def test_every_readme_command_has_a_plan():
    missing = [c for c in _readme_lines() if c not in PLANS and c not in HELP_ONLY]
    assert not missing, "README commands this test does not run yet (add them to PLANS or HELP_ONLY):\n" + \
        "\n".join(missing)


def _argv(cmd: str, plan: dict) -> list[str]:
    import shlex

    words = [plan.get("swap", {}).get(w, w) for w in shlex.split(cmd)]
    return [sys.executable, "-m", "llmctl.core.cli", *words[1:], *plan.get("add", [])]


def _grpo_checkpoint(root: Path) -> None:
    """The demo's GRPO stage stands in as a short arithmetic SFT (tests/rl_support.py), saved as a
    ready GRPO checkpoint: what `sample grpo` needs to answer in the trained format."""
    from rl_support import arithmetic_sft

    from llmctl.core.workspace import Workspace
    from llmctl.trainers.checkpoint import load_model, save_checkpoint

    ws = Workspace.open(root, create=False)
    path = arithmetic_sft(ws)
    save_checkpoint(ws.checkpoints_dir / "grpo" / "readme", load_model(path, "cpu"), step=1, stage="grpo")


def test_readme_commands_run(tmp_path):
    import os

    from llmctl.core import jobs

    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMCTL_") or k == "LLMCTL_TIKTOKEN_FILE"}
    env.update(HF_HUB_OFFLINE="1", LLMCTL_PROGRESS="plain")
    failures = []
    for cmd in _readme_lines():
        if cmd in HELP_ONLY:
            argv = [sys.executable, "-m", "llmctl.core.cli", *cmd.split()[1:], "--help"]
            plan = {"key": "Usage"}
        else:
            plan = PLANS[cmd]
            argv = _argv(cmd, plan)
            if plan.get("before") == "grpo_checkpoint":
                _grpo_checkpoint(tmp_path / "demo-ws")
        res = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        out = res.stdout + res.stderr
        if res.returncode != 0 or plan["key"] not in out:
            failures.append(f"{cmd}\n  ran: {' '.join(argv[3:])}\n  exit {res.returncode}, "
                            f"wanted {plan['key']!r}; output ends:\n{out[-1500:]}")
            continue
        if plan.get("wait_job"):
            [run] = [r for r in jobs.list_jobs(tmp_path / plan["wait_job"] / "runs") if r.stage == "demo"]
            state = jobs.wait_job(run.path, timeout=300).get("state")
            assert state == "done", (run.path / "log.txt").read_text()[-2000:]
    assert not failures, "\n\n".join(failures)


def test_demo_figures_line_comes_from_the_measured_file(tmp_path):
    import json
    import shutil

    from llmctl.core.cli import demo_figures

    fig = json.loads((REPO / "benchmarks" / demo_figures.FILE).read_text())
    assert demo_figures.readme_block((REPO / "README.md").read_text()) == demo_figures.figures_line(fig), \
        "README's demo figures differ from benchmarks/demo_figures.json: run python -m llmctl.core.cli.demo_figures"
    # a new demo run's file replaces both, in one step
    repo = tmp_path / "repo"
    (repo / "benchmarks").mkdir(parents=True)
    shutil.copy(REPO / "README.md", repo / "README.md")
    ws = tmp_path / "demo-ws"
    ws.mkdir()
    def table(greedy: float, pass1: float) -> dict:
        return {"n": 128, "k": 8, "temperature": 1.0, "all": {"greedy": greedy, "pass@1": pass1}, "levels": {}}

    new = []
    for seed, ws in enumerate((tmp_path / "ws0", tmp_path / "ws1")):
        ws.mkdir()
        held = {"before": table(0.39, 0.34 + seed / 100), "after": table(0.7, 0.58)}
        new.append(demo_figures.measured(146.4 + seed, {"reward": (0.5234, 0.7051)}, held, grpo_steps=16, fast=False,
                                         load_before=0.5, seed=seed))
        (ws / demo_figures.FILE).write_text(json.dumps(new[-1]))
    line = demo_figures.update(tmp_path / "ws0", tmp_path / "ws1", repo=repo)
    loads = [x for f in new for x in f["load"] if x is not None]  # 0.5 before, this machine's load after
    assert line.startswith("Measured over seeds 0, 1: 146/147 s on a ") and f"load average {min(loads)}–{max(loads)}" in line
    assert "GRPO mean reward 0.52 → 0.71, 0.52 → 0.71 (first vs last quarter of 16 steps)" in line
    assert "held-out pass@1 (T=1, k=8, 128 prompts) 0.34 → 0.58, 0.35 → 0.58" in line
    assert "held-out greedy accuracy 0.39 → 0.70, 0.39 → 0.70" in line
    assert demo_figures.readme_block((repo / "README.md").read_text()) == line
    assert json.loads((repo / "benchmarks" / demo_figures.FILE).read_text()) == {"runs": new}


def test_install_lines_say_what_torch_pulls_and_match_ci():
    """Item 1 and 6 of issue 18: PyTorch's CPU index as the CPU-only alternative; the extras' install
    line spells the same packages as .ci/run; each table row names tests that exist."""
    import re as _re
    import shlex

    readme = (REPO / "README.md").read_text()
    blocks = _bash_blocks(readme)
    assert any(b.startswith("pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu")
               for b in blocks)
    assert "CUDA packages" in readme
    extras = next(b for b in blocks if "verl==" in b and "pytest" not in b)
    ci = (REPO / ".ci" / "run").read_text()
    ci_specs = set(_re.findall(r'"([A-Za-z][\w.-]*==[^"]+)"', ci))
    assert ci_specs and ci_specs <= set(shlex.split(extras)), \
        f"in .ci/run but not in the README's extras line: {ci_specs - set(shlex.split(extras))}"
    table = "\n".join(_re.findall(r"^\| `tests/.*$", readme, flags=_re.M))
    selections = _re.findall(r"`(tests/[^`]+)`", table)
    assert len(selections) == 4
    for sel in selections:  # each names tests that exist
        res = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                              *shlex.split(sel)], cwd=REPO, capture_output=True, text=True)
        assert res.returncode == 0 and "::" in res.stdout, f"{sel}: {res.stdout[-500:]}{res.stderr[-500:]}"
