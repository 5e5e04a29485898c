"""A workspace: one folder with ``llmctl.toml``, ``data/``, ``runs/`` and ``checkpoints/``."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_NAME = "llmctl.toml"
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

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None = None, *, create: bool = False) -> Workspace:
        """Open (or with ``create`` initialise) the workspace at ``path``."""
        root = resolve_root(path)
        cfg_path = root / CONFIG_NAME
        if not cfg_path.exists():
            if not create:
                raise WorkspaceError(f"no workspace at {root} (run `llmctl init --workspace {root}`)")
            return init_workspace(root)
        try:
            config = tomllib.loads(cfg_path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise WorkspaceError(f"{cfg_path}: {e}") from e
        ws = cls(root=root, config=config)
        return ws

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

    def tokenizer(self):  # -> Tokenizer
        """The workspace's tokenizer (see :mod:`llmctl.core.tokenizer`)."""
        from llmctl.core.tokenizer import get_tokenizer

        backend = self.config.get("tokenizer", {}).get("backend") or None
        return get_tokenizer(self.tokenizer_file(), backend)

    def save_config(self) -> None:
        """Write ``llmctl.toml`` back atomically."""
        import tomli_w

        from llmctl.core.atomic import write_text

        write_text(self.config_path, tomli_w.dumps(_drop_none(self.config)))


def _drop_none(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _drop_none(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [_drop_none(v) for v in obj if v is not None]
    return obj


def default_config() -> dict[str, Any]:
    """The config a new workspace starts with: paths, tokenizer and every built stage's defaults."""
    from llmctl.core.stages import STAGES, StageNotBuilt, stage_defaults

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
    if cfg_path.exists():
        existing = tomllib.loads(cfg_path.read_text(encoding="utf-8"))
        for key, value in existing.items():
            if key == "stages":
                for name, table in value.items():
                    config["stages"].setdefault(name, {}).update(table)
            else:
                config[key] = value
    ws = Workspace(root=root, config=config)
    ws.save_config()
    return ws
