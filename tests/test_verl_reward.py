"""compute_score as verl calls it: GSM8K / MATH / arithmetic / bootcamp dispatch, scores in [0, 1],
bad settings refused, the internbootcamp stand-in (upstream's signature) in both conventions, and
that no response ever makes it raise. The bootcamp verifiers themselves: test_bootcamp_rewards.py."""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
from pathlib import Path

import pytest

from llmctl.core.rewards.bootcamp.package import package_classes
from llmctl.core.verl_reward import compute_score, reset_reward_warnings, reward_warnings

STANDIN = Path(__file__).parent / "standin_internbootcamp"


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
    # (correct + w * format) / (1 + w): a bare answer has format 0.5
    assert compute_score("llmctl/arithmetic", "<answer>7</answer>", "7", format_weight=0.5) == pytest.approx(1.25 / 1.5)
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


# ---- scores stay in [0, 1]; bad settings are refused -----------------------------------------

@pytest.mark.parametrize("gold", ["nan", "inf", "-inf", "NaN", float("nan"), float("inf")])
def test_non_finite_ground_truth_never_scores(gold):
    for answer in ("<answer>nan</answer>", "<answer>inf</answer>", "<answer>-inf</answer>"):
        assert compute_score("openai/gsm8k", answer, gold) == 0.0
        assert compute_score("HuggingFaceH4/MATH-500", answer, gold) == 0.0
    assert any(k.startswith("verifier raised") for k in reward_warnings())


@pytest.mark.parametrize("kwargs", [
    {"format_weight": float("nan")}, {"format_weight": float("inf")}, {"format_weight": -0.1},
    {"format_score": 5}, {"format_score": float("nan")}, {"format_score": -0.5},
    {"short_threshold": -1}, {"short_threshold": 10.5}, {"short_penalty": "yes"}, {"format_penalty": 1},
    {"ans_threshold": 128}, {"bootcamp_convention": "train"}, {"bootcamp_backend": "remote"},
])
def test_bad_settings_are_refused(kwargs):
    key = next(iter(kwargs))
    with pytest.raises(ValueError, match=key):
        compute_score("openai/gsm8k", "<answer>1</answer>", "1", **kwargs)
    with pytest.raises(ValueError, match=key):
        compute_score("bootcamp/Game24", "\\boxed{1}", json.dumps({"puzzle": "1", "target": 1}), **kwargs)


def test_every_score_is_in_unit_interval(shared_data):
    for w in (0.0, 0.5, 3.0):
        for ans in ("<think>x</think><answer>7</answer>", "<answer>7</answer>", "<answer>8</answer>", ""):
            s = compute_score("llmctl/arithmetic", ans, "7", format_weight=w)
            assert 0.0 <= s <= 1.0
    assert compute_score("llmctl/arithmetic", "<think>3+4</think><answer>7</answer>", "7", format_weight=3.0) == 1.0


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
    (("bootcamp/NoSuchPuzzle", "x", "{}"), "unknown bootcamp"),
    (("bootcamp/Arc", "<think>x</think>[[1]]", json.dumps({"input_grid": [[1]], "task_key": "ffffffff"})),
     "no built-in verifier for this row"),
    (("bootcamp/Game24", None, "{}"), "response is not a string"),
    ((None, "x", "1"), "data_source is not a string"),
    (("openai/gsm8k", "<answer>1</answer>", None), "verifier raised"),
])
def test_problems_never_raise(args, reason):
    assert compute_score(*args) == 0.0
    assert any(k.startswith(reason) for k in reward_warnings()), reward_warnings()


# ---- the internbootcamp package branch (against a stand-in with upstream's signature) ------------

@pytest.fixture
def standin_package(monkeypatch):
    monkeypatch.syspath_prepend(str(STANDIN))
    for mod in [m for m in sys.modules if m == "internbootcamp" or m.startswith("internbootcamp.")]:
        monkeypatch.delitem(sys.modules, mod)
    package_classes.cache_clear()
    import internbootcamp

    assert "stand-in" in internbootcamp.__doc__.lower()
    internbootcamp.CALLS.clear()
    yield internbootcamp
    package_classes.cache_clear()
    sys.modules.pop("internbootcamp", None)


def test_standin_has_upstreams_signature(standin_package):
    import inspect

    sig = inspect.signature(standin_package.Basebootcamp.verify_score)
    assert {k: p.default for k, p in sig.parameters.items() if p.default is not p.empty} == {
        "format_score": 0, "short_penalty": True, "short_threshold": 100, "format_penalty": True}


