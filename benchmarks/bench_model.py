"""Model speed: forward latency of FluxViT-S/B at 512..3072 tokens, fraction of the matmul peak,
bf16-autocast speed-up, and the token selector's share of the forward.

    python benchmarks/bench_model.py [--quick]     -> benchmarks/results/bench_model.json
"""

from __future__ import annotations

import argparse
import sys

import torch

sys.path.insert(0, __import__("os").path.dirname(__file__))
from common import matmul_gflops, write_result  # noqa: E402

import fluxvit  # noqa: E402
from fluxvit.evaluate.speed import forward_speed, selector_seconds  # noqa: E402
from fluxvit.flux.grid import Grid  # noqa: E402
from fluxvit.placement import bf16_is_emulated, measured_matmul_speeds  # noqa: E402
from fluxvit.runtime import tune_cpu_allocator  # noqa: E402

# (budget, grid sampled before selection): 8x224 = 2048 patches, 12x224 = 3072
CASES = [(512, Grid(8, 224)), (1024, Grid(8, 224)), (2048, Grid(8, 224)), (3072, Grid(12, 224))]


def main(quick: bool = False) -> dict:
    tune_cpu_allocator()  # as the command line does
    torch.manual_seed(0)
    peak32 = matmul_gflops(torch.float32)
    emulated = bf16_is_emulated(torch.device("cpu"))  # there a 2048^3 bf16 matmul takes minutes
    peak16 = measured_matmul_speeds(torch.device("cpu"))["bf16"] if emulated else matmul_gflops(torch.bfloat16)
    rows = []
    names = ["fluxvit_small_patch14"] if quick else ["fluxvit_small_patch14", "fluxvit_base_patch14"]
    batches = [1, 2] if quick else [1, 2, 8]
    repeats = 1 if quick else 3
    for name in names:
        model = fluxvit.create_model(name).eval()
        for budget, grid in CASES:
            for batch in batches:
                if name == "fluxvit_base_patch14" and batch == 8 and budget > 1024:
                    continue  # minutes per call on 2 cores; the trend is clear without it
                row = forward_speed(model, grid, budget, batch, None, repeats, peak32).to_dict()
                if batch == 2 and budget == 2048 and not emulated:
                    bf = forward_speed(model, grid, budget, batch, torch.bfloat16, repeats, peak16)
                    sel = selector_seconds(model, grid, budget, batch, repeats)
                    row.update(bf16_ms=bf.ms, bf16_speedup=row["ms"] / bf.ms,
                               bf16_fraction_of_peak=bf.fraction_of_peak, selector_ms=sel * 1e3,
                               selector_share=sel * 1e3 / row["ms"])
                row = {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
                rows.append(row)
                print(row, flush=True)
    result = {"fp32_matmul_gflops": round(peak32, 1), "bf16_matmul_gflops": round(peak16, 1),
              "rows": rows}
    path = write_result("bench_model", result)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="S only, batch 1-2, one repeat")
    main(ap.parse_args().quick)
