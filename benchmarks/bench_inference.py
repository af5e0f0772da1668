"""Inference at scale on this machine: precision, pipelined predict, decode-once Token Optimization.

* forward ms of FluxViT-S and -nano at 512/1024/2048 tokens, batch 1 and 8, fp32 vs bf16
  autocast, and the precision ``--dtype auto`` picks here (bf16 rows are skipped where bf16
  matmuls are emulated: measured below a quarter of fp32, a single S forward would take minutes);
* ``fluxvit predict`` throughput, videos/s: the pipelined path (decoding workers, batches of 4)
  against the one-video-at-a-time loop, on 200 demo-size clips (16 frames, 112 px) and on 50
  640x360 10 s clips;
* Token Optimization search time on a demo-like split (64 videos, the demo's search space and
  budgets), decoding each video once per stage against decoding it for every grid, with the
  same choices;
* CPU acceleration: FluxViT-S forward ms at 512/1024/2048 tokens, batch 1 and 8, eager fp32
  against ``--quantize int8``, ``--compile`` and both (fluxvit.acceleration).

    python benchmarks/bench_inference.py [--quick]     -> benchmarks/results/bench_inference.json
    python benchmarks/bench_inference.py --only accel  -> benchmarks/results/bench_inference_accel.json
"""

from __future__ import annotations

import argparse
import copy
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import matmul_gflops, write_result  # noqa: E402

import fluxvit  # noqa: E402
from fluxvit.acceleration import compile_model, int8_engine, quantize_int8  # noqa: E402
from fluxvit.data.annotations import read_annotations  # noqa: E402
from fluxvit.data.encode import write_video  # noqa: E402
from fluxvit.data.synthetic import make_synthetic_dataset  # noqa: E402
from fluxvit.demo import DemoSettings  # noqa: E402
from fluxvit.evaluate.predict import predict_video, predict_videos  # noqa: E402
from fluxvit.evaluate.runner import Views, evaluate, token_optimization_scorer  # noqa: E402
from fluxvit.evaluate.speed import forward_speed  # noqa: E402
from fluxvit.evaluate.token_optimization import Score, SearchSpace, search_budgets  # noqa: E402
from fluxvit.flux.grid import Grid  # noqa: E402
from fluxvit.placement import auto_dtype, bf16_is_emulated, dtype_name, measured_matmul_speeds  # noqa: E402
from fluxvit.runtime import tune_cpu_allocator  # noqa: E402