def test_package_scores_in_the_chosen_convention(standin_package):
    gt = json.dumps({"answer": "42"})
    short_right = "so [[42]]"  # right, but short and without </think>
    # eval: upstream's evaluation script turns both penalties off, so a short right answer is right
    assert compute_score("bootcamp/Echo", short_right, gt, bootcamp_convention="eval") == 1.0
    assert compute_score("bootcamp/ECHO", "so [[41]]", gt, bootcamp_convention="eval", format_score=0.25) == 0.25
    assert standin_package.CALLS[-1] == ("Echobootcamp", "so [[41]]")
    # verl (the default): upstream's training reward zeroes it
    assert compute_score("bootcamp/Echo", short_right, gt) == 0.0
    long_right = "<think>" + "reasoning " * 12 + "</think> so [[42]]"
    assert compute_score("bootcamp/Echo", long_right, gt) == 1.0
    assert compute_score("bootcamp/Echo", long_right.replace("</think>", ""), gt) == 0.0


def test_package_and_builtin_agree_by_convention(standin_package):
    gt = json.dumps({"puzzle": "1 2 3 4", "target": 24, "expected": "1*2*3*4"})
    for conv, want in (("eval", 1.0), ("verl", 0.0)):
        assert compute_score("bootcamp/Game24", "[[1*2*3*4]]", gt, bootcamp_backend="package",
                             bootcamp_convention=conv) == want
        assert compute_score("bootcamp/Game24", "\\boxed{1*2*3*4}", gt, bootcamp_backend="builtin",
                             bootcamp_convention=conv) == want
    assert standin_package.CALLS[-1][0] == "Game24bootcamp"


def test_eval_originals_and_missing_types_use_builtins(standin_package):
    from llmctl.core.rewards.compute_score import bootcamp_backend, can_score

    n = len(standin_package.CALLS)
    gt = json.dumps({"puzzle": "5 9 10 11", "target": 30})
    assert compute_score("bootcamp/Game24", "\\boxed{5*10-9-11}", gt, bootcamp_convention="eval") == 1.0
    assert len(standin_package.CALLS) == n  # Game24's original evals model text: the built-in scores it
    assert can_score("bootcamp/Game24") == (True, "built-in")
    assert can_score("bootcamp/Echo") == (True, "internbootcamp")
    assert can_score("bootcamp/Sudoku") == (True, "built-in")  # the stand-in lacks it: fallback
    assert bootcamp_backend("Echo", backend="builtin") == "none"


def test_package_lookup_never_reaches_other_attributes(standin_package):
    for name in ("evil", "Notabootcamp", "Nota", "_json", "json", "Base", "__class__", "CALLS", "os"):
        assert compute_score(f"bootcamp/{name}", "[[1]]", json.dumps({"answer": "1"})) == 0.0
    assert all(k.startswith("unknown bootcamp") for k in reward_warnings()), reward_warnings()
    assert set(package_classes()) == {"echobootcamp", "game24bootcamp", "raisingbootcamp"}
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


# ---- the symbolic path under verl's worker threads ------------------------------------------

def test_bombs_are_refused_before_big_integer_work_in_worker_threads():
    import threading

    from llmctl.core.rewards.math_equiv import equiv_stats

    gold_sym, pred_sym = "\\left( 3, \\frac{\\pi}{2} \\right)", "\\boxed{(3, \\pi/2)}"
    results: list[float] = []
    before = equiv_stats()

    def worker() -> None:
        for bomb in ("\\boxed{(99999!)!}", "\\boxed{(10^{5})!}", "\\boxed{9^{9^{9^{9}}}}", "\\boxed{(99999!)!}"):
            results.append(compute_score("HuggingFaceH4/MATH-500", bomb, "\\frac{1}{2}"))
        results.append(compute_score("HuggingFaceH4/MATH-500", pred_sym, gold_sym))  # needs sympy

    t = threading.Thread(target=worker)
    t.start()
    t.join(120)
    after = equiv_stats()
    assert results == [0.0, 0.0, 0.0, 0.0, 1.0]
    assert after["bombs"] - before["bombs"] == 4  # refused unparsed …
    assert after["calls"] - before["calls"] == 1  # … only the real answer reached sympy
    assert after["abandoned_running"] == before["abandoned_running"]
    assert compute_score("HuggingFaceH4/MATH-500", pred_sym, gold_sym) == 1.0  # and the main thread too
