"""The ``fluxvit`` command line: parses arguments, calls library functions, prints.

One module on purpose (its length is the number of commands, each a parser and a thin handler):
``fluxvit --help`` and every command's options are read and kept consistent in one place.

Every user error (:class:`fluxvit.errors.FluxViTError`, a missing file) ends in one line on
stderr naming the thing and the problem, and a non-zero exit, with no traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable

from fluxvit.errors import ConfigError, FluxViTError

EXIT_USER_ERROR = 2
MAX_GRID_TOKENS = 2**17  # 8x the largest grid of the paper's recipes (24x364: 16224 tokens)


def _add(sub, name: str, help: str, example: str, handler: Callable[[argparse.Namespace], int]):
    p = sub.add_parser(
        name,
        help=help,
        description=f"{help}\n\nexample:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(handler=handler)
    return p


# ----------------------------------------------------------------------------- flops
def cmd_flops(args: argparse.Namespace) -> int:
    from fluxvit.models import create_model

    model = create_model(args.model, num_classes=args.num_classes)
    grid = None
    if args.grid:
        from fluxvit.flux.grid import Grid

        grid = Grid.parse(args.grid, budget=args.tokens)
    if args.tokens is None and grid is None:
        raise ConfigError("give --tokens N or --grid TxR")
    flops = model.estimate_flops(grid if grid is not None else args.tokens)
    row = {
        "model": args.model,
        "tokens": grid.num_tokens(model.patch_size) if grid is not None else args.tokens,
        "gflops": round(flops.paper / 1e9, 3),
        "gflops_total": round(flops.total / 1e9, 3),
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
    }
    if args.json:
        print(json.dumps(row))
    else:
        print(f"{row['model']}: {row['tokens']} tokens  {row['gflops']:.1f} GFLOPs (encoder, as the paper "
              f"counts)  {row['gflops_total']:.1f} GFLOPs (whole forward)  {row['params_m']:.1f} M params")
    return 0


# ----------------------------------------------------------------------------- convert
def cmd_convert(args: argparse.Namespace) -> int:
    from fluxvit.models.registry import convert_checkpoint

    report = convert_checkpoint(args.src, args.dst, args.model, num_classes=args.num_classes,
                                classes_file=args.classes)
    print(report)
    return 0


# ----------------------------------------------------------------------------- synth
def cmd_synth(args: argparse.Namespace) -> int:
    from fluxvit.data.synthetic import make_synthetic_dataset

    # --classes takes names separated by spaces, commas, or both.
    classes = [c for item in args.classes for c in item.split(",") if c] if args.classes else None
    summary = make_synthetic_dataset(args.out, classes=classes, per_class=args.per_class, size=args.size,
                                     frames=args.frames, seed=args.seed, val_fraction=args.val_fraction,
                                     workers=args.workers, overwrite=args.force, progress=True)
    print(summary)
    return 0


def _add_synth(sub) -> None:
    from fluxvit.data.synthetic import describe_classes

    p = _add(sub, "synth", "write the synthetic video benchmark: mp4 clips + train.csv, val.csv, classes.txt",
             "fluxvit synth data/synth --per-class 80 --size 112 --frames 16 --seed 0", cmd_synth)
    p.epilog = ("every clip: a static textured background, static and slowly drifting distractor shapes,\n"
                "per-frame noise, and one actor (about 3x3 patches) that carries the class.\n"
                "classes ([time]: needs several frames in order; [detail]: needs full resolution;\n"
                "[motion]: opt-in, harder - needs the direction of a motion):\n"
                + describe_classes())
    p.add_argument("out", help="output directory (new, or empty; see --force)")
    p.add_argument("--classes", nargs="+", default=None,
                   help="class names (default: the 10 time and detail classes, in the order below)")
    p.add_argument("--per-class", type=int, default=80, help="clips per class, train + val (default 80)")
    p.add_argument("--size", type=int, default=112, help="frame height = width in pixels, even (default 112)")
    p.add_argument("--frames", type=int, default=16, help="frames per clip (default 16)")
    p.add_argument("--seed", type=int, default=0, help="same seed, same dataset (default 0)")
    p.add_argument("--val-fraction", type=float, default=0.25, help="share of each class in val.csv (default 0.25)")
    p.add_argument("--workers", type=int, default=None, help="encoding processes (default: up to 2)")
    p.add_argument("--force", action="store_true", help="write into a non-empty directory")


# ----------------------------------------------------------------------------- train
def cmd_train(args: argparse.Namespace) -> int:
    from fluxvit.train import load_config, train

    cfg = load_config(args.config, args.set or ())
    result = train(cfg, resume=args.resume if args.resume is not None else False)
    if result.checkpoint is not None:  # rank 0 (under torchrun the other ranks stay quiet)
        metrics = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                            for k, v in result.metrics.items() if v is not None)
        print(f"trained {result.steps} steps -> {result.checkpoint}")
        print(metrics)
    return 0


def _add_train(sub) -> None:
    p = _add(sub, "train", "train a FluxViT (fixed-grid, Flux, Flux-Multi or distillation) from a YAML config",
             "fluxvit train configs/nano_synthetic_flux_multi.yaml --set optim.lr=5e-4 --set steps=200",
             cmd_train)
    p.epilog = ("configs: configs/*.yaml; the final config is written to OUT_DIR/config.yaml.\n"
                "distributed: torchrun --nproc_per_node=N -m fluxvit train CONFIG (gloo on CPU, nccl on CUDA)")
    p.add_argument("config", help="YAML config (see configs/)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config value, dotted keys (repeatable): --set optim.lr=3e-4")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="CKPT",
                   help="continue from the newest checkpoint in OUT_DIR/checkpoints, or from CKPT")


# ----------------------------------------------------------------------------- eval / optimize / predict
def _load_model(path: str):
    from fluxvit.models import load_checkpoint

    return load_checkpoint(path)


def _placement(args: argparse.Namespace, sharded: bool = False):
    """--device and --dtype as a Placement (``auto`` decided here, once). ``sharded`` commands
    (eval, optimize: they split the videos across ranks) join the ``torchrun`` job's process
    group first, each rank on its own GPU; the others run as one process."""
    from fluxvit import distributed
    from fluxvit.placement import Placement

    if getattr(args, "selector", None) is not None:
        from fluxvit.flux.selectors import get_selector

        get_selector(args.selector)  # an unknown name is one line before any work
    if sharded:
        info = distributed.setup(args.device)
        placement = Placement(info.device, Placement.resolve(str(info.device), args.dtype).dtype)
    else:
        placement = Placement.resolve(args.device, args.dtype)
    logging.getLogger("fluxvit").debug("running on %s", placement)
    return placement


def _budget_grid(model, checkpoint: str, budget: int | None, grid: str | None, latency_ms: float | None,
                 placement):
    """The grid to sample and the budget to keep: --grid wins, then TO's stored choice, then the
    model's default grid; --latency-ms picks the largest budget that fits this machine."""
    from fluxvit.evaluate.runner import sampling_grid
    from fluxvit.flux.grid import Grid

    if latency_ms is not None:
        from fluxvit.evaluate.latency import budget_for_latency

        if budget is not None:
            raise ConfigError("give --budget or --latency-ms, not both")
        budget = budget_for_latency(model, sampling_grid(model, None), latency_ms, placement)
        logging.getLogger("fluxvit").info("latency %.1f ms -> budget %d tokens", latency_ms, budget)
    try:
        g = Grid.parse(grid, budget=budget) if grid else sampling_grid(model, budget)
        g.num_tokens(model.patch_size)  # checks the patch size and that the budget fits
        n = g.num_patches(model.patch_size)
        if n > MAX_GRID_TOKENS:
            raise ConfigError(f"grid {g.with_budget(None)} makes {n} tokens; more than {MAX_GRID_TOKENS} "
                              "would not fit in memory")
    except FluxViTError as e:
        if grid:
            raise
        # the grid came with the checkpoint (Token Optimization's stored choice, or its default):
        # untrusted data, so the message names the file
        raise type(e)(f"{checkpoint}: {e}") from None
    return g


