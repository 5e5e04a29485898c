"""What a stage needs before it starts, checked without starting it, each gap said with its fix.

The launch form shows these so that a stage whose tokenizer, inputs or data sources are missing
says so before it runs, instead of failing in its log. Checks are cheap: files are looked at, the
network is probed once per process (``net_probe``), and nothing is downloaded or tokenized.

- tokenizer: the ranks file named by ``$LLMCTL_TIKTOKEN_FILE`` / ``[tokenizer] file`` exists, else
  tiktoken's cache holds r50k_base, else its download host answers;
- inputs: every artifact the stage needs is ready (or stale), else the stage that makes it is named;
- sources (stages that read sources rather than artifacts: prepare, verl convert): a parameter value
  that names local files exists; a hub id (in a field whose help says it takes one) is reachable,
  else the local-file alternative is named.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmctl.core.data.hf_sources import hub_offline_reason, is_local, net_probe
from llmctl.core.stages import ARTIFACT_BY_NAME, STAGES, Stage, need_names
from llmctl.core.tokenizer import ENV_FILE, R50K_SHA256
from llmctl.core.workspace import Workspace

R50K_URL = "https://openaipublic.blob.core.windows.net/encodings/r50k_base.tiktoken"
TOKENIZER_FIX = f"set {ENV_FILE}=/path/to/r50k_base.tiktoken (sha256 {R50K_SHA256[:8]}…)"


@dataclass(frozen=True)
class Problem:
    """One missing prerequisite: what is missing, and what to do about it."""

    what: str
    fix: str

    def __str__(self) -> str:
        return f"{self.what}; fix: {self.fix}"


def tiktoken_cache_file() -> Path | None:
    """Where tiktoken keeps r50k_base after a download (None when its cache is turned off)."""
    var = next((v for v in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR") if v in os.environ), None)
    if var is not None and not os.environ[var]:
        return None  # tiktoken's cache turned off
    base = Path(os.environ[var]) if var else Path(tempfile.gettempdir()) / "data-gym-cache"
    return base / hashlib.sha1(R50K_URL.encode()).hexdigest()


def tokenizer_problem(ws: Workspace) -> Problem | None:
    """Why the tokenizer would not load, or None."""
    path = ws.tokenizer_file()
    if path:
        p = Path(path).expanduser()
        if not p.is_file():
            return Problem(f"tokenizer file {p} does not exist", TOKENIZER_FIX)
        return None
    cached = tiktoken_cache_file()
    if cached is not None and cached.is_file():
        return None
    why = net_probe(R50K_URL)
    if why:
        return Problem(f"tokenizer: r50k_base is not in tiktoken's cache and there is no network ({why})",
                       TOKENIZER_FIX)
    return None


def _producer(artifact: str) -> Stage | None:
    spec = ARTIFACT_BY_NAME.get(artifact)
    return next((s for s in STAGES if spec is not None and s.name == spec.stage), None)


def input_problems(stage: Stage, states: dict[str, str]) -> list[Problem]:
    """Needed artifacts that are not built (``states``: artifact name -> state)."""
    out = []
    for need in stage.needs:
        names, optional = need_names(need)
        if optional or any(states.get(n) in ("ready", "stale") for n in names):
            continue
        cmds = list(dict.fromkeys(f"`llmctl {' '.join(p.command)}`" for p in map(_producer, names) if p))
        fix = f"run {cmds[0]} first" if len(cmds) == 1 else f"run one of {', '.join(cmds)} first"
        out.append(Problem(f"needs {' or '.join(names)}: not built yet", fix))
    return out


def _hub_id(value: str) -> bool:
    head = value.partition(":")[0]
    return head.count("/") == 1 and all(head.split("/")) and not is_local(head)


def source_problems(ws: Workspace, params: Any) -> list[Problem]:
    """Parameter values naming local files that do not exist, and hub ids without network.
    A field the ``sources`` parameter offers but does not choose (prepare sft) is not read."""
    out: list[Problem] = []
    fields = {f.name: f for f in dataclasses.fields(params)}
    chosen = getattr(params, "sources", None)
    offered = str(fields["sources"].metadata.get("help", "")) if "sources" in fields else ""
    for f in fields.values():
        if isinstance(chosen, list) and f.name != "sources" and f.name in offered and f.name not in chosen:
            continue
        value = getattr(params, f.name)
        takes_hub = "hub id" in str(f.metadata.get("help", ""))
        opt = "--" + f.name.replace("_", "-")
        for v in value if isinstance(value, list) else [value]:
            if not isinstance(v, str) or not v or v.startswith("hf://") or f.name in ("out", "resume"):
                continue
            if is_local(v):
                if not any(c in v for c in "*?[") and not Path(v).expanduser().exists() and not ws.path(v).exists():
                    out.append(Problem(f"{opt} {v}: no such file or folder", f"fix the path given to {opt}"))
            elif takes_hub and _hub_id(v):
                why = hub_offline_reason()
                if why:
                    out.append(Problem(f"{opt} {v}: a hub id, and no network ({why})",
                                       f"give {opt} a local .jsonl/.json/.parquet file with the same fields "
                                       "(a copy in the Hugging Face cache loads too)"))
    return out


def stage_problems(ws: Workspace, stage: Stage, params: Any) -> list[Problem]:
    """Everything ``stage`` with ``params`` (None: not checked) would trip on before doing any work."""
    from llmctl.core.status import artifact_statuses

    states = {name: s.state for name, s in artifact_statuses(ws).items()}
    out = [p for p in (tokenizer_problem(ws),) if p is not None]
    out += input_problems(stage, states)
    if params is not None and not stage.needs:  # a stage that reads sources, not artifacts
        out += source_problems(ws, params)
    return out
