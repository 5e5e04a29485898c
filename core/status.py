"""The state of every stage and artifact of a workspace (shared by ``llmctl status`` and the TUI)."""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from llmctl.core import jobs, runs
from llmctl.core.artifacts import (
    ArtifactStatus,
    artifact_fingerprint,
    artifact_status,
    input_change,
)
from llmctl.core.params import field_default, run_only_names
from llmctl.core.stages import (
    ARTIFACT_BY_NAME,
    ARTIFACTS,
    STAGES,
    ParamError,
    Stage,
    StageNotBuilt,
    get_stage,
    need_names,
    params_dict,
    resolve_params,
)
from llmctl.core.workspace import Workspace


def _inputs_changed(recorded: dict[str, Any], ws: Workspace) -> tuple[str, str]:
    """``("stale", why)`` when an input changed, ``("", note)`` when one is not present on this
    machine (the artifact stays usable), else ``("", "")``."""
    note = ""
    for name, fp in (recorded or {}).items():
        if name in ARTIFACT_BY_NAME:
            cur = artifact_fingerprint(ws.path(ARTIFACT_BY_NAME[name].path))
            if isinstance(fp, str) and cur is not None and cur != fp:
                return "stale", f"input {name} was rebuilt"
            continue
        files = fp.get("files") if isinstance(fp, dict) else None
        for one in files if isinstance(files, list) else [fp]:
            if isinstance(one, dict) and "path" in one and "size" in one:
                kind, why = input_change(one)
                if kind == "changed":
                    return "stale", why
                note = note or why
    return "", note


def changed_params(cls: type, want: dict[str, Any], recorded: dict[str, Any]) -> list[str]:
    """Parameters of ``cls`` whose current value differs from the one an artifact recorded.

    Run-only fields never count; a recorded key the class no longer has is ignored (a retired
    parameter), and a field the record lacks (a new parameter) counts only if it is off its default.
    """
    skip = run_only_names(cls)
    defaults = {f.name: field_default(f) for f in dataclasses.fields(cls)}
    return sorted(k for k, v in want.items()
                  if k not in skip and recorded.get(k, defaults.get(k)) != v)


def artifact_statuses(ws: Workspace) -> dict[str, ArtifactStatus]:
    """Status of every declared artifact, with staleness against the config and the inputs."""
    expected: dict[str, tuple[type, dict[str, Any]]] = {}
    for st in STAGES:
        with contextlib.suppress(StageNotBuilt, ParamError, TypeError):
            params = resolve_params(st, ws.stage_config(st.name), {})
            expected[st.name] = (type(params), params_dict(params))
    out = {}
    for spec in ARTIFACTS:
        s = artifact_status(ws.path(spec.path), name=spec.name, kind=spec.kind, stage=spec.stage)
        if s.state == "ready" and s.manifest is not None and spec.kind not in ("checkpoint", "eval"):
            recorded = s.manifest.get("config_params") or s.manifest.get("params") or {}
            changed = changed_params(*expected[spec.stage], recorded) if spec.stage in expected and recorded else []
            if changed:
                s.state, s.reason = "stale", "parameters changed: " + ", ".join(changed)
            else:
                state, why = _inputs_changed(s.manifest.get("inputs") or {}, ws)
                if state:
                    s.state = state
                s.reason = why or s.reason
        out[spec.name] = s
    return out


@dataclass
class StageStatus:
    """A stage's state for the pipeline view."""

    name: str
    state: str  # not built | can run | waiting | running | done | failed | stale
    detail: str = ""
    needs: list[str] = field(default_factory=list)
    makes: list[str] = field(default_factory=list)
    running_job: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _need_met(need: str, arts: dict[str, ArtifactStatus]) -> tuple[bool, str]:
    names, optional = need_names(need)
    if optional:
        return True, ""
    if any(arts[n].state in ("ready", "stale") for n in names if n in arts):
        return True, ""
    return False, " or ".join(names)


def stage_statuses(ws: Workspace, arts: dict[str, ArtifactStatus] | None = None) -> list[StageStatus]:
    """Every stage in pipeline order with its state and what it waits on."""
    arts = arts if arts is not None else artifact_statuses(ws)
    active: dict[str, str] = {}
    last: dict[str, str] = {}
    stopped: dict[str, str] = {}  # stage -> "stopped at step k/N (killed)" of its newest run
    for r in jobs.list_jobs(ws.runs_dir):
        if r.state.active:
            active[r.stage] = str(r.path)
        else:
            last[r.stage] = r.state
            where = runs.stopped_at(r.job, *runs.run_progress(r.path, r.job))
            stopped[r.stage] = f"{where} ({r.state})" if where else ""
    out = []
    for st in STAGES:
        s = StageStatus(st.name, "can run", needs=list(st.needs), makes=list(st.makes))
        if not st.built:
            s.state, s.detail = "not built", "not implemented yet"
        elif st.name in active:
            s.state, s.running_job = "running", active[st.name]
        else:
            made = [arts[m] for m in st.makes if m in arts]
            missing = [label for ok, label in (_need_met(n, arts) for n in st.needs) if not ok]
            if made and all(a.state == "ready" for a in made) and stopped.get(st.name):
                s.state, s.detail = "stopped", stopped[st.name]
            elif made and all(a.state == "ready" for a in made):
                s.state = "done"
            elif any(a.state == "stale" for a in made):
                s.state = "stale"
                s.detail = next(a.reason for a in made if a.state == "stale")
            elif any(a.state == "failed" for a in made) or last.get(st.name) in ("failed", "killed", "lost"):
                s.state = "failed"
                s.detail = next((a.reason for a in made if a.state == "failed"), stopped.get(st.name) or "last run failed")
            elif missing:
                s.state, s.detail = "waiting", "waiting on " + ", ".join(missing)
        out.append(s)
    return out


def stage_for(name: str) -> Stage:
    """The declared stage called ``name``."""
    return get_stage(name)