def cmd_eval(args: argparse.Namespace) -> int:
    from fluxvit.data.annotations import read_annotations
    from fluxvit.evaluate.runner import Views, evaluate, extract_features

    model = _load_model(args.checkpoint)
    placement = _placement(args, sharded=True)
    grid = _budget_grid(model, args.checkpoint, args.budget, args.grid, args.latency_ms, placement)
    views = Views.parse(args.views)
    ann = read_annotations(args.data, args.data_root)
    res = evaluate(model, ann, grid, views, head=args.head, per_class=args.per_class, workers=args.workers,
                   progress=sys.stderr.isatty(), selector=args.selector, placement=placement,
                   batch_size=args.batch_size)
    if not res.videos:  # no accuracy to report (it would print as NaN)
        raise ConfigError(f"{args.data}: none of its {res.broken} videos could be read "
                          f"(the first: {res.broken_videos[0]})")
    features = None
    if args.save_features:
        features = extract_features(model, args.data, args.save_features, grid, views, args.data_root, args.workers,
                                    placement=placement, batch_size=args.batch_size)
    from fluxvit import distributed

    if not distributed.current().is_main:
        return 0  # under torchrun every rank has the same numbers; rank 0 reports them
    if args.json:
        print(json.dumps(res.to_dict() | ({"features": str(features)} if features else {})))
    else:
        print(f"{args.data}: {res.videos} videos x {res.views_per_video} views at {res.grid}, "
              f"{res.budget} tokens: top-1 {res.top1:.2f}%  top-5 {res.top5:.2f}%  "
              f"{res.gflops:.2f} GFLOPs/view  {res.ms_per_view:.1f} ms/view ({res.device} {res.dtype})")
        if args.per_class:
            names = model.class_names or [str(i) for i in range(model.num_classes)]
            for name, acc in zip(names, res.per_class):
                print(f"  {name:>24}: {'-' if acc is None else f'{acc:.1f}%'}")
    for line in res.broken_videos:
        print(f"skipped broken video: {line}", file=sys.stderr)
    return 0


