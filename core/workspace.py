"""A workspace: one folder with ``llmctl.toml``, ``data/``, ``runs/`` and ``checkpoints/``."""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from llmctl.core.atomic import write_text
from llmctl.core.stages import STAGE_BY_NAME, STAGES, StageNotBuilt, stage_defaults
from llmctl.core.tokenizer import Tokenizer, get_tokenizer

CONFIG_NAME = "llmctl.toml"
PATH_KEYS = ("data", "runs", "checkpoints")
TOKENIZER_KEYS = ("file", "backend")
TOKENIZER_BACKENDS = ("auto", "riptoken", "tiktoken")
TABLES = ("paths", "tokenizer", "stages")
ENV_WORKSPACE = "LLMCTL_WORKSPACE"
DEFAULT_DIR = "workspace"


class WorkspaceError(RuntimeError):
    """The workspace is missing, unreadable or its config is invalid."""


def resolve_root(path: str | os.PathLike[str] | None = None) -> Path:
    """``path``, else ``$LLMCTL_WORKSPACE``, else ``./workspace``."""
    raw = path or os.environ.get(ENV_WORKSPACE) or DEFAULT_DIR
    return Path(raw).expanduser().absolute()


@dataclass
class Workspace:
    """An opened workspace: its root and parsed ``llmctl.toml``."""

    root: Path
    config: dict[str, Any] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)  # what opening it found and ignored, one line each

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None = None, *, create: bool = False) -> Workspace:
        """Open (or with ``create`` initialise) the workspace at ``path``."""
        root = resolve_root(path)
        cfg_path = root / CONFIG_NAME
        if not cfg_path.exists():
            if not create:
                raise WorkspaceError(f"no workspace at {root} (run `llmctl init --workspace {root}`)")
            return init_workspace(root)
        config = read_config(cfg_path)
        notices = check_config(config, cfg_path, root)
        return cls(root=root, config=config, notices=notices)

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_NAME

    def _dir(self, key: str, default: str) -> Path:
        raw = self.config.get("paths", {}).get(key, default)
        p = Path(raw).expanduser()
        return p if p.is_absolute() else self.root / p

    @property
    def data_dir(self) -> Path:
        return self._dir("data", "data")

    @property
    def runs_dir(self) -> Path:
        return self._dir("runs", "runs")

    @property
    def checkpoints_dir(self) -> Path:
        return self._dir("checkpoints", "checkpoints")

    def path(self, rel: str) -> Path:
        """A workspace-relative path (``data/x.h5``) made absolute; absolute paths pass through."""
        p = Path(rel).expanduser()
        if p.is_absolute():
            return p
        head, _, rest = rel.partition("/")
        if head == "data":
            return self.data_dir / rest
        if head == "checkpoints":
            return self.checkpoints_dir / rest
        if head == "runs":
            return self.runs_dir / rest
        return self.root / p

    def stage_config(self, stage: str) -> dict[str, Any]:
        """The ``[stages.<stage>]`` table of ``llmctl.toml`` (empty when absent)."""
        return dict(self.config.get("stages", {}).get(stage, {}))

    def tokenizer_file(self) -> str | None:
        """The ranks file: ``$LLMCTL_TIKTOKEN_FILE``, else ``[tokenizer] file`` (relative to the root)."""
        env = os.environ.get("LLMCTL_TIKTOKEN_FILE")
        if env:
            return env
        raw = self.config.get("tokenizer", {}).get("file") or ""
        if not raw:
            return None
        p = Path(raw).expanduser()
        return str(p if p.is_absolute() else self.root / p)

    def tokenizer(self) -> Tokenizer:
        """The workspace's tokenizer (see :mod:`llmctl.core.tokenizer`)."""
        backend = self.config.get("tokenizer", {}).get("backend") or None
        return get_tokenizer(self.tokenizer_file(), backend)

    def save_config(self) -> None:
        """Write ``llmctl.toml`` back atomically."""
        write_text(self.config_path, tomli_w.dumps(_drop_none(self.config)))


