"""The ``fluxvit`` command line: parses arguments, calls library functions, prints.

One module on purpose (its length is the number of commands, each a parser and a thin handler):
``fluxvit --help`` and every command's options are read and kept consistent in one place.

Every user error (:class:`fluxvit.errors.FluxViTError`, a missing file) ends in one line on
stderr naming the thing and the problem, and a non-zero exit, with no traceback.

Numbers on the command line, one rule for every option: the argparse types below (:func:`_int`,
:func:`_float`, :func:`_ints`) read the text strictly - an integer may be written ``1000``,
``1_000`` or ``1e3`` but not ``2.5``; a number must be finite, never ``nan`` or ``inf`` - and the
range is checked by the library function that takes the value (``Views``, ``Grid``,
``SearchSpace``, ``make_synthetic_dataset``, the loaders, the model config), with the caps of
:mod:`fluxvit.limits` for everything a value makes fluxvit spend, so Python callers meet the same
line. The few values only the command line interprets (``--head``, ``--refine``) have their range
checked in the handler, with :func:`fluxvit.typecheck.in_range`. Handlers check what they can
before loading or allocating anything. argparse's own errors are one line too (:class:`_Parser`),
and every JSON printed is strict JSON (:func:`_json`).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import sys
from collections.abc import Callable

from fluxvit.errors import ConfigError, FluxViTError
from fluxvit.typecheck import show

EXIT_USER_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """argparse's own refusals (a missing argument, a value that does not parse, an unknown
    option) end like every other user error: one line, exit 2; the usage is in ``--help``."""

    def error(self, message: str):
        text = " ".join(str(message).split())  # one line, whatever argparse built
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {text} (see {self.prog} --help)\n")


_INT_DIGITS = 18  # an integer option beyond 10**18 is refused as text: no cap reaches it


def _int(text: str) -> int:
    """argparse type: an integer - ``12``, ``-3``, ``1_000``, or ``1e3`` (a whole number in any
    notation), not ``2.5``, ``nan`` or ``inf``. Its range is the library's to check."""
    s = str(text).strip()
    try:
        value = int(s)
    except ValueError:
        value = _whole_number(s, str(text))
    if abs(value) >= 10**_INT_DIGITS:
        raise argparse.ArgumentTypeError(f"{show(str(text))} is too large (more than {_INT_DIGITS} digits)")
    return value


def _whole_number(s: str, text: str) -> int:
    """``s`` in a notation other than int()'s (``1e3``, ``1.0``), if it is a whole number."""
    try:
        number = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{show(text)} is not an integer") from None
    if math.isnan(number) or s.lstrip("+-").lower() in ("inf", "infinity"):
        raise argparse.ArgumentTypeError(f"{show(text)} is not an integer")
    if math.isinf(number) or abs(number) >= 10**_INT_DIGITS:
        raise argparse.ArgumentTypeError(f"{show(text)} is too large (more than {_INT_DIGITS} digits)")
    if not number.is_integer():
        raise argparse.ArgumentTypeError(f"{show(text)} is not a whole number")
    return int(number)


def _float(text: str) -> float:
    """argparse type: a finite number (``0.3``, ``1e-3``); ``nan`` and ``inf`` are refused here.
    Its range is the library's to check."""
    try:
        value = float(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{show(str(text))} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {show(str(text))}")
    return value


def _ints(text: str) -> list[int]:
    """argparse type: comma-separated integers (each read by :func:`_int`), at least one."""
    items = [v for v in str(text).split(",") if v.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"{show(str(text))} names no integer (a comma-separated list: 64,128)")
    out = []
    for item in items:
        try:
            out.append(_int(item))
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentTypeError(f"{show(str(text))}: {e}") from None
    return out


def _json(obj, **kw) -> str:
    """Strict JSON (``allow_nan=False``): a result holding NaN or inf is one line of error, never
    output that a JSON parser rejects."""
    try:
        return json.dumps(obj, allow_nan=False, **kw)
    except ValueError:
        raise FluxViTError("the result holds NaN or inf, which is not JSON; nothing printed") from None


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
    import torch

    from fluxvit.models import create_model

    if args.tokens is None and args.grid is None:
        raise ConfigError("give --tokens N or --grid TxR")
    with torch.device("meta"):  # counting needs the shapes only: no weights are allocated
        model = create_model(args.model, num_classes=args.num_classes)
    grid = None
    if args.grid:
        from fluxvit.flux.grid import Grid

        grid = Grid.parse(args.grid, budget=args.tokens)
        grid.check_size(model.patch_size)
    flops = model.estimate_flops(grid if grid is not None else args.tokens)
    row = {
        "model": args.model,
        "tokens": grid.num_tokens(model.patch_size) if grid is not None else args.tokens,
        "gflops": round(flops.paper / 1e9, 3),
        "gflops_total": round(flops.total / 1e9, 3),
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
    }
    if args.json:
        print(_json(row))
    else:
        print(f"{row['model']}: {row['tokens']} tokens  {row['gflops']:.1f} GFLOPs (encoder, as the paper "
              f"counts)  {row['gflops_total']:.1f} GFLOPs (whole forward)  {row['params_m']:.1f} M params")
    return 0


# ----------------------------------------------------------------------------- convert
def cmd_convert(args: argparse.Namespace) -> int:
    from fluxvit.files import refuse_existing_output, refuse_overwriting_input
    from fluxvit.models.registry import convert_checkpoint

    refuse_overwriting_input(args.dst, [args.src, *([args.classes] if args.classes else [])], "dst")
    refuse_existing_output(args.dst, "dst")
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
                                     workers=args.workers, overwrite=args.force, progress=True,
                                     variant=args.variant)
    print(summary)
    return 0


def _add_synth(sub) -> None:
    from fluxvit.data.synthetic import DEFAULT_VARIANT, VARIANTS, describe_classes, describe_variants

    p = _add(sub, "synth", "write the synthetic video benchmark: mp4 clips + train.csv, val.csv, classes.txt",
             "fluxvit synth data/synth --per-class 80 --size 112 --frames 16 --seed 0", cmd_synth)
    import textwrap

    default = VARIANTS[DEFAULT_VARIANT]
    own_lengths = ", ".join(v.name for v in VARIANTS.values() if v.clip_frames is not None)

    def classes_of(v) -> str:  # a variant made of default classes is listed by name only
        if v is not default and all(default.catalogue.get(c.name) == (c.needs, c.description) for c in v.classes):
            return textwrap.fill(f"{v.name}: the default's {', '.join(v.class_names)}", 100, subsequent_indent="  ")
        return f"{v.name}:\n{describe_classes(v.name)}"

    p.epilog = ("every clip: a static textured background, static and moving distractor shapes, per-frame\n"
                "noise, and one actor (about 3x3 patches, smaller in clutter) that carries the class.\n"
                "variants (--variant; a class name two variants share is the same kind of clip):\n"
                + describe_variants() + "\n"
                "classes ([time]: needs several frames in order; [detail]: needs full resolution;\n"
                "[motion]: opt-in, harder - needs the direction of a motion), by variant:\n"
                + "\n".join(classes_of(v) for v in VARIANTS.values()))
    p.add_argument("out", help="output directory (new, or empty; see --force)")
    p.add_argument("--variant", choices=list(VARIANTS), default=DEFAULT_VARIANT,
                   help=f"which benchmark variant (default {DEFAULT_VARIANT}; see below)")
    p.add_argument("--classes", nargs="+", default=None,
                   help="class names of the variant (default: its time and detail classes, in the order below)")
    p.add_argument("--per-class", type=_int, default=80, help="clips per class, train + val (default 80)")
    p.add_argument("--size", type=_int, default=112, help="frame height = width in pixels, even (default 112)")
    p.add_argument("--frames", type=_int, default=16,
                   help=f"frames per clip (default 16; ignored by the variants with their own: {own_lengths})")
    p.add_argument("--seed", type=_int, default=0, help="same seed, same dataset (default 0)")
    p.add_argument("--val-fraction", type=_float, default=0.25, help="share of each class in val.csv (default 0.25)")
    p.add_argument("--workers", type=_int, default=None, help="encoding processes (default: up to 2)")
    p.add_argument("--force", action="store_true", help="write into a non-empty directory")


