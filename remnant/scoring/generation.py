"""Greedy generation, with every continuation kept per (model weights, prompt).

A greedy continuation depends only on the weights, the prompt and the toolchain, and the first
n tokens of a longer one are the n-token continuation; so every stage that asks a model the
same prompt (behaviour, known-fact selection, answer contexts, each attack's plain condition,
at 24, 30, 32 or 96 new tokens) is served from `GENERATIONS` after the first, and a request
longer than what is kept generates only the missing tokens. Inside `generation_file` (an
audit's folder) the continuations also go to a file, so an interrupted or repeated audit does
not generate them again. Nothing is kept when the output could differ from the plain model's
(an embedding edit, a bridge hook, an adapter that is not part of the weights) or while the
weights are being changed.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import torch
import transformers

from remnant.models.cache import Memo, cache_key
from remnant.models.model import Model
from remnant.scoring.batching import SharedPrefix, length_batches, real_positions

#: (indices of the batch's prompts, their left-padded input embeddings (B, T, d), the attention
#: mask (B, T)) -> the embeddings to generate from; an embedding-space attack's perturbation.
EmbeddingEdit = Callable[[list[int], torch.Tensor, torch.Tensor], torch.Tensor]

#: Prompts whose continuations are kept in memory (the most recently used).
STORE_SIZE = 100_000


class GenerationStore:
    """Greedy continuations by `cache_key` of (model content hash, prompt, toolchain): the
    generated token ids up to the first end-of-sequence token, and whether it came (``ended``:
    no longer request can add to it). With a file attached, new continuations are appended
    to it as JSON lines."""

    def __init__(self, size: int) -> None:
        self._kept: Memo[tuple[list[int], bool]] = Memo(size)
        self._file: IO[str] | None = None

    def get(self, key: str) -> tuple[list[int], bool] | None:
        return self._kept.find(key)

    def put(self, key: str, tokens: list[int], ended: bool, *, write: bool = True) -> None:
        self._kept.put(key, (tokens, ended))
        if write and self._file is not None:
            self._file.write(json.dumps({"key": key, "tokens": tokens, "ended": ended}) + "\n")
            self._file.flush()

    def clear(self) -> None:
        self._kept.clear()

    @contextlib.contextmanager
    def attached(self, path: Path) -> Iterator[None]:
        """Load the continuations ``path`` holds (lines that do not parse, e.g. the last one of
        an interrupted run, are skipped) and append new ones to it until the block ends, on a
        line of their own even after a cut one."""
        path.parent.mkdir(parents=True, exist_ok=True)
        text = path.read_text() if path.exists() else ""
        if text:
            for line in text.splitlines():
                try:
                    row = json.loads(line)
                    self.put(row["key"], list(row["tokens"]), bool(row["ended"]), write=False)
                except (ValueError, KeyError, TypeError):
                    continue
        previous = self._file
        with open(path, "a") as self._file:
            if text and not text.endswith("\n"):
                self._file.write("\n")
            try:
                yield
            finally:
                self._file = previous


#: The continuations kept in this process.
GENERATIONS = GenerationStore(STORE_SIZE)


def generation_file(path: Path) -> contextlib.AbstractContextManager[None]:
    """Within the block, continuations are also kept in (and read from) the file ``path``."""
    return GENERATIONS.attached(path)


def generate(
    model: Model,
    prompt_ids: Sequence[Sequence[int]],
    *,
    max_new_tokens: int = 32,
    batch_size: int = 64,
    edit: EmbeddingEdit | None = None,
) -> list[str]:
    """Greedy continuations of at most ``max_new_tokens`` (special tokens removed) of
    already-encoded prompts, served from `GENERATIONS` where kept (see `Model.cache_hash` for
    when they are); with ``edit``, generated from the prompts' input embeddings as ``edit``
    changes them (never kept)."""
    weights = None if edit is not None or model.hooked() else model.cache_hash()
    if weights is None:
        new = _continuations(
            model, prompt_ids, [max_new_tokens] * len(prompt_ids), batch_size, edit
        )
        return [_text(model, tokens) for tokens, _ in new]
    model_key = {
        "model": weights,
        "device": str(model.device),
        "eos": _eos_ids(model),
        "toolchain": [torch.__version__, transformers.__version__],
        "attention": model.plain_decoder().config._attn_implementation,
    }
    keys = [cache_key(prompt=list(prompt), **model_key) for prompt in prompt_ids]
    kept = [GENERATIONS.get(key) or ([], False) for key in keys]
    missing = [
        i for i, (tokens, ended) in enumerate(kept) if not ended and len(tokens) < max_new_tokens
    ]
    if missing:
        first = {keys[i]: i for i in reversed(missing)}  # a prompt asked twice runs once
        todo = sorted(first.values())
        starts = [list(prompt_ids[i]) + kept[i][0] for i in todo]
        needs = [max_new_tokens - len(kept[i][0]) for i in todo]
        for i, (tokens, ended) in zip(todo, _continuations(model, starts, needs, batch_size)):
            kept[i] = (kept[i][0] + tokens, ended)
            GENERATIONS.put(keys[i], *kept[i])
        for i in missing:
            kept[i] = kept[first[keys[i]]]
    return [_text(model, tokens[:max_new_tokens]) for tokens, _ in kept]


def _continuations(
    model: Model,
    prompt_ids: Sequence[Sequence[int]],
    needs: Sequence[int],
    batch_size: int,
    edit: EmbeddingEdit | None = None,
) -> list[tuple[list[int], bool]]:
    """Per prompt, greedy new token ids (at least ``needs[i]`` unless the end-of-sequence token
    came first, which is cut off) and whether it came."""
    eos = set(_eos_ids(model))
    decoder = model.plain_decoder()
    out: list[tuple[list[int], bool]] = [([], False)] * len(prompt_ids)
    prefix = SharedPrefix(model, prompt_ids if edit is None else [], runner=decoder)
    for batch in length_batches([len(p) for p in prompt_ids], batch_size):
        ids, mask = (t.to(model.device) for t in prefix.padded([prompt_ids[i] for i in batch]))
        done = prefix.length
        inputs: dict[str, Any] = {"input_ids": ids[:, done:]}
        if edit is not None:
            with torch.no_grad():
                embeds = decoder.get_input_embeddings()(ids)
                inputs = {"inputs_embeds": edit(batch, embeds, mask)}
        with torch.no_grad():
            first = decoder(
                **inputs,
                attention_mask=mask,
                position_ids=real_positions(mask)[:, done:],
                past_key_values=prefix.past(len(batch)),
                use_cache=True,
                logits_to_keep=1,
            )
            new = _greedy(decoder, first, mask, [needs[i] for i in batch], eos)
        for i, tokens in zip(batch, new):
            out[i] = (tokens[:-1], True) if tokens and tokens[-1] in eos else (tokens, False)
    return out


def _greedy(
    decoder: torch.nn.Module, first: Any, mask: torch.Tensor, needs: list[int], eos: set[int]
) -> list[list[int]]:
    """Greedy new tokens per row after the forward ``first`` (its last logits and its keys and
    values; ``mask`` its attention mask), until the row has ``needs[row]`` of them or the last
    is an end-of-sequence token: a row that is finished leaves the batch, so no step is spent
    on it."""
    new: list[list[int]] = [[] for _ in needs]
    rows = list(range(len(needs)))
    out = first
    while True:
        tokens = out.logits[:, -1].argmax(-1)
        for row, token in zip(rows, tokens.tolist()):
            new[row].append(token)
        going = [
            k
            for k, row in enumerate(rows)
            if len(new[row]) < needs[row] and new[row][-1] not in eos
        ]
        if not going:
            return new
        past = out.past_key_values
        if len(going) < len(rows):
            index = torch.tensor(going, device=tokens.device)
            past.batch_select_indices(index)
            tokens, mask = tokens[index], mask[index]
            rows = [rows[k] for k in going]
        mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)
        out = decoder(
            input_ids=tokens[:, None],
            attention_mask=mask,
            position_ids=mask.sum(-1, keepdim=True) - 1,
            past_key_values=past,
            use_cache=True,
        )


def _eos_ids(model: Model) -> list[int]:
    """The token ids that end a generation (the generation config's and the tokenizer's)."""
    configured = model.hf_model.generation_config.eos_token_id
    ids = configured if isinstance(configured, list) else [configured]
    return sorted({i for i in [*ids, model.tokenizer.eos_token_id] if i is not None})


def _text(model: Model, tokens: Sequence[int]) -> str:
    return model.tokenizer.decode(tokens, skip_special_tokens=True).strip()
