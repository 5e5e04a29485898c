"""``llmctl verl convert``: bootcamp generator output or our RL prompt files -> verl parquet.

Every row gets verl's schema (as in verl's ``examples/data_preprocess/gsm8k.py``)::

    data_source   "bootcamp/<Name>" (the record's data_source as written) | "openai/gsm8k" | "llmctl/arithmetic"
    prompt        [{"role": "user", "content": ...}]
    ability       "bootcamp" | "math"
    reward_model  {"style": "rule", "ground_truth": <JSON of the bootcamp dict | the gold string>}
    extra_info    {"split", "index" (record number in its source file), "source_file" (relative path)}

``--from bootcamp`` (default) reads ``--src``: a folder tree (or one file) of ``.jsonl`` records
``{"data_source", "prompt", "ground_truth": {...}}``. Each file becomes one parquet file mirroring
the tree (``<src>/train/game24.jsonl`` -> ``bootcamp/train/game24.parquet``); its split is the
nearest ancestor folder named ``train`` or ``test`` (up to ``src``), else ``--default-split``
(such files are counted as ``defaulted_split_files``). All files of a split are then merged and
shuffled into ``bootcamp_merged/{train,test}/bootcamps.parquet``.

``--from rl-prompts`` reads the workspace's ``data/rl_prompts_{train,test}.jsonl`` and
``data/arithmetic_prompts.jsonl`` (the arithmetic curriculum is training data: split ``train``);
prompt content is ``prompts.format_question(prompt)``, ground truth the ``gold`` string. Outputs
``rl_prompts/{train,test}/*.parquet`` and ``rl_prompts_merged/{train,test}/rl_prompts.parquet``.

Where it goes: without ``--out`` into the workspace artifact ``data/verl/`` (``data/verl/bootcamp``,
``data/verl/bootcamp_merged``, ``data/verl/rl_prompts``, …), which ``llmctl verl check`` and
``llmctl verl launch`` read; a conversion replaces only its own kind there (the others are
carried over by hard links) and the whole folder is swapped in atomically with one manifest.
With ``--out DIR`` the per-file tree goes to ``DIR`` and the merged files to ``DIR_merged``
(``--out <src>_for_verl`` gives InternBootcamp's layout beside the source).

Properties: pyarrow only (no pandas); a file is converted in bounded memory (memory-mapped, line
offsets in a numpy array, rows written in row groups); the merge holds one split; shuffles are
seeded per file and per split from ``--seed`` and the file's relative path, so the same input and
seed give byte-identical output; a bad line is ``file:line: field 'x': reason`` under ``--on-error``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmctl.core.data.records import ErrorPolicy, InputError, check_on_error, decode_utf8
from llmctl.core.params import param
from llmctl.core.stages import config_params, get_stage, params_dict
from llmctl.core.workspace import Workspace

SOURCE_KINDS = ("bootcamp", "rl-prompts")
SPLITS = ("train", "test")
ROW_GROUP = 16_384
RL_PROMPT_FILES = (  # workspace file, output name, split
    ("data/rl_prompts_train.jsonl", "gsm8k", "train"),
    ("data/rl_prompts_test.jsonl", "gsm8k", "test"),
    ("data/arithmetic_prompts.jsonl", "arithmetic", "train"),
)
MERGED_NAME = {"bootcamp": "bootcamps.parquet", "rl-prompts": "rl_prompts.parquet"}
KIND_DIR = {"bootcamp": "bootcamp", "rl-prompts": "rl_prompts"}


@dataclass
class VerlConvertParams:
    """Parameters of ``llmctl verl convert``."""

    src: str = param("Bootcamp generator output: a folder tree or one .jsonl (for --from bootcamp).", "")
    source_kind: str = param("What to convert: bootcamp (--src) or rl-prompts (the workspace's RL prompt files).",
                          "bootcamp", flag="--from")
    out: str = param("Write the per-file tree to DIR and the merged files to DIR_merged "
                  "(default: the workspace's data/verl/).", "")
    default_split: str = param("Split for files with no train/test folder above them.", "test")
    seed: int = param("Shuffle seed (per file and per merged split).", 42)
    shuffle: bool = param("Shuffle rows within each file and in the merged files.", True)
    on_error: str = param("Bad records: fail (stop at the first) or skip (count and report).", "fail", run_only=True)

    def validate(self) -> None:
        if self.source_kind not in SOURCE_KINDS:
            raise ValueError(f"--from must be one of {', '.join(SOURCE_KINDS)}, got {self.source_kind!r}")
        if self.default_split not in SPLITS:
            raise ValueError(f"default_split must be train or test, got {self.default_split!r}")
        check_on_error(self.on_error)
        if self.source_kind == "bootcamp" and not self.src:
            raise ValueError("--src is required with --from bootcamp (a folder or a .jsonl file)")


# ---- schema ------------------------------------------------------------------------------------

def verl_schema():
    """The arrow schema of a verl RL row."""
    import pyarrow as pa

    return pa.schema([
        ("data_source", pa.string()),
        ("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
        ("ability", pa.string()),
        ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
        ("extra_info", pa.struct([("split", pa.string()), ("index", pa.int64()), ("source_file", pa.string())])),
    ])


class _Columns:
    """Row values collected column by column, turned into one arrow record batch."""

    def __init__(self) -> None:
        self.data_source: list[str] = []
        self.content: list[str] = []
        self.ability: list[str] = []
        self.ground_truth: list[str | bytes] = []  # UTF-8 JSON bytes for bootcamps (no decode/encode)
        self.index: list[int] = []

    def __len__(self) -> int:
        return len(self.index)

    def add(self, data_source: str, content: str, ability: str, ground_truth: str | bytes, index: int) -> None:
        self.data_source.append(data_source)
        self.content.append(content)
        self.ability.append(ability)
        self.ground_truth.append(ground_truth)
        self.index.append(index)

    def batch(self, split: str, source_file: str):
        import numpy as np
        import pyarrow as pa

        n = len(self)
        s = pa.string()
        prompt = pa.ListArray.from_arrays(
            pa.array(np.arange(n + 1, dtype=np.int32)),
            pa.StructArray.from_arrays([pa.repeat(pa.scalar("user", s), n), pa.array(self.content, s)],
                                       names=["role", "content"]))
        gt = self.ground_truth
        gt_arr = pa.array(gt, pa.binary()).cast(s) if gt and isinstance(gt[0], bytes) else pa.array(gt, s)
        reward = pa.StructArray.from_arrays([pa.repeat(pa.scalar("rule", s), n), gt_arr],
                                            names=["style", "ground_truth"])
        extra = pa.StructArray.from_arrays(
            [pa.repeat(pa.scalar(split, s), n), pa.array(self.index, pa.int64()),
             pa.repeat(pa.scalar(source_file, s), n)], names=["split", "index", "source_file"])
        return pa.RecordBatch.from_arrays(
            [pa.array(self.data_source, s), prompt, pa.array(self.ability, s), reward, extra], schema=verl_schema())


# ---- reading lines -----------------------------------------------------------------------------

def _line_spans(mm, size: int) -> tuple[Any, Any, Any]:
    """(starts, ends, line numbers or None) of the non-empty lines of a memory-mapped file.

    16 bytes per line (24 once a blank line has been seen: line numbers then differ from
    record numbers and are kept for error messages).
    """
    from array import array

    starts, ends = array("q"), array("q")
    linenos = None
    find = mm.find
    pos = line = 0
    while pos < size:
        nl = find(b"\n", pos)
        if nl < 0:
            nl = size
        line += 1
        if nl > pos:
            starts.append(pos)
            ends.append(nl)
            if linenos is not None:
                linenos.append(line)
        elif linenos is None:
            linenos = array("q", range(1, len(starts) + 1))
        pos = nl + 1
    return starts, ends, linenos


def _stable_seed(seed: int, *parts: str) -> int:
    h = hashlib.sha256(":".join([str(seed), *parts]).encode()).digest()
    return int.from_bytes(h[:8], "little")


def convert_file(src: Path, dst: Path, *, split: str, source_file: str, kind: str, policy: ErrorPolicy,
                 seed: int, shuffle: bool, row_group: int = ROW_GROUP, collect: list | None = None) -> dict[str, Any]:
    """One ``.jsonl`` -> one parquet file (written under a temporary name, then renamed).

    Memory: the file is memory-mapped; 16 bytes per line of offsets and one row group of rows are
    held (plus the written batches when ``collect`` is given, for the merge).
    """
    import mmap

    import numpy as np
    import orjson
    import pyarrow.parquet as pq

    from llmctl.core.atomic import atomic_path

    make_row = _bootcamp_row if kind == "bootcamp" else _rl_prompt_row
    rows = bad = 0
    sources: dict[str, int] = {}
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as f, atomic_path(dst) as tmp:
        size = os.fstat(f.fileno()).st_size
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        try:
            starts, ends, linenos = _line_spans(mm, size) if mm is not None else ([], [], None)
            order = range(len(starts))  # record number = position among non-empty lines
            if shuffle and len(starts):
                order = np.random.default_rng(_stable_seed(seed, source_file)).permutation(len(starts)).tolist()
            cols = _Columns()

            def flush() -> None:
                batch = cols.batch(split, source_file)
                writer.write_batch(batch)
                if collect is not None:
                    collect.append(batch)

            with pq.ParquetWriter(tmp, verl_schema()) as writer:
                for rec_no in order:
                    raw = mm[starts[rec_no]:ends[rec_no]]
                    try:
                        try:
                            rec = orjson.loads(raw)
                        except orjson.JSONDecodeError as e:
                            if not raw.strip():
                                continue  # a whitespace-only line
                            line = linenos[rec_no] if linenos is not None else rec_no + 1
                            decode_utf8(raw, source_file, line)  # bytes that are not UTF-8: name the field
                            raise InputError(source_file, line, f"not valid JSON ({e})") from None
                        ds = make_row(rec, source_file, rec_no, cols)
                    except InputError as e:
                        if e.line is None or e.line < 0:
                            line = linenos[rec_no] if linenos is not None else rec_no + 1
                            e = InputError(source_file, line, e.reason, e.field)
                        bad += 1
                        policy.bad(e)
                        continue
                    policy.ok()
                    rows += 1
                    sources[ds] = sources.get(ds, 0) + 1
                    if len(cols) >= row_group:
                        flush()
                        cols = _Columns()
                if len(cols) or rows == 0:
                    flush()
            if not starts:  # an empty file is refused like a bad record (counted under --on-error skip)
                bad += 1
                policy.bad(InputError(source_file, None, "empty file (no records)"))
        finally:
            if mm is not None:
                mm.close()
    return {"rows": rows, "skipped": bad, "split": split, "data_sources": sources}


def _bootcamp_row(rec: Any, source: str, index: int, cols: _Columns) -> str:
    import orjson

    from llmctl.core.data.records import require_str

    name, prompt, gt = (rec.get("data_source"), rec.get("prompt"), rec.get("ground_truth")) \
        if type(rec) is dict else (None, None, None)
    if type(name) is not str or type(prompt) is not str or not name.strip() or not prompt.strip():
        name = require_str(rec, "data_source", source, -1)  # raises with the reason
        prompt = require_str(rec, "prompt", source, -1)
    if type(gt) is not dict:
        if "ground_truth" not in rec:
            raise InputError(source, -1, "missing", "ground_truth")
        raise InputError(source, -1, f"expected a JSON object, got {type(gt).__name__}", "ground_truth")
    ds = "bootcamp/" + name
    cols.add(ds, prompt, "bootcamp", orjson.dumps(gt), index)
    return ds


def _rl_prompt_row(rec: Any, source: str, index: int, cols: _Columns) -> str:
    from llmctl.core.data.prompts import format_question
    from llmctl.core.data.records import require_str

    question = require_str(rec, "prompt", source, -1)
    gold = rec.get("gold")
    if isinstance(gold, int | float) and not isinstance(gold, bool):
        gold = str(gold)
    if not isinstance(gold, str) or not gold.strip():
        raise InputError(source, -1, "missing or not a string", "gold")
    ds = rec.get("data_source") or "openai/gsm8k"
    if not isinstance(ds, str):
        raise InputError(source, -1, "expected a string", "data_source")
    cols.add(ds, format_question(question), "math", gold.strip(), index)
    return ds


# ---- planning ----------------------------------------------------------------------------------

@dataclass
class FileJob:
    src: Path
    rel_out: str  # output path relative to the per-file root, e.g. "train/game24.parquet"
    source_file: str  # shown in extra_info and errors
    split: str
    defaulted: bool = False


def _split_of(path: Path, root: Path) -> str | None:
    for parent in path.parents:
        if parent.name in SPLITS:
            return parent.name
        if parent == root:
            break
    return None


def plan_bootcamp(src: Path, default_split: str, exclude: list[Path]) -> tuple[list[FileJob], list[str]]:
    """Every ``.jsonl`` under ``src`` (sorted) with its output path and split; also ignored files."""
    if not src.exists():
        raise FileNotFoundError(f"verl convert: source not found: {src}")
    if src.is_file():
        if not src.name.endswith(".jsonl"):
            raise InputError(src, None, "not a .jsonl file")
        files, root = [src], src.parent
    else:
        root = src
        files = []
        ignored = []
        ex = [e.resolve() for e in exclude]
        for dirpath, dirnames, filenames in os.walk(src):
            d = Path(dirpath)
            dirnames[:] = sorted(n for n in dirnames if not n.startswith(".")
                                 and not any((d / n).resolve() == e for e in ex))
            for name in sorted(filenames):
                (files if name.endswith(".jsonl") else ignored).append(d / name)
        if not files:
            raise InputError(src, None, "no .jsonl files found")
    jobs = []
    for f in sorted(files):
        rel = f.relative_to(root) if src.is_dir() else Path(f.name)
        split = _split_of(f, root)
        jobs.append(FileJob(f, str(rel.with_suffix(".parquet")), str(rel), split or default_split, split is None))
    return jobs, ([] if src.is_file() else [str(p.relative_to(src)) for p in ignored])


def plan_rl_prompts(ws: Workspace) -> list[FileJob]:
    """The workspace's RL prompt files that exist (at least one must)."""
    jobs = []
    for rel, name, split in RL_PROMPT_FILES:
        p = ws.path(rel)
        if p.is_file():
            jobs.append(FileJob(p, f"{split}/{name}.parquet", Path(rel).name, split))
    if not jobs:
        raise FileNotFoundError("verl convert --from rl-prompts: no RL prompt files in the workspace "
                                "(run `llmctl prepare rl` first)")
    return jobs


