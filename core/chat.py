"""The chat template: how a conversation becomes the text and token ids a model sees.

r50k_base has no spare special tokens, so roles are plain-text markers and ``<|endoftext|>``
(id 50256, the only special token) ends every turn::

    System:\\n{system}<|endoftext|>User:\\n{question}<|endoftext|>Assistant:\\n{answer}<|endoftext|>

Each turn is ``{Role}:\\n`` + content + EOT with Role in System / User / Assistant; no text
between turns. A prompt for generation (RL, DPO, evaluation) is every turn so far followed by
``Assistant:\\n``; the model's completion is the assistant content and then EOT.

Token ids are made segment by segment: each marker and each content string is encoded on its
own (encode-ordinary, so a literal ``<|endoftext|>`` in content stays text) and the EOT id is
appended, never encoded. So ``encode_prompt(m)`` is always a prefix of
``encode_chat(m + [assistant reply])`` and prompt ids + completion ids equal the SFT ids. (A
tokenizer run over the whole rendered string, as transformers does with the Jinja template, can
differ at a few content/marker boundaries, e.g. content that starts with whitespace.)

The loss mask is 1 exactly over each assistant turn's content tokens and the EOT ending it, 0 on
markers, system and user turns. ``loss_mask[i]`` says whether ``ids[i]`` is a training target:
trainers take ``x = ids[:-1], y = ids[1:], m = mask[1:]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from typing import Any

from llmctl.core.tokenizer import EOT_ID, EOT_TOKEN

ROLES = ("system", "user", "assistant")
ROLE_MARKERS = {"system": "System:\n", "user": "User:\n", "assistant": "Assistant:\n"}
ASSISTANT_MARKER = ROLE_MARKERS["assistant"]
EOT = EOT_TOKEN

Messages = Sequence[dict[str, Any]]

_marker_ids: dict[tuple[int, str], list[int]] = {}


def _tok(tok: Any) -> Any:
    if tok is not None:
        return tok
    from llmctl.core.tokenizer import get_tokenizer

    return get_tokenizer()


def _markers(tok: Any) -> dict[str, list[int]]:
    out = {}
    for role, text in ROLE_MARKERS.items():
        key = (id(tok), role)
        ids = _marker_ids.get(key)
        if ids is None:
            ids = _marker_ids[key] = list(tok.encode(text))
        out[role] = ids
    return out


def check_messages(messages: Messages) -> None:
    """Raise ValueError unless ``messages`` is a list of ``{"role", "content"}`` with known roles."""
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
        raise ValueError(f"messages must be a list of {{role, content}} dicts, got {type(messages).__name__}")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ValueError(f"message {i}: expected a dict, got {type(m).__name__}")
        role = m.get("role")
        if role not in ROLE_MARKERS:
            raise ValueError(f"message {i}: unknown role {role!r} (expected one of {', '.join(ROLES)})")
        if not isinstance(m.get("content"), str):
            raise ValueError(f"message {i}: content must be a string, got {type(m.get('content')).__name__}")


def render_chat(messages: Messages) -> str:
    """The exact text of a whole conversation, EOT written as ``<|endoftext|>``."""
    check_messages(messages)
    return "".join(ROLE_MARKERS[m["role"]] + m["content"] + EOT for m in messages)


def render_prompt(messages: Messages) -> str:
    """The conversation so far plus ``Assistant:\\n``: where the assistant's completion begins."""
    return render_chat(messages) + ASSISTANT_MARKER


def encode_chats(conversations: Sequence[Messages], tok: Any = None) -> list[tuple[list[int], list[int]]]:
    """``encode_chat`` for many conversations, with all contents tokenized in one parallel batch."""
    tok = _tok(tok)
    markers = _markers(tok)
    texts: list[str] = []
    for messages in conversations:
        check_messages(messages)
        texts.extend(m["content"] for m in messages)
    encoded = tok.encode_batch(texts)
    out = []
    k = 0
    for messages in conversations:
        ids: list[int] = []
        mask: list[int] = []
        for m in messages:
            mk = markers[m["role"]]
            body = encoded[k]
            k += 1
            ids += mk
            ids += body
            ids.append(EOT_ID)
            if m["role"] == "assistant":
                mask += [0] * len(mk)
                mask += [1] * (len(body) + 1)
            else:
                mask += [0] * (len(mk) + len(body) + 1)
        out.append((ids, mask))
    return out