def precision_rows(quick: bool) -> dict:
    cpu = torch.device("cpu")
    small = measured_matmul_speeds(cpu)  # 256^3: cheap even where bf16 is emulated
    emulated = bf16_is_emulated(cpu)
    fp32 = matmul_gflops(torch.float32)
    bf16 = small["bf16"] if emulated else matmul_gflops(torch.bfloat16)
    rows = []
    for name, grid in (("fluxvit_nano_patch14", Grid(16, 112)), ("fluxvit_small_patch14", Grid(8, 224))):
        model = fluxvit.create_model(name).eval()
        for tokens in (512, 1024, 2048):
            if tokens > grid.num_patches(14):
                grid = Grid(tokens // (grid.height // 14) ** 2 + 1, grid.height)
            for batch in (1, 8):
                row = {"model": name, "tokens": tokens, "batch": batch,
                       "fp32_ms": round(forward_speed(model, grid, tokens, batch, None, 1 if quick else 3).ms, 1)}
                if not emulated:
                    ms = forward_speed(model, grid, tokens, batch, torch.bfloat16, 1 if quick else 3).ms
                    row.update(bf16_ms=round(ms, 1), bf16_speedup=round(row["fp32_ms"] / ms, 2))
                rows.append(row)
                print(row, flush=True)
    return {"fp32_matmul_gflops": round(fp32, 1), "bf16_matmul_gflops": round(bf16, 1),
            "matmul_256_gflops": small, "bf16_emulated": emulated,
            "auto_chooses": dtype_name(auto_dtype(torch.device("cpu"))), "rows": rows}


def _rate(run, *args) -> float:
    """Videos per second of ``run(model, paths, grid)``."""
    start = time.perf_counter()
    run(*args)
    return len(args[1]) / (time.perf_counter() - start)


def _sequential(model, paths, grid) -> None:
    for p in paths:
        predict_video(model, p, grid)


def _pipelined(model, paths, grid) -> None:
    for _ in predict_videos(model, paths, grid, batch_size=4, workers=2):
        pass


def predict_rates(tmp: Path, quick: bool) -> dict:
    model = fluxvit.create_model("fluxvit_nano_patch14", num_classes=10).eval()
    out = {}
    small = write_video(tmp / "demo.mp4", torch.randint(0, 255, (16, 112, 112, 3), dtype=torch.uint8).numpy(), fps=8)
    frames = torch.randint(0, 255, (1, 360, 640, 3), dtype=torch.uint8).repeat(300, 1, 1, 1)
    frames[:, :, :, 0] += torch.arange(300, dtype=torch.uint8)[:, None, None]  # a changing scene
    large = write_video(tmp / "large.mp4", frames.numpy(), fps=30)
    for name, src, count in (("demo_clips_16x112", small, 40 if quick else 200),
                             ("640x360_10s", large, 10 if quick else 50)):
        paths = []
        for i in range(count):
            paths.append(tmp / f"{name}_{i:03d}.mp4")
            shutil.copy(src, paths[-1])
        grid = Grid(8, 112, budget=256)
        sequential = _rate(_sequential, model, paths, grid)
        pipelined = _rate(_pipelined, model, paths, grid)
        out[name] = {"videos": count, "sequential_videos_per_s": round(sequential, 2),
                     "pipelined_videos_per_s": round(pipelined, 2), "speedup": round(pipelined / sequential, 2)}
        print(name, out[name], flush=True)
    return out


def search_times(tmp: Path, quick: bool) -> dict:
    s = DemoSettings()
    data = make_synthetic_dataset(tmp / "synth", per_class=8 if quick else 16, seed=0, val_fraction=0.5,
                                  workers=2)
    ann = read_annotations(data.val_csv)
    model = fluxvit.create_model("fluxvit_nano_patch14", num_classes=10).eval()
    space = SearchSpace(frames=s.search_frames, sizes=s.search_sizes)
    candidates = {b: space.candidates(b, 14) for b in s.budgets}

    def grid_by_grid(grids, on_subset):
        picked = [i for i in range(len(ann)) if i % 2 == 0] if on_subset else None
        return {g: Score(evaluate(model, ann, g, Views(), indices=picked, per_video=True).per_video) for g in grids}

    results = {}
    for name, scorer in (("grid_by_grid", grid_by_grid),
                         ("decode_once", token_optimization_scorer(model, ann, Views(), subset=0.5))):
        start = time.perf_counter()
        choices, _ = search_budgets(candidates, scorer, 3, 14, reference=model.default_grid)
        results[name] = {"seconds": round(time.perf_counter() - start, 1),
                         "choices": {b: str(c.best) for b, c in choices.items()}}
        print(name, results[name], flush=True)
    results["speedup"] = round(results["grid_by_grid"]["seconds"] / results["decode_once"]["seconds"], 2)
    results["same_choices"] = results["grid_by_grid"]["choices"] == results["decode_once"]["choices"]
    results["videos"] = len(ann)
    return results


def acceleration_rows(quick: bool) -> dict:
    """FluxViT-S (random weights) on the CPU: eager fp32, int8, compiled, int8 + compiled, forward
    ms per batch at each budget (selected from 8x224). The variants take turns within each round
    and each reports its best round: other work on a shared machine slows a call, never speeds it,
    and taking turns spreads a busy spell over all of them."""
    base = fluxvit.create_model("fluxvit_small_patch14").eval()
    variants = {"fp32": base, "int8": quantize_int8(copy.deepcopy(base)),
                "compiled": compile_model(copy.deepcopy(base)),
                "int8+compiled": compile_model(quantize_int8(copy.deepcopy(base)))}
    grid, rounds, rows = Grid(8, 224), 1 if quick else 3, []
    for tokens in (512, 1024, 2048):
        budget = tokens if tokens < grid.num_patches(14) else None
        for batch in (1, 8):
            video = torch.randn(batch, 3, grid.frames, grid.height, grid.width)
            best = dict.fromkeys(variants, float("inf"))
            with torch.inference_mode():
                for model in variants.values():
                    model(video, num_tokens=budget)  # warm-up; compiles this shape
                for _ in range(rounds):
                    for name, model in variants.items():
                        start = time.perf_counter()
                        model(video, num_tokens=budget)
                        best[name] = min(best[name], time.perf_counter() - start)
            row = {"tokens": tokens, "batch": batch, **{f"{k}_ms": round(1e3 * v, 1) for k, v in best.items()},
                   **{f"{k}_speedup": round(best["fp32"] / v, 2) for k, v in best.items() if k != "fp32"}}
            rows.append(row)
            print(row, flush=True)
    return {"model": "fluxvit_small_patch14", "grid": str(grid), "int8_engine": int8_engine(),
            "threads": torch.get_num_threads(), "rounds": rounds, "rows": rows}


PARTS = ("precision", "predict", "token_optimization", "accel")


def main(quick: bool = False, only: str | None = None) -> dict:
    tune_cpu_allocator()
    torch.manual_seed(0)
    parts = {"precision": lambda tmp: precision_rows(quick), "predict": lambda tmp: predict_rates(tmp, quick),
             "token_optimization": lambda tmp: search_times(tmp, quick), "accel": lambda tmp: acceleration_rows(quick)}
    with tempfile.TemporaryDirectory() as tmp:
        result = {name: run(Path(tmp)) for name, run in parts.items() if only in (None, name)}
    path = write_result("bench_inference" + (f"_{only}" if only else ""), result)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer videos and repeats")
    ap.add_argument("--only", choices=PARTS, default=None, help="run one part (written to bench_inference_PART.json)")
    args = ap.parse_args()
    main(args.quick, args.only)
