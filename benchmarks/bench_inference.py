"""Inference at scale on this machine: backends, end-to-end latency, pipelined predict, decode-once TO.

* backends: forward ms of FluxViT-S and the demo's nano at 512/1024/2048 tokens, batch 1 and 8:
  eager fp32, eager bf16 autocast (left out where bf16 matmuls are emulated: measured below a
  quarter of fp32, a single S forward would take minutes), torch.compile, onnxruntime fp32 (the
  ``fluxvit export`` artifact of each shape) and dynamic int8, each with its ratio to eager fp32,
  and the precision ``--dtype auto`` picks here;
* end to end: the demo model's decode + preprocess + forward ms at every grid Token Optimization
  considers for the demo's budgets (the cost table of ``optimize --cost latency``);
* ``fluxvit predict`` throughput, videos/s: the pipelined path (decoding workers, batches of 4)
  against the one-video-at-a-time loop, on 200 demo-size clips (16 frames, 112 px) and on 50
  640x360 10 s clips;
* Token Optimization search time on a demo-like split (80 videos, the demo's search space and
  budgets), decoding each video once per stage against decoding it for every grid, with the
  same choices.

    python benchmarks/bench_inference.py [--quick]        -> benchmarks/results/bench_inference.json
    python benchmarks/bench_inference.py --only backends  -> benchmarks/results/bench_inference_backends.json
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
from fluxvit.evaluate.exported import load_exported  # noqa: E402
from fluxvit.evaluate.predict import predict_video, predict_videos  # noqa: E402
from fluxvit.evaluate.runner import Views, evaluate, token_optimization_scorer  # noqa: E402
from fluxvit.evaluate.token_optimization import Score, SearchSpace, search_budgets  # noqa: E402
from fluxvit.export import export_model  # noqa: E402
from fluxvit.flux.grid import Grid  # noqa: E402
from fluxvit.placement import auto_dtype, bf16_is_emulated, dtype_name, measured_matmul_speeds  # noqa: E402
from fluxvit.runtime import tune_cpu_allocator  # noqa: E402


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


BACKENDS = ("fp32", "bf16", "compiled", "onnxruntime", "int8")


def _backends(model, grid: Grid, tokens: int, batch: int, tmp: Path, emulated_bf16: bool) -> dict:
    """Callables ``video -> logits`` of ``model`` at ``grid`` cut to ``tokens``, one per backend
    (bf16 left out where its matmuls are emulated; onnxruntime left out where it is not
    installed): eager fp32, eager bf16 autocast, torch.compile, onnxruntime fp32 of the artifact
    ``fluxvit export`` writes for this shape, dynamic int8."""
    budget = tokens if tokens < grid.num_patches(model.patch_size) else None
    out = {"fp32": lambda v: model(v, num_tokens=budget)}
    if not emulated_bf16:
        def bf16(v):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return model(v, num_tokens=budget)
        out["bf16"] = bf16
    compiled = compile_model(copy.deepcopy(model))
    out["compiled"] = lambda v: compiled(v, num_tokens=budget)
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        pass
    else:
        path = export_model(model, tmp / f"{model.name}_{tokens}_{batch}.onnx", grid, tokens, batch=batch,
                            verify=False)
        artifact = load_exported(path, device="cpu")
        out["onnxruntime"] = lambda v: artifact(v)
    int8 = quantize_int8(copy.deepcopy(model))
    out["int8"] = lambda v: int8(v, num_tokens=budget)
    return out


def backend_rows(tmp: Path, quick: bool) -> dict:
    """Forward ms per batch of FluxViT-S (selected from 8x224) and the demo's nano (from 8x112,
    more frames where a budget needs them), random weights, at 512/1024/2048 tokens, batch 1 and
    8, on every CPU backend. The backends take turns within each round and each reports its best
    round: other work on a shared machine slows a call, never speeds it, and taking turns spreads
    a busy spell over all of them."""
    cpu = torch.device("cpu")
    small = measured_matmul_speeds(cpu)  # 256^3: cheap even where bf16 is emulated
    emulated = bf16_is_emulated(cpu)
    fp32 = matmul_gflops(torch.float32)
    bf16 = small["bf16"] if emulated else matmul_gflops(torch.bfloat16)
    rounds, rows = 1 if quick else 3, []
    for name, base in (("fluxvit_small_patch14", Grid(8, 224)), ("fluxvit_nano_patch14", Grid(8, 112))):
        model = fluxvit.create_model(name).eval()
        per_frame = base.num_patches(14) // base.frames
        for tokens in (512, 1024, 2048):
            grid = Grid(max(base.frames, -(-tokens // per_frame)), base.height)
            for batch in (1, 8):
                video = torch.randn(batch, 3, grid.frames, grid.height, grid.width)
                variants = _backends(model, grid, tokens, batch, tmp, emulated)
                best = dict.fromkeys(variants, float("inf"))
                with torch.inference_mode():
                    for run in variants.values():
                        run(video)  # warm-up; compiles this shape
                    for _ in range(rounds):
                        for key, run in variants.items():
                            start = time.perf_counter()
                            run(video)
                            best[key] = min(best[key], time.perf_counter() - start)
                row = {"model": name, "tokens": tokens, "grid": str(grid), "batch": batch,
                       **{f"{k}_ms": round(1e3 * v, 1) for k, v in best.items()},
                       **{f"{k}_ratio": round(best["fp32"] / v, 2) for k, v in best.items() if k != "fp32"}}
                rows.append(row)
                print(row, flush=True)
    return {"fp32_matmul_gflops": round(fp32, 1), "bf16_matmul_gflops": round(bf16, 1),
            "matmul_256_gflops": small, "bf16_emulated": emulated,
            "auto_chooses": dtype_name(auto_dtype(cpu)), "int8_engine": int8_engine(),
            "threads": torch.get_num_threads(), "rounds": rounds, "backends": list(BACKENDS), "rows": rows}


def end_to_end_rows(tmp: Path, quick: bool) -> dict:
    """The demo model's request latency here: decode + preprocess + forward (ms, median of 3) of
    one demo-size clip (16 frames, 112 px, H.264, the synthetic benchmark's) at every grid Token
    Optimization considers for each of the demo's budgets (nano, 10 classes; the weights do not
    change the time). This is the cost table of ``optimize --cost latency``."""
    import numpy as np

    from fluxvit.data.synthetic import DEFAULT_CLASSES, render_clip
    from fluxvit.evaluate.latency import measure_end_to_end

    s = DemoSettings()
    clip = render_clip(DEFAULT_CLASSES[0], np.random.default_rng(0), size=112, frames=16)
    video = write_video(tmp / "demo_clip.mp4", clip, fps=8)
    model = fluxvit.create_model("fluxvit_nano_patch14", num_classes=len(DEFAULT_CLASSES)).eval()
    space = SearchSpace(frames=s.search_frames, sizes=s.search_sizes)
    grids = [g for b in s.budgets for g in space.candidates(b, model.patch_size)]
    if quick:
        grids = grids[::4]
    views = Views.parse(s.test_views)
    measured = measure_end_to_end(model, video, grids, views, repeats=3)
    rows = [{"budget": g.budget, "grid": f"{g.frames}x{g.height}", **measured[g].to_dict()} for g in grids]
    for row in rows:
        print(row, flush=True)
    return {"model": "fluxvit_nano_patch14", "video": "16 frames x 112 px, H.264", "views": str(views),
            "rows": rows}


def backends_table(part: dict) -> str:
    """The backends part as the README's markdown table: ms per batch, ratio to eager fp32."""
    names = [b for b in BACKENDS if any(f"{b}_ms" in r for r in part["rows"])]
    lines = ["| model, tokens, batch | " + " | ".join(("eager " if b in ("fp32", "bf16") else "") + b for b in names)
             + " |", "|---" * (len(names) + 1) + "|"]
    for r in part["rows"]:
        cells = [f"{r[b + '_ms']:.0f}" + ("" if b == "fp32" else f" ({r[b + '_ratio']:.2f}x)") if f"{b}_ms" in r
                 else "-" for b in names]
        short = r["model"].replace("fluxvit_", "").replace("_patch14", "")
        lines.append(f"| {short}, {r['tokens']}, {r['batch']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def end_to_end_table(part: dict) -> str:
    """The end-to-end part as markdown: per budget, the grids from the fastest to the slowest."""
    lines = ["| budget | fastest grids, end to end ms (decode + preprocess + forward) | slowest |", "|---|---|---|"]
    for budget in sorted({r["budget"] for r in part["rows"]}):
        rows = sorted((r for r in part["rows"] if r["budget"] == budget), key=lambda r: r["total_ms"])
        show = lambda r: f"{r['grid']} {r['total_ms']:.0f} ({r['decode_ms']:.0f} + {r['preprocess_ms']:.0f} + {r['forward_ms']:.0f})"  # noqa: E731,E501
        lines.append(f"| {budget} | " + ", ".join(show(r) for r in rows[:3]) + f" | {show(rows[-1])} |")
    return "\n".join(lines)


PARTS = ("backends", "end_to_end", "predict", "token_optimization")


def main(quick: bool = False, only: str | None = None) -> dict:
    tune_cpu_allocator()
    torch.manual_seed(0)
    parts = {"backends": lambda tmp: backend_rows(tmp, quick), "predict": lambda tmp: predict_rates(tmp, quick),
             "token_optimization": lambda tmp: search_times(tmp, quick),
             "end_to_end": lambda tmp: end_to_end_rows(tmp, quick)}
    with tempfile.TemporaryDirectory() as tmp:
        result = {name: run(Path(tmp)) for name, run in parts.items() if only in (None, name)}
    path = write_result("bench_inference" + (f"_{only}" if only else ""), result)
    print(f"wrote {path}")
    if "backends" in result:
        print(backends_table(result["backends"]))
    if "end_to_end" in result:
        print(end_to_end_table(result["end_to_end"]))
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer videos and repeats")
    ap.add_argument("--only", choices=PARTS, default=None, help="run one part (written to bench_inference_PART.json)")
    args = ap.parse_args()
    main(args.quick, args.only)
