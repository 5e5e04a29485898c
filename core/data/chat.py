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
``encode_chats_spans`` (the SFT stage's path) gives exactly these ids faster, tokenizing many
conversations per text wherever that provably cannot move a token boundary.

The loss mask is 1 exactly over each assistant turn's content tokens and the EOT ending it, 0 on
markers, system and user turns. ``loss_mask[i]`` says whether ``ids[i]`` is a training target:
trainers take ``x = ids[:-1], y = ids[1:], m = mask[1:]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llmctl.core.data.packing import exclusive_cumsum, gather_spans
from llmctl.core.data.prompts import QUESTION_PREFIX
from llmctl.core.tokenizer import EOT_ID, EOT_TOKEN, Tokenizer

ROLES = ("system", "user", "assistant")
ROLE_MARKERS = {"system": "System:\n", "user": "User:\n", "assistant": "Assistant:\n"}
ASSISTANT_MARKER = ROLE_MARKERS["assistant"]
EOT = EOT_TOKEN

Messages = Sequence[dict[str, Any]]

_marker_ids: dict[tuple[int, str], list[int]] = {}
_prefix_ids: dict[tuple[int, str], list[int] | None] = {}


def _markers(tok: Tokenizer) -> dict[str, list[int]]:
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


def encode_chats(conversations: Sequence[Messages], tok: Tokenizer) -> list[tuple[list[int], list[int]]]:
    """``encode_chat`` for many conversations, with all contents tokenized in one parallel batch."""
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


def shared_prefix_ids(prefix: str, tok: Tokenizer) -> list[int] | None:
    """The ids ``prefix`` contributes to any text that starts with it and goes on with a
    non-whitespace character, or None when that is not fixed.

    r50k's pre-tokenizer cannot join a ``\\n`` to what follows it (only a space attaches to the next
    word), so a prefix ending in ``\\n`` ends on a pre-token boundary whenever the next character is
    not whitespace, and ``encode(prefix + rest) == ids + encode(rest)``. Checked here on probes of
    every character class; a prefix not ending in ``\\n`` gives None.
    """
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


@dataclass
class _Plan:
    """How ``encode_chats_spans`` tokenizes a batch of conversations (see ``_plan``)."""

    texts: list[str]  # tokenizer inputs: bodies of consecutive joined conversations
    lead: list[int]  # per conversation: index into the lead table, or -1 (encoded turn by turn)
    turns: list[int]  # per conversation: number of turns
    roles: list[int]  # per turn: index into ROLES
    slow: list[int]  # conversations encoded turn by turn (``encode_chats``)


_ROLE_INDEX = {r: i for i, r in enumerate(ROLES)}
_ASSISTANT = _ROLE_INDEX["assistant"]
_JOIN = 16  # conversations per tokenizer text


def _joinable(messages: list[dict[str, Any]]) -> bool:
    """Whether a conversation's body encodes to its turn-by-turn ids (see ``_plan``)."""
    if EOT in messages[0]["content"]:
        return False
    for m in messages[1:]:
        content = m["content"]
        if EOT in content or content[:1].isspace():
            return False
    return True


def _plan(conversations: Sequence[Messages], prefix: str | None) -> _Plan:
    """Validate the conversations and build the tokenizer's texts (ValueError on a malformed one).

    A conversation's *body* is its rendered text without the first turn's marker (and without
    ``prefix`` when the first turn is not the assistant's and goes on with a non-space after it):
    ``content0 EOT marker1 content1 EOT ...``. That encodes (EOT as the special token) to exactly
    the conversation's ids after its lead when no content holds a literal ``<|endoftext|>`` and
    every later content is empty or starts with a non-space (a marker's ``\\n`` then ends a
    pre-token). Other conversations are encoded turn by turn.
    """
    texts: list[str] = []
    lead: list[int] = []
    turns: list[int] = []
    roles: list[int] = []
    slow: list[int] = []
    parts: list[str] = []
    joined = 0
    cut = len(prefix) if prefix else 0
    for k, messages in enumerate(conversations):
        n = len(roles)
        try:  # plain lists of plain dicts; anything else goes through check_messages
            if type(messages) is not list:
                raise TypeError
            for m in messages:
                if type(m) is not dict or type(m["content"]) is not str:
                    raise TypeError
                roles.append(_ROLE_INDEX[m["role"]])
        except (TypeError, KeyError):
            del roles[n:]
            check_messages(messages)
            messages = [{"role": m["role"], "content": m["content"]} for m in messages]
            roles.extend(_ROLE_INDEX[m["role"]] for m in messages)
        turns.append(len(messages))
        if not messages:
            lead.append(-1)
            continue
        if not _joinable(messages):
            lead.append(-1)
            slow.append(k)
            continue
        first = messages[0]["content"]
        kind = roles[n]
        if cut and kind != _ASSISTANT and first.startswith(prefix) and len(first) > cut and not first[cut].isspace():
            first = first[cut:]
            kind += len(ROLES)
        lead.append(kind)
        parts += (first, EOT)
        for m in messages[1:]:
            parts += (ROLE_MARKERS[m["role"]], m["content"], EOT)
        joined += 1
        if joined == _JOIN:
            texts.append("".join(parts))
            parts.clear()
            joined = 0
    if parts:
        texts.append("".join(parts))
    return _Plan(texts, lead, turns, roles, slow)


@dataclass
class ChatSpans:
    """Encoded conversations as spans of one pool of ids: conversation ``k`` is span ``2k`` (its
    lead: first marker, and the question prefix when cut) then span ``2k + 1`` (the rest).

    ``pool`` int32 ids and ``pool_mask`` uint8 loss mask (one per pool id); ``span_at`` /
    ``span_len`` int64 (2 * conversations,). Spans may share pool ids (every lead comes from a
    small table), so the pool is only read through the spans.
    """

    pool: Any
    pool_mask: Any
    span_at: Any
    span_len: Any

    @property
    def lengths(self) -> Any:
        """int64 tokens per conversation."""
        return self.span_len.reshape(-1, 2).sum(axis=1)

    def flat(self) -> tuple[Any, Any, Any]:
        """(ids int32, loss_mask uint8, lengths int64) with the conversations one after another."""
        where = gather_spans(self.span_at, self.span_len)
        return self.pool[where], self.pool_mask[where], self.lengths

    def trained_within(self, n: int) -> Any:
        """int64 per conversation: loss-mask ones among its first ``n`` tokens."""
        import numpy as np

        ones = np.zeros(len(self.pool_mask) + 1, dtype=np.int64)
        np.cumsum(self.pool_mask, out=ones[1:])
        span_len = self.span_len.reshape(-1, 2)
        kept = np.clip(n - (np.cumsum(span_len, axis=1) - span_len), 0, span_len).reshape(-1)
        return (ones[self.span_at + kept] - ones[self.span_at]).reshape(-1, 2).sum(axis=1)

    def select(self, keep: Any) -> ChatSpans:
        """Only the conversations where the bool array ``keep`` is true (the pool is shared)."""
        import numpy as np

        spans = np.repeat(keep, 2)
        return ChatSpans(self.pool, self.pool_mask, self.span_at[spans], self.span_len[spans])


def encode_chats_spans(conversations: Sequence[Messages], tok: Tokenizer) -> ChatSpans:
    """``encode_chats`` as :class:`ChatSpans`, built for throughput with the same ids and mask.

    Each conversation's lead (its first marker, plus the math question prefix
    ``prompts.QUESTION_PREFIX`` when its first turn starts with it) comes from a small table, and
    the rest of 16 conversations at a time is tokenized as one text with the EOT between turns read
    as the special token (see ``_plan``), so the tokenizer sees fewer, longer texts and never the
    shared prefix. The mask is set from the EOT positions, which end every turn.
    """
    import numpy as np


    markers = _markers(tok)
    head_ids = shared_prefix_ids(QUESTION_PREFIX, tok)
    plan = _plan(conversations, QUESTION_PREFIX if head_ids is not None else None)
    table = [markers[r] for r in ROLES] + ([markers[r] + head_ids for r in ROLES] if head_ids is not None else [])
    encoded = tok.encode_batch_eot(plan.texts) if plan.texts else []
    slow = [ids for ids, _ in encode_chats([conversations[k] for k in plan.slow], tok)]
    pieces = table + encoded + slow
    piece_len = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
    piece_at = exclusive_cumsum(piece_len)
    pool = np.empty(int(piece_len.sum()), dtype=np.int32)
    for piece, a, b in zip(pieces, piece_at.tolist(), (piece_at + piece_len).tolist(), strict=True):
        pool[a:b] = piece  # faster than np.fromiter over a chain of the lists

    # every turn after the table ends with an EOT: the fast conversations' turns (bodies one after
    # another), then the slow ones' (whole conversations)
    lead = np.asarray(plan.lead, dtype=np.int64)
    turns = np.asarray(plan.turns, dtype=np.int64)
    fast = lead >= 0
    body0 = int(piece_at[len(table)]) if len(pieces) > len(table) else len(pool)
    turn_end = np.flatnonzero(pool[body0:] == EOT_ID) + body0
    turn_conv = np.repeat(np.arange(len(turns)), turns)
    order = np.argsort(~fast[turn_conv], kind="stable")  # fast conversations' turns first
    if len(turn_end) != len(order):
        raise RuntimeError(f"chat encoding: {len(turn_end)} EOT ids for {len(order)} turns")
    turn_start = np.concatenate([[body0], turn_end + 1])[:len(turn_end)]
    first = np.zeros(len(turn_conv), dtype=bool)
    first[exclusive_cumsum(turns)[turns > 0]] = True
    role = np.asarray(plan.roles, dtype=np.int64)[order]
    marker_here = ~(first & fast[turn_conv])[order]  # a fast conversation's first marker is in its lead
    trained = role == _ASSISTANT
    edge = np.zeros(len(pool) + 1, dtype=np.int8)  # +1 where a trained span starts, -1 just past its EOT
    edge[(turn_start + len(markers["assistant"]) * marker_here)[trained]] = 1
    edge[turn_end[trained] + 1] -= 1  # may meet the next span's start: they cancel
    pool_mask = np.cumsum(edge[:-1], dtype=np.int8).view(np.uint8)

    span_at = np.zeros((len(turns), 2), dtype=np.int64)
    span_len = np.zeros((len(turns), 2), dtype=np.int64)
    span_at[fast, 0] = piece_at[lead[fast]]
    span_len[fast, 0] = piece_len[lead[fast]]
    # a fast conversation's body runs from its first turn's start to its last turn's EOT
    span_at[fast, 1] = turn_start[exclusive_cumsum(turns[fast])]
    span_len[fast, 1] = turn_end[np.cumsum(turns[fast]) - 1] + 1 - span_at[fast, 1]
    slow_ix = np.asarray(plan.slow, dtype=np.int64)
    span_at[slow_ix, 1] = piece_at[len(table) + len(encoded):]
    span_len[slow_ix, 1] = piece_len[len(table) + len(encoded):]
    return ChatSpans(pool, pool_mask, span_at.reshape(-1), span_len.reshape(-1))


def encode_chats_flat(conversations: Sequence[Messages], tok: Tokenizer) -> tuple[Any, Any, Any]:
    """``encode_chats`` as flat numpy arrays: (ids int32, loss_mask uint8, lengths int64).

    Conversation ``k`` occupies ``[offsets[k], offsets[k] + lengths[k])`` with offsets the
    cumulative sum of ``lengths``; the ids and mask are exactly those of ``encode_chat``.
    """
    return encode_chats_spans(conversations, tok).flat()


def encode_chat(messages: Messages, tok: Tokenizer) -> tuple[list[int], list[int]]:
    """Token ids of a conversation and its loss mask (1 on assistant content and its EOT)."""
    return encode_chats([messages], tok)[0]


def encode_prompt(messages: Messages, tok: Tokenizer) -> list[int]:
    """Token ids of ``render_prompt(messages)``: a prefix of the ids of the full conversation."""
    ids, _ = encode_chat(messages, tok)
    return ids + _markers(tok)["assistant"]


def encode_completion(content: str, tok: Tokenizer) -> list[int]:
    """Token ids of an assistant reply as it follows a prompt: content then EOT."""
    return list(tok.encode(content)) + [EOT_ID]


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
