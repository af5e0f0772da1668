"""Training throughput: clips/s and tokens/s of real training steps (the trainer, the objective,
AdamW, the Flux batch sampler) for FluxViT-nano and -tiny, at the demo's recipes: the fixed-grid
baseline (8x112 = 512 tokens) and Flux-Multi (grids drawn per batch, 512/256/128 tokens through
three heads). Clips come from memory (random 16-frame 112-px videos), so this is the rate the
model consumes, which the data pipeline must sustain (``bench_data.py`` measures that side).

    python benchmarks/bench_train.py [--quick]     -> benchmarks/results/bench_train.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, __import__("os").path.dirname(__file__))
from common import write_result  # noqa: E402

from fluxvit.data.sources import TensorClipSource  # noqa: E402
from fluxvit.demo import DemoSettings, _train_config  # noqa: E402
from fluxvit.train.trainer import train  # noqa: E402

WARMUP_STEPS = 2  # the first steps pay for allocation and thread start-up


def measure(model: str, flux: bool, steps: int, tmp: Path) -> dict:
    settings = DemoSettings(out=str(tmp), steps=steps)
    cfg = _train_config(settings, tmp, f"{model}_{'flux' if flux else 'fixed'}", flux)
    cfg["model"]["name"] = model
    cfg["ckpt_every"] = steps
    cfg["log_every"] = 1
    cfg["eval"] = {"every": 0, "grid": cfg["eval"]["grid"]}
    gen = torch.Generator().manual_seed(0)
    videos = [torch.randint(0, 256, (16, 112, 112, 3), dtype=torch.uint8, generator=gen) for _ in range(64)]
    data = TensorClipSource(videos, [i % 10 for i in range(64)], [str(i) for i in range(10)])
    result = train(cfg, train_data=data)
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    steps_logged = [r for r in records if "clips_per_s" in r and r.get("step", 0) > WARMUP_STEPS]
    return {
        "model": model,
        "objective": "flux_multi" if flux else "fixed",
        "batch": settings.batch_size,
        "steps_timed": len(steps_logged),
        "clips_per_s": round(statistics.median(r["clips_per_s"] for r in steps_logged), 2),
        "tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in steps_logged)),
        "torch_threads": torch.get_num_threads(),
    }


def main(quick: bool = False) -> dict:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in ("fluxvit_nano_patch14", "fluxvit_tiny_patch14"):
            for flux in (False, True):
                steps = (4 if quick else 8) + WARMUP_STEPS
                row = measure(model, flux, steps, Path(tmp))
                rows.append(row)
                print(row, flush=True)
    path = write_result("bench_train", {"recipe": "demo (fluxvit.demo.DemoSettings), batch 16", "rows": rows})
    print(f"wrote {path}")
    return {"rows": rows}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer timed steps")
    main(ap.parse_args().quick)