def cmd_optimize(args: argparse.Namespace) -> int:
    from fluxvit.data.annotations import read_annotations
    from fluxvit.evaluate.runner import Views
    from fluxvit.evaluate.token_optimization import SearchSpace
    from fluxvit.evaluate.workflow import token_optimization_report

    model = _load_model(args.checkpoint)
    budgets = _int_list(args.budgets, "--budgets")
    space = SearchSpace(frames=tuple(_int_list(args.frames, "--frames")),
                        sizes=tuple(_int_list(args.sizes, "--sizes")), max_factor=args.max_factor)

    ann = read_annotations(args.data, args.data_root)
    report = token_optimization_report(
        model, ann, budgets, space, Views.parse(args.views), subset=args.subset, refine_top=args.refine,
        out_dir=args.out, save_to=args.save_to or args.checkpoint, progress=sys.stderr.isatty(),
        workers=args.workers, min_gain_se=args.min_gain_se, placement=_placement(args, sharded=True),
    )
    from fluxvit import distributed

    if not distributed.current().is_main:
        return 0
    print(report.table)
    print(f"wrote {report.markdown} and {report.plot}; choices stored in {report.checkpoint}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import contextlib
    from pathlib import Path

    from fluxvit.atomic import atomic_write
    from fluxvit.evaluate.predict import (
        PREDICTION_FORMATS,
        PredictionError,
        PredictionWriter,
        expand_videos,
        predict_videos,
        show_tokens,
    )
    from fluxvit.evaluate.runner import Views

    out = Path(args.out) if args.out else None
    if out is not None and out.suffix.lower() not in PREDICTION_FORMATS:
        raise ConfigError(f"--out {out}: predictions are written to a .csv or .jsonl file")
    if out is not None and out.exists():
        raise ConfigError(f"--out {out}: exists; choose a new name (results are never overwritten)")
    paths = expand_videos(args.videos, _extensions(args.extensions))
    if not paths:
        raise ConfigError(f"no video file ({args.extensions}) in {', '.join(args.videos)}")
    model = _load_model(args.checkpoint)
    placement = _placement(args)
    grid = _budget_grid(model, args.checkpoint, args.budget, args.grid, args.latency_ms, placement)
    views = Views.parse(args.views)
    # Two decoding processes by default for a batch of videos: on 2 cores, 640x360 10 s clips went
    # from 2.7 to 4.2 videos/s (one worker: 2.6, decoding-bound); a few videos pay no start-up.
    workers = args.workers if args.workers is not None else (min(2, os.cpu_count() or 1) if len(paths) >= 4 else 0)
    failed = 0
    with contextlib.ExitStack() as stack:
        writer = None
        if out is not None:
            tmp = stack.enter_context(atomic_write(out))
            writer = PredictionWriter(stack.enter_context(open(tmp, "w", newline="", encoding="utf-8")),
                                      out.suffix.lower())
        results = predict_videos(model, paths, grid, views, args.topk, args.batch_size, workers, args.selector,
                                 placement)
        for i, result in enumerate(results):
            if writer is not None:
                writer.write(result)
            if isinstance(result, PredictionError):
                failed += 1
                print(f"fluxvit predict: error: {result.error}", file=sys.stderr)
                continue
            if args.show_tokens:
                picture = args.show_tokens if len(paths) == 1 else _numbered(args.show_tokens, i)
                show_tokens(model, result.path, grid, picture, selector=args.selector, placement=placement)
            if args.json:
                print(json.dumps(result.to_dict()), flush=True)
            else:
                print(f"{result.path}: {', '.join(f'{name} {p:.1%}' for name, p in result.top)}", flush=True)
    if out is not None:
        print(f"wrote {out}: {len(paths) - failed} predictions, {failed} errors", file=sys.stderr)
    return EXIT_USER_ERROR if failed else 0


def _extensions(text: str) -> list[str]:
    values = [v.strip() for v in str(text).split(",") if v.strip()]
    if not values:
        raise ConfigError(f"--extensions {text!r} names no file extension")
    return values


def _numbered(path: str, i: int) -> str:
    from pathlib import Path

    p = Path(path)
    return str(p.with_name(f"{p.stem}_{i:03d}{p.suffix or '.png'}"))


def _int_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{flag} {text!r} is not a comma-separated list of integers") from None
    if not values or min(values) < 1:
        raise ConfigError(f"{flag} {text!r} needs positive integers")
    return values


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum`` (argparse says which flag in its one line)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} must be at least {minimum}")
        return value

    return parse


