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
from dataclasses import dataclass
from itertools import chain
from typing import Any

from llmctl.core.tokenizer import EOT_ID, EOT_TOKEN

ROLES = ("system", "user", "assistant")
ROLE_MARKERS = {"system": "System:\n", "user": "User:\n", "assistant": "Assistant:\n"}
ASSISTANT_MARKER = ROLE_MARKERS["assistant"]
EOT = EOT_TOKEN

Messages = Sequence[dict[str, Any]]

_marker_ids: dict[tuple[int, str], list[int]] = {}
_prefix_ids: dict[tuple[int, str], list[int] | None] = {}
_EOT_RUN = (EOT_ID,)


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


@dataclass
class ChatRuns:
    """Conversations as runs of token ids, in order: per turn its marker (plus a shared prefix's
    ids when the content starts with one), the rest of its content, ``[EOT]``.

    ``runs[i]`` is a list of ids (lists may be shared between runs: never mutate them),
    ``run_mask[i]`` its loss-mask value (the same for every token of the run), ``run_len[i]`` its
    length and ``run_conv[i]`` its conversation (non-decreasing). Concatenated, the runs of
    conversation ``k`` are exactly ``encode_chat(conversations[k])``.
    """

    runs: list[Sequence[int]]
    run_mask: Any  # uint8 (runs,)
    run_len: Any  # int64 (runs,)
    run_conv: Any  # int64 (runs,)
    lengths: Any  # int64 (conversations,): tokens per conversation

    def flat(self) -> tuple[Any, Any]:
        """All ids (int32) and the loss mask (uint8) concatenated."""
        import numpy as np

        total = int(self.run_len.sum())
        ids = np.fromiter(chain.from_iterable(self.runs), dtype=np.int32, count=total)
        return ids, np.repeat(self.run_mask, self.run_len)

    def select(self, keep: Any) -> ChatRuns:
        """Only the conversations where the bool array ``keep`` is true, renumbered in order."""
        import numpy as np

        keep_run = np.flatnonzero(keep[self.run_conv])
        return ChatRuns(list(map(self.runs.__getitem__, keep_run.tolist())), self.run_mask[keep_run],
                        self.run_len[keep_run], (np.cumsum(keep) - 1)[self.run_conv[keep_run]], self.lengths[keep])


def _segments(conversations: Sequence[Messages]) -> tuple[list[str], list[int]]:
    """Every turn's content and role index, in order; ValueError on a malformed conversation."""
    role_index = {r: i for i, r in enumerate(ROLES)}
    texts: list[str] = []
    roles: list[int] = []
    for messages in conversations:
        n = len(texts)
        try:  # fast path for plain lists of plain dicts; anything else goes through check_messages
            if type(messages) is not list:
                raise TypeError
            for m in messages:
                content = m["content"]
                if type(m) is not dict or type(content) is not str:
                    raise TypeError
                roles.append(role_index[m["role"]])
                texts.append(content)
        except (TypeError, KeyError):
            del texts[n:], roles[n:]
            check_messages(messages)
            texts.extend(m["content"] for m in messages)
            roles.extend(role_index[m["role"]] for m in messages)
    return texts, roles


def shared_prefix_ids(prefix: str, tok: Any = None) -> list[int] | None:
    """The ids ``prefix`` contributes to any text that starts with it and goes on with a
    non-whitespace character, or None when that is not fixed.

    r50k's pre-tokenizer cannot join a ``\\n`` to what follows it (only a space attaches to the next
    word), so a prefix ending in ``\\n`` ends on a pre-token boundary whenever the next character is
    not whitespace, and ``encode(prefix + rest) == ids + encode(rest)``. Checked here on probes of
    every character class; a prefix not ending in ``\\n`` gives None.
    """
    tok = _tok(tok)
    key = (id(tok), prefix)
    if key not in _prefix_ids:
        ids = None
        if prefix.endswith("\n"):
            probes = ["A", "x", "7", "'s", ".", "(", "$", "<", "\u00e9t\u00e9", "\u6f22", "\U0001f600"]
            heads = set()
            for full, tail in zip(tok.encode_batch([prefix + p for p in probes]), tok.encode_batch(probes),
                                  strict=True):
                cut = len(full) - len(tail)
                heads.add(tuple(full[:cut]) if full[cut:] == tail else None)
            if len(heads) == 1 and None not in heads:
                ids = list(heads.pop())
        _prefix_ids[key] = ids
    return _prefix_ids[key]