# ---- merging -----------------------------------------------------------------------------------

def _take(table, perm):
    """``table.take(perm)`` done on flat child arrays (several times faster for our nested columns)."""
    import numpy as np
    import pyarrow as pa

    idx = pa.array(perm)
    cols = []
    for col in table.columns:
        arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
        if pa.types.is_struct(arr.type) and arr.null_count == 0 and arr.offset == 0:
            arr = pa.StructArray.from_arrays([arr.field(i).take(idx) for i in range(arr.type.num_fields)],
                                             fields=list(arr.type))
        elif (pa.types.is_list(arr.type) and arr.null_count == 0 and arr.offset == 0
              and pa.types.is_struct(arr.type.value_type)
              and np.array_equal(arr.offsets.to_numpy(), np.arange(len(arr) + 1))):  # one message per row
            values = arr.values
            values = pa.StructArray.from_arrays([values.field(i).take(idx) for i in range(values.type.num_fields)],
                                                fields=list(values.type))
            arr = pa.ListArray.from_arrays(arr.offsets, values, type=arr.type)
        else:
            arr = arr.take(idx)
        cols.append(arr)
    return pa.Table.from_arrays(cols, schema=table.schema)


def merge_batches(batches: list, dst: Path, *, seed: int, shuffle: bool, tag: str) -> int:
    """One split's record batches (in file order), shuffled with a seed, into one parquet file."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from llmctl.core.atomic import atomic_path

    table = pa.Table.from_batches(batches, schema=verl_schema())
    if shuffle and table.num_rows:
        table = _take(table, np.random.default_rng(_stable_seed(seed, "merged", tag)).permutation(table.num_rows))
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        pq.write_table(table, tmp, row_group_size=ROW_GROUP)
    return table.num_rows


# ---- the run -----------------------------------------------------------------------------------

def convert_tree(jobs: list[FileJob], files_dir: Path, merged_dir: Path, *, kind: str, seed: int,
                 shuffle: bool, policy: ErrorPolicy) -> dict[str, Any]:
    """Convert every planned file under ``files_dir`` and merge each split under ``merged_dir``."""
    per_file: dict[str, Any] = {}
    merged = {}
    for split in SPLITS:  # one split at a time: the merge holds at most one split's rows
        batches: list = []
        split_jobs = [j for j in jobs if j.split == split]
        for job in split_jobs:
            per_file[job.rel_out] = convert_file(job.src, files_dir / job.rel_out, split=split,
                                                 source_file=job.source_file, kind=kind, policy=policy,
                                                 seed=seed, shuffle=shuffle, collect=batches)
        if split_jobs:
            merged[split] = merge_batches(batches, merged_dir / split / MERGED_NAME[kind], seed=seed,
                                          shuffle=shuffle, tag=split)
        del batches
    policy.finish()
    if not any(info["rows"] for info in per_file.values()):
        raise InputError(", ".join(j.source_file for j in jobs[:3]) + (" …" if len(jobs) > 3 else ""), None,
                         "no rows to convert: refusing to replace the previous conversion with an empty one")
    per_file = {j.rel_out: per_file[j.rel_out] for j in jobs}  # report in plan order
    sources: dict[str, int] = {}
    for info in per_file.values():
        for ds, n in info["data_sources"].items():
            sources[ds] = sources.get(ds, 0) + n
    return {
        "files": len(jobs),
        "rows": sum(i["rows"] for i in per_file.values()),
        "skipped": policy.n_skipped,
        "rows_by_split": {s: sum(i["rows"] for i in per_file.values() if i["split"] == s) for s in SPLITS},
        "merged_rows": merged,
        "defaulted_split_files": sum(1 for j in jobs if j.defaulted),
        "data_sources": dict(sorted(sources.items())),
        "per_file": {k: {"rows": v["rows"], "skipped": v["skipped"], "split": v["split"]} for k, v in per_file.items()},
    }


def _link_tree(src: Path, dst: Path) -> None:
    """Copy a folder by hard links (a real copy where links are not possible)."""
    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, dst, copy_function=link)


def _inputs(jobs: list[FileJob]) -> dict[str, Any]:
    from llmctl.core.artifacts import file_fingerprint

    return {f"file:{j.source_file}": file_fingerprint(j.src) for j in jobs}


def run(ws: Workspace, params: VerlConvertParams, run_dir: Path | None = None) -> dict[str, Any]:
    """Convert, write atomically (workspace ``data/verl/`` or ``--out``), print a summary."""
    from llmctl.core.artifacts import ArtifactWriter, commit_together, read_manifest

    params.validate()
    policy = ErrorPolicy(params.on_error)
    kind = params.source_kind
    pdict = params_dict(params)
    cfg = config_params(get_stage("verl-convert"), ws.config)
    out = Path(params.out).expanduser().resolve() if params.out else None
    merged_out = out.with_name(out.name + "_merged") if out else None
    if kind == "bootcamp":
        src = Path(params.src).expanduser().resolve()
        ours = [p for p in (out, merged_out, ws.path("data/verl")) if p]
        jobs, ignored = plan_bootcamp(src, params.default_split, ours + [p.with_name(p.name + ".tmp") for p in ours])
    else:
        jobs, ignored = plan_rl_prompts(ws), []
    opts = {"kind": kind, "seed": params.seed, "shuffle": params.shuffle, "policy": policy}
    expect = sum(j.src.stat().st_size for j in jobs)  # per-file + merged parquet: about the JSON's size

    if out is not None:
        with ArtifactWriter(out, stage="verl-convert", params=pdict, inputs=_inputs(jobs), config_params=cfg) as wf, \
                ArtifactWriter(merged_out, stage="verl-convert", params=pdict, inputs=_inputs(jobs), config_params=cfg) as wm:
            wf.reserve(expect)
            report = convert_tree(jobs, wf.tmp, wm.tmp, **opts)
            counts = {k: report[k] for k in ("files", "rows", "skipped", "defaulted_split_files")}
            commit_together([wf, wm], [
                {"counts": counts, "report": report, "errors": policy.report()},
                {"counts": {"rows": sum(report["merged_rows"].values()),
                            **{f"{s}_rows": n for s, n in report["merged_rows"].items()}},
                 "errors": policy.report()}])
        where = f"{out} and {merged_out}"
    else:
        target = ws.path("data/verl")
        name = KIND_DIR[kind]
        prev = read_manifest(target) or {}
        with ArtifactWriter(target, stage="verl-convert", params=pdict, inputs=_inputs(jobs), config_params=cfg) as w:
            w.reserve(expect)
            w.tmp.mkdir(parents=True)  # the writer removed any leftover: this run starts empty
            if target.is_dir():  # keep the other kinds' conversions
                for child in sorted(target.iterdir()):
                    if child.is_dir() and child.name not in (name, name + "_merged"):
                        _link_tree(child, w.tmp / child.name)
            report = convert_tree(jobs, w.tmp / name, w.tmp / (name + "_merged"), **opts)
            kinds = dict(prev.get("kinds") or {})
            kinds[name] = {"params": pdict, "counts": {k: report[k] for k in ("files", "rows", "skipped")},
                           "merged_rows": report["merged_rows"], "data_sources": report["data_sources"]}
            w.commit(counts={"files": report["files"], "rows": report["rows"], "skipped": report["skipped"],
                             "defaulted_split_files": report["defaulted_split_files"]},
                     report=report, kinds=kinds, errors=policy.report())
        where = str(target)
    report["ignored_files"] = ignored
    report["out"] = where
    split_txt = ", ".join(f"{s} {n}" for s, n in report["rows_by_split"].items())
    print(f"verl convert ({kind}): {report['files']} files, {report['rows']} rows ({split_txt}), "
          f"skipped {report['skipped']}, {report['defaulted_split_files']} file(s) without a train/test "
          f"folder put under '{params.default_split}' -> {where}", flush=True)
    if ignored:
        print(f"  ignored {len(ignored)} non-.jsonl file(s): {', '.join(ignored[:5])}"
              f"{' …' if len(ignored) > 5 else ''}", flush=True)
    for s in policy.skipped[:5]:
        print(f"  skipped: {s}", flush=True)
    return report
