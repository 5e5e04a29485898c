"""The batch iterator and TokenFile over real tokens: contiguous windows, seeds, resume, ranks, chunks."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from llmctl.core.data.prepare_pretrain import TokenWriter, to_int32
from llmctl.core.data.token_windows import TokenFile, get_batch_iterator, window_starts

CHUNK = 1000  # tokens per HDF5 chunk: windows below span several chunks


@pytest.fixture(scope="module")
def ref_tokens(tokenizer, shared_data) -> np.ndarray:
    """Real tokens: Shakespeare and Wikipedia lines, each followed by EOT."""
    d = shared_data / "pile-sample"
    docs = d.joinpath("tinyshakespeare.txt").read_text(encoding="utf-8")[:200_000].split("\n\n")
    docs += [ln for ln in d.joinpath("wiki_demo.txt").read_text(encoding="utf-8").split("\n")[:3] if ln.strip()]
    return to_int32(tokenizer.encode_batch(docs), tokenizer.eot_id)


def _write(path, tokens: np.ndarray, chunk: int = CHUNK, pieces: int = 7):
    w = TokenWriter(path, chunk_tokens=chunk)
    for part in np.array_split(tokens, pieces):  # several flushes, as prepare pretrain does
        w.append(part, 0)
        w.flush({"test": True})
    w.finish({"n_tokens": len(tokens), "note": {"source": "test"}})
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory, ref_tokens):
    """The same tokens as: the writer's chunked file, chunks out of order in the file, gzip (h5py reads)."""
    tmp = tmp_path_factory.mktemp("tokens")
    out = {"writer": _write(tmp / "writer.h5", ref_tokens)}
    n = len(ref_tokens)
    with h5py.File(tmp / "scattered.h5", "w") as f:  # chunks written last-first: not back to back
        d = f.create_dataset("tokens", shape=(n,), dtype=np.int32, chunks=(CHUNK,))
        for c in reversed(range(0, n, CHUNK)):
            d[c:c + CHUNK] = ref_tokens[c:c + CHUNK]
            f.create_dataset(f"pad{c}", data=np.zeros(10, np.int8))  # metadata between chunks
    out["scattered"] = tmp / "scattered.h5"
    with h5py.File(tmp / "gzip.h5", "w") as f:
        f.create_dataset("tokens", data=ref_tokens, chunks=(CHUNK,), compression="gzip")
    out["gzip"] = tmp / "gzip.h5"
    return out


def test_layouts_are_mapped_or_fall_back(files, ref_tokens):
    modes = {}
    for name, path in files.items():
        with TokenFile(path) as tf:
            modes[name] = tf.mode
            assert len(tf) == len(ref_tokens)
            assert np.array_equal(tf.read(0, len(tf)), ref_tokens)
    assert modes["writer"] in ("memmap", "memmap-chunks")  # chunks back to back in the file, or not
    assert modes["scattered"] == "memmap-chunks" and modes["gzip"] == "h5py"


def test_writer_file_layout_and_attrs(files, ref_tokens):
    with h5py.File(files["writer"]) as f:
        d = f["tokens"]
        assert d.dtype == np.int32 and d.chunks == (CHUNK,) and d.compression is None
        assert d.maxshape == (None,)
        assert "progress" not in f.attrs
    with TokenFile(files["writer"]) as tf:
        assert tf.attrs["n_tokens"] == len(ref_tokens)
        assert '"source"' in tf.attrs["note"]


@pytest.mark.parametrize("layout", ["writer", "scattered", "gzip"])
def test_reads_across_chunk_boundaries(files, ref_tokens, layout):
    n = len(ref_tokens)
    with TokenFile(files[layout]) as tf:
        for start in (0, CHUNK - 1, CHUNK, 3 * CHUNK - 5, n - 2 * CHUNK - 7, n - 1):
            for k in (1, 2, 7, CHUNK, CHUNK + 1, 2 * CHUNK + 3):
                assert np.array_equal(tf.read(start, k), ref_tokens[start:start + k]), (start, k)
        assert len(tf.read(n - 3, 100)) == 3  # clipped at the end
        assert len(tf.read(n + 5, 10)) == 0