def _encode_distinct(texts: list[str], tok: Any) -> list[Sequence[int]]:
    """``tok.encode_batch(texts)``; when a tenth or more repeat, each distinct text once (repeats share one list)."""
    distinct = list(dict.fromkeys(texts))
    if len(distinct) > 0.9 * len(texts):
        return tok.encode_batch(texts)
    ids_of = dict(zip(distinct, tok.encode_batch(distinct), strict=True))
    return [ids_of[t] for t in texts]


def encode_chats_runs(conversations: Sequence[Messages], tok: Any = None) -> ChatRuns:
    """``encode_chats`` as :class:`ChatRuns`: contents tokenized in one parallel batch, and no
    per-token Python work besides what the tokenizer returns (the packer consumes runs directly).

    Work the tokenizer need not repeat is skipped, with the same ids: repeated contents are
    tokenized once (``_encode_distinct``), and a non-assistant turn starting with the math question
    prefix (``prompts.QUESTION_PREFIX``, in every GSM8K and arithmetic prompt) has only the rest
    tokenized, the prefix's ids (``shared_prefix_ids``) joining its marker's run.
    """
    import numpy as np

    from llmctl.core.prompts import QUESTION_PREFIX

    tok = _tok(tok)
    markers = _markers(tok)
    texts, roles = _segments(conversations)
    n_conv, n_seg = len(conversations), len(texts)
    role = np.asarray(roles, dtype=np.int64)
    leads = [markers[r] for r in ROLES]  # a turn's first run: its marker, then any shared prefix
    lead = role.copy()
    head_ids = shared_prefix_ids(QUESTION_PREFIX, tok)
    if head_ids is not None:
        cut, assistant = len(QUESTION_PREFIX), ROLES.index("assistant")
        hits = [i for i, t in enumerate(texts) if t.startswith(QUESTION_PREFIX)]
        hits = [i for i in hits if roles[i] != assistant and len(texts[i]) > cut and not texts[i][cut].isspace()]
        if hits:
            leads += [markers[r] + head_ids for r in ROLES]
            for i in hits:
                texts[i] = texts[i][cut:]
            lead[hits] += len(ROLES)
    encoded = _encode_distinct(texts, tok)
    runs: list[Sequence[int]] = [_EOT_RUN] * (3 * n_seg)
    runs[0::3] = [leads[k] for k in lead.tolist()]
    runs[1::3] = encoded
    run_len = np.ones((n_seg, 3), dtype=np.int64)
    run_len[:, 0] = np.asarray([len(m) for m in leads], dtype=np.int64)[lead]
    run_len[:, 1] = np.fromiter(map(len, encoded), dtype=np.int64, count=n_seg)
    run_mask = np.zeros((n_seg, 3), dtype=np.uint8)
    run_mask[:, 1:] = (role == ROLES.index("assistant"))[:, None]
    seg_conv = np.repeat(np.arange(n_conv, dtype=np.int64),
                         np.fromiter(map(len, conversations), dtype=np.int64, count=n_conv))
    lengths = np.bincount(seg_conv, weights=run_len.sum(axis=1), minlength=n_conv).astype(np.int64)
    return ChatRuns(runs, run_mask.reshape(-1), run_len.reshape(-1), np.repeat(seg_conv, 3), lengths)


def encode_chats_flat(conversations: Sequence[Messages], tok: Any = None) -> tuple[Any, Any, Any]:
    """``encode_chats`` as flat numpy arrays: (ids int32, loss_mask uint8, lengths int64).

    Conversation ``k`` occupies ``[offsets[k], offsets[k] + lengths[k])`` with offsets the
    cumulative sum of ``lengths``; the ids and mask are exactly those of ``encode_chat``.
    """
    runs = encode_chats_runs(conversations, tok)
    ids, mask = runs.flat()
    return ids, mask, runs.lengths


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