def _drop_none(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _drop_none(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [_drop_none(v) for v in obj if v is not None]
    return obj


def default_config() -> dict[str, Any]:
    """The config a new workspace starts with: paths, tokenizer and every built stage's defaults."""
    stages: dict[str, Any] = {}
    for st in STAGES:
        try:
            stages[st.name] = stage_defaults(st)
        except StageNotBuilt:
            continue
    return {
        "paths": {"data": "data", "runs": "runs", "checkpoints": "checkpoints"},
        "tokenizer": {"file": os.environ.get("LLMCTL_TIKTOKEN_FILE", ""), "backend": "auto"},
        "stages": stages,
    }


def init_workspace(path: str | os.PathLike[str] | None = None) -> Workspace:
    """Create a workspace (folders and ``llmctl.toml``); an existing config is kept and completed."""
    root = resolve_root(path)
    try:
        root.mkdir(parents=True, exist_ok=True)
        for sub in ("data", "runs", "checkpoints"):
            (root / sub).mkdir(exist_ok=True)
    except OSError as e:
        raise WorkspaceError(f"cannot create workspace at {root}: {e.strerror or e}") from e
    cfg_path = root / CONFIG_NAME
    config = default_config()
    notices: list[str] = []
    if cfg_path.exists():
        existing = read_config(cfg_path)
        notices = [n for n in check_config(existing, cfg_path, root) if ": dropped " not in n]
        for key, value in existing.items():
            if key == "stages":
                for name, table in value.items():
                    kept = {k: v for k, v in table.items() if k not in _retired(name)}  # dropped for good
                    config["stages"].setdefault(name, {}).update(kept)
            else:
                config[key] = value
    ws = Workspace(root=root, config=config, notices=notices)
    ws.save_config()
    return ws


# ---- llmctl.toml checks ---------------------------------------------------------------------------

def read_config(path: Path) -> dict[str, Any]:
    """``llmctl.toml`` parsed, or a WorkspaceError naming the file."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise WorkspaceError(f"{path}: {e}") from e


def _closest(name: str, known: Any) -> str:
    near = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {near[0]}?)" if near else ""


def _retired(stage: str) -> tuple[str, ...]:
    st = STAGE_BY_NAME.get(stage)
    try:
        return getattr(st.load_params_class(), "__retired__", ()) if st else ()
    except StageNotBuilt:
        return ()


def _check_strings(config: dict[str, Any], table: str, keys: tuple[str, ...], cfg_path: Path,
                   notices: list[str]) -> dict[str, Any]:
    values = config.get(table, {})
    if not isinstance(values, dict):
        raise WorkspaceError(f"{cfg_path}: [{table}] must be a table, got {values!r}")
    for key, value in values.items():
        if key not in keys:
            notices.append(f"{cfg_path}: unknown key {table}.{key}{_closest(key, keys)}; ignored")
        elif not isinstance(value, str):
            raise WorkspaceError(f"{cfg_path}: {table}.{key} must be a string, got {value!r}")
    return values


def check_config(config: dict[str, Any], cfg_path: Path, root: Path) -> list[str]:
    """Check ``llmctl.toml``'s tables and paths; return notices for what is ignored.

    A wrong type, a bad tokenizer backend or a relative path that leaves the workspace raises a
    WorkspaceError naming the key and file. Unknown tables and keys are ignored with a notice naming
    the closest known one; keys a stage no longer has are dropped with one notice.
    Stage values are checked against their types and ranges when the stage's parameters are built.
    """
    notices: list[str] = []
    for table in config:
        if table not in TABLES:
            notices.append(f"{cfg_path}: unknown table [{table}]{_closest(table, TABLES)}; ignored")
    paths = _check_strings(config, "paths", PATH_KEYS, cfg_path, notices)
    for key, value in paths.items():
        p = Path(value).expanduser()
        if key in PATH_KEYS and not p.is_absolute() and not (root / p).resolve().is_relative_to(root.resolve()):
            raise WorkspaceError(f"{cfg_path}: paths.{key} = {value!r} leaves the workspace; use a folder inside "
                                 "it, or an absolute path to put it elsewhere on purpose")
    tok = _check_strings(config, "tokenizer", TOKENIZER_KEYS, cfg_path, notices)
    if tok.get("backend", "auto") not in TOKENIZER_BACKENDS:
        raise WorkspaceError(f"{cfg_path}: tokenizer.backend = {tok['backend']!r}: expected one of "
                             f"{', '.join(TOKENIZER_BACKENDS)}")
    stages = config.get("stages", {})
    if not isinstance(stages, dict):
        raise WorkspaceError(f"{cfg_path}: [stages] must be a table of [stages.<name>] tables")
    dropped: dict[str, list[str]] = {}  # stage -> keys it no longer has
    for name, table in stages.items():
        if name not in STAGE_BY_NAME:
            notices.append(f"{cfg_path}: unknown table [stages.{name}]{_closest(name, STAGE_BY_NAME)}; ignored")
            continue
        if not isinstance(table, dict):
            raise WorkspaceError(f"{cfg_path}: [stages.{name}] must be a table, got {table!r}")
        try:
            known = {f.name for f in dataclasses.fields(STAGE_BY_NAME[name].load_params_class())}
        except StageNotBuilt:
            continue
        retired = _retired(name)
        for key in table:
            if key in known:
                continue
            if key in retired:
                dropped.setdefault(name, []).append(key)
            else:
                notices.append(f"{cfg_path}: unknown key {key} in [stages.{name}]{_closest(key, known)}; ignored")
    if dropped:
        by_keys: dict[tuple[str, ...], list[str]] = {}  # stages that lost the same keys, listed once
        for name, keys in dropped.items():
            by_keys.setdefault(tuple(sorted(keys)), []).append(name)
        what = "; ".join(f"{', '.join(names)}: {', '.join(keys)}" for keys, names in by_keys.items())
        notices.append(f"{cfg_path}: dropped keys that are no longer parameters (they did nothing): {what}; "
                       "`llmctl init` rewrites the file without them")
    return notices
