"""Cold versus cached load time of the embedded SmolLM2-135M-Instruct.

Cold = dequantise the GGUF with transformers and write the safetensors cache (the network
download is excluded: the verified GGUF file is reused), then load. Cached = load_model from
the cache. Both run here, in one process, side by side; prints seconds and their ratio.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from remnant.models import load_model
from remnant.models.embedded import smollm2_dir, smollm2_gguf


def main(repeats: int = 3) -> None:
    gguf = smollm2_gguf()
    smollm2_dir()  # make sure the real cache exists for the cached timing
    cold = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as home:
            (Path(home) / "downloads").mkdir()
            shutil.copy(gguf, Path(home) / "downloads" / gguf.name)
            os.environ["REMNANT_HOME"] = home
            start = time.perf_counter()
            load_model("smollm2-135m-instruct")
            cold.append(time.perf_counter() - start)
        os.environ.pop("REMNANT_HOME")
    cached = []
    for _ in range(repeats):
        start = time.perf_counter()
        load_model("smollm2-135m-instruct")
        cached.append(time.perf_counter() - start)
    cold_s, cached_s = statistics.median(cold), statistics.median(cached)
    print(f"cold load (GGUF dequantise + cache write + load), median of {repeats}: {cold_s:.2f} s")
    print(f"cached load (safetensors + bridge boot), median of {repeats}: {cached_s:.2f} s")
    print(f"ratio cold / cached: {cold_s / cached_s:.1f}x")


if __name__ == "__main__":
    main()
