"""White-box attack speed: remnant's relearning steps (`remnant.unlearning.train.fine_tune`, LoRA
r 128 on the attention and MLP projections, as the attack's defaults) and soft-prompt iterations
(`remnant.attacks.embedding`) against a plain PyTorch loop doing the same steps on the same
Hugging Face model loaded without the bridge (PEFT LoRA / a leaf embedding tensor with
signed-gradient updates), side by side in one run on SmolLM2-135M-Instruct and the demo
target. Prints steps per second and the
ratio (remnant / plain: 1.0 means no overhead)."""

from __future__ import annotations

import statistics
import time

import torch
from transformers import AutoModelForCausalLM

from remnant.attacks import embedding, relearn
from remnant.models import load_copy, load_model
from remnant.models.embedded import smollm2_dir
from remnant.scoring import encode_answers, resolve_style
from remnant.targets import load_builtin_target
from remnant.unlearning.data import collate, qa_examples
from remnant.unlearning.train import fine_tune


def _rate(fn, steps: int, repeats: int) -> float:
    """Median steps per second of ``fn(steps)`` over ``repeats`` runs (after a warm-up)."""
    fn(1)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(steps)
        times.append(time.perf_counter() - start)
    return steps / statistics.median(times)


def main(steps: int = 4, repeats: int = 3) -> None:
    torch.manual_seed(0)
    source = load_model("smollm2-135m-instruct")
    model = load_copy(source)
    plain = AutoModelForCausalLM.from_pretrained(
        smollm2_dir(), dtype=torch.float32, attn_implementation="eager"
    ).eval()
    target = load_builtin_target("demo")
    style = resolve_style(model, "auto")
    settings = relearn.RelearnSettings()
    examples = qa_examples(model, target.forget[: settings.train_batch_size], style)
    batch = collate(examples, range(len(examples)), model.tokenizer.pad_token_id, model.device)

    def remnant_relearn(n: int) -> None:
        fine_tune(model, examples, settings.training(settings.lr, n))

    def plain_relearn(n: int) -> None:
        from peft import LoraConfig, get_peft_model

        peft = get_peft_model(
            plain,
            LoraConfig(r=settings.lora_rank, lora_alpha=settings.lora_alpha,
                       target_modules=list(settings.modules)),
        )  # fmt: skip
        params = [p for p in peft.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0)
        labels = batch.ids.masked_fill(~batch.scored, -100)
        for _ in range(n):
            loss = peft(input_ids=batch.ids, attention_mask=batch.mask, labels=labels).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        peft.unload()

    soft = embedding.EmbeddingSettings(soft_batch_size=settings.train_batch_size)
    init = model.tokenizer(embedding.SOFT_INIT, add_special_tokens=False).input_ids[0]
    items = target.forget[: soft.soft_batch_size]
    prompts = [embedding.slotted_prompt(model, i, style, init, soft.soft_tokens) for i in items]
    answers = encode_answers(model, [i.answer for i in items], style)

    def remnant_soft(n: int) -> None:
        embedding.optimise_soft_prompt(
            model, prompts, answers, init,
            embedding.EmbeddingSettings(soft_iterations=n, soft_batch_size=len(items)),
            "soft prompt", False,
        )  # fmt: skip

    rows = [p + a for (p, _), a in zip(prompts, answers)]
    width = max(map(len, rows))
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    labels = ids.clone()
    for k, ((p, _), a) in enumerate(zip(prompts, answers)):
        labels[k, : len(p)] = -100
        labels[k, len(p) + len(a) :] = -100

    def plain_soft(n: int) -> None:
        hf = plain
        for p in hf.parameters():
            p.requires_grad_(False)
        vectors = hf.get_input_embeddings()(torch.tensor([init] * soft.soft_tokens)).detach()
        vectors.requires_grad_(True)
        for _ in range(n):
            embeds = hf.get_input_embeddings()(ids).clone()
            for k, (_, start) in enumerate(prompts):
                embeds[k, start : start + soft.soft_tokens] = vectors
            loss = hf(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss
            (grad,) = torch.autograd.grad(loss, vectors)
            with torch.no_grad():
                vectors -= soft.soft_step * grad.sign()

    print(f"SmolLM2-135M-Instruct, batch of {len(examples)} demo items, median of {repeats}")
    for name, ours, theirs in (
        ("relearning step (LoRA r 128)", remnant_relearn, plain_relearn),
        ("soft-prompt iteration", remnant_soft, plain_soft),
    ):
        a, b = [], []
        for _ in range(repeats):  # interleaved, so both see the same machine state
            a.append(_rate(ours, steps, 1))
            b.append(_rate(theirs, steps, 1))
        r, p = statistics.median(a), statistics.median(b)
        print(f"{name}: remnant {r:.2f} steps/s, plain PyTorch {p:.2f} steps/s, "
              f"ratio {r / p:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
