"""The r50k_base tokenizer (GPT-2's BPE) with a fast backend and tiktoken as the reference.

The ranks come from a local ``.tiktoken`` file when ``LLMCTL_TIKTOKEN_FILE`` (or the workspace
config's ``[tokenizer] file``) names one, checked against the published sha256; otherwise from
tiktoken's own loader (its cache or a download). Token ids are exactly tiktoken's.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENCODING_NAME = "r50k_base"
R50K_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
EOT_TOKEN = "<|endoftext|>"
EOT_ID = 50256
N_VOCAB = 50257  # real tokens, EOT included
PADDED_VOCAB = 50304  # model vocab: N_VOCAB rounded up to a multiple of 64
ENV_FILE = "LLMCTL_TIKTOKEN_FILE"
ENV_BACKEND = "LLMCTL_TOKENIZER_BACKEND"


class TokenizerError(RuntimeError):
    """The ranks file is missing, unreadable or not r50k_base."""


def read_ranks_file(path: str | os.PathLike[str]) -> tuple[dict[bytes, int], str]:
    """Read a ``.tiktoken`` ranks file, verify its sha256 and return (ranks, sha256)."""
    p = Path(path).expanduser()
    try:
        data = p.read_bytes()
    except OSError as e:
        raise TokenizerError(f"tokenizer file {p}: cannot read ({e.strerror or e})") from e
    digest = hashlib.sha256(data).hexdigest()
    if digest != R50K_SHA256:
        raise TokenizerError(
            f"tokenizer file {p}: sha256 {digest[:12]}… is not r50k_base's {R50K_SHA256[:12]}…"
        )
    ranks: dict[bytes, int] = {}
    for lineno, line in enumerate(data.splitlines(), start=1):
        if not line:
            continue
        try:
            tok, rank = line.split()
            ranks[base64.b64decode(tok)] = int(rank)
        except ValueError as e:
            raise TokenizerError(f"tokenizer file {p}: line {lineno}: malformed ({e})") from e
    return ranks, digest


@dataclass
class Tokenizer:
    """r50k_base with ``encode``/``encode_batch`` on the fast backend and tiktoken as reference."""

    reference: Any  # tiktoken.Encoding
    fast: Any | None  # riptoken.Encoding, or None when only tiktoken is used
    sha256: str
    source: str

    eot_id: int = EOT_ID
    n_vocab: int = N_VOCAB
    vocab_size: int = PADDED_VOCAB
    name: str = ENCODING_NAME

    @property
    def backend(self) -> str:
        return "riptoken" if self.fast is not None else "tiktoken"

    @property
    def _enc(self) -> Any:
        return self.fast if self.fast is not None else self.reference

    def encode(self, text: str) -> list[int]:
        """Tokens of ``text``; special-token strings are encoded as ordinary text."""
        return self._enc.encode_ordinary(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Tokens of each text, encoded in parallel by the backend."""
        if not texts:
            return []
        return self._enc.encode_ordinary_batch(texts)

    def encode_batch_eot(self, texts: list[str]) -> list[list[int]]:
        """``encode_batch``, except that each ``<|endoftext|>`` in the texts becomes the EOT id."""
        if not texts:
            return []
        return self._enc.encode_batch(texts, allowed_special={EOT_TOKEN})

    def decode(self, ids: Any) -> str:
        """Text of ``ids`` (invalid UTF-8 replaced); ids past the real vocab are dropped."""
        ids = [int(i) for i in ids if 0 <= int(i) < N_VOCAB]
        return self.reference.decode(ids)

    def decode_tokens(self, ids: Any) -> list[str]:
        """One display string per token (partial UTF-8 shown with replacement chars)."""
        out = []
        for i in ids:
            i = int(i)
            if i >= N_VOCAB:
                out.append("<pad>")
            else:
                out.append(self.reference.decode_single_token_bytes(i).decode("utf-8", "replace"))
        return out

    def describe(self) -> dict[str, Any]:
        """What a manifest records about the tokenizer."""
        return {
            "name": self.name,
            "sha256": self.sha256,
            "eot_id": self.eot_id,
            "n_vocab": self.n_vocab,
            "vocab_size": self.vocab_size,
            "backend": self.backend,
        }


_lock = threading.Lock()
_cache: dict[tuple[str, str], Tokenizer] = {}


def _r50k_pattern() -> str:
    from tiktoken_ext.openai_public import r50k_pat_str

    return r50k_pat_str


def _build(ranks_file: str | None, backend: str) -> Tokenizer:
    import tiktoken

    if ranks_file:
        ranks, digest = read_ranks_file(ranks_file)
        reference = tiktoken.Encoding(
            name=ENCODING_NAME,
            pat_str=_r50k_pattern(),
            mergeable_ranks=ranks,
            special_tokens={EOT_TOKEN: EOT_ID},
            explicit_n_vocab=N_VOCAB,
        )
        source = str(Path(ranks_file).expanduser().resolve())
    else:
        try:
            reference = tiktoken.get_encoding(ENCODING_NAME)
        except Exception as e:  # network or cache failure
            raise TokenizerError(
                f"cannot load {ENCODING_NAME} through tiktoken ({type(e).__name__}: {e}); "
                f"set {ENV_FILE} to a local r50k_base.tiktoken file"
            ) from e
        digest = R50K_SHA256  # tiktoken verified the expected hash itself
        source = "tiktoken"
    fast = None
    if backend in ("auto", "riptoken"):
        try:
            import riptoken

            core = riptoken.CoreBPE(reference._mergeable_ranks, reference._special_tokens, reference._pat_str)
            fast = riptoken.Encoding(core, reference)
        except ImportError:
            if backend == "riptoken":
                raise TokenizerError("tokenizer backend riptoken requested but not installed") from None
    elif backend != "tiktoken":
        raise TokenizerError(f"unknown tokenizer backend {backend!r} (auto, riptoken, tiktoken)")
    return Tokenizer(reference=reference, fast=fast, sha256=digest, source=source)


def get_tokenizer(ranks_file: str | os.PathLike[str] | None = None, backend: str | None = None) -> Tokenizer:
    """The process-wide r50k_base tokenizer.

    ``ranks_file`` overrides ``$LLMCTL_TIKTOKEN_FILE``; ``backend`` is auto (riptoken when
    installed), riptoken or tiktoken, overriding ``$LLMCTL_TOKENIZER_BACKEND``.
    """
    path = str(ranks_file) if ranks_file else os.environ.get(ENV_FILE) or ""
    backend = backend or os.environ.get(ENV_BACKEND) or "auto"
    key = (path, backend)
    with _lock:
        tok = _cache.get(key)
        if tok is None:
            tok = _cache[key] = _build(path or None, backend)
        return tok
