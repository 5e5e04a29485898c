"""``llmctl prepare pretrain``: text shards -> one flat int32 token array in HDF5.

Documents are read from ``.jsonl.zst`` / ``.jsonl`` / ``.jsonl.gz`` / ``.txt`` shards (local or
``hf://``, see :mod:`llmctl.core.data.text_sources`) by a reader thread, tokenized in parallel batches
(``Tokenizer.encode_batch``: riptoken releases the GIL and uses every core) and appended, each
followed by EOT (50256), to the dataset ``tokens`` of ``data/pile_train.h5`` (or ``pile_dev.h5``):
resizable, chunked (8M tokens = 32 MB per chunk by default), uncompressed so readers can memory-map
it (:mod:`llmctl.core.data.token_windows`). Tokens are buffered and written in 1M-token (4 MB) blocks,
each straight to its place in the file; a file smaller than one chunk is rewritten as one exact chunk.
Documents keep their input order; with ``val_fraction`` each document goes
to pile_dev.h5 when a keyed hash of its text (``seed``) falls below the fraction, so duplicates land
on the same side and the split does not depend on file order or batching.

The file is written as ``<name>.tmp`` under the artifact's lock and renamed when complete (then the
manifest appears). Each block write records the reader's position (source index, lines consumed)
and the counts in the tmp file's ``progress`` attribute, with a digest of every file's tokens so far,
so ``--resume`` continues exactly where the last block ended and produces the same tokens as an
uninterrupted run. A tmp file that does not prove what it holds (unreadable, or its tokens do not
match the digest) is restarted from scratch with a one-line notice; without ``--resume`` a leftover
tmp file is discarded, and a full disk removes it. SIGTERM (``llmctl jobs cancel``) writes the buffered block first.

File attributes: ``tokenizer``, ``sources``, ``parameters`` (JSON), ``n_tokens``, ``n_documents``,
``n_skipped``, ``split``, ``eot_id``, ``created``, ``format``; the dataset ``skipped`` lists the
records skipped under ``--on-error skip`` (kept in the first output file). ``max_tokens`` counts
train + dev tokens and stops after the document that reaches it (whole documents only).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from llmctl.core import atomic, runs
from llmctl.core import progress as core_progress
from llmctl.core.artifacts import (
    ArtifactBusy,
    ArtifactWriter,
    DiskFull,
    check_free_space,
    commit_together,
    free_bytes,
    human_bytes,
    manifest_path,
    read_lock,
)
from llmctl.core.data.records import ErrorPolicy, InputError, TooManyErrors, check_on_error
from llmctl.core.data.text_sources import (
    TXT_DOCS_CHOICES,
    Source,
    expand_inputs,
    input_fingerprint,
    iter_documents,
    source_info,
)
from llmctl.core.metrics import MetricsWriter
from llmctl.core.params import param, run_only_names
from llmctl.core.stages import ParamError, config_params, get_stage, params_dict
from llmctl.core.workspace import Workspace

STAGE = "prepare-pretrain"
FORMAT = "llmctl.tokens/1"
DEFAULT_CHUNK_TOKENS = 8 << 20  # 32 MB chunks of int32
DEFAULT_FLUSH_TOKENS = 1 << 20  # 4 MB blocks: bounds the buffer and spaces the resume points
BATCH_CHARS = 1 << 20  # text per tokenizer batch (or batch_docs documents, whichever first);
# 1 MB keeps the Python int lists of a tokenized batch small (~10 MB) and was faster than 4 MB
OUTPUTS = {"train": "data/pile_train.h5", "val": "data/pile_dev.h5"}
MANIFEST_SKIPPED = 10_000  # skipped records listed in the manifest (all are in the file's ``skipped``)


@dataclass
class PreparePretrainParams:
    """Parameters of ``llmctl prepare pretrain``."""

    inputs: list[str] = param("Shards: .jsonl.zst/.jsonl/.jsonl.gz/.txt paths, folders, globs or "
                              "hf://datasets/<repo>/<file>.", [])
    split: str = param("train -> data/pile_train.h5, val -> data/pile_dev.h5.", "train")
    out: str = param("Output path instead of the split's (workspace-relative or absolute).", "")
    val_fraction: float = param("Carve this share of documents (seeded hash of the text) into pile_dev.h5, "
                                "writing both files.", 0.0)
    num_shards: int = param("Use only the first N input files (0 = all).", 0)
    max_tokens: int = param("Stop after the document that brings the total to this many tokens (0 = no limit).", 0)
    txt_docs: str = param("How a .txt splits into documents: file, lines or paragraphs.", "file")
    on_error: str = param("Bad records: fail, or skip (counted, reported, capped).", "fail", run_only=True)
    resume: bool = param("Continue a killed run from its temporary file.", False, run_only=True)
    workers: int = param("Tokenizer threads (0 = all cores).", 0, run_only=True)
    batch_docs: int = param("Documents per tokenizer batch (also capped at ~1 MB of text).", 2048, run_only=True)
    seed: int = param("Seed of the train/dev split.", 1234)
    chunk_tokens: int = param("HDF5 chunk size in tokens.", DEFAULT_CHUNK_TOKENS, run_only=True)
    flush_tokens: int = param("Tokens buffered before each block write (each write is a resume point).",
                              DEFAULT_FLUSH_TOKENS, run_only=True)

    def validate(self) -> None:
        if self.split not in OUTPUTS:
            raise ValueError(f"split must be one of {', '.join(OUTPUTS)}, got {self.split!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.val_fraction > 0 and (self.split != "train" or self.out):
            raise ValueError("val_fraction writes data/pile_train.h5 and data/pile_dev.h5: "
                             "use it with split=train and without out")
        if self.txt_docs not in TXT_DOCS_CHOICES:
            raise ValueError(f"txt_docs must be one of {', '.join(TXT_DOCS_CHOICES)}, got {self.txt_docs!r}")
        check_on_error(self.on_error)
        for name in ("num_shards", "max_tokens", "workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("batch_docs", "chunk_tokens", "flush_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


# ---- the token file writer ------------------------------------------------------------------------

class TokenWriter:
    """Append int32 tokens to the resizable, chunked, uncompressed HDF5 dataset ``tokens``.

    ``append`` only buffers; ``flush(progress)`` writes the buffered arrays in one resize, stores
    ``progress`` (JSON) in the file's attributes and flushes the file, so the file on disk is
    always as it was after the last flush. Only the writing thread may use it.
    """

    def __init__(self, path: str | os.PathLike[str], *, chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
                 resume: bool = False) -> None:
        import h5py
        import numpy as np

        self.path = Path(path)
        # big chunks bypass the (1 MB) chunk cache: HDF5 writes each block straight to its place
        self.f = h5py.File(self.path, "r+" if resume else "w",
                           alignment_threshold=1 << 20, alignment_interval=4096)
        if resume:
            self.dset = self.f["tokens"]
            self.skipped = self.f["skipped"]
        else:
            self.dset = self.f.create_dataset("tokens", shape=(0,), maxshape=(None,), dtype=np.int32,
                                              chunks=(chunk_tokens,), fill_time="never")
            self.skipped = self.f.create_dataset("skipped", shape=(0,), maxshape=(None,),
                                                 dtype=h5py.string_dtype(), chunks=(1024,))
            self.f.attrs["format"] = FORMAT
        self.n_tokens = int(self.dset.shape[0])
        self.n_documents = 0
        self._parts: list[Any] = []
        self._pending_skipped: list[str] = []
        self.pending = 0
        self.digest = hashlib.blake2b(digest_size=16)  # of the tokens written: what a resume proves

    def append(self, tokens: Any, n_documents: int) -> None:
        """Buffer an int32 array holding ``n_documents`` whole documents (EOTs included)."""
        if len(tokens):
            self._parts.append(tokens)
            self.pending += len(tokens)
        self.n_documents += n_documents

    def add_skipped(self, messages: list[str]) -> None:
        self._pending_skipped.extend(messages)

    @property
    def total(self) -> int:
        """Tokens written plus buffered."""
        return self.n_tokens + self.pending

    def flush(self, progress: dict[str, Any] | None = None) -> None:
        """Write the buffer as one block, then the progress record, then flush the file."""
        if self._parts:
            n = self.n_tokens
            self.dset.resize((n + self.pending,))
            for part in self._parts:
                self.dset[n:n + len(part)] = part
                self.digest.update(part.tobytes())
                n += len(part)
            self.n_tokens = n
            self._parts, self.pending = [], 0
        if self._pending_skipped:
            k = self.skipped.shape[0]
            self.skipped.resize((k + len(self._pending_skipped),))
            self.skipped[k:] = self._pending_skipped
            self._pending_skipped = []
        if progress is not None:
            self.f.attrs["progress"] = json.dumps(progress)
        self.f.flush()

    def verify(self, n_tokens: int, digest: str | None) -> None:
        """Prove the first ``n_tokens`` tokens are the ones written (their digest, re-read block by
        block); ValueError when they are not. The digest then continues from them."""
        h = hashlib.blake2b(digest_size=16)
        for i in range(0, n_tokens, DEFAULT_FLUSH_TOKENS):
            h.update(self.dset[i:min(n_tokens, i + DEFAULT_FLUSH_TOKENS)].tobytes())
        if digest is None or h.hexdigest() != digest:
            raise ValueError(f"{self.path.name}: its first {n_tokens:,} tokens are not the ones written")
        self.digest = h

    def truncate(self, n_tokens: int, n_documents: int, n_skipped: int | None = None) -> None:
        """Cut the file back to a recorded resume point."""
        if self.dset.shape[0] < n_tokens:
            raise ValueError(f"{self.path.name}: holds {self.dset.shape[0]} tokens, progress says {n_tokens}")
        self.dset.resize((n_tokens,))
        self.n_tokens, self.n_documents = n_tokens, n_documents
        if n_skipped is not None:
            self.skipped.resize((n_skipped,))

    def read_progress(self) -> dict[str, Any] | None:
        raw = self.f.attrs.get("progress")
        return json.loads(raw) if raw is not None else None

    def finish(self, attrs: dict[str, Any]) -> None:
        """Write what is buffered, set the final attributes and close the file."""
        self.flush()
        for k, v in attrs.items():
            self.f.attrs[k] = json.dumps(v) if isinstance(v, dict | list) else v
        if self.n_tokens < self.dset.chunks[0]:
            self._compact()
        elif "progress" in self.f.attrs:
            del self.f.attrs["progress"]  # last: a kill before this still leaves a resumable file
        self.close()

    def _compact(self) -> None:
        """Rewrite a file smaller than one chunk with one exact-size chunk (no half-empty 32 MB chunk)."""
        import h5py


        tmp = self.path.with_name(self.path.name + ".compact")
        with h5py.File(tmp, "w", alignment_threshold=1 << 20, alignment_interval=4096) as g:
            d = g.create_dataset("tokens", shape=(self.n_tokens,), dtype=self.dset.dtype, maxshape=(None,),
                                 chunks=(max(1, self.n_tokens),))
            for i in range(0, self.n_tokens, DEFAULT_FLUSH_TOKENS):  # block by block: memory stays flat
                d[i:i + DEFAULT_FLUSH_TOKENS] = self.dset[i:i + DEFAULT_FLUSH_TOKENS]
            g.create_dataset("skipped", data=self.skipped[:], dtype=h5py.string_dtype())
            for k, v in self.f.attrs.items():
                if k != "progress":
                    g.attrs[k] = v
        self.close()
        atomic.replace(tmp, self.path)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.f.close()


def to_int32(ids_list: list[list[int]], eot: int) -> Any:
    """Concatenate token lists, each followed by ``eot``, into one int32 array."""
    import numpy as np

    flat: list[int] = []
    for ids in ids_list:
        flat += ids
        flat.append(eot)
    return np.fromiter(flat, dtype=np.int32, count=len(flat))


# ---- reading: a thread that turns sources into tokenizer batches ----------------------------------

@dataclass
class Batch:
    docs: list[str]
    to_dev: list[bool] | None
    errors: list[tuple[int, InputError]]  # (documents before it in this batch, error): line order
    end: tuple[int, int]  # reader position after this batch: (source index, lines consumed)
    chars: int


def dev_share(text: str, seed: int) -> float:
    """A document's deterministic place in [0, 1) for the train/dev split (hash of seed + text)."""
    key = seed.to_bytes(8, "little", signed=True)
    h = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8, key=key)
    return int.from_bytes(h.digest(), "little") / 2**64


