"""The tiny Llama-architecture model trained in-process on the synthetic world.

Deterministic from its configuration (seeded), cached under a hash of that configuration, of
the code that builds the world and trains the model, and of the library versions that run it.
A *gold* variant is trained on the same world without the forget set's people.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from remnant.models.cache import cache_key, models_dir, source_digest
from remnant.models.checkpoint import save_checkpoint
from remnant.models.toolchain import installed_versions
from remnant.targets.synthetic import SyntheticWorld, WorldConfig

log = logging.getLogger(__name__)

BOS = "<|endoftext|>"
_FORMAT_VERSION = 1
_LIBRARIES = ("torch", "transformers", "tokenizers", "safetensors")


@dataclasses.dataclass(frozen=True)
class TinyConfig:
    """Architecture and training recipe of the tiny model."""

    world: WorldConfig = WorldConfig()
    gold: bool = False
    vocab_size: int = 1024
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 2
    d_mlp: int = 512
    steps: int = 700
    batch_size: int = 64
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
    out_dir = tiny_model_path(config)
    if not (out_dir / "model.safetensors").exists():
        train_tiny_model(config, out_dir)
    return out_dir


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
    texts = [t + BOS for t in world.training_texts(exclude=exclude)]
    encoded = [torch.tensor(tokenizer(t).input_ids) for t in texts]
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=config.d_model,
            intermediate_size=config.d_mlp,
            num_hidden_layers=config.n_layers,
            num_attention_heads=config.n_heads,
            num_key_value_heads=config.n_kv_heads,
            max_position_embeddings=128,
            tie_word_embeddings=True,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(config.seed)
    model.train()
    loss = torch.tensor(float("nan"))
    for step in range(config.steps):
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(step, config)
        batch = torch.randint(len(encoded), (config.batch_size,), generator=generator)
        input_ids, labels = _pad([encoded[i] for i in batch.tolist()], tokenizer.pad_token_id)
        loss = model(
            input_ids=input_ids, attention_mask=(labels != -100).long(), labels=labels
        ).loss
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


def _pad(sequences: list[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest sequence; labels are -100 on padding."""
    length = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    labels = torch.full((len(sequences), length), -100, dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, : len(seq)] = seq
        labels[row, : len(seq)] = seq
    return input_ids, labels
