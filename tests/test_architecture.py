"""The floor plan holds: imports run one way, and no folder of modules swallows the code base.

The rules (README, "Architecture"):

- ``core`` outside ``core/cli`` never imports ``trainers`` or ``tui``; the ``llmctl.trainers.*:run``
  strings that the stage declarations load through importlib count as imports and are allowed in
  ``core/stages.py`` only;
- ``tui`` never imports ``trainers``; ``trainers`` never import ``tui``;
- nothing in ``core`` imports torch, textual, datasets or transformers at module level.

Every ``import`` statement counts, inside functions too, and so does a string naming a module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"core": "llmctl.core", "trainers": "llmctl.trainers", "tui": "llmctl.tui"}
HEAVY_AT_TOP = ("torch", "textual", "datasets", "transformers", "verl")
STAGE_DECLARATIONS = REPO / "core" / "stages.py"
PUBLIC_REWARD_SHIM = REPO / "core" / "verl_reward.py"  # users' verl configs name this path


def modules(folder: str) -> list[Path]:
    return sorted((REPO / folder).rglob("*.py"))


def imported_names(path: Path) -> list[tuple[int, str, bool]]:
    """(line, module name, at module level) for every import and every string that names a module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top = {id(n) for n in tree.body}
    out: list[tuple[int, str, bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out += [(node.lineno, f"{node.module}.{a.name}", id(node) in top) for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("llmctl."):
            out.append((node.lineno, node.value.split(":")[0], False))
    return out


def violations(folder: str, forbidden: tuple[str, ...], allow: set[Path] = frozenset(),
               skip: tuple[str, ...] = ()) -> list[str]:
    bad = []
    for path in modules(folder):
        rel = path.relative_to(REPO)
        if path in allow or any(str(rel).startswith(s) for s in skip):
            continue
        for line, name, _ in imported_names(path):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                bad.append(f"{rel}:{line} imports {name}")
    return bad


def test_core_outside_cli_never_imports_trainers_or_tui():
    bad = violations("core", ("llmctl.trainers", "llmctl.tui"), skip=("core/cli/",))
    # the stage declarations name their runners as strings; only those
    bad = [b for b in bad if not (b.startswith("core/stages.py") and "llmctl.trainers" in b)]
    assert not bad, "\n".join(bad)


def test_only_the_stage_declarations_name_trainer_runners():
    names = [n for _, n, _ in imported_names(STAGE_DECLARATIONS) if n.startswith("llmctl.tui")]
    assert not names


WING_ALLOWS = {  # wing -> the other wings of core it may import (the spine is allowed to all)
    "spine": set(),
    "data": set(),
    "rewards": set(),
    "verl": {"data", "rewards"},
}


def wing_of(name: str) -> str | None:
    parts = name.split(".")
    if parts[:2] != ["llmctl", "core"] or len(parts) < 3:
        return None
    return parts[2] if parts[2] in ("data", "rewards", "verl", "cli") else "spine"


def test_core_wings_import_only_what_the_table_allows():
    bad = []
    for wing, allowed in WING_ALLOWS.items():
        folder = REPO / "core" / ("" if wing == "spine" else wing)
        paths = folder.glob("*.py") if wing == "spine" else folder.rglob("*.py")
        for path in paths:
            if path == PUBLIC_REWARD_SHIM:
                continue
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [f"{node.module}.{a.name}" for a in node.names]
                         if isinstance(node, ast.ImportFrom) and node.module else [])
                for name in names:
                    target = wing_of(name)
                    if target not in (None, "spine", wing) and target not in allowed:
                        bad.append(f"{path.relative_to(REPO)}:{node.lineno} ({wing}) imports {name}")
    assert not bad, "\n".join(bad)


def test_tui_never_imports_trainers():
    bad = violations("tui", ("llmctl.trainers",))
    assert not bad, "\n".join(bad)


def test_trainers_never_import_tui():
    bad = violations("trainers", ("llmctl.tui",))
    assert not bad, "\n".join(bad)


def test_core_has_no_heavy_import_at_module_level():
    bad = []
    for path in modules("core"):
        for line, name, at_top in imported_names(path):
            if at_top and name.split(".")[0] in HEAVY_AT_TOP:
                bad.append(f"{path.relative_to(REPO)}:{line} imports {name} at module level")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("folder", ["core", "trainers", "tui"])
def test_the_contract_sees_a_planted_violation(folder, tmp_path, monkeypatch):
    """The checker itself works: a module importing across the rules is reported."""
    target = {"core": "llmctl.tui.app", "trainers": "llmctl.tui.app", "tui": "llmctl.trainers.model"}[folder]
    planted = tmp_path / folder / "planted.py"
    planted.parent.mkdir()
    planted.write_text(f"def f():\n    import {target}\n")
    monkeypatch.setattr(__import__(__name__), "REPO", tmp_path)
    forbidden = ("llmctl.trainers", "llmctl.tui") if folder == "core" else (target.rsplit(".", 1)[0],)
    assert violations(folder, forbidden) == [f"{folder}/planted.py:2 imports {target}"]


def test_no_folder_holds_more_than_a_quarter_of_the_code():
    folders: dict[str, int] = {}
    for top in PACKAGES:
        for path in modules(top):
            folders.setdefault(str(path.parent.relative_to(REPO)), 0)
            folders[str(path.parent.relative_to(REPO))] += len(path.read_text().splitlines())
    total = sum(folders.values())
    shares = {f: n / total for f, n in folders.items()}
    print("\n".join(f"{f:16} {n:6} lines {shares[f]:.1%}" for f, n in sorted(folders.items())))
    assert max(shares.values()) <= 0.25, shares


TOKENIZER_BUILDERS = {  # the only modules that build a tokenizer; everything else asks ``ws.tokenizer()``
    REPO / "core" / "tokenizer.py",
    REPO / "core" / "workspace.py",
    REPO / "trainers" / "export_hf.py",  # from the ranks file its caller names (``ws.tokenizer_file()``)
}


def test_only_the_workspace_builds_a_tokenizer():
    bad = []
    for top in PACKAGES:
        for path in modules(top):
            if path in TOKENIZER_BUILDERS:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "get_tokenizer":
                    bad.append(f"{path.relative_to(REPO)}:{node.lineno} calls get_tokenizer (use ws.tokenizer())")
    assert not bad, "\n".join(bad)


LONG, TOO_LONG, MOST_LONG = 80, 100, 3  # lines of one function: none over TOO_LONG, at most MOST_LONG over LONG


def function_lengths(folders: tuple[str, ...] = tuple(PACKAGES)) -> list[tuple[int, str]]:
    """(lines, "path:line name") of every function and method, decorators left out."""
    out = []
    for top in folders:
        for path in modules(top):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    out.append((node.end_lineno - node.lineno + 1,
                                f"{path.relative_to(REPO)}:{node.lineno} {node.name}"))
    return sorted(out, reverse=True)


def test_no_function_is_too_long():
    lengths = function_lengths()
    too_long = [f"{where} ({n} lines)" for n, where in lengths if n > TOO_LONG]
    assert not too_long, f"split these (over {TOO_LONG} lines):\n" + "\n".join(too_long)
    long = [f"{where} ({n} lines)" for n, where in lengths if n > LONG]
    assert len(long) <= MOST_LONG, f"more than {MOST_LONG} functions over {LONG} lines:\n" + "\n".join(long)


def test_the_length_check_sees_a_long_function(tmp_path, monkeypatch):
    (tmp_path / "core").mkdir()
    body = "".join(f"    x{i} = {i}\n" for i in range(TOO_LONG))
    (tmp_path / "core" / "planted.py").write_text(f"def planted():\n{body}")
    monkeypatch.setattr(__import__(__name__), "REPO", tmp_path)
    assert function_lengths(("core",)) == [(TOO_LONG + 1, "core/planted.py:1 planted")]
