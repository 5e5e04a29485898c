"""``llmctl report``: a shareable report card of a workspace (Markdown with SVG curves, or one HTML)."""

from __future__ import annotations

import html
import json
import re
import statistics
import time
from pathlib import Path
from typing import Any

from llmctl.core import atomic, heldout
from llmctl.core.artifacts import artifact_fingerprint
from llmctl.core.cli.svg_chart import bar_chart, line_chart
from llmctl.core.jobs import list_jobs
from llmctl.core.metrics import iter_series, load_metrics
from llmctl.core.render import human_age, human_bytes
from llmctl.core.runs import PROVENANCE_FILE, run_progress, stopped_at
from llmctl.core.status import artifact_statuses
from llmctl.core.workspace import Workspace

HIGHER_IS_BETTER = ("reward", "accuracy", "accuracies", "margin", "explained_variance", "tokens_per_s", "mfu")
SKIP_KEYS = {"step", "time", "warning"}
MAX_CHARTS_PER_RUN = 8


def _better_is_max(key: str) -> bool:
    return any(h in key for h in HIGHER_IS_BETTER)


# the curves a reader looks for first, in this order; the rest follow alphabetically
HEADLINE_KEYS = ("reward", "rewards/correct", "eval/accuracy", "kl", "accuracy", "margin", "rewards/margin",
                 "score/mean", "tokens_per_s", "mfu")


def _chart_groups(keys: list[str]) -> list[tuple[str, list[str]]]:
    """Loss-like keys overlaid in one chart first, then the headline metrics, then every other key
    on its own (per-phase timings left out), at most ``MAX_CHARTS_PER_RUN`` charts."""
    losses = [k for k in keys if k.endswith("loss") and "/" in k and k.split("/")[0] in ("train", "eval")]
    groups = [("loss", losses)] if losses else []
    rest = [k for k in keys if k not in losses and not k.startswith("time/")]
    rest.sort(key=lambda k: HEADLINE_KEYS.index(k) if k in HEADLINE_KEYS else len(HEADLINE_KEYS))
    groups += [(k, [k]) for k in rest]
    return groups[:MAX_CHARTS_PER_RUN]