def _add_placement(p) -> None:
    # Values are checked when the command runs (fluxvit.placement), so that --help needs no torch.
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N (default auto)")
    p.add_argument("--dtype", default="auto",
                   help="precision: auto (bf16 where this hardware's bf16 matrix math is measured faster, "
                        "else fp32), fp32, bf16, fp16 (CUDA only); default auto")


def _join(values) -> str:
    return ",".join(str(v) for v in values)


def _add_eval_commands(sub) -> None:
    from fluxvit.data.annotations import VIDEO_EXTENSIONS
    from fluxvit.evaluate.token_optimization import SearchSpace

    def common(p, with_data: bool = True) -> None:
        p.add_argument("--checkpoint", required=True, help="a fluxvit checkpoint (.safetensors or directory)")
        _add_placement(p)
        if with_data:
            p.add_argument("--data", required=True, help="annotation file: `relative/path.mp4 label` per line")
            p.add_argument("--data-root", default=None, help="folder the CSV's paths are relative to")
            p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")

    def sampling(p) -> None:
        p.add_argument("--budget", type=int, default=None, help="tokens kept (default: all)")
        p.add_argument("--latency-ms", type=float, default=None,
                       help="instead of --budget: the largest budget whose forward fits this many ms here")
        p.add_argument("--grid", default=None, help="sampling grid TxR (default: TO's choice, else the model's)")
        p.add_argument("--selector", default="group_dynamic",
                       help="token selector (default group_dynamic: exactly --budget tokens; group_dynamic_release: "
                            "the release's per-group counts, a few fewer on some grids, to compare with the release; "
                            "also random, uniform, static_drop)")

    p = _add(sub, "eval", "multi-view accuracy (top-1/top-5) of a checkpoint at a token budget",
             "fluxvit eval --checkpoint runs/demo/flux.safetensors --data val.csv --budget 128 --views 2x1",
             cmd_eval)
    common(p)
    sampling(p)
    p.add_argument("--views", default="4x3", help="CLIPSxCROPS test views per video (default 4x3)")
    p.add_argument("--batch-size", type=_int_at_least(1), default=1,
                   help="videos per forward (all their views at once; default 1)")
    p.add_argument("--head", type=int, default=None, help="head index (default: nearest budget)")
    p.add_argument("--per-class", action="store_true", help="also print each class's accuracy")
    p.add_argument("--save-features", default=None, help="write pooled clip embeddings to this .safetensors")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = _add(sub, "optimize", "Token Optimization: the best sampling grid for each token budget",
             "fluxvit optimize --checkpoint runs/demo/flux.safetensors --data val.csv --budgets 64,128,256",
             cmd_optimize)
    common(p)
    p.add_argument("--budgets", required=True, help="comma-separated token budgets")
    space = SearchSpace()  # the library's defaults are the command line's
    p.add_argument("--frames", default=_join(space.frames),
                   help=f"candidate frame counts (default {_join(space.frames)})")
    p.add_argument("--sizes", default=_join(space.sizes),
                   help=f"candidate resolutions, multiples of the patch size (default {_join(space.sizes)})")
    p.add_argument("--max-factor", type=float, default=space.max_factor,
                   help=f"skip grids with more than this x budget patches (default {space.max_factor:g})")
    p.add_argument("--views", default="1x1", help="CLIPSxCROPS views while searching (default 1x1)")
    p.add_argument("--subset", type=float, default=0.3, help="fraction of videos for the first pass")
    p.add_argument("--refine", type=int, default=3, help="best candidates re-scored on all videos")
    p.add_argument("--min-gain-se", type=float, default=2.0,
                   help="keep the model's default grid unless another beats it by more than this many standard "
                        "errors of the paired difference on the same videos (0: take the best outright, as the paper)")
    p.add_argument("--out", default="runs/optimize", help="folder for report.md and the plot")
    p.add_argument("--save-to", default=None, help="checkpoint to store the choices in (default: --checkpoint)")

    p = _add(sub, "predict", "classify videos: top-k class names with probabilities",
             "fluxvit predict clip.mp4 --checkpoint runs/demo/flux.safetensors --budget 128 --show-tokens t.png",
             cmd_predict)
    p.add_argument("videos", nargs="+", help="video files, or folders (searched recursively by --extensions)")
    common(p, with_data=False)
    sampling(p)
    p.add_argument("--views", default="1x1", help="CLIPSxCROPS views per video (default 1x1)")
    p.add_argument("--out", default=None, help="also write one row per video (errors too) to this .csv or .jsonl, "
                   "as the results come; an existing file is never overwritten")
    p.add_argument("--batch-size", type=_int_at_least(1), default=4, help="videos per forward (default 4)")
    p.add_argument("--workers", type=_int_at_least(0), default=None,
                   help="decoding processes, working while the model runs (default: 2 for 4 videos or more, else 0)")
    p.add_argument("--extensions", default=",".join(e.lstrip(".") for e in VIDEO_EXTENSIONS),
                   help="file extensions taken from folders (default: common video containers)")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--json", action="store_true", help="one JSON object per video")
    p.add_argument("--show-tokens", default=None, help="PNG of the kept (bright) and dropped (dim) tokens")