# ----------------------------------------------------------------------------- prepare
def cmd_prepare(args: argparse.Namespace) -> int:
    from fluxvit.data.prepare import PrepareOptions, prepare_dataset

    options = PrepareOptions(min_frames=args.min_frames, short_side=args.short_side,
                             keyframe_interval=args.keyframe_interval, val_fraction=args.val_fraction,
                             test_fraction=args.test_fraction, seed=args.seed)
    result = prepare_dataset(args.src, args.out, options, data_root=args.data_root, workers=args.workers,
                             progress=sys.stderr.isatty())
    if result.already:
        print(f"{args.out}: already prepared with these arguments (its summary.json); nothing to do")
        return 0
    table = result.table()
    print(table or "no file left out (none broken, too short or duplicate)")
    print(result)
    for line in result.summary["warnings"]:
        print(f"warning: {line}", file=sys.stderr)
    print("wrote " + ", ".join(str(p) for p in result.files))
    return 0


def _add_prepare(sub) -> None:
    from fluxvit.data.prepare import DEFAULT_KEYFRAME_INTERVAL

    p = _add(sub, "prepare", "check, optionally re-encode, and split your own videos (a folder of CLASS/ "
             "subfolders, or an annotation list or CSV) into train/val/test lists",
             "fluxvit prepare my_videos/ data/mine --short-side 320 --keyframe-interval 16 --val-fraction 0.2",
             cmd_prepare)
    p.epilog = ("broken, too short and duplicate (same bytes) files are left out and listed in a table; OUT gets\n"
                "train.csv, val.csv (test.csv), classes.txt and summary.json, and re-encoded copies under\n"
                "OUT/videos. A class with too few videos for every split goes to train first, with a warning.\n"
                "Run it again with the same arguments to continue an interrupted run; a finished OUT is never\n"
                "rewritten. Then: fluxvit train CONFIG --set data.source=csv --set data.train=OUT/train.csv\n"
                "--set data.val=OUT/val.csv")
    p.add_argument("src", help="a folder of CLASS/video.mp4 subfolders, or an annotation list or CSV")
    p.add_argument("out", help="output folder (new or empty, or an unfinished run of the same arguments)")
    p.add_argument("--data-root", default=None, help="folder a list's paths are relative to (default: its folder)")
    p.add_argument("--workers", type=_int, default=None, help="probing and encoding processes (default: up to 2)")
    p.add_argument("--min-frames", type=_int, default=8, help="fewer frames is too short (default 8)")
    p.add_argument("--short-side", type=_int, default=None,
                   help="re-encode, the short side scaled down to this many pixels (even; default: no re-encoding)")
    p.add_argument("--keyframe-interval", type=_int, default=None,
                   help=f"re-encode with a key frame every this many frames (default {DEFAULT_KEYFRAME_INTERVAL} "
                        "when re-encoding)")
    p.add_argument("--val-fraction", type=_float, default=0.2, help="share of each class in val.csv (default 0.2)")
    p.add_argument("--test-fraction", type=_float, default=0.0, help="share of each class in test.csv (default 0)")
    p.add_argument("--seed", type=_int, default=0, help="the split's shuffle: same seed, same split (default 0)")


# ----------------------------------------------------------------------------- train
def cmd_train(args: argparse.Namespace) -> int:
    from fluxvit.train import load_config, train

    cfg = load_config(args.config, args.set or ())
    if args.dry_run:
        from fluxvit.train.recipe import describe, format_recipe

        if args.resume is not None or args.overwrite:
            raise ConfigError("--dry-run trains nothing and touches no run: give it without --resume or --overwrite")

        print(format_recipe(describe(cfg, args.world, args.videos)))
        return 0
    for flag, value in (("--world", args.world), ("--videos", args.videos)):
        if value is not None:
            raise ConfigError(f"{flag} goes with --dry-run (a run takes its processes from torchrun and its "
                              f"videos from data.train)")
    if args.overwrite and args.resume is not None:
        raise ConfigError("give --resume or --overwrite, not both")
    result = train(cfg, resume=args.resume if args.resume is not None else False, overwrite=args.overwrite)
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
    p.add_argument("--overwrite", action="store_true",
                   help="OUT_DIR holds an earlier run: move its files aside to OUT_DIR.old-N and start afresh "
                        "(without it such a folder is refused; nothing is ever overwritten)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the resolved recipe (clips per step, epochs, lr per layer group, grids, "
                        "augmentations) and exit: nothing is trained or written")
    p.add_argument("--world", type=_int, default=None, metavar="N",
                   help="with --dry-run: plan for N processes (default: torchrun's WORLD_SIZE, else 1)")
    p.add_argument("--videos", type=_int, default=None, metavar="N",
                   help="with --dry-run: plan for N training videos instead of counting data.train")


# ----------------------------------------------------------------------------- eval / optimize / predict
def _load_model(path: str, predict: argparse.Namespace | None = None, view_offsets: str | None = None):
    """The checkpoint at ``path``; with ``predict`` (the arguments of predict or eval, the commands
    that can run one) also an exported model (.onnx/.pt2 from ``fluxvit export``), whose grid,
    budget and float32 then become the defaults of those arguments (and what it cannot do is
    refused here, before any video is read). ``view_offsets`` (``--view-offsets``) replaces where
    the model's recorded preprocessing puts the test clips."""
    from fluxvit.data.preprocessing import set_view_offsets
    from fluxvit.evaluate.exported import is_exported

    if not is_exported(path):
        from fluxvit.models import load_checkpoint

        return set_view_offsets(load_checkpoint(path), view_offsets)
    if predict is None:
        raise ConfigError(f"{path}: is an exported model; this command needs the checkpoint (predict and "
                          f"eval run exported models)")
    from fluxvit.evaluate.exported import load_exported
    from fluxvit.flux.grid import Grid

    model = set_view_offsets(load_exported(path), view_offsets)
    args = predict
    for flag, value in (("--latency-ms", args.latency_ms), ("--show-tokens", getattr(args, "show_tokens", None)),
                        ("--save-features", getattr(args, "save_features", None))):
        if value is not None:
            raise ConfigError(f"{path}: an exported model runs one budget and keeps its tokens inside; {flag} "
                              f"needs the checkpoint")
    if args.grid is not None and Grid.parse(args.grid).with_budget(None) != model.default_grid:
        raise ConfigError(f"{path}: exported for grid {model.default_grid}, not --grid {args.grid}")
    if args.dtype not in ("auto", "fp32"):
        raise ConfigError(f"{path}: an exported model runs in fp32, not --dtype {args.dtype}")
    args.grid, args.dtype = str(model.default_grid), "fp32"
    args.budget = model.budget if args.budget is None else args.budget  # a different one: refused by the model
    if args.selector == "group_dynamic":  # the option's default: the artifact's own selector
        args.selector = model.selector
    return model


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


def _acceleration_placement(args: argparse.Namespace, placement):
    """--quantize int8 keeps fp32 around its int8 matmuls, on a CPU: there --dtype auto means fp32;
    another device or an explicit bf16/fp16 is one line."""
    if getattr(args, "quantize", "none") != "int8":
        return placement
    import torch

    from fluxvit.acceleration import check_int8_placement
    from fluxvit.placement import Placement

    if args.dtype == "auto":
        placement = Placement(placement.device, torch.float32)
    try:
        check_int8_placement(placement)
    except ConfigError as e:
        raise ConfigError(f"--quantize {e}") from None
    return placement