def summarize_metrics(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per metric: final value, best value (min or max by its meaning) and number of points."""
    keys = sorted({k for r in rows for k, v in r.items()
                   if k not in SKIP_KEYS and isinstance(v, int | float) and not isinstance(v, bool)})
    out = {}
    for k in keys:
        vals = [v for _, v in iter_series(rows, k)]
        if not vals:
            continue
        best = max(vals) if _better_is_max(k) else min(vals)
        out[k] = {"final": vals[-1], "best": best, "points": len(vals)}
        if k == "tokens_per_s":
            out[k]["median"] = statistics.median(vals)
    return out


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s).strip("_")


def _heldout_section(stage: str, run_id: str, path: Path, assets: str, charts: dict[str, str]) -> list[str]:
    """A GRPO/PPO run's held-out table before/after (markdown lines) and its bar chart (added to ``charts``)."""
    held = heldout.read(path / heldout.FILE)
    if not held:
        return []
    b, a = held["before"], held["after"]
    name = f"{_slug(stage)}-{_slug(run_id)}-heldout.svg"
    charts[name] = bar_chart(heldout.chart_groups(b, a), title=f"{stage} {run_id}: held-out, before/after")
    return [f"Held-out prompts never trained on, before step {b.get('step', 0) + 1} and after step "
            f"{a.get('step', '?')}:", "", *heldout.markdown({"before": b, "after": a}), "",
            f"![held-out before/after]({assets}/{name})", ""]


def build_report(ws: Workspace, out: Path | None = None, *, fmt: str = "md") -> Path:
    """Write the report (``report.md`` + ``report_assets/`` or a self-contained ``report.html``)."""
    if fmt not in ("md", "html"):
        raise ValueError(f"report format must be md or html, got {fmt!r}")
    out = Path(out) if out else ws.root / f"report.{fmt}"
    assets = out.with_name(out.stem + "_assets")
    charts: dict[str, str] = {}  # file name -> svg
    lines = [f"# llmctl report: {ws.root.name}", "",
             f"Workspace `{ws.root}`, written {time.strftime('%Y-%m-%d %H:%M:%S')}.", ""]

    lines += ["## Artifacts", "", "| artifact | state | size | counts | fingerprint | age |",
              "|---|---|---|---|---|---|"]
    for st in artifact_statuses(ws).values():
        counts = ", ".join(f"{k}={v:,}" if isinstance(v, int) else f"{k}={v:.4g}"
                           for k, v in st.counts.items() if isinstance(v, int | float) and not isinstance(v, bool))
        fp = artifact_fingerprint(st.path) if st.state in ("ready", "stale") else None
        state = st.state + (f" ({st.reason})" if st.reason else "")
        lines.append(f"| {st.name} | {state} | {human_bytes(st.size)} | {counts or '-'} | "
                     f"{fp or '-'} | {human_age(st.created)} |")
    lines.append("")

    evals = []
    lines += ["## Runs", ""]
    all_runs = list_jobs(ws.runs_dir)
    if not all_runs:
        lines += ["No runs yet.", ""]
    for r in all_runs:
        job = r.job
        started, ended = job.get("started"), job.get("ended")
        started = started if isinstance(started, int | float) else time.time()
        dur = (ended if isinstance(ended, int | float) else time.time()) - started
        stopped = stopped_at(job, *run_progress(r.path, job))
        lines += [f"### {r.stage} / {r.run_id}", "",
                  f"State **{r.state}**{f' ({stopped})' if stopped else ''}, {dur:.0f} s, "
                  f"exit code {job.get('exit_code', '-')}.", ""]
        prov_path = r.path / PROVENANCE_FILE
        if prov_path.exists():
            try:
                prov = json.loads(prov_path.read_text())
            except ValueError:
                prov = {}
            params = prov.get("params") or {}
            if params:
                shown = ", ".join(f"`{k}={v}`" for k, v in params.items() if not isinstance(v, dict | list))
                lines += [f"Parameters: {shown}", ""]
            if prov.get("git_commit"):
                lines += [f"Commit `{prov['git_commit'][:12]}`, seed {prov.get('seed')}.", ""]
        rows, skipped = load_metrics(r.path / "metrics.jsonl")
        if skipped:
            lines += [f"{skipped} line(s) of metrics.jsonl skipped: not a JSON object with a whole-number step.", ""]
        summary = summarize_metrics(rows)
        if summary:
            lines += ["| metric | final | best | points |", "|---|---|---|---|"]
            for k, s in summary.items():
                lines.append(f"| {k} | {s['final']:.5g} | {s['best']:.5g} | {s['points']} |")
            lines.append("")
            for title, keys in _chart_groups(list(summary)):
                series = {k: list(iter_series(rows, k)) for k in keys}
                name = f"{_slug(r.stage)}-{_slug(r.run_id)}-{_slug(title)}.svg"
                charts[name] = line_chart(series, title=f"{r.stage} {r.run_id}: {title}")
                lines += [f"![{title}]({assets.name}/{name})", ""]
        lines += _heldout_section(r.stage, r.run_id, r.path, assets.name, charts)
        res = r.path / "results.json"
        if res.exists():
            try:
                evals.append((r, json.loads(res.read_text())))
            except ValueError:
                pass

    lines += ["## Evaluation", ""]
    if not evals:
        lines += ["No evaluation yet.", ""]
    for r, res in evals:
        nums = {k: v for k, v in res.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        lines.append(f"- **{r.run_id}** ({res.get('ckpt', '?')}): "
                     + ", ".join(f"{k} = {v:.4g}" for k, v in nums.items()))
        if isinstance(res.get("heldout"), dict) and res["heldout"]:
            lines += ["", *heldout.markdown(res["heldout"]), ""]
    lines.append("")
    text = "\n".join(lines)

    if fmt == "md":
        if charts:
            assets.mkdir(parents=True, exist_ok=True)
            for name, svg in charts.items():
                atomic.write_text(assets / name, svg)
        atomic.write_text(out, text)
        return out
    atomic.write_text(out, _to_html(text, charts, assets.name))
    return out


def _to_html(md: str, charts: dict[str, str], assets_name: str) -> str:
    """A minimal Markdown-to-HTML rendering with the SVG charts inlined."""
    body = []
    table: list[str] = []

    def flush_table() -> None:
        if not table:
            return
        rows = [[c.strip() for c in row.strip("|").split("|")] for row in table if not set(row) <= set("|-")]
        body.append("<table>" + "".join(
            "<tr>" + "".join(f"<{'th' if i == 0 else 'td'}>{html.escape(c)}</{'th' if i == 0 else 'td'}>"
                             for c in row) + "</tr>" for i, row in enumerate(rows)) + "</table>")
        table.clear()

    for line in md.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush_table()
        m = re.match(r"!\[(.*)\]\((.*)\)", line)
        if m:
            name = m.group(2).removeprefix(assets_name + "/")
            body.append(charts.get(name, ""))
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line[level:].strip())}</h{level}>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    flush_table()
    style = "body{font-family:sans-serif;max-width:900px;margin:2em auto}table{border-collapse:collapse}" \
            "td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>llmctl report</title>" \
           f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n"
