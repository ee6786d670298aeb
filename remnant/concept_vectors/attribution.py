"""Locate value vectors by attribution: the first-order estimate of how much zeroing each MLP
neuron lowers the log-probability of the forget answers, beyond how much it lowers the retain
answers' (activation x gradient, as knowledge-neuron work scores neurons; AtP, Nanda 2023).

For an item (prompt x, answer y) and neuron i of layer l with activation a (at
``blocks.l.mlp.hook_post``, the factor its value vector is written with) at every position,
zeroing the neuron changes log p(y | x) by about -sum over positions of a * d log p(y | x) / da.
That estimated drop, averaged over items (nats per item, the unit validation measures in), is
computed for every neuron from one forward and one backward pass per batch; the score is the
forget items' estimated drop minus the retain items'.

The ranking reads the answers of the items it is computed on, so a ranked vector validated on
those same items would be judged in-sample. It is computed on a seeded half: the fit side of
`remnant.attacks.protocol.split_forget` (whole entity groups) and every other retain item;
``LocateResult.fitted_on`` lists their questions and validation scores the other items only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from remnant.models.gradients import activation_gradients
from remnant.models.model import Model
from remnant.scoring import encode_answers, encode_prompts, format_prompt, resolve_style
from remnant.scoring.batching import length_batches, pad, real_positions, token_logprobs
from remnant.scoring.prompts import PromptStyle
from remnant.targets.model import QAItem

SCORE_DEFINITION = (
    "estimated drop of the mean answer log-probability (nats per item) of the fit forget items "
    "when the neuron is zeroed (activation x gradient summed over positions), minus the same "
    "estimate on the fit retain items; sign: that of the neuron's mean activation on the fit "
    "forget items"
)


def estimated_drops(
    model: Model, items: Sequence[QAItem], style: PromptStyle, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per neuron, (n_layers, d_mlp): the estimated drop of the mean answer log-probability
    (nats per item) when it is zeroed, and its summed activation over the items' tokens."""
    resolved = resolve_style(model, style)
    prompts = encode_prompts(
        model, [format_prompt(model, i.question, resolved) for i in items], resolved
    )
    answers = encode_answers(model, [i.answer for i in items], resolved)
    names = [f"blocks.{layer}.mlp.hook_post" for layer in range(model.n_layers)]
    drops = torch.zeros(model.n_layers, model.d_mlp)
    activation = torch.zeros(model.n_layers, model.d_mlp)
    lengths = [len(p) + len(a) for p, a in zip(prompts, answers)]
    for batch in length_batches(lengths, batch_size):
        n_answer = [len(answers[i]) for i in batch]
        ids, mask = pad(
            [prompts[i] + answers[i] for i in batch], model.tokenizer.pad_token_id, "left"
        )

        def answer_logprob(ids=ids, mask=mask, n_answer=n_answer) -> torch.Tensor:
            logits = model.hf_model(
                input_ids=ids.to(model.device),
                attention_mask=mask.to(model.device),
                position_ids=real_positions(mask).to(model.device),
                use_cache=False,
                logits_to_keep=1 + max(n_answer),
            ).logits.float()
            picked = token_logprobs(logits, ids)
            width = picked.shape[1]
            answer = torch.arange(width)[None, :] >= width - torch.tensor(n_answer)[:, None]
            return picked[answer.to(picked.device)].sum()

        grads = activation_gradients(model, names, answer_logprob)
        for layer, name in enumerate(names):
            act, grad = grads[name]
            drops[layer] += (act * grad).sum((0, 1)).float().cpu()
            activation[layer] += act.sum((0, 1)).float().cpu()
    return drops / len(items), activation


def attribution_scores(
    model: Model,
    forget: Sequence[QAItem],
    retain: Sequence[QAItem],
    style: PromptStyle = "auto",
    batch_size: int = 16,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per neuron, (n_layers, d_mlp): the score (forget minus retain estimated drop, nats per
    item) and the sign (+1 or -1) of its mean activation on the forget items."""
    forget_drops, activation = estimated_drops(model, forget, style, batch_size)
    retain_drops, _ = estimated_drops(model, retain, style, batch_size)
    signs = torch.where(activation >= 0, 1.0, -1.0)
    return forget_drops - retain_drops, signs