# ----------------------------------------------------------------------------- bench
def cmd_bench(args: argparse.Namespace) -> int:
    import math

    import torch

    from fluxvit.evaluate.speed import forward_speed, machine
    from fluxvit.flux.grid import Grid
    from fluxvit.models import create_model
    from fluxvit.placement import dtype_name
    from fluxvit.timing import matmul_gflops

    placement = _placement(args)
    device = placement.device
    dtype = None if placement.dtype == torch.float32 else placement.dtype
    peak = matmul_gflops(placement.dtype, device=device)
    rows = []
    for name in args.models:
        model = create_model(name).to(device).eval()
        base = Grid.parse(args.grid) if args.grid else model.default_grid
        per_frame = base.num_patches(model.patch_size) // base.frames
        for tokens in _int_list(args.tokens, "--tokens"):
            # Enough frames of the base resolution to hold the budget (selection cuts the rest).
            grid = Grid(max(base.frames, math.ceil(tokens / per_frame)), base.height, base.width)
            for batch in _int_list(args.batch, "--batch"):
                row = forward_speed(model, grid, tokens, batch, dtype, args.repeats, peak).to_dict()
                rows.append(row)
                if not args.json:
                    print(f"{name:<24} {tokens:>6} tokens  {row['grid']:>8}  batch {batch:<3} {row['ms']:>9.1f} ms"
                          f"  {row['gflop_per_s']:>7.1f} GFLOP/s  {100 * row['fraction_of_peak']:5.1f}% of peak",
                          flush=True)
    chosen = dtype_name(placement.dtype)
    result = {"machine": machine(device), "dtype": chosen, "dtype_asked": args.dtype,
              "matmul_peak_gflops": round(peak, 1), "rows": rows}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"matmul peak here: {peak:.0f} GFLOP/s ({chosen}{', chosen by auto' if args.dtype == 'auto' else ''})")
    if args.out:
        from fluxvit.atomic import write_text

        write_text(args.out, json.dumps(result, indent=2))
    return 0