class Reader(threading.Thread):
    """Reads documents from ``start`` on and puts Batches (then None) on ``self.q``."""

    def __init__(self, sources: list[Source], params: PreparePretrainParams, start: tuple[int, int]) -> None:
        super().__init__(name="prepare-pretrain-reader", daemon=True)
        self.sources, self.params, self.start_at = sources, params, start
        self.q: queue.Queue[Any] = queue.Queue(maxsize=4)
        self.stop_event = threading.Event()
        self.bytes_read = 0

    def _on_read(self, n: int) -> None:
        self.bytes_read += n

    def _put(self, item: Any) -> bool:
        while not self.stop_event.is_set():
            try:
                self.q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def run(self) -> None:
        try:
            p = self.params
            split = p.val_fraction > 0
            docs: list[str] = []
            dev: list[bool] = []
            errors: list[tuple[int, InputError]] = []
            chars = 0
            first, skip = self.start_at
            pos = (first, skip)
            for i in range(first, len(self.sources)):
                it = iter_documents(self.sources[i], txt_docs=p.txt_docs, skip_lines=skip if i == first else 0,
                                    on_read=self._on_read)
                for end_line, doc in it:
                    pos = (i, end_line)
                    if isinstance(doc, InputError):
                        errors.append((len(docs), doc))
                        continue
                    docs.append(doc)
                    chars += len(doc)
                    if split:
                        dev.append(dev_share(doc, p.seed) < p.val_fraction)
                    if len(docs) >= p.batch_docs or chars >= BATCH_CHARS:
                        if not self._put(Batch(docs, dev if split else None, errors, pos, chars)):
                            return
                        docs, dev, errors, chars = [], [], [], 0
                    if self.stop_event.is_set():
                        return
                pos = (i + 1, 0)
            if docs or errors or pos != self.start_at:
                if not self._put(Batch(docs, dev if split else None, errors, pos, chars)):
                    return
            self._put(None)
        except BaseException as e:  # handed to the main thread
            self._put(e)

    def batches(self):
        """Batches in order; re-raises the reader's exception."""
        while True:
            item = self.q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def stop(self) -> None:
        self.stop_event.set()


