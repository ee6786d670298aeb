"""Batched model calls: answer log-probabilities and next-token logits (greedy generation,
which shares their prompt prefixes, is in `remnant.scoring.generation`).

Prompts are grouped by length (less padding) into batches; every call runs through
``model.hf_model``, which the TransformerLens bridge wraps in place, so hooks added with
``model.bridge.hooks(...)`` act on every score computed here. Scores and generations compute the
prompts' common prefix (a chat template's system turn) once per call and reuse its keys and
values in every batch, unless a hook is attached (a hook may act on the prefix differently per
row) or an embedding edit is given.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from remnant.models.model import Model

#: Shortest prefix common to all rows of a call that is computed once (tokens).
MIN_SHARED_PREFIX = 4


def length_batches(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Indices grouped by similar length (less padding), in batches of ``batch_size``."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def pad(rows: Sequence[Sequence[int]], pad_id: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (n, width) padded with ``pad_id`` on ``side`` (left or right), and the
    attention mask (1 on real tokens)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        ids[i, span] = torch.tensor(row, dtype=torch.long)
        mask[i, span] = 1
    return ids, mask


def real_positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids of a padded batch counted over real tokens only (padding at 0), so that left
    and right padding give every real token the same position."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def padded_logits(
    model: Model, ids: torch.Tensor, mask: torch.Tensor, keep: int = 0, past: Any = None
) -> torch.Tensor:
    """Logits (float32) of a padded batch, positions counted over real tokens only, so that
    left and right padding give the same logits for every real token; with ``keep``, those of
    the last ``keep`` positions only (0: every position); with ``past`` (the keys and values of
    the first columns, `SharedPrefix`), only the columns after them are run."""
    positions = real_positions(mask)
    done = 0 if past is None else past.get_seq_length()
    kept = {"logits_to_keep": keep} if keep else {}
    with torch.no_grad():
        return model.hf_model(
            input_ids=ids[:, done:].to(model.device),
            attention_mask=mask.to(model.device),
            position_ids=positions[:, done:].to(model.device),
            past_key_values=past,
            use_cache=False,
            **kept,
        ).logits.float()


class SharedPrefix:
    """The tokens common to the start of every prompt of a call, leaving at least ``leave`` of
    each, run once: `logits` of a batch of rows that start with the prompts, and a generation
    from them (`generate`), run only what follows the prefix, reusing its keys and values. Empty
    (every token run) when shorter than `MIN_SHARED_PREFIX` or when a hook is attached. The
    prefix runs through ``runner`` (the model that will continue from it; default
    ``model.hf_model``)."""

    def __init__(
        self,
        model: Model,
        prompts: Sequence[Sequence[int]],
        leave: int = 1,
        runner: torch.nn.Module | None = None,
    ) -> None:
        self.model = model
        length = 0
        if prompts and not model.hooked():
            first = prompts[0]
            length = min(len(p) for p in prompts) - leave
            for prompt in prompts[1:]:
                length = next((k for k in range(length) if prompt[k] != first[k]), length)
        self.length = length if length >= MIN_SHARED_PREFIX else 0
        self.cache = None
        if self.length:
            ids = torch.tensor([first[: self.length]], device=model.device)
            with torch.no_grad():
                run = runner or model.hf_model
                self.cache = run(input_ids=ids, use_cache=True).past_key_values

    def past(self, n_rows: int) -> Any:
        """A copy of the prefix's keys and values for ``n_rows`` rows (None: no prefix)."""
        if not self.length:
            return None
        past = copy.deepcopy(self.cache)
        past.batch_repeat_interleave(n_rows)
        return past

    def padded(self, rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """``rows`` as ids and attention mask: the prefix, then the rest of each row padded on
        the left (the padding sits between the two; a position counts real tokens only)."""
        ids, mask = pad([r[self.length :] for r in rows], self.model.tokenizer.pad_token_id, "left")
        if not self.length:
            return ids, mask
        prefix = torch.tensor(rows[0][: self.length]).expand(len(rows), -1)
        return torch.cat([prefix, ids], dim=1), torch.cat([torch.ones_like(prefix), mask], dim=1)

    def logits(self, rows: Sequence[Sequence[int]], keep: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (float32) of the last ``keep`` positions of ``rows`` (`padded`), run after
        the prefix, and the padded ids."""
        ids, mask = self.padded(rows)
        return padded_logits(self.model, ids, mask, keep, self.past(len(rows))), ids


def sequence_logprobs(
    model: Model,
    prompt_ids: Sequence[Sequence[int]],
    continuation_ids: Sequence[Sequence[int]],
    *,
    batch_size: int = 16,
    padding_side: str = "left",
) -> list[np.ndarray]:
    """Per-token log-probabilities (natural log) of each continuation given its prompt; with
    left padding (the default) every continuation ends its row, so only its positions' logits
    are computed, after the prompts' shared prefix (`SharedPrefix`); right padding runs every
    position of every row (a reference)."""
    rows = [list(p) + list(c) for p, c in zip(prompt_ids, continuation_ids)]
    out: list[np.ndarray] = [np.zeros(0)] * len(rows)
    left = padding_side == "left"
    if left:
        prefix = SharedPrefix(model, prompt_ids)
    for batch in length_batches([len(r) for r in rows], batch_size):
        lengths = [len(continuation_ids[i]) for i in batch]
        if left:
            logits, ids = prefix.logits([rows[i] for i in batch], 1 + max(lengths))
            for i, logprobs in zip(batch, ending_logprobs(logits, ids, lengths)):
                out[i] = logprobs
            continue
        ids, mask = pad([rows[i] for i in batch], model.tokenizer.pad_token_id, "right")
        logprobs = torch.log_softmax(padded_logits(model, ids, mask)[:, :-1], dim=-1)
        for row, i in enumerate(batch):
            start = len(prompt_ids[i]) - 1
            targets = ids[row, start + 1 : start + 1 + lengths[row]].to(logprobs.device)
            picked = logprobs[row, start : start + lengths[row]]
            out[i] = picked.gather(-1, targets[:, None])[:, 0].cpu().numpy().astype(np.float64)
    return out


def token_logprobs(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Log-probabilities (natural log; B, W - 1) of the last W - 1 tokens of each row of ``ids``
    from ``logits`` (B, W, vocab) of the rows' last W positions; differentiable."""
    logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
    targets = ids[:, ids.shape[1] - logprobs.shape[1] :].to(logprobs.device)
    return logprobs.gather(-1, targets[..., None])[..., 0]


def ending_logprobs(
    logits: torch.Tensor, ids: torch.Tensor, lengths: Sequence[int]
) -> list[np.ndarray]:
    """Per-token log-probabilities (natural log) of the last ``lengths[r]`` tokens of each
    left-padded row r of ``ids``, from the logits of the rows' last positions (at least
    ``lengths[r] + 1`` of them)."""
    picked = token_logprobs(logits, ids).detach().cpu().numpy().astype(np.float64)
    return [row[len(row) - n :] for row, n in zip(picked, lengths)]


def next_token_logits(
    model: Model, prompt_ids: Sequence[Sequence[int]], *, batch_size: int = 16
) -> torch.Tensor:
    """Logits of the token that would follow each prompt, shape (n_prompts, vocab), after the
    prompts' shared prefix (`SharedPrefix`)."""
    out = []
    order: list[int] = []
    prefix = SharedPrefix(model, prompt_ids)
    for batch in length_batches([len(p) for p in prompt_ids], batch_size):
        out.append(prefix.logits([prompt_ids[i] for i in batch], 1)[0][:, -1].cpu())
        order += batch
    stacked = torch.cat(out)
    return stacked[torch.argsort(torch.tensor(order))]