def _accelerate(model, args: argparse.Namespace, placement):
    """The model and placement after --quantize and --compile (see fluxvit.acceleration)."""
    placement = _acceleration_placement(args, placement)
    if getattr(args, "quantize", "none") == "none" and not getattr(args, "compile", False):
        return model, placement
    if getattr(model, "blocks", None) is None:
        raise ConfigError(f"{args.checkpoint}: an exported model runs as it was exported; --quantize and --compile "
                          f"need the checkpoint")
    from fluxvit.acceleration import accelerate

    return accelerate(model, args.quantize, args.compile, placement), placement


def _latency_budget(model, grid, latency_ms: float, placement, sample_videos, views) -> int:
    """:func:`~fluxvit.evaluate.latency.budget_for_latency` end to end on the sample videos, else
    (none decodes) on the forward alone, saying so."""
    from fluxvit.errors import VideoError
    from fluxvit.evaluate.latency import budget_for_latency

    try:
        return budget_for_latency(model, grid, latency_ms, placement, videos=sample_videos, views=views)
    except VideoError:
        logging.getLogger("fluxvit").warning("latency: no sample video decodes; budgeting the forward alone")
        return budget_for_latency(model, grid, latency_ms, placement)


def _budget_grid(model, checkpoint: str, budget: int | None, grid: str | None, latency_ms: float | None,
                 placement, sample_videos=(), views=None):
    """The grid to sample and the budget to keep: --grid wins, then TO's stored choice, then the
    model's default grid; --latency-ms picks the largest budget whose whole request (decoding
    the first readable of ``sample_videos``, preprocessing, the forward) fits this machine."""
    from fluxvit.evaluate.runner import sampling_grid
    from fluxvit.flux.grid import Grid, check_budget

    check_budget(budget)  # the user's value: its error names no checkpoint
    if latency_ms is not None:
        if budget is not None:
            raise ConfigError("give --budget or --latency-ms, not both")
        budget = _latency_budget(model, sampling_grid(model, None), latency_ms, placement, sample_videos, views)
        logging.getLogger("fluxvit").info("latency %.1f ms -> budget %d tokens", latency_ms, budget)
    try:
        g = Grid.parse(grid, budget=budget) if grid else sampling_grid(model, budget)
        g.check_size(model.patch_size)  # the patch size, and the cap on its tokens
        g.num_tokens(model.patch_size)  # the budget fits
    except FluxViTError as e:
        if grid:
            raise
        # the grid came with the checkpoint (Token Optimization's stored choice, or its default):
        # untrusted data, so the message names the file
        raise type(e)(f"{checkpoint}: {e}") from None
    return g


def cmd_eval(args: argparse.Namespace) -> int:
    from fluxvit.data.annotations import read_annotations
    from fluxvit.evaluate.runner import Views, check_loading, evaluate
    from fluxvit.typecheck import in_range

    views = Views.parse(args.views)  # the values first, before any file is read
    check_loading(args.batch_size, args.workers)
    in_range(args.head, "--head", lo=0, what="option")  # an index (the model says how many heads)
    model = _load_model(args.checkpoint, predict=args, view_offsets=args.view_offsets)
    if args.report is not None:  # a new or empty folder, before any video is read
        from fluxvit.evaluate.failures import check_report_dir

        check_report_dir(args.report, model.num_classes, args.data)
    placement = _placement(args, sharded=True)
    model, placement = _accelerate(model, args, placement)
    # a folder's class folders (or name labels) are numbered as the model numbers its classes
    ann = read_annotations(args.data, args.data_root, known_classes=getattr(model, "class_names", None))
    grid = _budget_grid(model, args.checkpoint, args.budget, args.grid, args.latency_ms, placement,
                        [r.path for r in ann.records[:4]], views)
    if args.save_features:  # refused before the evaluation, not after it
        from fluxvit.files import refuse_existing_output, refuse_overwriting_input

        refuse_overwriting_input(args.save_features, [args.data, args.checkpoint, *(r.path for r in ann)],
                                 "--save-features")
        refuse_existing_output(args.save_features, "--save-features")
    res = evaluate(model, ann, grid, views, head=args.head, per_class=args.per_class, workers=args.workers,
                   progress=sys.stderr.isatty(), selector=args.selector, placement=placement,
                   batch_size=args.batch_size, per_video_top=5 if args.report is not None else 0)
    if not res.videos:  # no accuracy to report (it would print as NaN)
        raise ConfigError(f"{args.data}: none of its {res.broken} videos could be read "
                          f"(the first: {res.broken_videos[0]})")
    features = None
    if args.save_features:
        from fluxvit.evaluate.features import extract_features

        features = extract_features(model, ann, args.save_features, grid, views, workers=args.workers,
                                    batch_size=args.batch_size, placement=placement, selector=args.selector,
                                    checkpoint=args.checkpoint).path
    from fluxvit import distributed

    if not distributed.current().is_main:
        return 0  # under torchrun every rank has the same numbers; rank 0 reports them
    extra = {"features": str(features)} if features else {}
    if args.report is not None:  # from every rank's videos (evaluate gathered them)
        from fluxvit.evaluate.failures import class_names, write_report

        extra["report"] = str(write_report(args.report, res, ann, class_names(model, ann), args.checkpoint,
                                           args.selector))
    if args.json:  # each video's top classes are in the report, not in this line
        print(_json({k: v for k, v in res.to_dict().items() if k != "per_video_top"} | extra))
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
    if args.report is not None:
        print(f"wrote {extra['report']} (predictions, per-class metrics, confusion matrix)", file=sys.stderr)
    return 0


def cmd_optimize(args: argparse.Namespace) -> int:
    from fluxvit.data.annotations import read_annotations
    from fluxvit.evaluate.runner import Views, check_loading
    from fluxvit.evaluate.token_optimization import SearchSpace
    from fluxvit.evaluate.workflow import token_optimization_report
    from fluxvit.typecheck import in_range

    # the values first, before any file is read; the budgets (with the model's patch size), the
    # subset and the noise threshold are checked by the search before any video is decoded
    space = SearchSpace(frames=tuple(args.frames), sizes=tuple(args.sizes), max_factor=args.max_factor)
    views = Views.parse(args.views)
    check_loading(1, args.workers)
    in_range(args.refine, "--refine", lo=1, what="option")  # search_budgets takes any count
    if (args.cost == "latency") != (args.latency_ms is not None):
        raise ConfigError("--cost latency and --latency-ms X go together (the target the grid and budget must fit)")
    in_range(args.latency_ms, "--latency-ms", above=0, what="option")
    model = _load_model(args.checkpoint, view_offsets=args.view_offsets)
    if args.save_to is not None:
        _check_save_to(args.save_to, args.checkpoint)
    ann = read_annotations(args.data, args.data_root, known_classes=getattr(model, "class_names", None))
    report = token_optimization_report(
        model, ann, args.budgets, space, views, subset=args.subset, refine_top=args.refine,
        out_dir=args.out, save_to=args.save_to or args.checkpoint, progress=sys.stderr.isatty(),
        workers=args.workers, min_gain_se=args.min_gain_se, placement=_placement(args, sharded=True),
        latency_ms=args.latency_ms,
    )
    from fluxvit import distributed

    if not distributed.current().is_main:
        return 0
    print(report.table)
    if report.latency:
        from fluxvit.evaluate.workflow import latency_line

        print(latency_line(report.latency))
    print(f"wrote {report.markdown} and {report.plot}; choices stored in {report.checkpoint}")
    return 0