@pytest.mark.parametrize("layout", ["writer", "scattered", "gzip"])
def test_windows_are_contiguous_slices_shifted_by_one(files, ref_tokens, layout):
    T, B = 2 * CHUNK + 500, 4  # every window crosses at least two chunk boundaries
    it = get_batch_iterator(files[layout], T, B, seed=7)
    for _ in range(3):
        step = it.step
        starts = it.starts(step)
        x, y = next(it)
        assert x.shape == y.shape == (B, T) and x.dtype == y.dtype == np.int64
        for row, s in enumerate(starts):
            assert np.array_equal(x[row], ref_tokens[s:s + T])
            assert np.array_equal(y[row], ref_tokens[s + 1:s + T + 1])
    it.close()


def test_same_batches_whatever_the_layout(files):
    batches = {}
    for name, path in files.items():
        it = get_batch_iterator(path, 64, 8, seed=3)
        batches[name] = [next(it)[0] for _ in range(3)]
        it.close()
    for name in ("scattered", "gzip"):
        assert all(np.array_equal(a, b) for a, b in zip(batches["writer"], batches[name], strict=True))


def test_deterministic_per_seed(files):
    p = files["writer"]
    a = [next(it) for it in [get_batch_iterator(p, 128, 4, seed=1)] for _ in range(4)]
    b = [next(it) for it in [get_batch_iterator(p, 128, 4, seed=1)] for _ in range(4)]
    c = [next(it) for it in [get_batch_iterator(p, 128, 4, seed=2)] for _ in range(4)]
    assert all(np.array_equal(x1, x2) and np.array_equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b, strict=True))
    assert not np.array_equal(a[0][0], c[0][0])
    assert not np.array_equal(a[0][0], a[1][0])  # consecutive batches differ


def test_resume_with_start_step_sees_the_same_batches(files):
    p = files["writer"]
    it = get_batch_iterator(p, 256, 4, seed=11)
    full = [next(it)[0] for _ in range(6)]
    resumed = get_batch_iterator(p, 256, 4, seed=11, start_step=4)
    assert resumed.step == 4
    assert np.array_equal(next(resumed)[0], full[4])
    assert np.array_equal(next(resumed)[0], full[5])


def test_ranks_get_different_windows_that_make_up_the_global_batch(files):
    p = files["writer"]
    r0 = get_batch_iterator(p, 128, 4, seed=5, rank=0, world_size=2)
    r1 = get_batch_iterator(p, 128, 4, seed=5, rank=1, world_size=2)
    single = get_batch_iterator(p, 128, 8, seed=5)
    for _ in range(3):
        s0, s1 = r0.starts(r0.step), r1.starts(r1.step)
        assert not set(s0.tolist()) & set(s1.tolist())
        x0, x1, xs = next(r0)[0], next(r1)[0], next(single)[0]
        assert np.array_equal(np.concatenate([x0, x1]), xs)
    with pytest.raises(ValueError):
        get_batch_iterator(p, 128, 4, seed=5, rank=2, world_size=2)


def test_file_smaller_than_a_window_is_refused(tmp_path, ref_tokens):
    p = _write(tmp_path / "small.h5", ref_tokens[:100], chunk=CHUNK, pieces=2)
    with TokenFile(p) as tf:
        assert tf.mode == "memmap" and len(tf) == 100  # compacted: smaller than one chunk
    with pytest.raises(ValueError, match="fewer than one window"):
        get_batch_iterator(p, 100, 1, seed=0)
    x, y = next(get_batch_iterator(p, 99, 2, seed=0))
    assert np.array_equal(x[0], ref_tokens[:99]) and np.array_equal(y[0], ref_tokens[1:100])


def test_window_starts_are_a_fixed_uniform_stream():
    # a golden value: a change here would silently change every resumed run's data order
    assert window_starts(1, 0, 4, 100).tolist() == [70, 95, 27, 4]
    assert window_starts(1, 0, 4, 100, rank=1, world_size=2).tolist() == window_starts(1, 0, 8, 100).tolist()[4:]
    s = np.concatenate([window_starts(3, k, 64, 1000) for k in range(500)])
    assert s.min() >= 0 and s.max() < 1000
    counts = np.bincount(s, minlength=1000)
    assert counts.min() > 5 and counts.max() < 70  # ~32 each
