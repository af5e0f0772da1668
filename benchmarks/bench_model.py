"""Model speed: forward latency of FluxViT-S/B at 512..3072 tokens, fraction of the matmul peak,
bf16-autocast speed-up, and the token selector's share of the forward.

    python benchmarks/bench_model.py [--quick]     -> benchmarks/results/bench_model.json
"""

from __future__ import annotations

import argparse
import sys

import torch

sys.path.insert(0, __import__("os").path.dirname(__file__))
from common import matmul_peak_gflops, time_call, write_result  # noqa: E402

import fluxvit  # noqa: E402
from fluxvit.flux.grid import Grid  # noqa: E402
from fluxvit.flux.selectors import group_dynamic_select  # noqa: E402
from fluxvit.runtime import tune_cpu_allocator  # noqa: E402

# (budget, grid sampled before selection): 8x224 = 2048 patches, 12x224 = 3072
CASES = [(512, Grid(8, 224)), (1024, Grid(8, 224)), (2048, Grid(8, 224)), (3072, Grid(12, 224))]


def bench_forward(model, grid: Grid, budget: int, batch: int, dtype: torch.dtype | None, repeats: int) -> float:
    video = torch.randn(batch, 3, grid.frames, grid.height, grid.width)

    def run():
        with torch.no_grad(), torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            model(video, num_tokens=budget)

    return time_call(run, repeats=repeats, warmup=1)


def bench_selector(model, grid: Grid, budget: int, batch: int, repeats: int) -> float:
    video = torch.randn(batch, 3, grid.frames, grid.height, grid.width)
    with torch.no_grad():
        emb = model.patch_embed(video)
    return time_call(lambda: group_dynamic_select(emb, budget), repeats=repeats, warmup=1)


def main(quick: bool = False) -> dict:
    tune_cpu_allocator()  # as the command line does
    torch.manual_seed(0)
    peak32 = matmul_peak_gflops(torch.float32)
    peak16 = matmul_peak_gflops(torch.bfloat16)
    rows = []
    names = ["fluxvit_small_patch14"] if quick else ["fluxvit_small_patch14", "fluxvit_base_patch14"]
    batches = [1, 2] if quick else [1, 2, 8]
    repeats = 1 if quick else 3
    for name in names:
        model = fluxvit.create_model(name).eval()
        for budget, grid in CASES:
            g = grid.with_budget(budget)
            macs = model.estimate_flops(g).total
            for batch in batches:
                if name == "fluxvit_base_patch14" and batch == 8 and budget > 1024:
                    continue  # minutes per call on 2 cores; the trend is clear without it
                secs = bench_forward(model, grid, budget, batch, None, repeats)
                gflops = 2 * macs * batch / secs / 1e9
                row = {"model": name, "tokens": budget, "grid": str(grid), "batch": batch,
                       "ms": round(secs * 1e3, 1), "gflop_per_s": round(gflops, 1),
                       "fraction_of_fp32_peak": round(gflops / peak32, 3)}
                if batch == 2 and budget == 2048:
                    bf = bench_forward(model, grid, budget, batch, torch.bfloat16, repeats)
                    sel = bench_selector(model, grid, budget, batch, repeats)
                    row.update(bf16_ms=round(bf * 1e3, 1), bf16_speedup=round(secs / bf, 2),
                               selector_ms=round(sel * 1e3, 2), selector_share=round(sel / secs, 4))
                rows.append(row)
                print(row, flush=True)
    result = {"fp32_matmul_peak_gflops": round(peak32, 1), "bf16_matmul_peak_gflops": round(peak16, 1),
              "rows": rows}
    path = write_result("bench_model", result)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="S only, batch 1-2, one repeat")
    main(ap.parse_args().quick)