def _check_save_to(save_to: str, checkpoint: str) -> None:
    """--save-to, before the search: the searched checkpoint itself, or a new .safetensors file or
    folder (never another model's checkpoint, whose weights the searched model's would replace)."""
    import os
    from pathlib import Path

    target = Path(save_to)
    if os.path.lexists(target):
        try:
            same = os.path.samefile(target, checkpoint)
        except OSError:
            same = False
        if not same:
            raise ConfigError(f"--save-to {save_to}: exists and is not --checkpoint {checkpoint}; the searched model "
                              "would replace it (give the checkpoint itself, or a new name)")
    elif target.suffix not in (".safetensors", ""):
        raise ConfigError(f"--save-to {save_to}: a checkpoint is a .safetensors file or a folder")


ANNOTATION_SUFFIXES = (".csv", ".txt", ".tsv", ".list")  # a `features` input read as an annotation file


def cmd_features(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fluxvit.evaluate.features import extract_features, unlabelled
    from fluxvit.evaluate.predict import expand_videos
    from fluxvit.evaluate.runner import Views, check_loading
    from fluxvit.files import refuse_existing_output, refuse_overwriting_input

    views = Views.parse(args.views)  # the values first, before any file is read
    check_loading(args.batch_size, args.workers)
    if args.window is not None or args.stride is not None:
        from fluxvit.data.windows import check_window

        if args.window is None:
            raise ConfigError("--stride goes with --window (the length of each window)")
        check_window(args.window, args.window if args.stride is None else args.stride)
        if args.workers:
            raise ConfigError("--workers is for whole videos; windows are decoded in one pass per video")
    out = Path(args.out)
    if out.suffix.lower() != ".safetensors":
        raise ConfigError(f"--out {out}: features are written to a .safetensors file")
    if len(args.videos) == 1 and Path(args.videos[0]).suffix.lower() in ANNOTATION_SUFFIXES:
        from fluxvit.data.annotations import read_annotations

        inputs = read_annotations(args.videos[0], args.data_root)  # labelled
        listed = [args.videos[0], *(r.path for r in inputs.records)]
    else:
        paths = expand_videos(args.videos, _extensions(args.extensions))
        inputs = unlabelled(paths, ", ".join(args.videos))
        listed = paths
    refuse_overwriting_input(out, [*listed, args.checkpoint], "--out")
    refuse_existing_output(out, "--out")
    model = _load_model(args.checkpoint, view_offsets=args.view_offsets)
    placement = _placement(args, sharded=True)
    grid = _budget_grid(model, args.checkpoint, args.budget, args.grid, args.latency_ms, placement,
                        [r.path for r in inputs.records[:4]], views)
    summary = extract_features(model, inputs, out, grid, views, tokens=args.tokens, workers=args.workers,
                               batch_size=args.batch_size, placement=placement, progress=sys.stderr.isatty(),
                               selector=args.selector, checkpoint=args.checkpoint, window=args.window,
                               stride=args.stride)
    from fluxvit import distributed

    if not distributed.current().is_main:
        return 0
    for line in summary.broken:
        print(f"skipped broken video: {line}", file=sys.stderr)
    if args.json:
        print(_json(summary.to_dict()))
    else:
        shapes = "  ".join(f"{k} {'x'.join(map(str, v))}" for k, v in summary.shapes.items())
        rows = f"{summary.rows} windows of {summary.inputs} videos" if args.window else \
            f"{summary.rows} of {summary.inputs} videos"
        print(f"wrote {out}: {rows} ({len(summary.broken)} broken) at {grid}, "
              f"{grid.num_tokens(model.patch_size)} tokens: {shapes}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import contextlib
    from pathlib import Path

    from fluxvit.evaluate.predict import (
        PREDICTION_FORMATS,
        PredictionError,
        check_topk,
        expand_videos,
        predict_videos,
        show_tokens,
    )
    from fluxvit.evaluate.runner import Views, check_loading

    views = Views.parse(args.views)  # the values first, before any file is read
    check_topk(args.topk)
    check_loading(args.batch_size, args.workers or 0)
    timeline = _check_timeline(args)
    out = Path(args.out) if args.out else None
    if args.show_tokens is not None and Path(args.show_tokens).suffix.lower() != ".png":
        raise ConfigError(f"--show-tokens {args.show_tokens}: the picture is a PNG file; name it .png")
    if out is not None and out.suffix.lower() not in PREDICTION_FORMATS:
        raise ConfigError(f"--out {out}: predictions are written to a .csv or .jsonl file")
    if out is not None:
        from fluxvit.files import refuse_existing_output

        refuse_existing_output(out, "--out")
    paths = expand_videos(args.videos, _extensions(args.extensions)) if args.videos else []
    if not paths and args.stream is None:
        raise ConfigError(f"no video file ({args.extensions}) in {', '.join(args.videos)}" if args.videos else
                          "give the videos to classify (or --stream SRC)")
    from fluxvit.files import refuse_overwriting_input

    inputs = [*paths, args.checkpoint, *([args.stream] if args.stream is not None else [])]
    if out is not None:
        refuse_overwriting_input(out, inputs, "--out")
    if args.show_tokens:
        for i in range(len(paths)):
            refuse_overwriting_input(args.show_tokens if len(paths) == 1 else _numbered(args.show_tokens, i), inputs,
                                     "--show-tokens")
    model = _load_model(args.checkpoint, predict=args, view_offsets=args.view_offsets)
    placement = _placement(args)
    model, placement = _accelerate(model, args, placement)
    grid = _budget_grid(model, args.checkpoint, args.budget, args.grid, args.latency_ms, placement, paths[:4],
                        views)
    if timeline:
        return _predict_timeline(args, model, grid, views, placement, paths, out)
    # Two decoding processes by default for a batch of videos: on 2 cores, 640x360 10 s clips went
    # from 2.7 to 4.2 videos/s (one worker: 2.6, decoding-bound); a few videos pay no start-up.
    workers = args.workers if args.workers is not None else (min(2, os.cpu_count() or 1) if len(paths) >= 4 else 0)
    failed = 0
    with contextlib.ExitStack() as stack:
        writer = None
        if out is not None:
            writer = _prediction_writer(stack, out)
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
                try:  # a picture that cannot be written costs that picture, not the run's other results
                    show_tokens(model, result.path, grid, picture, selector=args.selector, placement=placement)
                except FluxViTError as e:
                    failed += 1
                    print(f"fluxvit predict: error: {e}", file=sys.stderr)
            if args.json:
                print(_json(result.to_dict()), flush=True)
            else:
                print(f"{result.path}: {', '.join(f'{name} {p:.1%}' for name, p in result.top)}", flush=True)
    if out is not None:
        print(f"wrote {out}: {len(paths) - failed} predictions, {failed} errors", file=sys.stderr)
    return EXIT_USER_ERROR if failed else 0


def _prediction_writer(stack, out, timeline: bool = False):
    """A PredictionWriter into ``out`` (.csv or .jsonl) that ``stack`` (an ExitStack) commits
    atomically when it closes without an error; file names that are not UTF-8 keep their bytes."""
    from fluxvit.atomic import TEXT_ERRORS, atomic_write
    from fluxvit.evaluate.predict import PredictionWriter

    tmp = stack.enter_context(atomic_write(out))
    file = stack.enter_context(open(tmp, "w", newline="", encoding="utf-8", errors=TEXT_ERRORS))
    return PredictionWriter(file, out.suffix.lower(), timeline=timeline)


_STREAM_WINDOW = 2.0  # seconds: the windows of --stream without --window


def _seconds(text: str) -> float:
    """argparse type: seconds, ``2``, ``2s`` or ``1.5s``, finite (the range is the library's:
    :func:`fluxvit.data.windows.check_window`)."""
    s = str(text).strip()
    try:
        value = float(s[:-1] if s.lower().endswith("s") else s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{show(str(text))} is not a number of seconds (2, 2s, 1.5s)") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds, got {show(str(text))}")
    return value


def _check_timeline(args: argparse.Namespace) -> bool:
    """predict's --window, --stride, --stream: whether windows are classified, their values and
    the options they exclude checked before anything is read (--stride defaults to the window)."""
    if args.window is None and args.stride is None and args.stream is None:
        if args.stream_format is not None:
            raise ConfigError("--stream-format goes with --stream")
        return False
    if args.window is None and args.stream is None:
        raise ConfigError("--stride goes with --window (the length of each window)")
    if args.stream is not None and args.videos:
        raise ConfigError("give video files (with --window) or --stream, not both")
    if args.stream_format is not None and args.stream is None:
        raise ConfigError("--stream-format goes with --stream")
    for flag, value in (("--show-tokens", args.show_tokens), ("--workers", args.workers)):
        if value is not None:
            raise ConfigError(f"{flag} is for whole videos; windows (--window, --stream) are decoded in one pass")
    from fluxvit.data.windows import check_window

    args.window = _STREAM_WINDOW if args.window is None else args.window
    args.stride = args.window if args.stride is None else args.stride
    try:
        check_window(args.window, args.stride)
    except ConfigError as e:  # its message starts with the value's name: say it as the option
        raise ConfigError(f"--{e}") from None
    return True


def _predict_timeline(args: argparse.Namespace, model, grid, views, placement, paths, out) -> int:
    """predict --window / --stream: one row per window as each is ready (``VIDEO START-END s:
    LABEL P``, or JSON), also to --out. Under --stream, Ctrl-C ends the run cleanly: exit 0, the
    rows so far printed and written; a second Ctrl-C interrupts at once."""
    import contextlib
    import threading

    from fluxvit.evaluate.predict import PredictionError, predict_windows

    live = args.stream is not None
    stop = threading.Event()
    rows = failed = 0
    with contextlib.ExitStack() as stack:
        if live:  # first, so undone last: a Ctrl-C while --out is committed still only stops
            _stop_on_interrupt(stop, stack)
        writer = None
        if out is not None:
            writer = _prediction_writer(stack, out, timeline=True)
        # a stream's windows are classified as each completes; a file's a batch at a time
        results = predict_windows(model, [args.stream] if live else paths, grid, args.window, args.stride, views,
                                  args.topk, 1 if live else args.batch_size, args.selector, placement, live=live,
                                  stream_format=args.stream_format, stop=stop)
        for result in results:
            if writer is not None:
                writer.write(result)
            if isinstance(result, PredictionError):
                failed += 1
                print(f"fluxvit predict: error: {result.error}", file=sys.stderr)
                continue
            rows += 1
            if args.json:
                print(_json(result.to_dict()), flush=True)
            else:
                label, prob = result.top[0]
                print(f"{result.path} {result.start:.2f}-{result.end:.2f} s: {label} {prob:.1%}", flush=True)
    if stop.is_set():
        print(f"fluxvit predict: stopped (Ctrl-C) after {rows} windows", file=sys.stderr)
    if out is not None:
        print(f"wrote {out}: {rows} windows, {failed} errors", file=sys.stderr)
    return EXIT_USER_ERROR if failed else 0


def _stop_on_interrupt(stop, stack) -> None:
    """Until ``stack`` (an ExitStack) closes, Ctrl-C (SIGINT) sets ``stop`` instead of
    interrupting, once: the handler in place before comes back at the first, so a second Ctrl-C
    interrupts. Only the main thread owns signals; elsewhere nothing changes."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGINT)
    previous = signal.default_int_handler if previous is None else previous

    def handler(signum, frame) -> None:
        stop.set()
        signal.signal(signal.SIGINT, previous)

    signal.signal(signal.SIGINT, handler)
    stack.callback(signal.signal, signal.SIGINT, previous)


def _extensions(text: str) -> list[str]:
    values = [v.strip() for v in str(text).split(",") if v.strip()]
    if not values:
        raise ConfigError(f"--extensions {text!r} names no file extension")
    return values


def _numbered(path: str, i: int) -> str:
    from pathlib import Path

    p = Path(path)
    return str(p.with_name(f"{p.stem}_{i:03d}{p.suffix or '.png'}"))


def _add_placement(p) -> None:
    # Values are checked when the command runs (fluxvit.placement), so that --help needs no torch.
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N (default auto)")
    p.add_argument("--dtype", default="auto",
                   help="precision: auto (bf16 where this hardware's bf16 matrix math is measured faster, "
                        "else fp32), fp32, bf16, fp16 (CUDA only); default auto")


def _add_acceleration(p) -> None:
    # the choices are fluxvit.acceleration.QUANTIZE_CHOICES, written out so that --help needs no torch
    p.add_argument("--quantize", default="none", choices=("none", "int8"),
                   help="int8: the transformer blocks' linears in int8 (dynamic quantization, CPU only; the rest "
                        "stays fp32); default none")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the transformer blocks (compiled at the first forward of each shape; "
                        "eager, with one log line, where the compiler cannot run)")


def _join(values) -> str:
    return ",".join(str(v) for v in values)


def _add_view_offsets(p) -> None:
    # (checked where it is applied, fluxvit.data.sampling.VIEW_OFFSETS: building the parser imports no torch)
    p.add_argument("--view-offsets", default=None, metavar="between|start",
                   help="where test clip k of K sits in each segment: between, (k+1)/(K+1), the release's Kinetics; "
                        "start, k/K, its SSv2 (default: as the checkpoint was trained, else between)")


def _add_eval_commands(sub) -> None:
    from fluxvit.data.annotations import VIDEO_EXTENSIONS
    from fluxvit.evaluate.token_optimization import SearchSpace

    def common(p, with_data: bool = True) -> None:
        p.add_argument("--checkpoint", required=True, help="a fluxvit checkpoint (.safetensors or directory)")
        _add_placement(p)
        if with_data:
            p.add_argument("--data", required=True, help="annotation file (`relative/path.mp4 label` per line, or a "
                           "CSV with path,label columns), or a folder of CLASS/video.mp4 subfolders")
            p.add_argument("--data-root", default=None, help="folder the CSV's paths are relative to")
            p.add_argument("--workers", type=_int, default=0, help="DataLoader worker processes")

    def sampling(p) -> None:
        p.add_argument("--budget", type=_int, default=None, help="tokens kept (default: all)")
        p.add_argument("--latency-ms", type=_float, default=None,
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
    _add_acceleration(p)
    p.add_argument("--views", default="4x3", help="CLIPSxCROPS test views per video (default 4x3)")
    _add_view_offsets(p)
    p.add_argument("--batch-size", type=_int, default=1,
                   help="videos per forward (all their views at once; default 1)")
    p.add_argument("--head", type=_int, default=None, help="head index, from 0 (default: nearest budget)")
    p.add_argument("--per-class", action="store_true", help="also print each class's accuracy")
    p.add_argument("--save-features", default=None, help="write pooled clip embeddings to this .safetensors")
    p.add_argument("--report", default=None, metavar="DIR",
                   help="also write where the model fails to DIR (new or empty): report.md, predictions.csv, "
                        "per_class.csv (precision/recall/F1), confusion.csv and confusion.png")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = _add(sub, "optimize", "Token Optimization: the best sampling grid for each token budget",
             "fluxvit optimize --checkpoint runs/demo/flux.safetensors --data val.csv --budgets 64,128,256",
             cmd_optimize)
    common(p)
    p.add_argument("--budgets", required=True, type=_ints, help="comma-separated token budgets")
    space = SearchSpace()  # the library's defaults are the command line's
    p.add_argument("--frames", default=_join(space.frames), type=_ints,
                   help=f"candidate frame counts (default {_join(space.frames)})")
    p.add_argument("--sizes", default=_join(space.sizes), type=_ints,
                   help=f"candidate resolutions, multiples of the patch size (default {_join(space.sizes)})")
    p.add_argument("--max-factor", type=_float, default=space.max_factor,
                   help=f"skip grids with more than this x budget patches (default {space.max_factor:g})")
    p.add_argument("--views", default="1x1", help="CLIPSxCROPS views while searching (default 1x1)")
    _add_view_offsets(p)
    p.add_argument("--subset", type=_float, default=0.3, help="fraction of videos for the first pass")
    p.add_argument("--refine", type=_int, default=3, help="best candidates re-scored on all videos")
    p.add_argument("--min-gain-se", type=_float, default=2.0,
                   help="keep the model's default grid unless another beats it by more than this many standard "
                        "errors of the paired difference on the same videos (0: take the best outright, as the paper)")
    p.add_argument("--cost", choices=("gflops", "latency"), default="gflops",
                   help="gflops: the best grid per token budget (default); latency: also the most accurate grid and "
                        "budget whose end-to-end time here (decode + preprocess + forward) fits --latency-ms")
    p.add_argument("--latency-ms", type=_float, default=None, help="the end-to-end target of --cost latency")
    p.add_argument("--out", default="runs/optimize", help="folder for report.md and the plot")
    p.add_argument("--save-to", default=None, help="checkpoint to store the choices in (default: --checkpoint)")

    p = _add(sub, "features", "clip embeddings (or every kept token's features) of videos, to a .safetensors file",
             "fluxvit features clips/ --checkpoint runs/demo/flux.safetensors --budget 128 --out feats.safetensors",
             cmd_features)
    p.add_argument("videos", nargs="+", help="video files or folders (searched recursively by --extensions; no labels "
                   "needed), or one annotation file (.csv/.txt: its labels are stored too)")
    common(p, with_data=False)
    sampling(p)
    p.add_argument("--out", required=True, help="the .safetensors file to write (never an existing file)")
    p.add_argument("--tokens", action="store_true",
                   help="also every kept token's features after the last block, with (t, y, x) positions and the "
                        "kept indices (size checked against FLUXVIT_MAX_FEATURE_BYTES)")
    p.add_argument("--views", default="1x1", help="CLIPSxCROPS views per video; the clip feature is their mean "
                   "(default 1x1)")
    _add_view_offsets(p)
    p.add_argument("--window", type=_seconds, default=None, metavar="S",
                   help="one row per window of S seconds of each video (2, 2s, 1.5s), each video decoded once in "
                        "order; a last window shorter than half of S joins the one before")
    p.add_argument("--stride", type=_seconds, default=None, metavar="S",
                   help="seconds from one window's start to the next (default: the window)")
    p.add_argument("--batch-size", type=_int, default=1, help="videos per forward (default 1)")
    p.add_argument("--workers", type=_int, default=0, help="decoding processes (default 0)")
    p.add_argument("--data-root", default=None, help="folder an annotation file's paths are relative to")
    p.add_argument("--extensions", default=",".join(e.lstrip(".") for e in VIDEO_EXTENSIONS),
                   help="file extensions taken from folders (default: common video containers)")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = _add(sub, "predict", "classify videos: top-k class names with probabilities",
             "fluxvit predict clip.mp4 --checkpoint runs/demo/flux.safetensors --budget 128 --show-tokens t.png",
             cmd_predict)
    p.add_argument("videos", nargs="*", help="video files, or folders (searched recursively by --extensions)")
    common(p, with_data=False)
    sampling(p)
    _add_acceleration(p)
    p.add_argument("--views", default="1x1", help="CLIPSxCROPS views per video (default 1x1)")
    _add_view_offsets(p)
    p.add_argument("--out", default=None, help="also write one row per video (errors too) to this .csv or .jsonl, "
                   "as the results come; an existing file is never overwritten")
    p.add_argument("--batch-size", type=_int, default=4, help="videos per forward (default 4)")
    p.add_argument("--workers", type=_int, default=None,
                   help="decoding processes, working while the model runs (default: 2 for 4 videos or more, else 0)")
    p.add_argument("--extensions", default=",".join(e.lstrip(".") for e in VIDEO_EXTENSIONS),
                   help="file extensions taken from folders (default: common video containers)")
    p.add_argument("--topk", type=_int, default=5, help="classes reported per video (default 5; at most all)")
    p.add_argument("--json", action="store_true", help="one JSON object per video")
    p.add_argument("--show-tokens", default=None, help="PNG of the kept (bright) and dropped (dim) tokens")
    p.add_argument("--window", type=_seconds, default=None, metavar="S",
                   help="classify long videos window by window, S seconds each (2, 2s, 1.5s): a timeline, one row per "
                        "window, each video decoded once in order; a last window shorter than half of S joins the one "
                        "before")
    p.add_argument("--stride", type=_seconds, default=None, metavar="S",
                   help="seconds from one window's start to the next (default: the window; longer leaves gaps)")
    p.add_argument("--stream", default=None, metavar="URL_OR_DEVICE",
                   help="classify a live stream window by window (rtsp://, http://, a device, a pipe or a file) until "
                        "it ends or Ctrl-C, which stops cleanly after the rows so far (default --window "
                        f"{_STREAM_WINDOW:g})")
    p.add_argument("--stream-format", default=None, metavar="FORMAT",
                   help="FFmpeg input format of --stream (v4l2 for /dev/video0, mpegts, ...; default: detected)")


# ----------------------------------------------------------------------------- bench
def cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from fluxvit.evaluate.speed import check_case, forward_speed, machine
    from fluxvit.flux.grid import Grid
    from fluxvit.models import create_model
    from fluxvit.models.registry import model_config
    from fluxvit.placement import dtype_name
    from fluxvit.timing import matmul_gflops

    placement = _acceleration_placement(args, _placement(args))
    if args.out:
        from fluxvit.files import refuse_existing_output

        refuse_existing_output(args.out, "--out")
    if args.end_to_end:
        from fluxvit.data.video import check_file

        check_file(args.end_to_end)
    cases = {}  # every case is checked before the first model is built or timed
    for name in args.models:
        cfg = model_config(name)
        base = Grid.parse(args.grid) if args.grid else Grid(*cfg.default_grid)
        per_frame = base.num_patches(cfg.patch_size) // base.frames
        for tokens in args.tokens:
            # Enough frames of the base resolution to hold the budget (selection cuts the rest).
            grid = Grid(max(base.frames, -(-tokens // per_frame)), base.height, base.width)
            for batch in args.batch:
                check_case(grid, tokens, batch, args.repeats, cfg.patch_size)
                cases.setdefault(name, []).append((tokens, grid, batch))
    device = placement.device
    dtype = None if placement.dtype == torch.float32 else placement.dtype
    peak = matmul_gflops(placement.dtype, device=device)
    rows = []
    for name, measured in cases.items():
        model, _ = _accelerate(create_model(name).to(device).eval(), args, placement)
        for tokens, grid, batch in measured:
            row = forward_speed(model, grid, tokens, batch, dtype, args.repeats, peak).to_dict()
            if args.end_to_end and batch == 1:  # one request: decode + preprocess + forward
                from fluxvit.evaluate.latency import measure_end_to_end

                request = grid.with_budget(tokens)
                row["end_to_end"] = measure_end_to_end(model, args.end_to_end, [request], None, placement,
                                                       args.repeats)[request].to_dict()
            rows.append(row)
            if not args.json:
                share = row["fraction_of_peak"]
                print(f"{name:<24} {tokens:>6} tokens  {row['grid']:>8}  batch {batch:<3} {row['ms']:>9.1f} ms"
                      f"  {row['gflop_per_s']:>7.1f} GFLOP/s  "
                      f"{'    -' if share is None else f'{100 * share:5.1f}'}% of peak"
                      + ("  end to end {total_ms:.1f} ms (decode {decode_ms:.1f}, preprocess {preprocess_ms:.1f})"
                         .format(**row["end_to_end"]) if "end_to_end" in row else ""), flush=True)
    chosen = dtype_name(placement.dtype)
    result = {"machine": machine(device), "dtype": chosen, "dtype_asked": args.dtype,
              "matmul_peak_gflops": round(peak, 1), "quantize": args.quantize, "compile": args.compile,
              "rows": rows}
    if args.json:
        print(_json(result))
    else:
        print(f"matmul peak here: {peak:.0f} GFLOP/s ({chosen}{', chosen by auto' if args.dtype == 'auto' else ''})")
    if args.out:
        from fluxvit.atomic import write_text

        write_text(args.out, _json(result, indent=2))
    return 0


def _add_bench(sub) -> None:
    p = _add(sub, "bench", "forward speed on this machine: ms per batch, GFLOP/s and fraction of the matmul peak "
             "at each token budget", "fluxvit bench fluxvit_small_patch14 --tokens 512,1024,2048 --batch 1,2",
             cmd_bench)
    p.add_argument("models", nargs="*", default=["fluxvit_small_patch14"], help="registered model names")
    p.add_argument("--tokens", default="512,1024,2048,3072", type=_ints, help="token budgets, comma-separated")
    p.add_argument("--grid", default=None, help="base sampling grid TxR (default: the model's); more frames "
                   "are sampled when a budget needs them")
    p.add_argument("--batch", default="1", type=_ints, help="batch sizes, comma-separated")
    _add_placement(p)
    _add_acceleration(p)
    p.set_defaults(dtype="fp32")  # a benchmark measures what it is told to; --dtype auto shows auto's choice
    p.add_argument("--repeats", type=_int, default=3, help="timed calls per case (median reported)")
    p.add_argument("--end-to-end", default=None, metavar="VIDEO",
                   help="also time whole requests on this video at batch 1: decoding the grid's frames, "
                        "preprocessing and the forward")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--out", default=None, help="also write the JSON to this file")


# ----------------------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace) -> int:
    import dataclasses

    from fluxvit.demo import DemoSettings, run_demo
    from fluxvit.train.config import apply_overrides

    settings = DemoSettings.quick(args.out or "runs/demo-quick", args.seed) if args.quick else \
        DemoSettings(out=args.out or "runs/demo", seed=args.seed)
    named = {"steps": args.steps, "data": args.data, "model": args.model, "variant": args.variant}
    settings = dataclasses.replace(settings, **{k: v for k, v in named.items() if v is not None})
    apply_overrides(settings, args.set or [])
    settings.check()  # the combination (budgets within the model's grid), before any work
    if args.seeds is not None:
        from fluxvit.demo import run_demo_seeds

        over = run_demo_seeds(settings, args.seeds)
        print(over.table)
        print("\nFlux + TO minus each baseline way, paired on the same seeds and clips:\n")
        print(over.comparison)
        print("\n" + "\n".join(str(c) for c in over.claims))
        print(f"\nwrote {over.summary} (and each seed's run in {settings.out}/seed-K) in {over.seconds / 60:.1f} min")
        return 0
    result = run_demo(settings)
    print(result.table)
    print(f"\nwrote {result.report}, {result.plot} and checkpoints "
          f"{', '.join(str(p) for p in result.checkpoints.values())} in {result.seconds / 60:.1f} min")
    return 0


def _add_demo(sub) -> None:
    from fluxvit.data.synthetic import VARIANTS

    p = _add(sub, "demo", "the main job: synthetic benchmark, fixed-grid vs Flux training, Token Optimization, "
             "accuracy/GFLOPs/latency table, plot and report", "fluxvit demo --quick", cmd_demo)
    p.add_argument("--out", default=None, help="output folder (default runs/demo, or runs/demo-quick)")
    p.add_argument("--quick", action="store_true",
                   help="about a minute: every stage on little data (a smoke run; accuracies stay near chance)")
    p.add_argument("--seed", type=_int, default=0,
                   help="seeds the benchmark, both models and their data order; "
                        "same seed, same weights and accuracies (default 0)")
    p.add_argument("--seeds", type=_int, default=None, metavar="N",
                   help="repeat the whole experiment for seeds SEED .. SEED+N-1 (each into OUT/seed-K; a "
                        "finished seed with the same settings is reused) and report mean ± sd per cell, Flux + TO "
                        "paired against each baseline way, and whether the demo's claims hold")
    p.add_argument("--steps", type=_int, default=None, help="training steps per model (override)")
    p.add_argument("--data", default=None,
                   help="your own dataset instead of the synthetic benchmark: a folder written by `fluxvit prepare` "
                        "(train.csv, val.csv = the tune split, test.csv; without test.csv, val.csv is halved)")
    p.add_argument("--variant", default=None, choices=sorted(VARIANTS),
                   help="which synthetic benchmark (`fluxvit synth --help` tells how each is built; default: default)")
    p.add_argument("--model", default=None, help="architecture of both models (default fluxvit_nano_patch14; the "
                   "baseline trains on its default grid)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="any demo setting (repeatable), e.g. --set budgets=[64,128,256] --set flux_sizes=[168,224,28] "
                        "--set search_sizes=[112,168,224]; the full list is in report.md's settings")


# ----------------------------------------------------------------------------- export
def cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fluxvit.evaluate.exported import FORMATS
    from fluxvit.files import refuse_overwriting_input

    out = Path(args.out)
    kind = args.format or next((k for k, suffix in FORMATS.items() if out.suffix.lower() == suffix), None)
    if kind not in FORMATS:
        shown = f"--format {args.format}" if args.format else f"{out}: its suffix"
        raise ConfigError(f"{shown} names no export format; choose from {', '.join(FORMATS)} "
                          f"({', '.join(FORMATS.values())})")
    if out.exists():  # refused before the model is read
        raise ConfigError(f"{out}: exists; choose a new name (exported models are never overwritten)")
    refuse_overwriting_input(out, [args.checkpoint], "OUT")
    from fluxvit.evaluate.runner import sampling_grid
    from fluxvit.export import export_model
    from fluxvit.flux.grid import Grid

    model = _load_model(args.checkpoint, view_offsets=args.view_offsets)
    grid = Grid.parse(args.grid, budget=args.budget) if args.grid else sampling_grid(model, args.budget)
    export_model(model, out, grid, format=kind, views=args.views, batch=args.batch, selector=args.selector,
                 head=args.head)
    return 0


def _add_export(sub) -> None:
    p = _add(sub, "export", "a checkpoint at one grid and budget as one deployment file (ONNX or torch.export): "
             "selection and head inside, classes and preprocessing in its metadata",
             "fluxvit export nano.safetensors nano_8x112_128.onnx --grid 8x112 --budget 128", cmd_export)
    p.add_argument("checkpoint", help="a fluxvit checkpoint (.safetensors file or folder)")
    p.add_argument("out", help="the file to write: .onnx (ONNX) or .pt2 (torch.export); never overwritten")
    p.add_argument("--grid", default=None,
                   help="sampling grid TxR or TxHxW the deployment feeds (default: TO's choice, else the model's)")
    p.add_argument("--budget", type=_int, default=None, help="tokens kept after selection (default: all)")
    p.add_argument("--format", default=None, help="onnx or torch-export (default: from OUT's suffix)")
    p.add_argument("--selector", default="group_dynamic",
                   help="token selector inside the graph: group_dynamic (default), group_dynamic_release, uniform "
                        "or static_drop")
    p.add_argument("--head", type=_int, default=None, help="head index, from 0 (default: nearest the budget)")
    p.add_argument("--views", default="1x1", help="views per video in one call, CLIPSxCROPS (default 1x1)")
    _add_view_offsets(p)
    p.add_argument("--batch", type=_int, default=1, help="videos per call (default 1); the graph's batch is "
                   "videos x views")


# ----------------------------------------------------------------------------- serve
def cmd_serve(args: argparse.Namespace) -> int:
    from fluxvit.serve import check_installed

    check_installed()
    from fluxvit.files import directory, regular_file
    from fluxvit.serve.server import Launch, run
    from fluxvit.serve.settings import ServeSettings
    from fluxvit.typecheck import in_range

    in_range(args.port, "--port", lo=0, hi=65535, what="option")
    in_range(args.workers, "--workers", lo=1, hi=256, what="option")
    in_range(args.shutdown_timeout_s, "--shutdown-timeout-s", lo=0, hi=3600, what="option")
    media_root = str(directory(args.media_root, "--media-root folder")) if args.media_root else None
    sample = str(regular_file(args.sample_video, "--sample-video")) if args.sample_video else None
    settings = ServeSettings(
        latency_ms=args.latency_ms, budget_mode=args.budget, max_budget=args.max_budget, views=args.views,
        selector=args.selector, max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms,
        decode_workers=args.decode_workers, max_concurrent=args.max_concurrent, max_upload_mb=args.max_upload_mb,
        decode_timeout_s=args.decode_timeout_s, media_root=media_root, sample_video=sample)
    # What a server process would refuse is one line here, before any process starts: a bad
    # checkpoint or stored record, an unreadable sample video, a device or precision not here.
    from fluxvit.serve.service import candidate_points

    model = _load_model(args.checkpoint, view_offsets=args.view_offsets)
    candidate_points(model, args.max_budget)
    if sample is not None:
        from fluxvit.data.video import PyAVReader

        PyAVReader().num_frames(sample)
    _acceleration_placement(args, _placement(args))
    run(Launch(args.checkpoint, args.device, args.dtype, args.quantize, args.compile, settings), args.host,
        args.port, args.workers, args.shutdown_timeout_s, model=model)
    return 0


def _add_serve(sub) -> None:
    from fluxvit.serve.settings import ServeSettings as S

    p = _add(sub, "serve", "an HTTP service (FastAPI) that classifies videos and lowers the token budget under load "
             "to hold a latency target; needs the serve extra (pip install 'fluxvit[serve]')",
             "fluxvit serve --checkpoint runs/demo/flux/model.safetensors --latency-ms 250 --port 8000", cmd_serve)
    p.add_argument("--checkpoint", required=True, help="a fluxvit checkpoint (its TO choices are the budgets served)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_int, default=8000, help="port (default 8000; 0: any free port)")
    p.add_argument("--latency-ms", type=_float, default=S.latency_ms,
                   help=f"end-to-end latency target per request (default {S.latency_ms:g})")
    p.add_argument("--budget", default=S.budget_mode, choices=("adaptive", "fixed"),
                   help="adaptive (default): fewer tokens when busy, 503 when even the fewest cannot make the "
                        "target; fixed: always the largest budget (a plain server)")
    p.add_argument("--max-budget", type=_int, default=None, help="serve no budget above this many tokens")
    p.add_argument("--views", default=S.views, help=f"test views per request, CLIPSxCROPS (default {S.views})")
    _add_view_offsets(p)
    p.add_argument("--selector", default=S.selector, help=f"token selector (default {S.selector})")
    p.add_argument("--max-batch", type=_int, default=S.max_batch,
                   help=f"requests of one grid and budget per forward (default {S.max_batch})")
    p.add_argument("--batch-wait-ms", type=_float, default=S.batch_wait_ms,
                   help=f"how long a forward waits for more requests while others decode (default {S.batch_wait_ms:g})")
    p.add_argument("--decode-workers", type=_int, default=S.decode_workers,
                   help=f"decoding threads (default {S.decode_workers})")
    p.add_argument("--max-concurrent", type=_int, default=S.max_concurrent,
                   help=f"requests in the server at once; more get 503 (default {S.max_concurrent})")
    p.add_argument("--max-upload-mb", type=_float, default=S.max_upload_mb,
                   help=f"largest upload (default {S.max_upload_mb:g} MB)")
    p.add_argument("--decode-timeout-s", type=_float, default=S.decode_timeout_s,
                   help=f"longest one request may decode (default {S.decode_timeout_s:g} s)")
    p.add_argument("--media-root", default=None,
                   help="a folder whose videos requests may name by a relative path (default: uploads only)")
    p.add_argument("--sample-video", default=None,
                   help="a video like those to be served, to measure decoding on at start (default: a 320x240 "
                        "clip made at start)")
    p.add_argument("--workers", type=_int, default=1, help="server processes, each with its own model (default 1)")
    p.add_argument("--shutdown-timeout-s", type=_int, default=30,
                   help="on SIGTERM, how long requests in flight may take to finish (default 30)")
    _add_placement(p)
    _add_acceleration(p)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fluxvit",
        description="Deployment-efficient video transformers (FluxViT): train, evaluate, optimise, predict.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = _add(sub, "flops", "GFLOPs (multiply-adds) of a model at a token budget, as the paper counts them",
             "fluxvit flops fluxvit_small_patch14 --tokens 2048", cmd_flops)
    p.add_argument("model", help="registered model name, e.g. fluxvit_small_patch14, fluxvit_nano_patch14")
    p.add_argument("--tokens", type=_int, default=None, help="token budget N after selection")
    p.add_argument("--grid", default=None, help="sampling grid TxR; patch embedding counted over all of it")
    p.add_argument("--num-classes", type=_int, default=400)
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = _add(sub, "convert", "convert an official release checkpoint into this project's format",
             "fluxvit convert fluxvit_s_k400.pth fluxvit_s_k400.safetensors --model fluxvit_small_patch14",
             cmd_convert)
    p.add_argument("src", help="official .pth/.bin file (raw, or under 'model'/'module')")
    p.add_argument("dst", help="output .safetensors file, or a directory")
    p.add_argument("--model", required=True, help="registered model name")
    p.add_argument("--num-classes", type=_int, default=None, help="default: read from the checkpoint")
    p.add_argument("--classes", default=None, help="classes.txt with one class name a line")

    _add_demo(sub)
    _add_bench(sub)
    _add_synth(sub)
    _add_prepare(sub)
    _add_eval_commands(sub)
    _add_train(sub)
    _add_export(sub)
    _add_serve(sub)
    return parser


_OUT_OF_MEMORY = re.compile(r"out of memory|can't allocate memory|Cannot allocate memory", re.IGNORECASE)
_ALLOCATION = re.compile(r"allocate (\d[\d.]* ?(?:[KMGTP]i?B|bytes))")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(message)s", stream=sys.stderr)
    from fluxvit.runtime import tune_cpu_allocator

    tune_cpu_allocator()  # an application may own the allocator: keep freed activations in-process
    from fluxvit.atomic import TEXT_ERRORS

    if hasattr(sys.stdout, "reconfigure"):  # a file name that is not UTF-8 is printed as its bytes, as ls does,
        sys.stdout.reconfigure(errors=TEXT_ERRORS)  # whatever the locale (stderr escapes it already)
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
    except (MemoryError, RuntimeError) as e:
        # The caps keep each value within reason, not every product of them (a large batch of
        # many views of a large grid): running out of memory is still one line.
        if not isinstance(e, MemoryError) and not _OUT_OF_MEMORY.search(str(e)):
            raise
        size = _ALLOCATION.search(str(e))
        print(f"fluxvit {args.command}: error: out of memory{f' (asked for {size.group(1)})' if size else ''}; "
              "try a smaller batch size, fewer views, a smaller grid or fewer workers", file=sys.stderr)
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