def _add_bench(sub) -> None:
    p = _add(sub, "bench", "forward speed on this machine: ms per batch, GFLOP/s and fraction of the matmul peak "
             "at each token budget", "fluxvit bench fluxvit_small_patch14 --tokens 512,1024,2048 --batch 1,2",
             cmd_bench)
    p.add_argument("models", nargs="*", default=["fluxvit_small_patch14"], help="registered model names")
    p.add_argument("--tokens", default="512,1024,2048,3072", help="token budgets, comma-separated")
    p.add_argument("--grid", default=None, help="base sampling grid TxR (default: the model's); more frames "
                   "are sampled when a budget needs them")
    p.add_argument("--batch", default="1", help="batch sizes, comma-separated")
    _add_placement(p)
    p.set_defaults(dtype="fp32")  # a benchmark measures what it is told to; --dtype auto shows auto's choice
    p.add_argument("--repeats", type=int, default=3, help="timed calls per case (median reported)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--out", default=None, help="also write the JSON to this file")


# ----------------------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace) -> int:
    from fluxvit.demo import DemoSettings, run_demo

    settings = DemoSettings.quick(args.out or "runs/demo-quick", args.seed) if args.quick else \
        DemoSettings(out=args.out or "runs/demo", seed=args.seed)
    if args.steps:
        settings.steps = args.steps
    result = run_demo(settings)
    print(result.table)
    print(f"\nwrote {result.report}, {result.plot} and checkpoints "
          f"{', '.join(str(p) for p in result.checkpoints.values())} in {result.seconds / 60:.1f} min")
    return 0


def _add_demo(sub) -> None:
    p = _add(sub, "demo", "the main job: synthetic benchmark, fixed-grid vs Flux training, Token Optimization, "
             "accuracy/GFLOPs/latency table, plot and report", "fluxvit demo --quick", cmd_demo)
    p.add_argument("--out", default=None, help="output folder (default runs/demo, or runs/demo-quick)")
    p.add_argument("--quick", action="store_true",
                   help="about a minute: every stage on little data (a smoke run; accuracies stay near chance)")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds the benchmark, both models and their data order; "
                        "same seed, same weights and accuracies (default 0)")
    p.add_argument("--steps", type=int, default=None, help="training steps per model (override)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fluxvit",
        description="Deployment-efficient video transformers (FluxViT): train, evaluate, optimise, predict.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = _add(sub, "flops", "GFLOPs (multiply-adds) of a model at a token budget, as the paper counts them",
             "fluxvit flops fluxvit_small_patch14 --tokens 2048", cmd_flops)
    p.add_argument("model", help="registered model name, e.g. fluxvit_small_patch14, fluxvit_nano_patch14")
    p.add_argument("--tokens", type=int, default=None, help="token budget N after selection")
    p.add_argument("--grid", default=None, help="sampling grid TxR; patch embedding counted over all of it")
    p.add_argument("--num-classes", type=int, default=400)
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = _add(sub, "convert", "convert an official release checkpoint into this project's format",
             "fluxvit convert fluxvit_s_k400.pth fluxvit_s_k400.safetensors --model fluxvit_small_patch14",
             cmd_convert)
    p.add_argument("src", help="official .pth/.bin file (raw, or under 'model'/'module')")
    p.add_argument("dst", help="output .safetensors file, or a directory")
    p.add_argument("--model", required=True, help="registered model name")
    p.add_argument("--num-classes", type=int, default=None, help="default: read from the checkpoint")
    p.add_argument("--classes", default=None, help="classes.txt with one class name a line")

    _add_demo(sub)
    _add_bench(sub)
    _add_synth(sub)
    _add_eval_commands(sub)
    _add_train(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(message)s", stream=sys.stderr)
    from fluxvit.runtime import tune_cpu_allocator

    tune_cpu_allocator()  # an application may own the allocator: keep freed activations in-process
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USER_ERROR
    try:
        return int(args.handler(args) or 0)
    except FluxViTError as e:
        print(f"fluxvit {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except FileNotFoundError as e:
        print(f"fluxvit {args.command}: error: {e.filename or e}: no such file", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as e:  # no permission, a full disk, ...: the environment's doing, said in one line
        where = f"{e.filename}: " if e.filename else ""
        print(f"fluxvit {args.command}: error: {where}{e.strerror or e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"fluxvit {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        if "torch.distributed" in sys.modules:  # leave a torchrun job's process group cleanly
            from fluxvit import distributed

            distributed.teardown(distributed.current())


if __name__ == "__main__":
    raise SystemExit(main())