def encode_chats_flat(conversations: Sequence[Messages], tok: Any = None) -> tuple[Any, Any, Any]:
    """``encode_chats`` as flat numpy arrays: (ids int32, loss_mask uint8, lengths int64).

    Conversation ``k`` occupies ``[offsets[k], offsets[k] + lengths[k])`` with offsets the
    cumulative sum of ``lengths``; the ids and mask are exactly those of ``encode_chat``. Used by
    the prepare pipelines, where building per-token Python lists would cost more than the BPE.
    """
    import numpy as np

    tok = _tok(tok)
    markers = _markers(tok)
    role_index = {r: i for i, r in enumerate(ROLES)}
    texts: list[str] = []
    roles: list[int] = []
    n_seg: list[int] = []
    for messages in conversations:
        check_messages(messages)
        for m in messages:
            texts.append(m["content"])
            roles.append(role_index[m["role"]])
        n_seg.append(len(messages))
    encoded = tok.encode_batch(texts)
    body_len = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    body = np.fromiter(chain.from_iterable(encoded), dtype=np.int32, count=int(body_len.sum()))
    role = np.asarray(roles, dtype=np.int64)
    mk_ids = [np.asarray(markers[r], dtype=np.int32) for r in ROLES]
    mk_len = np.asarray([len(m) for m in mk_ids], dtype=np.int64)[role]
    seg_len = mk_len + body_len + 1
    seg_start = np.zeros(len(seg_len), dtype=np.int64)
    np.cumsum(seg_len[:-1], out=seg_start[1:])
    total = int(seg_len.sum())
    ids = np.empty(total, dtype=np.int32)
    mask = np.zeros(total, dtype=np.uint8)
    trained = (role == role_index["assistant"]).astype(np.uint8)
    body_src = np.zeros(len(body_len), dtype=np.int64)
    np.cumsum(body_len[:-1], out=body_src[1:])
    dest = np.repeat(seg_start + mk_len - body_src, body_len) + np.arange(len(body), dtype=np.int64)
    ids[dest] = body
    mask[dest] = np.repeat(trained, body_len)
    eot = seg_start + mk_len + body_len
    ids[eot] = EOT_ID
    mask[eot] = trained
    for r, mk in enumerate(mk_ids):
        starts = seg_start[role == r]
        if len(starts) and len(mk):
            ids[(starts[:, None] + np.arange(len(mk))).reshape(-1)] = np.tile(mk, len(starts))
    conv_of_seg = np.repeat(np.arange(len(n_seg)), n_seg)
    lengths = np.bincount(conv_of_seg, weights=seg_len, minlength=len(n_seg)).astype(np.int64)
    return ids, mask, lengths


def encode_chat(messages: Messages, tok: Any = None) -> tuple[list[int], list[int]]:
    """Token ids of a conversation and its loss mask (1 on assistant content and its EOT)."""
    return encode_chats([messages], tok)[0]


def encode_prompt(messages: Messages, tok: Any = None) -> list[int]:
    """Token ids of ``render_prompt(messages)``: a prefix of the ids of the full conversation."""
    tok = _tok(tok)
    ids, _ = encode_chat(messages, tok)
    return ids + _markers(tok)["assistant"]


def encode_completion(content: str, tok: Any = None) -> list[int]:
    """Token ids of an assistant reply as it follows a prompt: content then EOT."""
    return list(_tok(tok).encode(content)) + [EOT_ID]


def chat_template_jinja() -> str:
    """A Jinja2 chat template (transformers ``apply_chat_template`` style, eos ``<|endoftext|>``).

    Renders exactly ``render_chat(messages)``, plus ``Assistant:\\n`` when
    ``add_generation_prompt`` is true (``render_prompt``). Every tag trims whitespace, so the
    output does not depend on the ``trim_blocks`` / ``lstrip_blocks`` settings.
    """
    return (
        "{%- set markers = {'system': 'System:\\n', 'user': 'User:\\n', 'assistant': 'Assistant:\\n'} -%}"
        "{%- for message in messages -%}"
        "{%- if message['role'] not in markers -%}"
        "{{- raise_exception('unknown role: ' ~ message['role']) -}}"
        "{%- endif -%}"
        "{{- markers[message['role']] ~ message['content'] ~ '" + EOT + "' -}}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- 'Assistant:\\n' -}}{%- endif -%}"
    )