def make_encoder(tok: Any, workers: int):
    """``encode(docs) -> list of id lists``: the backend's batch call, or ``workers`` threads."""
    if workers == 0:
        return tok.encode_batch, None
    if workers == 1:
        return (lambda docs: [tok.encode(d) for d in docs]), None

    pool = ThreadPoolExecutor(workers, thread_name_prefix="tokenize")

    def encode(docs: list[str]) -> list[list[int]]:
        k = -(-len(docs) // workers) or 1
        parts = pool.map(lambda part: [tok.encode(d) for d in part], [docs[i:i + k] for i in range(0, len(docs), k)])
        return [ids for part in parts for ids in part]

    return encode, pool


# ---- progress display -----------------------------------------------------------------------------

class _Display:
    """A rich progress bar on a terminal (bytes read, documents/s, tokens/s); otherwise plain
    lines with the same elapsed, rate and ETA every few seconds (``core.progress``)."""

    def __init__(self, total_bytes: int | None, enabled: bool) -> None:
        self.enabled = enabled
        self.t0 = time.time()
        self.progress = None
        self.lines: core_progress.Progress | None = None
        if not enabled:
            if not os.environ.get("LLMCTL_NO_PROGRESS"):
                self.lines = core_progress.Progress("prepare pretrain", total_bytes / 1e6 if total_bytes else None, unit="MB",
                                      stream=sys.stderr)
            return

        self.progress = Progress(
            TextColumn("[bold]prepare pretrain"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
            TextColumn("{task.fields[docs]} docs ({task.fields[dps]}/s)"),
            TextColumn("{task.fields[toks]} tokens ({task.fields[tps]}/s)"),
            TimeElapsedColumn(), TimeRemainingColumn(),
            console=Console(stderr=True), transient=False,
        )
        self.task = self.progress.add_task("read", total=total_bytes, docs="0", dps="0", toks="0", tps="0")
        self.progress.start()

    def update(self, bytes_read: int, docs: int, tokens: int, docs0: int, tokens0: int) -> None:
        if self.lines is not None:
            self.lines.update(bytes_read / 1e6, f"{docs:,} docs, {_human(tokens)} tokens")
        if self.progress is None:
            return
        dt = max(time.time() - self.t0, 1e-6)
        self.progress.update(self.task, completed=bytes_read, docs=f"{docs:,}", dps=f"{(docs - docs0) / dt:,.0f}",
                             toks=_human(tokens), tps=_human((tokens - tokens0) / dt))

    def say(self, msg: str) -> None:
        core_progress.print_above(self.progress, msg, sys.stderr)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def _human(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.1f}{unit}"
    return f"{n:.0f}"


def _progress_enabled() -> bool:
    return sys.stderr.isatty() and not os.environ.get("LLMCTL_NO_PROGRESS") and "PYTEST_CURRENT_TEST" not in os.environ


# ---- the runner -----------------------------------------------------------------------------------

def output_paths(ws: Workspace, params: PreparePretrainParams) -> dict[str, Path]:
    """{role: path}: train and/or val, the first one holding the progress record."""
    if params.val_fraction > 0:
        return {"train": ws.path(OUTPUTS["train"]), "val": ws.path(OUTPUTS["val"])}
    path = ws.path(params.out) if params.out else ws.path(OUTPUTS[params.split])
    return {params.split: path}


def resume_key(params: PreparePretrainParams, infos: list[dict[str, Any]]) -> str:
    """What must match for a tmp file to be resumed: the output-shaping params and the sources."""
    run_only = run_only_names(type(params))  # a resumed run may change these
    p = {k: v for k, v in params_dict(params).items() if k not in run_only}
    return json.dumps({"params": p, "sources": infos}, sort_keys=True)


class _Stop(Exception):
    pass


# Bytes of int32 tokens per byte of input: ~4 bytes of text per token (1 byte of output per byte of
# text), and zstd/gzip shards expand about 4x; a margin on top.
EXPANSION = {None: 1.0, "gzip": 4.0, "zstd": 4.5}


def estimate_output_bytes(sources: list[Any], params: PreparePretrainParams, out_per_text_byte: float = 1.0) -> int:
    """A generous estimate of the bytes the token file(s) will take, for the free-space check:
    ``out_per_text_byte`` is 4 bytes per token over the text bytes per token (1.0 before any text
    is tokenized; CJK text measures about 3)."""
    est = sum((s.size or 0) * EXPANSION.get(s.compression, 4.5) * out_per_text_byte for s in sources)
    if params.max_tokens:
        est = min(est, params.max_tokens * 4)
    return int(est * 1.1) + (1 << 20)


def space_checker(aws: dict[str, Any], sources: list[Any], params: PreparePretrainParams
                  ) -> Callable[[int, int], None]:
    """``check(tokens, text_bytes)`` after the first batch: re-estimate the output from the bytes
    per token actually produced, record it on the writers (named if the disk fills anyway) and
    raise DiskFull naming the path and the space needed when the disk cannot hold it."""
    def check(tokens: int, text_bytes: int) -> None:
        est = estimate_output_bytes(sources, params, 4 * tokens / max(1, text_bytes))
        for w in aws.values():
            w.expect_bytes = est
        written = sum(w.tmp.stat().st_size for w in aws.values() if w.tmp.is_file())
        first = next(iter(aws.values())).path
        where, free = free_bytes(first.parent)
        if est - written > free:
            raise DiskFull(f"{STAGE}: {first} needs about {human_bytes(est)} "
                           f"({human_bytes(est - written)} more), only {human_bytes(free)} free at {where} "
                           f"(estimated from {tokens:,} tokens for {text_bytes:,} bytes of text so far)")
    return check


def run(ws: Workspace, params: PreparePretrainParams, run_dir: Path) -> dict[str, Any]:
    """Tokenize the input shards into the split's HDF5 token file(s); return the counts."""
    params.validate()
    if not params.inputs:
        raise ParamError(f"{STAGE}: no inputs (pass --inputs or set [stages.{STAGE}] inputs in llmctl.toml)")
    tok = ws.tokenizer()
    sources = expand_inputs(params.inputs)
    if params.num_shards:
        sources = sources[:params.num_shards]
    paths = output_paths(ws, params)
    for path in paths.values():
        holder = read_lock(path)
        if holder is not None:
            raise ArtifactBusy(f"{path.name} is being written by pid {holder.get('pid')} "
                               f"(stage {holder.get('stage')}, job {holder.get('job') or '-'}); wait for it or cancel that job")
    need = estimate_output_bytes(sources, params)
    check_free_space(next(iter(paths.values())).parent, need, f"{STAGE}: {' and '.join(map(str, paths.values()))}")
    infos = [source_info(s) for s in sources]
    inputs_fp = {s.name: input_fingerprint(s) for s in sources}
    pdict = params_dict(params)
    cfg = config_params(get_stage(STAGE), ws.config)
    key = resume_key(params, infos)
    run_dir = Path(run_dir)
    runs.write_provenance(run_dir, stage=STAGE, params=pdict, seed=params.seed, tokenizer=tok.describe(),
                          inputs=inputs_fp)
    display = _Display(sum(s.size or 0 for s in sources) or None, _progress_enabled())
    metrics = MetricsWriter(run_dir / runs.METRICS_FILE)
    try:
        with contextlib.ExitStack() as stack:
            aws = {role: stack.enter_context(ArtifactWriter(path, stage=STAGE, params=pdict, inputs=inputs_fp,
                                                            keep_tmp=True, config_params=cfg))
                   for role, path in paths.items()}
            writers, policy, start = _open_outputs(aws, params, key, display)
            stack.callback(lambda: [w.close() for w in writers.values()])
            result = _Pipeline(writers, policy, start, key, sources, params, tok, display, metrics,
                               space_checker(aws, sources, params)).run()
            first = writers[next(iter(writers))]
            if first.n_documents == 0:
                found = sum(w.n_documents for w in writers.values())
                raise InputError(", ".join(s.label for s in sources), None, (
                    f"all {found} document(s) went to the val split (--val-fraction {params.val_fraction}), none "
                    f"to train on: cut the text into more documents (--txt-docs {params.txt_docs} made {found}) "
                    "or pass --val-fraction 0") if found else "no documents found: nothing to write")
            for role, w in writers.items():
                if w.n_documents == 0:
                    display.say(f"warning: {paths[role].name} gets no documents")
            counts = _commit(aws, writers, policy, tok, infos, pdict)
    finally:
        display.close()
        metrics.close()
    for role, c in counts.items():
        print(f"{paths[role].name}: {c['tokens']:,} tokens, {c['documents']:,} documents")
    if policy.skipped:
        print(f"skipped {policy.n_skipped} bad record(s), listed above and in "
              f"{manifest_path(paths[next(iter(paths))]).name}")
    print(f"{result['bytes'] / 1e6:.1f} MB read in {result['seconds']:.1f} s "
          f"({result['tokens_per_s'] / 1e6:.2f}M tokens/s)")
    return {"tokens": sum(c["tokens"] for c in counts.values()),
            "documents": sum(c["documents"] for c in counts.values()),
            "skipped": policy.n_skipped, "seconds": round(result["seconds"], 3),
            "files": {role: str(p) for role, p in paths.items()},
            **{f"{role}_tokens": c["tokens"] for role, c in counts.items()}}


def _commit(aws: dict[str, Any], writers: dict[str, TokenWriter], policy: ErrorPolicy, tok: Any,
            infos: list[dict[str, Any]], pdict: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Final attributes into every file, then rename each into place with its manifest."""
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for role, w in writers.items():
        w.finish({"tokenizer": tok.describe(), "sources": infos, "parameters": pdict, "split": role,
                  "n_tokens": w.n_tokens, "n_documents": w.n_documents, "n_skipped": policy.n_skipped,
                  "eot_id": tok.eot_id, "created": created, "format": FORMAT})

    counts = {role: {"tokens": w.n_tokens, "documents": w.n_documents, "skipped": policy.n_skipped}
              for role, w in writers.items()}
    commit_together([aws[role] for role in writers], [
        {"counts": counts[role], "tokenizer": tok.describe(), "split": role, "sources": infos,
         "errors": policy.report(), "skipped_records": policy.skipped[:MANIFEST_SKIPPED]} for role in writers])
    return counts


def _open_outputs(aws: dict[str, Any], params: PreparePretrainParams, key: str, display: _Display
                  ) -> tuple[dict[str, TokenWriter], ErrorPolicy, tuple[int, int]]:
    """Open fresh token files, or with ``resume`` reopen the tmp files cut back to their progress."""
    policy = ErrorPolicy(params.on_error)
    tmps = {role: w.tmp for role, w in aws.items()}
    if params.resume:
        resumed = _try_resume(tmps, params, key, policy, display)
        if resumed is not None:
            return resumed[0], policy, resumed[1]
    for tmp in tmps.values():
        if tmp.exists():
            if not params.resume:
                display.say(f"discarding the partial {tmp.name} of an earlier run (use --resume to continue it)")
            atomic.remove(tmp)
    writers = {role: TokenWriter(tmp, chunk_tokens=params.chunk_tokens) for role, tmp in tmps.items()}
    _flush_all(writers, key, policy, (0, 0))
    return writers, policy, (0, 0)


def _try_resume(tmps: dict[str, Path], params: PreparePretrainParams, key: str, policy: ErrorPolicy,
                display: _Display) -> tuple[dict[str, TokenWriter], tuple[int, int]] | None:
    """Reopen the tmp files at their last progress record, or None (with a note) to start over."""
    roles = list(tmps)
    first = tmps[roles[0]].name
    if not all(t.exists() for t in tmps.values()):
        display.say(f"nothing to resume ({first} is missing); starting from the beginning")
        return None
    writers: dict[str, TokenWriter] = {}
    try:
        for role in roles:
            writers[role] = TokenWriter(tmps[role], chunk_tokens=params.chunk_tokens, resume=True)
        prog = writers[roles[0]].read_progress()
        if prog is not None and prog.get("key") == key:
            for role in roles:
                n_tok, n_doc = prog["counts"][role]
                writers[role].truncate(n_tok, n_doc, prog["skipped"] if role == roles[0] else None)
                writers[role].verify(n_tok, (prog.get("digests") or {}).get(role))
            primary = writers[roles[0]]
            policy.seen, policy.lost = prog["seen"], prog.get("lost", 0)
            policy.skipped = [s.decode("utf-8") if isinstance(s, bytes) else str(s) for s in primary.skipped[:]]
            for w in writers.values():  # prove the file reads and writes where it will go on
                if w.n_tokens:
                    w.dset[w.n_tokens - 1:w.n_tokens]
            _flush_all(writers, key, policy, (prog["source"], prog["line"]))
            display.say(f"resuming {first}: source {prog['source'] + 1}, line {prog['line']}, "
                        f"{primary.n_tokens:,} tokens written")
            return writers, (prog["source"], prog["line"])
    except Exception as e:  # noqa: BLE001 - h5py reports a damaged file in many types (RuntimeError …)
        display.say(f"cannot resume from {first}: it is damaged ({type(e).__name__}: {str(e)[:200]}); "
                    "starting over from scratch")
        prog = {}
    for w in writers.values():
        w.close()
    if prog is None:
        display.say(f"{first} has no progress record; starting over")
        return None
    if prog and prog.get("key") != key:
        raise ParamError(f"{STAGE}: cannot resume {first}: it was written with other parameters or inputs; "
                         "rerun without --resume to start over")
    return None


def _flush_all(writers: dict[str, TokenWriter], key: str, policy: ErrorPolicy, pos: tuple[int, int]) -> None:
    """Write every buffer; the primary (first) file's progress record goes last."""
    roles = list(writers)
    for r in roles:  # every block first: the digests in the progress record cover what was written
        writers[r].flush()
    primary = writers[roles[0]]
    progress = {"key": key, "source": pos[0], "line": pos[1], "seen": policy.seen,
                "skipped": len(policy.skipped), "lost": policy.lost,
                "counts": {r: [w.total, w.n_documents] for r, w in writers.items()},
                "digests": {r: w.digest.hexdigest() for r, w in writers.items()}}
    primary.flush(progress)


class _Pipeline:
    """Read, tokenize and write until the sources (or max_tokens) are exhausted.

    A reader thread yields batches of documents, one encoder thread tokenizes the next batch while
    this thread appends the previous one; every ``flush_tokens`` the files are flushed with their
    progress record (a resume point).
    """

    def __init__(self, writers: dict[str, TokenWriter], policy: ErrorPolicy, start: tuple[int, int], key: str,
                 sources: list[Source], params: PreparePretrainParams, tok: Any, display: _Display,
                 metrics: Any, check_space: Callable[[int, int], None] | None = None) -> None:
        self.writers, self.policy, self.key, self.params = writers, policy, key, params
        self.check_space = check_space  # sees the tokens and text bytes of the first batch
        self.display, self.metrics = display, metrics
        self.roles = list(writers)
        self.eot = tok.eot_id
        self.encode, self.pool = make_encoder(tok, params.workers)
        self.reader = Reader(sources, params, start)
        self.reader.bytes_read = self.bytes0 = sum(s.size or 0 for s in sources[:start[0]])
        self.docs0 = self.documents()
        self.toks0 = self.total_tokens()
        self.n_skipped_written = len(policy.skipped)
        self.pos = start
        self.stop = False
        self.t0 = time.time()

    def total_tokens(self) -> int:
        return sum(w.total for w in self.writers.values())

    def documents(self) -> int:
        return sum(w.n_documents for w in self.writers.values())

    def log_metrics(self) -> None:
        dt = max(time.time() - self.t0, 1e-9)
        n = self.total_tokens()
        self.metrics.log(n, {"prepare/tokens": n, "prepare/documents": self.documents(),
                             "prepare/skipped": self.policy.n_skipped,
                             "prepare/tokens_per_s": (n - self.toks0) / dt,
                             "prepare/mb_per_s": (self.reader.bytes_read - self.bytes0) / dt / 1e6})

    def flush(self) -> None:
        self.writers[self.roles[0]].add_skipped(self.policy.skipped[self.n_skipped_written:])
        self.n_skipped_written = len(self.policy.skipped)
        _flush_all(self.writers, self.key, self.policy, self.pos)

    def count_errors(self, batch: Batch) -> None:
        """Count the batch's documents and bad records in line order, so the skip threshold sees what a
        reader would; past the threshold the progress record stays at the end of the previous batch."""
        policy = self.policy
        seen0, skipped0, lost0 = policy.seen, len(policy.skipped), policy.lost
        counted = 0
        try:
            for before, err in batch.errors:
                for _ in range(before - counted):
                    policy.ok()
                counted = before
                policy.bad(err)
                self.display.say(f"skipped {err}")
        except (InputError, TooManyErrors):
            policy.seen, policy.lost = seen0, lost0
            del policy.skipped[skipped0:]
            self.flush()
            raise
        for _ in range(len(batch.docs) - counted):
            policy.ok()

    def kept(self, ids_list: list[list[int]]) -> int:
        """How many documents of the batch fit under max_tokens (all without a limit)."""
        if not self.params.max_tokens:
            return len(ids_list)
        room = self.params.max_tokens - self.total_tokens()
        acc = 0
        for i, ids in enumerate(ids_list):
            acc += len(ids) + 1
            if acc >= room:
                return i + 1
        return len(ids_list)

    def consume(self, batch: Batch, ids_list: list[list[int]]) -> bool:
        """Append one tokenized batch; False once max_tokens is reached."""
        self.count_errors(batch)
        if self.check_space is not None and batch.docs:
            self.check_space(sum(len(ids) + 1 for ids in ids_list),
                             sum(len(d.encode("utf-8", "surrogatepass")) for d in batch.docs))
            self.check_space = None
        keep = self.kept(ids_list)
        if batch.to_dev is None:
            self.writers[self.roles[0]].append(to_int32(ids_list[:keep], self.eot), keep)
        else:
            tr = [ids for ids, d in zip(ids_list[:keep], batch.to_dev, strict=False) if not d]
            dv = [ids for ids, d in zip(ids_list[:keep], batch.to_dev, strict=False) if d]
            self.writers["train"].append(to_int32(tr, self.eot), len(tr))
            self.writers["val"].append(to_int32(dv, self.eot), len(dv))
        self.pos = batch.end
        done = bool(self.params.max_tokens) and self.total_tokens() >= self.params.max_tokens
        if done or sum(w.pending for w in self.writers.values()) >= self.params.flush_tokens:
            self.flush()
        return not done

    def show(self) -> None:
        self.display.update(self.reader.bytes_read, self.documents(), self.total_tokens(), self.docs0, self.toks0)

    def read_all(self, tok_pool: ThreadPoolExecutor) -> None:
        """The loop: encode batch i+1 while appending batch i; stop on max_tokens or SIGTERM."""
        self.reader.start()
        pending: tuple[Batch, Any] | None = None
        last_log = time.time()
        for batch in self.reader.batches():
            fut = tok_pool.submit(self.encode, batch.docs)
            if pending is not None and not self.consume(pending[0], pending[1].result()):
                return
            pending = (batch, fut)
            self.show()
            if self.stop:
                raise _Stop
            if time.time() - last_log > 5:
                self.log_metrics()
                last_log = time.time()
        if pending is not None:
            self.consume(pending[0], pending[1].result())

    def run(self) -> dict[str, Any]:
        """Run to the end (SIGTERM flushes a resume point and raises KeyboardInterrupt); the rates."""
        old_handler = None
        if threading.current_thread() is threading.main_thread():
            old_handler = signal.signal(signal.SIGTERM, lambda signum, frame: setattr(self, "stop", True))
        tok_pool = ThreadPoolExecutor(1, thread_name_prefix="encode")
        try:
            if not (self.params.max_tokens and self.total_tokens() >= self.params.max_tokens):
                self.read_all(tok_pool)
            self.policy.finish()
            self.flush()
            self.log_metrics()
        except _Stop:
            self.flush()
            raise KeyboardInterrupt("cancelled (SIGTERM); rerun with --resume to continue") from None
        finally:
            self.reader.stop()
            tok_pool.shutdown(wait=True, cancel_futures=True)
            if self.pool is not None:
                self.pool.shutdown(wait=False)
            if old_handler is not None:
                signal.signal(signal.SIGTERM, old_handler)
        dt = max(time.time() - self.t0, 1e-9)
        self.show()
        return {"seconds": dt, "bytes": self.reader.bytes_read - self.bytes0,
                "tokens_per_s": (self.total_tokens() - self.toks0) / dt}
