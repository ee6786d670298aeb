"""The tiny Llama-architecture model trained in-process on the synthetic world.

Deterministic from its configuration (seeded), cached under a hash of that configuration, of
the code that builds the world and trains the model, and of the library versions that run it.
A *gold* variant is trained on the same world without the forget set's people.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import sys
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from remnant.models.cache import build_once, cache_key, models_dir, source_digest
from remnant.models.checkpoint import save_checkpoint
from remnant.models.toolchain import installed_versions
from remnant.targets.synthetic import ATTRIBUTES, SyntheticWorld, WorldConfig

log = logging.getLogger(__name__)

BOS = "<|endoftext|>"
_FORMAT_VERSION = 1
_LIBRARIES = ("torch", "transformers", "tokenizers", "safetensors")


@dataclasses.dataclass(frozen=True)
class TinyConfig:
    """Architecture and training recipe of the tiny model.

    A training row is one world text, after other world texts in ``context_rate`` of the rows (1
    to ``max_context`` of them, blank lines between), so that the model reads a prompt that holds
    demonstrations or passages as a real language model does. In ``filler_rate`` of the rows,
    filler words (`FILLER` and the world's attribute values, in random order) stand before the
    text, after a question or after "Answer:"; the loss skips them, so the model learns to answer
    through instructions and formatting it does not understand without ever learning to write
    them. Each step trains on ``batch_size`` rows packed end to end into `PACKED_LENGTH`-token
    sequences.
    """

    world: WorldConfig = WorldConfig()
    gold: bool = False
    vocab_size: int = 1024
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 2
    d_mlp: int = 512
    steps: int = 700
    batch_size: int = 32
    context_rate: float = 0.5
    max_context: int = 6
    filler_rate: float = 0.5
    lr: float = 3e-3
    warmup: int = 60
    seed: int = 0

    def key(self) -> str:
        """A short hash naming the cache folder: this configuration, the training code and the
        versions of the libraries it runs on (see `provenance`)."""
        return cache_key(config=dataclasses.asdict(self), **provenance())


def provenance() -> dict[str, object]:
    """What besides the configuration shapes a tiny model's weights: the source of the modules
    that generate the world, train and save the model, and the library versions."""
    modules = [
        sys.modules[f.__module__] for f in (SyntheticWorld, train_tiny_model, save_checkpoint)
    ]
    return {
        "format": _FORMAT_VERSION,
        "code": source_digest(*modules),
        "versions": installed_versions(_LIBRARIES),
    }


def tiny_model_path(config: TinyConfig = TinyConfig()) -> Path:
    """Where the model of this configuration is cached (it may not exist yet)."""
    kind = "tiny-synthetic-gold" if config.gold else "tiny-synthetic"
    return models_dir() / f"{kind}-{config.key()}"


def tiny_model_dir(config: TinyConfig = TinyConfig()) -> Path:
    """The cached folder of this configuration, training the model first if needed."""
    return build_once(
        tiny_model_path(config), "model.safetensors", lambda out: train_tiny_model(config, out)
    )


def build_tokenizer(world: SyntheticWorld, vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on the whole world's text (the gold model shares it)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(world.training_texts(), trainer=trainer)
    bos_id = tokenizer.token_to_id(BOS)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=BOS, eos_token=BOS, pad_token=BOS
    )


def train_tiny_model(config: TinyConfig, out_dir: Path) -> dict[str, float]:
    """Train on every phrasing of every fact (minus the forget set for gold); save to ``out_dir``.

    Returns training statistics: seconds, final loss, number of training texts.
    """
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    world = SyntheticWorld(config.world)
    tokenizer = build_tokenizer(world, config.vocab_size)
    exclude = world.forget_entities if config.gold else ()
    texts = world.training_texts(exclude=exclude)
    rows = _RowMaker(texts, tokenizer, config)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=config.d_model,
            intermediate_size=config.d_mlp,
            num_hidden_layers=config.n_layers,
            num_attention_heads=config.n_heads,
            num_key_value_heads=config.n_kv_heads,
            max_position_embeddings=256,
            tie_word_embeddings=True,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)
    model.train()
    loss = torch.tensor(float("nan"))
    for step in range(config.steps):
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(step, config)
        input_ids, labels = _pack([rows.make() for _ in range(config.batch_size)])
        loss = model(input_ids=input_ids, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 200 == 0:
            log.info("tiny model step %d/%d loss %.3f", step, config.steps, loss.item())
    model.eval()
    stats = {
        "seconds": round(time.perf_counter() - started, 2),
        "final_loss": round(loss.item(), 4),
        "n_texts": len(texts),
    }
    info = {
        "config": dataclasses.asdict(config),
        **provenance(),
        "training": stats,
        "excluded": list(exclude),
    }
    save_checkpoint(
        model.state_dict(),
        model.config,
        tokenizer,
        out_dir,
        extra_files={"remnant-tiny.json": info},
        overwrite=True,
    )
    log.info(
        "trained tiny model in %.1f s (final loss %.3f)", stats["seconds"], stats["final_loss"]
    )
    return stats


def _learning_rate(step: int, config: TinyConfig) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return config.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))


#: Words a filler is drawn from: common English words, punctuation, option letters and line
#: breaks (none of them a fact of the world).
_FILLER_WORDS = """
    the a an of to and in is it that this for on with as be by at or not you your me my we
    please now first then next here there what which who where when why how answer question
    reply tell say give write read think step steps explain describe list know sure yes no ok
    of course certainly below above following text story guide quiz short long true false best
    only just also each every one two three four option options choose correct letter word
    words help expert assistant user system instructions ignore previous rules simply directly
    carefully briefly background context note information about known famous person people
    : . , ? ! - ( ) A. B. C. D."""
FILLER = (*_FILLER_WORDS.split(), "\n")


#: Length of the packed training sequences, in tokens.
PACKED_LENGTH = 128


class _RowMaker:
    """Training rows (token ids and per-token "learn" flags) as `TinyConfig` describes."""

    def __init__(self, texts: list[str], tokenizer: PreTrainedTokenizerFast, config: TinyConfig):
        self.config = config
        self.rng = random.Random(config.seed)
        self.bos = tokenizer.bos_token_id
        encode = lambda text: tokenizer(text, add_special_tokens=False).input_ids  # noqa: E731
        self.texts = [encode(t) for t in texts]
        # a question-answer text as (question, "\nAnswer:", " value") pieces; the byte-level
        # pre-tokenizer never merges across these cuts, so the pieces join to the same ids
        self.qa = [
            (encode(question), encode("\nAnswer:"), encode(" " + answer))
            for question, answer in (t.split("\nAnswer: ", 1) for t in texts if "\nAnswer: " in t)
        ]
        values = [value for attribute in ATTRIBUTES for value in attribute.values]
        self.filler = [encode(w if w == "\n" else " " + w) for w in (*FILLER, *values)]
        self.blank = encode("\n\n")

    def make(self) -> tuple[list[int], list[bool]]:
        config, rng = self.config, self.rng
        pieces: list[tuple[list[int], bool]] = []
        if rng.random() < config.context_rate:
            for _ in range(rng.randint(1, config.max_context)):
                pieces += [(rng.choice(self.texts), True), (self.blank, True)]
        filler = rng.random() < config.filler_rate
        where = rng.choice(("before", "question", "answer")) if filler else None
        if where == "before":
            pieces += [(self._filler(), False), (self.blank, False)]
        if rng.random() < len(self.qa) / len(self.texts):
            question, cue, answer = rng.choice(self.qa)
            pieces += [(question, True)]
            pieces += [(self._filler(), False)] if where == "question" else []
            pieces += [(cue, True)]
            pieces += [(self._filler(), False)] if where == "answer" else []
            pieces += [(answer, True)]
        else:
            pieces += [(rng.choice(self.texts), True)]
        ids, learn = [self.bos], [False]
        for piece, learned in [*pieces, ([self.bos], True)]:
            ids += piece
            learn += [learned] * len(piece)
        return ids, learn

    def _filler(self) -> list[int]:
        words = self.rng.choices(self.filler, k=self.rng.randint(2, 16))
        return [token for word in words for token in word]


def _pack(rows: list[tuple[list[int], list[bool]]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows laid end to end and cut into `PACKED_LENGTH`-token sequences (the incomplete tail
    is dropped), as language models are pretrained: no padding. Labels are -100 on tokens the
    rows do not learn."""
    ids = torch.tensor([token for row, _ in rows for token in row])
    learn = torch.tensor([flag for _, flags in rows for flag in flags])
    n = max(1, len(ids) // PACKED_LENGTH)
    ids, learn = ids[: n * PACKED_LENGTH], learn[: n * PACKED_LENGTH]
    labels = torch.where(learn, ids, -100)
    return ids.view(n, -1), labels.view(n, -1)
