"""compute_score as verl calls it: GSM8K / MATH / arithmetic / bootcamp dispatch, the built-in
bootcamp verifiers against real rows and the originals' rules, the internbootcamp stand-in, and
that nothing ever raises."""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
from pathlib import Path

import pytest

from llmctl.core.rewards import bootcamp_verifiers as bv
from llmctl.core.verl_reward import compute_score, reset_reward_warnings, reward_warnings

BOOTCAMP_FILES = {
    "Game24": "game24.jsonl",
    "KorPuzzle24Points": "korPuzzle24Points.jsonl",
    "Sudoku": "sudoku.jsonl",
    "Maze": "maze.jsonl",
    "BbehMultistepArithmetic": "BbehMultistepArithmetic.jsonl",
}
STANDIN = Path(__file__).parent / "standin_internbootcamp"


def _rows(shared_data: Path, name: str) -> list[dict]:
    with open(shared_data / "internbootcamp" / BOOTCAMP_FILES[name], encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(autouse=True)
def _fresh_counters():
    reset_reward_warnings()
    yield
    reset_reward_warnings()


# ---- math sources ------------------------------------------------------------------------------

def test_gsm8k_real_gold(shared_data):
    from llmctl.core.data.prompts import gsm8k_target, parse_gsm8k_gold

    with open(shared_data / "gsm8k" / "test.jsonl", encoding="utf-8") as f:
        recs = [json.loads(line) for _, line in zip(range(100), f, strict=False)]
    for rec in recs:
        gold = parse_gsm8k_gold(rec["answer"])
        assert compute_score("openai/gsm8k", gsm8k_target(rec["answer"]), gold) == 1.0
        assert compute_score("openai/gsm8k", "<answer>-123456.5</answer>", gold) == 0.0
        # verl's own gsm8k preprocess keeps the full solution in places: "#### N" is unwrapped
        assert compute_score("openai/gsm8k", f"<answer>{gold}</answer>", rec["answer"]) == 1.0
    assert compute_score("llmctl/arithmetic", "<think>3+4</think><answer>7</answer>", "7") == 1.0
    assert compute_score("llmctl/arithmetic", "<answer>7</answer>", "7", format_weight=0.5) == 1.25
    assert reward_warnings() == {}


def test_math500_real_rows(shared_data):
    with open(shared_data / "math" / "math500_test.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for _, line in zip(range(40), f, strict=False)]
    for src in ("HuggingFaceH4/MATH-500", "lighteval/MATH", "DigitalLearningGmbH/MATH-lighteval"):
        for r in rows[:10]:
            assert compute_score(src, r["solution"], r["answer"]) == 1.0, r["answer"]
    right = sum(compute_score("HuggingFaceH4/MATH-500", r["solution"], r["answer"]) for r in rows)
    wrong = sum(compute_score("HuggingFaceH4/MATH-500", "\\boxed{-987654321.5}", r["answer"]) for r in rows)
    assert (right, wrong) == (len(rows), 0)
    # a ground truth given as a whole boxed solution is unwrapped
    assert compute_score("lighteval/MATH", "\\boxed{p-q}", "so \\boxed{p - q}") == 1.0


# ---- built-in bootcamp verifiers on real rows -----------------------------------------------

@pytest.mark.parametrize("name", sorted(BOOTCAMP_FILES))
def test_builtin_bootcamps_on_real_rows(shared_data, name):
    rows = _rows(shared_data, name)
    assert rows and all(r["data_source"] == name for r in rows)
    task = bv.builtin_task(name)
    for r in rows:
        gt = json.dumps(r["ground_truth"], ensure_ascii=False)  # as the converter stores it
        good, bad = task.solve(r["ground_truth"]), task.wrong(r["ground_truth"])
        assert good is not None and bad is not None
        assert compute_score(f"bootcamp/{name}", good, gt, {}) == 1.0, good
        assert compute_score(f"bootcamp/{name}", bad, gt, {}) == 0.0, bad
        assert compute_score(f"bootcamp/{name}", bad, gt, {}, format_score=0.1) == pytest.approx(0.1)
    assert compute_score(f"bootcamp/{name.lower()}", good, gt) == 1.0  # case-insensitive
    assert reward_warnings() == {}


def test_solvers_really_solve(shared_data):
    """The constructed answers are real solutions, checked independently of the verifiers."""
    from fractions import Fraction

    for r in _rows(shared_data, "Game24")[:20]:
        gt = r["ground_truth"]
        expr = bv.solve_arith([int(x) for x in gt["puzzle"].split()], gt["target"])
        assert bv.safe_arith(expr) == Fraction(gt["target"])
        assert sorted(bv._digit_runs(expr)) == sorted(gt["puzzle"].split())
    for r in _rows(shared_data, "Sudoku")[:10]:
        gt = r["ground_truth"]
        grid = bv.solve_sudoku(gt["puzzle"], gt["region_rows"])
        n = gt["size"]
        assert all(sorted(row) == list(range(1, n + 1)) for row in grid)
        assert all(sorted(col) == list(range(1, n + 1)) for col in zip(*grid, strict=True))
        assert all(g == p or p == 0 for gr, pr in zip(grid, gt["puzzle"], strict=True)
                   for g, p in zip(gr, pr, strict=True))
    for r in _rows(shared_data, "Maze")[:10]:
        gt = r["ground_truth"]
        path = bv.solve_maze(gt["grid"], tuple(gt["start_pos"]), tuple(gt["end_pos"]))
        assert len(path) <= len(gt["solution_path"])  # BFS is shortest
        assert all(gt["grid"][x][y] == 0 for x, y in path)


# ---- agreement with the InternBootcamp originals ---------------------------------------------
# Vectors derived by reading internbootcamp/bootcamp/base.py (verify_score) and the task files.

def _game24(output: str, identity: dict, **kw) -> float:
    return bv.verify_score(bv.builtin_task("Game24"), output, identity, **kw)


def test_game24_vectors_from_the_original():
    # game24.py's own __main__ data and their scores under its rules (format_score=0)
    cases = [({"puzzle": "6 6 6 6", "target": "24"}, "\\boxed{6*6-6/6}", 0.0),
             ({"puzzle": "5 9 10 20", "target": "30"}, "\\boxed{5*10-9+20}", 0.0),
             ({"puzzle": "5 9 10 11", "target": "30"}, "\\boxed{5 * 10-9-11}", 1.0),
             ({"puzzle": "5 9 10 11", "target": "30"}, "\\boxed{5 \\times 10-(9+11)}", 1.0),
             ({"puzzle": "5 9 10 11", "target": "30"}, "\\boxed{5\\times10-9+11}", 0.0),
             ({"puzzle": [0, 1, 3, 4], "target": "7"}, "\\boxed{(4 + 3) / (1 + 0)}", 0.0)]
    for identity, out, want in cases:
        assert _game24(out, identity) == want, out
    # a wrong answer that was extracted earns format_score; no answer earns nothing
    assert _game24("\\boxed{6*6-6/6}", cases[0][0], format_score=0.1) == 0.1
    assert _game24("no box", cases[0][0], format_score=0.1) == 0.0
    assert _game24("\\fbox{5*10-9-11}", cases[2][0], format_score=0.1) == 0.0  # original asserts "\boxed{"
    assert _game24("Final: \\boxed 5*10-9-11$ done", cases[2][0]) == 1.0  # the "\boxed " form, up to "$"
    assert _game24("\\boxed{5 \\div 5 * 9 + 10 + 11}", {"puzzle": "5 5 9 10 11", "target": "30"}) == 1.0
    assert _game24("\\boxed{5//5*9+10+11}", {"puzzle": "5 5 9 10 11", "target": "30"}) == 0.0


def test_verify_score_penalties_follow_base_py():
    identity = {"puzzle": "5 9 10 11", "target": 30}
    right = "\\boxed{5*10-9-11}"
    # format_penalty: exactly one <think>…</think>, at the start, and not ending with </think>
    assert _game24(right, identity, format_penalty=True) == 0.0
    assert _game24("<think>x</think>" + right, identity, format_penalty=True) == 1.0
    assert _game24("<think>x</think><think>y</think>" + right, identity, format_penalty=True) == 0.0
    assert _game24("a<think>x</think>" + right, identity, format_penalty=True) == 0.0
    assert _game24("<think>" + right + "</think>", identity, format_penalty=True) == 0.0
    # short_penalty: min(score * len/short_threshold, score * len(after </think>)/ans_threshold)
    out = "<think>" + "x" * 50 + "</think>" + right + " " * 10
    after = len(out) - out.rfind("</think>") - len("</think>")
    want = min(len(out) / 256, after / 128)
    assert _game24(out, identity, short_penalty=True) == pytest.approx(want)
    assert _game24(right, identity, short_penalty=True) == 0.0  # no </think>: nothing after it
    long = "<think>" + "x" * 300 + "</think>" + " " * 130 + right
    assert _game24(long, identity, short_penalty=True) == 1.0


def test_game24_exact_arithmetic_where_the_original_rounds():
    # Deliberate difference: the original's float eval gives 8/(3-8/3) = 23.999999999999996 != 24.
    assert _game24("\\boxed{8/(3-8/3)}", {"puzzle": "3 3 8 8", "target": 24}) == 1.0


@pytest.mark.timeout(30)
def test_24_point_answers_are_never_evaluated_as_python():
    kor = bv.builtin_task("KorPuzzle24Points")
    ident = {"numbers": [9, 9, 9, 9]}
    # under eval this is a C-level power that never finishes; here it is simply not arithmetic
    assert bv.verify_score(kor, "[[9**9**9**9]]", ident) == 0.0
    assert _game24("\\boxed{9^9^9^9}", {"puzzle": "9 9 9 9", "target": 24}) == 0.0  # XOR under eval
    assert _game24("\\boxed{__import__('os')}", {"puzzle": "", "target": 24}) == 0.0
    assert bv.safe_arith("abs(-24)") is None and bv.safe_arith("(1)" * 200) is None
    assert bv.safe_arith("((((((((((1+1))))))))))*12") == 24


def test_kor24_vectors():
    kor = bv.builtin_task("KorPuzzle24Points")
    ident = {"numbers": [2, 3, 4, 5]}
    assert bv.verify_score(kor, "So [[(5 + 3 - 2) × 4]]", ident) == 1.0
    assert bv.verify_score(kor, "[[(5+3-2)*4]] then [[2+3+4+5]]", ident, format_score=0.1) == 0.1  # last one
    assert bv.verify_score(kor, "[[(5+3-2)\n*4]]", ident, format_score=0.1) == 0.0  # no newline inside
    assert bv.verify_score(kor, "[[(5+3-2)*4*1]]", ident) == 0.0  # an extra number
    assert bv.verify_score(kor, "[[(5+3-2)×4÷1]]", {"numbers": [1, 2, 3, 4, 5]}) == 1.0


def test_sudoku_maze_bbeh_vectors(shared_data):
    sud = bv.builtin_task("Sudoku")
    gt = _rows(shared_data, "Sudoku")[0]["ground_truth"]
    assert bv.verify_score(sud, "[answer]\n1 2 x\n[/answer]", gt, format_score=0.1) == 0.0  # unparsable
    assert bv.verify_score(sud, "[answer]\n1 2 3\n[/answer]", gt, format_score=0.1) == 0.1  # wrong shape
    maze = bv.builtin_task("Maze")
    mgt = _rows(shared_data, "Maze")[0]["ground_truth"]
    path = bv.solve_maze(mgt["grid"], tuple(mgt["start_pos"]), tuple(mgt["end_pos"]))
    as_lists = "```json\n" + json.dumps([list(p) for p in path]) + "\n```"
    assert bv.verify_score(maze, as_lists, mgt, format_score=0.1) == 0.1  # original compares tuples
    assert bv.verify_score(maze, "```json\nnot a list\n```", mgt, format_score=0.1) == 0.1
    assert bv.verify_score(maze, "```json\n" + repr(path) + "\n```", mgt) == 1.0
    bbeh = bv.builtin_task("BbehMultistepArithmetic")
    assert bv.verify_score(bbeh, "[answer] 12.0 [/answer]", {"answer": 12}) == 1.0
    assert bv.verify_score(bbeh, "[answer]twelve[/answer]", {"answer": 12}, format_score=0.1) == 0.0
    assert bv.verify_score(bbeh, "[answer]1[/answer]x[answer]12[/answer]", {"answer": 12}) == 1.0


@pytest.mark.timeout(60)
def test_bootcamp_adversarial_outputs():
    ident = {"puzzle": "1 2 3 4", "target": 24}
    for junk in ("\\boxed{" * 200_000, "[[" * 500_000, "[answer]" * 200_000, "```json" * 200_000,
                 "\\boxed{" + "(" * 100_000 + "}", "[answer]\n" + "1 " * 500_000 + "[/answer]"):
        for name in BOOTCAMP_FILES:
            assert compute_score(f"bootcamp/{name}", junk, json.dumps(ident)) == 0.0


# ---- robustness: unknown sources, bad ground truth, raising verifiers --------------------------

def test_unknown_source_scores_zero_with_counted_rate_limited_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="llmctl.verl_reward"):
        for _ in range(12):
            assert compute_score("acme/unknown", "<answer>1</answer>", "1") == 0.0
    counts = reward_warnings()
    assert counts == {"unknown data_source: acme/unknown": 12}
    logged = [r for r in caplog.records if "acme/unknown" in r.getMessage()]
    assert len(logged) == 2  # the 1st and the 10th


@pytest.mark.parametrize("args, reason", [
    (("bootcamp/Game24", "\\boxed{1}", "{not json"), "ground truth does not parse"),
    (("bootcamp/Game24", "\\boxed{1}", "[1, 2]"), "ground truth does not parse"),
    (("bootcamp/Arc", "x", "{}"), "unknown bootcamp"),
    (("bootcamp/Game24", None, "{}"), "response is not a string"),
    ((None, "x", "1"), "data_source is not a string"),
    (("openai/gsm8k", "<answer>1</answer>", None), "verifier raised"),
])
def test_problems_never_raise(args, reason):
    assert compute_score(*args) == 0.0
    assert any(k.startswith(reason) for k in reward_warnings()), reward_warnings()


# ---- the internbootcamp package branch (against a stand-in) ----------------------------------

@pytest.fixture
def standin_package(monkeypatch):
    monkeypatch.syspath_prepend(str(STANDIN))
    for mod in [m for m in sys.modules if m == "internbootcamp" or m.startswith("internbootcamp.")]:
        monkeypatch.delitem(sys.modules, mod)
    bv.package_classes.cache_clear()
    import internbootcamp

    assert "stand-in" in internbootcamp.__doc__.lower()
    internbootcamp.CALLS.clear()
    yield internbootcamp
    bv.package_classes.cache_clear()
    sys.modules.pop("internbootcamp", None)


def test_package_bootcamps_are_used_when_installed(standin_package):
    gt = json.dumps({"answer": "42"})
    assert compute_score("bootcamp/Echo", "so [[42]]", gt) == 1.0
    assert compute_score("bootcamp/ECHO", "so [[41]]", gt, format_score=0.25) == 0.25
    assert standin_package.CALLS[-1] == ("Echobootcamp", "so [[41]]")
    # eval-ing originals stay on the safe built-in under "auto" …
    n = len(standin_package.CALLS)
    assert compute_score("bootcamp/Game24", "\\boxed{5*10-9-11}", json.dumps({"puzzle": "5 9 10 11",
                                                                               "target": 30})) == 1.0
    assert len(standin_package.CALLS) == n
    # … and reach the package when asked
    gt24 = json.dumps({"puzzle": "1 2 3 4", "target": 24, "expected": "1*2*3*4"})
    assert compute_score("bootcamp/Game24", "[[1*2*3*4]]", gt24, bootcamp_backend="package") == 1.0
    assert standin_package.CALLS[-1][0] == "Game24bootcamp"
    assert compute_score("bootcamp/Game24", "\\boxed{1*2*3*4}", gt24, bootcamp_backend="builtin") == 1.0


def test_package_lookup_never_reaches_other_attributes(standin_package):
    for name in ("evil", "Notabootcamp", "Nota", "_json", "json", "Base", "__class__", "CALLS", "os"):
        assert compute_score(f"bootcamp/{name}", "[[1]]", json.dumps({"answer": "1"})) == 0.0
    assert all(k.startswith("unknown bootcamp") for k in reward_warnings()), reward_warnings()
    assert set(bv.package_classes()) == {"echobootcamp", "game24bootcamp", "raisingbootcamp"}
    assert compute_score("bootcamp/Raising", "[[1]]", json.dumps({"answer": "1"})) == 0.0
    assert "verifier raised: bootcamp/Raising" in reward_warnings()


# ---- verl loads it unchanged -----------------------------------------------------------------

def _verl_import_utils():
    spec = importlib.util.find_spec("verl")
    if spec is None:
        pytest.skip("verl is not installed (pip install 'verl==0.9.1' --no-deps)")
    path = Path(list(spec.submodule_search_locations)[0]) / "utils" / "import_utils.py"
    # verl/__init__ imports ray; its loader module itself is plain Python, so load just that file
    mod_spec = importlib.util.spec_from_file_location("verl_import_utils_under_test", path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return mod


def test_verl_loader_resolves_pkg_and_file_paths():
    from llmctl.core.verl.launch import reward_path

    iu = _verl_import_utils()
    for ref in ("pkg", "file"):
        fn = iu.load_extern_object(module_path=reward_path(ref), object_name="compute_score")
        assert fn(data_source="openai/gsm8k", solution_str="<answer>18</answer>", ground_truth="18",
                  extra_info={"split": "test", "index": 0}) == 1.0
