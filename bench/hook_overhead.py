"""Hook overhead: TransformerLens ``run_with_cache`` of every block's residual output versus a
plain Hugging Face forward with ``output_hidden_states=True`` on the same batch (16 x 32 tokens)
of SmolLM2-135M-Instruct. Median of repeats, measured side by side; prints the ratio."""

from __future__ import annotations

import statistics
import time

import torch
from transformers import AutoModelForCausalLM

from remnant.models import load_model
from remnant.models.embedded import smollm2_dir


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(batch: int = 16, length: int = 32, repeats: int = 5) -> None:
    torch.manual_seed(0)
    model = load_model("smollm2-135m-instruct")
    plain = AutoModelForCausalLM.from_pretrained(
        smollm2_dir(), dtype=torch.float32, attn_implementation="eager"
    ).eval()
    tokens = torch.randint(100, 40000, (batch, length))
    names = [f"blocks.{i}.hook_out" for i in range(model.n_layers)]

    def hooked():
        with torch.no_grad():
            _, cache = model.bridge.run_with_cache(tokens, names_filter=lambda name: name in names)
        assert len(cache) == len(names)

    def baseline():
        with torch.no_grad():
            out = plain(tokens, output_hidden_states=True)
        assert len(out.hidden_states) == model.n_layers + 1

    # interleave to share the machine's state fairly
    hooked_s, plain_s = [], []
    for _ in range(repeats):
        hooked_s.append(_median_seconds(hooked, 1))
        plain_s.append(_median_seconds(baseline, 1))
    h, p = statistics.median(hooked_s), statistics.median(plain_s)
    print(f"batch {batch}x{length} tokens, median of {repeats}")
    print(f"run_with_cache (30 block outputs): {h * 1000:.0f} ms")
    print(f"HF forward, output_hidden_states:  {p * 1000:.0f} ms")
    print(f"hook overhead ratio: {h / p:.2f}x")


if __name__ == "__main__":
    main()
