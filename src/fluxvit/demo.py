"""The main job (``fluxvit demo``): show on a laptop, with no dataset and no GPU, that one
Flux-trained model stays accurate as its token budget shrinks, where a model trained the usual
way does not.

1. Write the synthetic benchmark (real H.264 clips whose classes need time or fine detail).
2. Train a fixed-grid baseline (every clip 8 frames x 112 px = 512 tokens) and a Flux-Multi
   model of the same size (grids drawn per batch, selected to 512/256/128 tokens through three
   heads) for the same number of steps.
3. Token Optimization: on a held-out *tune* split, pick the best grid for each budget.
4. On the separate *test* split, evaluate at budgets from 1/8 to all of the baseline's tokens:
   the baseline with fewer frames and with lower resolution (the usual ways to spend less),
   the baseline with token selection from its own grid (what the selector alone buys), Flux
   with selection from the same grid, and Flux + TO.
5. Print the table, write ``report.md``, the plot and the checkpoints.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from fluxvit import limits
from fluxvit.atomic import write_text
from fluxvit.data.annotations import read_annotations
from fluxvit.data.synthetic import (
    DEFAULT_FRAMES,
    DEFAULT_VARIANT,
    REFERENCE_SIZE,
    get_variant,
    make_synthetic_dataset,
    read_record,
    synth_record,
)
from fluxvit.errors import ConfigError
from fluxvit.evaluate.latency import measure_end_to_end, measure_latency
from fluxvit.evaluate.report import format_gflops, markdown_table, plot_accuracy_vs_gflops
from fluxvit.evaluate.runner import Views, evaluate
from fluxvit.evaluate.token_optimization import SearchSpace
from fluxvit.evaluate.workflow import plain_accuracies, token_optimization_report
from fluxvit.files import aside_name, directory, read_text
from fluxvit.flux.grid import Grid
from fluxvit.models.registry import load_checkpoint, model_config
from fluxvit.train.config import config_from_dict
from fluxvit.typecheck import bounds, check_fields, show

log = logging.getLogger(__name__)

MODEL = "fluxvit_nano_patch14"
MAX_SEEDS = 50  # `demo --seeds`: each seed is a whole demo run (~15 min on 2 cores)
RESULT_FILE = "result.json"  # a finished demo run's rows, per-clip outcomes and settings
SUMMARY_PLOT = "summary_accuracy_vs_gflops.png"  # `demo --seeds`: beside a single run's plot, not over it
TOLERANCE = 1e-9  # a claim's threshold met exactly holds, whatever the float rounding of the mean
#: The plain ways a baseline meets a budget (row keys), and what the tables call them.
BASELINES = {"base_fewer_frames": "baseline, fewer frames", "base_lower_resolution": "baseline, lower res.",
             "base_selection": "baseline + selection"}


@dataclass
class DemoSettings:
    """Everything the demo's numbers depend on (saved with the report)."""

    out: str = "runs/demo"
    # A prepared dataset folder (train.csv, val.csv, optionally test.csv, classes.txt: what
    # `fluxvit prepare` or `fluxvit synth` writes); None: synthesise the benchmark into out/data.
    data: str | None = None
    model: str = MODEL  # the architecture of both models; the baseline trains on its default grid
    # the synthetic benchmark's variant (`fluxvit synth --variant`): how its clips are built
    variant: str = DEFAULT_VARIANT
    seed: int = field(default=0, metadata=bounds(lo=0))
    per_class: int = field(default=80, metadata=bounds(lo=1))  # clips per class (train + tune + test)
    val_fraction: float = field(default=0.4, metadata=bounds(0, 1))  # of each class: half tune, half test
    steps: int = field(default=450, metadata=bounds(lo=1))  # per model: what 2 cores train in ~11 minutes for both
    batch_size: int = field(default=16, metadata=bounds(lo=1))
    # 1e-3, not 2e-3: at 2e-3 a seed-1 baseline stayed at chance (loss ln 10) for all 450 steps;
    # at 1e-3 seeds 1 and 2 both learn (75.6 / 75.0% on 320 held-out clips, cached-clip runs).
    lr: float = field(default=1e-3, metadata=bounds(above=0))
    budgets: tuple[int, ...] = field(default=(64, 128, 256, 512), metadata=bounds(lo=1))  # 1/8 .. 1 of the baseline's
    flux_heads: tuple[int, ...] = field(default=(512, 256, 128), metadata=bounds(lo=1))
    flux_frames: tuple[int, int, int] = field(default=(4, 16, 2), metadata=bounds(lo=1))
    # Full resolution and a little below: under 84 px the 1-px patterns of the detail classes are
    # gone, and batches without their evidence only teach those classes noise.
    flux_sizes: tuple[int, int, int] = field(default=(84, 112, 14), metadata=bounds(lo=1))
    flux_tokens: tuple[int, int] = field(default=(256, 1024), metadata=bounds(lo=1))
    search_frames: tuple[int, ...] = field(default=(2, 4, 6, 8, 12, 16), metadata=bounds(lo=1))
    search_sizes: tuple[int, ...] = field(default=(56, 70, 84, 98, 112), metadata=bounds(lo=1))
    test_views: str = "2x1"
    workers: int = field(default=0, metadata=bounds(lo=0))

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Every setting's type and range (one line naming it), before any work: on creation
        and again when the demo starts (a setting may have been changed since)."""
        if isinstance(self.out, os.PathLike):
            self.out = os.fspath(self.out)
        check_fields(self, "demo setting")
        cfg = model_config(self.model)  # an unknown name: one line listing the known ones
        get_variant(self.variant)  # likewise
        if self.data is not None and self.variant != DEFAULT_VARIANT:
            raise ConfigError(f"demo setting 'variant' {self.variant!r}: chooses the synthetic benchmark; "
                              "with --data the clips are your folder's (leave the variant out)")
        base = self.base_grid.num_patches(cfg.patch_size)
        for name in ("budgets", "flux_heads"):
            if not getattr(self, name):
                raise ConfigError(f"demo setting {name!r} must list at least one token budget")
            too_big = [b for b in getattr(self, name) if b > base]
            if too_big:
                raise ConfigError(f"demo setting {name!r}: {too_big[0]} tokens is more than the baseline grid "
                                  f"{self.base_grid} holds ({base}); the budgets cut that grid")
        limits.BATCH_SIZE.check(self.batch_size, "demo setting 'batch_size'")
        limits.WORKERS.check(self.workers, "demo setting 'workers'")
        Views.parse(self.test_views)
        if self.data is not None and os.path.realpath(self.out) == os.path.realpath(self.data):
            raise ConfigError(f"demo setting 'out' {self.out}: is the --data folder; the demo writes its tune and test "
                              "lists, report and checkpoints there: choose another output folder")
        # what the stages after the first training take, checked before it: both training runs'
        # settings (the flux model trains second) and Token Optimization's grids for every budget
        for name, flux in (("baseline", False), ("flux", True)):
            try:
                config_from_dict(_train_config(self, Path(self.data or "."), Path("tune.csv"), name, flux))
            except ConfigError as e:
                raise ConfigError(f"demo settings: the {name} model's training config: {e}") from None
        try:
            for budget in self.budgets:
                self.search_space().candidates(budget, cfg.patch_size)
        except ConfigError as e:
            raise ConfigError(f"demo settings 'search_frames', 'search_sizes': {e}") from None

    def search_space(self) -> SearchSpace:
        """Where Token Optimization searches a grid for each budget."""
        return SearchSpace(frames=self.search_frames, sizes=self.search_sizes, max_factor=8.0)

    @property
    def base_grid(self) -> Grid:
        """The baseline's fixed grid, where Flux and the baseline are also cut to each budget: the
        architecture's default grid (nano: 8x112, 512 tokens)."""
        return Grid(*model_config(self.model).default_grid)

    @property
    def base_tokens(self) -> int:
        return self.base_grid.num_patches(model_config(self.model).patch_size)

    @classmethod
    def quick(cls, out: str = "runs/demo-quick", seed: int = 0) -> DemoSettings:
        """About one minute on 2 cores: every stage runs on little data for few steps - a smoke
        run of the pipeline; the models learn too little to show the effect (near chance)."""
        return cls(out=out, seed=seed, per_class=16, steps=60, batch_size=8, budgets=(64, 128, 512),
                   search_frames=(4, 8, 16), search_sizes=(56, 112), test_views="1x1")


@dataclass
class DemoResult:
    rows: list[dict]
    table: str
    report: Path
    plot: Path
    checkpoints: dict[str, Path]
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    # budget -> method (a row key: base_fewer_frames, ..., flux_to) -> clip id -> got it right
    outcomes: dict[int, dict[str, dict[str, bool]]] = field(default_factory=dict)


def _settings_record(s: DemoSettings) -> dict:
    """The settings as JSON gives them back (tuples as lists), to compare a finished run's; not
    ``out``, which is where the record lies (the same run, given relative or absolute, or moved)."""
    record = json.loads(json.dumps(asdict(s)))
    del record["out"]
    return record


def _dataset_name(s: DemoSettings) -> str:
    if s.data is not None:
        return f"dataset {s.data}"
    return "synthetic benchmark" if s.variant == DEFAULT_VARIANT else f"synthetic benchmark ({s.variant} variant)"


def _split_val(val_csv: Path, out_dir: Path) -> tuple[Path, Path]:
    """Split a val list into tune (TO's search) and test (every reported number), alternating
    line by line: a list ordered by class (``fluxvit synth``'s) gives both halves every class."""
    lines = [ln for ln in read_text(val_csv, "annotation file").splitlines() if ln.strip()]
    tune, test = lines[0::2], lines[1::2]
    if not test:
        raise ConfigError(f"{val_csv}: {len(lines)} clip(s) cannot be split into a tune and a test half")
    paths = out_dir / "tune.csv", out_dir / "test.csv"
    for p, chunk in zip(paths, (tune, test)):
        write_text(p, "\n".join(chunk) + "\n")
    return paths


def _synth_record(s: DemoSettings) -> dict:
    """The ``synth.json`` of the benchmark these settings synthesise."""
    return synth_record(s.variant, None, s.per_class, REFERENCE_SIZE, DEFAULT_FRAMES, s.seed, s.val_fraction)


def _synthesised_for(data: Path, s: DemoSettings) -> bool:
    """Whether ``data`` holds a finished benchmark made with these settings (one of another seed,
    variant, size or format is written anew)."""
    return read_record(data) == _synth_record(s) and (data / "val.csv").is_file()


def _check_synth_folder(data: Path) -> None:
    """``out/data`` is the demo's to (re)write only if it is new, empty or a synthetic benchmark
    (it has a ``synth.json``): never a user's own dataset that happens to sit there."""
    try:
        foreign = data.is_dir() and not (data / "synth.json").is_file() and any(data.iterdir())
    except OSError as e:
        raise ConfigError(f"{data}: cannot read ({e.strerror or e})") from None
    if foreign:  # (a file in its place: make_synthetic_dataset refuses it)
        raise ConfigError(f"{data}: holds files the demo did not write (no synth.json); the demo synthesises its "
                          "benchmark there: choose another --out (or pass your dataset with --data)")


def _dataset(s: DemoSettings, out: Path) -> tuple[Path, Path, Path]:
    """(data folder, tune list, test list). The user's prepared folder (``s.data``): its val.csv
    is the tune split and test.csv the test split, or, without a test.csv, val.csv is halved as
    for the synthetic benchmark; else the benchmark is synthesised into ``out/data``."""
    if s.data is None:
        data = out / "data"
        if not _synthesised_for(data, s):
            _check_synth_folder(data)
            make_synthetic_dataset(data, per_class=s.per_class, size=REFERENCE_SIZE, frames=DEFAULT_FRAMES,
                                   seed=s.seed, val_fraction=s.val_fraction, variant=s.variant,
                                   overwrite=True, progress=True)
        return (data, *_split_val(data / "val.csv", out))
    data = directory(s.data, "--data")
    missing = [name for name in ("train.csv", "val.csv") if not (data / name).is_file()]
    if missing:
        raise ConfigError(f"--data {s.data}: has no {' or '.join(missing)}; give a folder written by "
                          f"`fluxvit prepare SRC OUT` (or `fluxvit synth`)")
    if (data / "test.csv").is_file():
        return data, data / "val.csv", data / "test.csv"
    return (data, *_split_val(data / "val.csv", out))


def _train_config(s: DemoSettings, data: Path, tune: Path, name: str, flux: bool) -> dict:
    base = s.base_grid
    cfg = {
        "out_dir": str(Path(s.out) / name),
        "seed": s.seed,
        "steps": s.steps,
        "ckpt_every": max(s.steps // 4, 1),
        "progress": None,
        "model": {"name": s.model, "head_budgets": list(s.flux_heads if flux else (s.base_tokens,))},
        # No flip (useless here, and wrong for the opt-in left/right classes) and no crop: the
        # evidence is one actor and 1-px detail, which a Kinetics-style random resized crop
        # would cut away or blur.
        "data": {"source": "csv", "train": str(data / "train.csv"), "val": str(tune),
                 "root": str(data),
                 "batch_size": s.batch_size, "workers": s.workers, "flip": False,
                 # ~0.3 GB of decoded frames: each clip is decoded once instead of every epoch
                 "cache_gb": 2.0,
                 "crop_scale": [1.0, 1.0], "crop_ratio": [1.0, 1.0],
                 # Antialiased resizing keeps the 1-px detail at the small sizes Token Optimization
                 # tries; the release's filter matters only for the release's weights.
                 "resize": "antialias"},
        "optim": {"lr": s.lr, "warmup_steps": max(s.steps // 20, 1), "layer_decay": 1.0, "weight_decay": 0.05,
                  "label_smoothing": 0.1, "clip_grad": 1.0},
        "eval": {"grid": f"{base.frames}x{base.height}"},
    }
    if flux:
        cfg["objective"] = {"name": "flux_multi", "align_weight": 1.0}
        cfg["flux"] = {"frames": list(s.flux_frames), "sizes": list(s.flux_sizes),
                       "min_tokens": s.flux_tokens[0], "max_tokens": s.flux_tokens[1]}
    else:
        cfg["objective"] = {"name": "fixed"}
        cfg["flux"] = {"fixed": f"{base.frames}x{base.height}"}
    return cfg


def run_demo(settings: DemoSettings | None = None) -> DemoResult:
    """Run the whole demo; returns the table rows and where everything was written."""
    from fluxvit.train.trainer import train

    s = settings or DemoSettings()
    s.check()
    out = Path(s.out)
    if os.path.lexists(out / RESULT_FILE):
        # A finished demo run is never overwritten: it moves aside whole (this run synthesises its
        # data again), and until this one finishes the folder holds no result.json.
        aside = aside_name(out)
        out.rename(aside)
        log.warning("moved the finished demo run in %s to %s", out, aside)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    timings: dict[str, float] = {}

    t = time.perf_counter()
    data, tune_csv, test_csv = _dataset(s, out)
    timings["data" if s.data else "synthesise"] = time.perf_counter() - t
    base_grid, base_tokens = s.base_grid, s.base_tokens

    checkpoints = {}
    for name, flux in (("baseline", False), ("flux", True)):
        t = time.perf_counter()
        log.info("training %s (%d steps)", name, s.steps)
        # an earlier, unfinished demo's training run in the folder is moved aside
        result = train(_train_config(s, data, tune_csv, name, flux), overwrite=True)
        checkpoints[name] = result.checkpoint
        timings[f"train_{name}"] = time.perf_counter() - t

    t = time.perf_counter()
    flux_model = load_checkpoint(checkpoints["flux"])
    tune = read_annotations(tune_csv, data)
    space = s.search_space()
    log.info("Token Optimization: budgets %s on %d tune videos", "/".join(map(str, s.budgets)), len(tune))
    to = token_optimization_report(flux_model, tune, list(s.budgets), space, Views(1, 1), subset=0.5,
                                   refine_top=3, out_dir=out / "token_optimization",
                                   save_to=checkpoints["flux"], workers=s.workers, progress=True)
    timings["token_optimization"] = time.perf_counter() - t

    t = time.perf_counter()
    base_model = load_checkpoint(checkpoints["baseline"])
    test = read_annotations(test_csv, data)
    views = Views.parse(s.test_views)
    log.info("evaluating both models on %d test videos (%s views) at budgets %s", len(test), views,
             "/".join(map(str, s.budgets)))
    latency = measure_latency(flux_model, base_grid, list(s.budgets), use_cache=False)
    # what a user waits for with the grid TO chose: decoding its frames, preprocessing, the forward
    chosen = [to.choices[b].best for b in s.budgets]
    end_to_end = measure_end_to_end(flux_model, test.records[0].path, chosen, views)
    rows, outcomes = [], {}
    for budget in s.budgets:
        row: dict = {"budget": budget, "fraction": f"1/{base_tokens // budget}" if budget < base_tokens else "1",
                     "gflops": flux_model.estimate_flops(budget).paper / 1e9, "ms": latency[budget]}
        scored = {}  # method -> its per-clip outcomes, for comparisons over seeds
        for method, (grid, res) in plain_accuracies(base_model, test, budget, views, s.workers,
                                                    per_video=True).items():
            row[f"base_{method}"], row[f"base_{method}_grid"] = res.top1, str(grid)
            scored[f"base_{method}"] = res.per_video
        # The same selection on the baseline separates what the selector alone buys from what
        # Flux training adds.
        for key, model in (("base_selection", base_model), ("flux", flux_model)):
            res = evaluate(model, test, base_grid.with_budget(budget), views, workers=s.workers, per_video=True)
            row[key], scored[key] = res.top1, res.per_video
        choice = to.choices[budget]
        best = choice.best
        if best == base_grid.with_budget(budget):
            row["flux_to"], scored["flux_to"] = row["flux"], scored["flux"]
        else:
            res = evaluate(flux_model, test, best, views, workers=s.workers, per_video=True)
            row["flux_to"], scored["flux_to"] = res.top1, res.per_video
        # TO's guard on trial: the best other grid on tune, and how it does on test (whether the
        # guard kept the default grid or not), to see if its threshold suits the tune split's size
        if choice.challenger is not None:
            row["to_challenger"], row["to_gain_se"] = str(choice.challenger.with_budget(None)), choice.gain_se
            if choice.challenger == best:
                row["flux_challenger"], scored["flux_challenger"] = row["flux_to"], scored["flux_to"]
            else:
                res = evaluate(flux_model, test, choice.challenger, views, workers=s.workers, per_video=True)
                row["flux_challenger"], scored["flux_challenger"] = res.top1, res.per_video
        row["to_grid"] = str(best.with_budget(None))
        row["to_ms"] = end_to_end[best].total_ms
        rows.append(row)
        outcomes[budget] = {m: {str(clip): bool(ok) for clip, ok in o.items()} for m, o in scored.items()}
        log.info("budget %d: %s", budget, {k: v for k, v in row.items() if k != "budget"})
    timings["evaluate"] = time.perf_counter() - t

    base = f"{base_grid.frames}x{base_grid.height}"
    dataset = _dataset_name(s)
    columns = [("budget", "tokens"), ("fraction", "of baseline"), ("gflops", "GFLOPs", format_gflops),
               ("ms", "ms/clip"), *BASELINES.items(), ("flux", f"Flux ({base} + selection)"),
               ("flux_to", "Flux + TO"), ("to_grid", "TO grid"), ("to_ms", "Flux + TO end-to-end ms")]
    table = markdown_table(rows, columns)
    gfl = {r["budget"]: r["gflops"] for r in rows}
    series = {
        "baseline, fewer frames": [(gfl[r["budget"]], r.get("base_fewer_frames")) for r in rows],
        "baseline, lower resolution": [(gfl[r["budget"]], r.get("base_lower_resolution")) for r in rows],
        f"baseline, selection from {base}": [(gfl[r["budget"]], r["base_selection"]) for r in rows],
        f"Flux, selection from {base}": [(gfl[r["budget"]], r["flux"]) for r in rows],
        "Flux + Token Optimization": [(gfl[r["budget"]], r["flux_to"]) for r in rows],
    }
    plot = plot_accuracy_vs_gflops(series, out / "accuracy_vs_gflops.png",
                                   title=f"{dataset}: accuracy vs compute (test split)")
    ms_plot = plot_accuracy_vs_gflops({"Flux + Token Optimization": [(r["to_ms"], r["flux_to"]) for r in rows]},
                                      out / "accuracy_vs_ms.png", xlabel="ms per video, end to end (measured here)",
                                      title="Flux + TO: accuracy vs measured latency (test split)")
    seconds = time.perf_counter() - start
    report = write_text(out / "report.md",
        "# fluxvit demo\n\n"
        f"{dataset}: `{s.model}` trained for {s.steps} steps (batch {s.batch_size}) twice: a fixed-grid baseline "
        f"({base_grid.frames}x{base_grid.height}, {base_tokens} tokens) and Flux-Multi "
        f"(heads at {'/'.join(map(str, s.flux_heads))} tokens). Token Optimization searched on the tune split; "
        f"every accuracy below is top-1 (%) on the separate test split ({len(test)} videos, {views} views). "
        f"GFLOPs: the encoder at the budget, per view. ms/clip: the forward at {base}, measured here, batch 1. "
        f"End-to-end ms: one test video at TO's grid, decoding its frames + preprocessing + the forward "
        f"({views} views), measured here.\n\n"
        f"{table}\n\n![accuracy vs GFLOPs](accuracy_vs_gflops.png) ![accuracy vs ms]({ms_plot.name})\n\n"
        f"Token Optimization on the tune split:\n\n{to.table}\n\n"
        f"Run time: {seconds / 60:.1f} min ({', '.join(f'{k} {v:.0f}s' for k, v in timings.items())}).\n\n"
        f"Settings:\n\n```json\n{json.dumps(asdict(s), indent=1)}\n```\n"
    )
    result = DemoResult(rows, table, report, plot, checkpoints, seconds, timings, outcomes)
    write_result(result, s)
    return result


def write_result(result: DemoResult, s: DemoSettings) -> Path:
    """``out/result.json``: everything a run's numbers are, for comparisons over seeds (``demo
    --seeds``). Written last, so a folder with it holds a finished run."""
    return write_text(Path(s.out) / RESULT_FILE, json.dumps({
        "settings": _settings_record(s), "rows": result.rows,
        "outcomes": {str(b): o for b, o in result.outcomes.items()},
        "timings": result.timings, "seconds": result.seconds}) + "\n")


# ----------------------------------------------------------------------------- over seeds
@dataclass(frozen=True)
class Claim:
    """One claim of the demo checked over seeds: what it says, whether it holds, the numbers."""

    text: str
    holds: bool
    detail: str

    def __str__(self) -> str:
        return f"[{'holds' if self.holds else 'does not hold'}] {self.text}: {self.detail}"


@dataclass
class SeedsResult:
    """``demo --seeds N``: each seed's run (``runs[i]``, in ``out/seed-K``), the mean ± sd table,
    the paired comparisons of Flux + TO with each baseline, the claims, and the files written."""

    seeds: list[int]
    runs: list[DemoResult]
    table: str
    comparison: str
    claims: list[Claim]
    summary: Path
    plot: Path
    seconds: float


def seed_folder(out: str | os.PathLike, seed: int) -> Path:
    return Path(out) / f"seed-{seed}"


def _finished_run(folder: Path, s: DemoSettings) -> DemoResult | None:
    """The run in ``folder`` if it finished with exactly settings ``s`` and its record is whole
    (else None: the seed runs again, and the old folder moves aside)."""
    try:
        record = json.loads(read_text(folder / RESULT_FILE, "demo result"))
        rows, outcomes = _checked_record(record, s)
    except (ConfigError, ValueError, TypeError, KeyError, AttributeError, RecursionError):
        return None  # none, not ours, other settings or damaged
    return DemoResult(rows, "", folder / "report.md", folder / "accuracy_vs_gflops.png",
                      {"baseline": folder / "baseline" / "model.safetensors",
                       "flux": folder / "flux" / "model.safetensors"},
                      float(record.get("seconds", 0.0)), {}, outcomes)


def _checked_record(record, s: DemoSettings) -> tuple[list[dict], dict[int, dict[str, dict[str, bool]]]]:
    """A result.json's rows and outcomes, if it is a whole record of settings ``s``: a row per
    budget, every accuracy a number in [0, 100], every method's outcomes a non-empty {clip: bool}
    whose share of right clips is the row's accuracy. Raises ValueError otherwise."""
    if not isinstance(record, dict) or record.get("settings") != _settings_record(s):
        raise ValueError("other settings")
    rows, stored = record["rows"], record["outcomes"]
    if not isinstance(rows, list) or [r.get("budget") if isinstance(r, dict) else None for r in rows] != \
            list(s.budgets) or not isinstance(stored, dict):
        raise ValueError("not a row per budget")
    outcomes = {}
    for row in rows:
        b = row["budget"]
        methods = [m for m in (*BASELINES, "flux", "flux_to", "flux_challenger") if row.get(m) is not None]
        if not {"base_selection", "flux", "flux_to"} <= set(methods):
            raise ValueError("methods missing")
        per_method = stored[str(b)]
        outcomes[b] = {}
        for m in methods:
            value, clips = row[m], per_method[m]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 100.0:
                raise ValueError(f"{m}: not an accuracy")
            if not isinstance(clips, dict) or not clips or not all(type(v) is bool for v in clips.values()):
                raise ValueError(f"{m}: not per-clip outcomes")
            if abs(100.0 * sum(clips.values()) / len(clips) - value) > 1e-3:  # top-1 is a float32 share
                raise ValueError(f"{m}: outcomes disagree with the row")
            outcomes[b][m] = clips
        if "flux_challenger" in methods and not (isinstance(row.get("to_challenger"), str)
                                                 and isinstance(row.get("to_gain_se"), (int, float))):
            raise ValueError("challenger")
    return rows, outcomes


def best_baseline(row: dict) -> str | None:
    """The plain baseline way with the best test top-1 in ``row`` (None if the row has none)."""
    ways = [k for k in BASELINES if row.get(k) is not None]
    return max(ways, key=lambda k: row[k]) if ways else None


def run_demo_seeds(settings: DemoSettings | None = None, seeds: int = 3) -> SeedsResult:
    """Run the demo for ``seeds`` seeds (``settings.seed`` and the next ones), each into
    ``out/seed-K`` with its own benchmark and training (with ``data`` given: the same data, its
    own training); a seed whose folder holds a finished run with the same settings is reused.
    Then: every cell's mean ± sd over seeds, Flux + TO against each baseline way paired on the
    same seeds and clips, the demo's claims checked, ``summary.md``/``summary.json`` and the plot."""
    from fluxvit.evaluate.seeds import format_mean_sd, mean_sd, paired

    s = settings or DemoSettings()
    s.check()
    if not isinstance(seeds, int) or isinstance(seeds, bool) or not 1 <= seeds <= MAX_SEEDS:
        raise ConfigError(f"--seeds {show(seeds)}: must be a whole number from 1 to {MAX_SEEDS}")
    out = Path(s.out)
    start = time.perf_counter()
    numbers, runs = list(range(s.seed, s.seed + seeds)), []
    each = [replace(s, out=str(seed_folder(out, k)), seed=k) for k in numbers]  # every seed checked before any runs
    for k, one in zip(numbers, each):
        done = _finished_run(Path(one.out), one)
        if done is not None:
            log.info("seed %d: reusing the finished run in %s", k, one.out)
        else:
            log.info("seed %d of %s", k, "/".join(map(str, numbers)))
        runs.append(done or run_demo(one))

    budgets = list(s.budgets)
    methods = [*BASELINES, "flux", "flux_to"]
    by_budget = [{r["budget"]: r for r in run.rows} for run in runs]
    table_rows, compare_rows = [], []
    spread: dict[str, list[tuple[float, float, float]]] = {m: [] for m in methods}  # (GFLOPs, mean, sd)
    for b in budgets:
        rows = [rb[b] for rb in by_budget]
        cell = {"budget": b, "fraction": rows[0]["fraction"], "gflops": rows[0]["gflops"]}
        for m in methods:
            values = [r.get(m) for r in rows]
            if None not in values:  # every seed has the method at this budget
                cell[m] = format_mean_sd(values)
                spread[m].append((cell["gflops"], *mean_sd(values)))
        best = [best_baseline(r) for r in rows]
        cell["best"] = format_mean_sd([r[k] for r, k in zip(rows, best)]) if all(best) else None
        table_rows.append(cell)
        comp = {"budget": b, "fraction": rows[0]["fraction"]}
        flux_to = [run.outcomes[b]["flux_to"] for run in runs]
        for k in BASELINES:
            if all(k in run.outcomes[b] for run in runs):
                comp[k] = paired(flux_to, [run.outcomes[b][k] for run in runs])
        if all(best):
            comp["best"] = paired(flux_to, [run.outcomes[b][k] for run, k in zip(runs, best)])
        full = s.base_tokens
        comp["full"] = paired(flux_to, [run.outcomes[full]["base_selection"] for run in runs]) \
            if full in budgets else None
        compare_rows.append(comp)

    base = f"{s.base_grid.frames}x{s.base_grid.height}"
    columns = [("budget", "tokens"), ("fraction", "of baseline"), ("gflops", "GFLOPs", format_gflops),
               *BASELINES.items(), ("best", "best baseline way"),
               ("flux", f"Flux ({base} + selection)"), ("flux_to", "Flux + TO")]
    table = markdown_table(table_rows, columns)

    comparison = markdown_table(compare_rows, [("budget", "tokens"), ("fraction", "of baseline"),
                                               *((k, f"vs {v}", str) for k, v in BASELINES.items()),
                                               ("best", "vs the best baseline way", str),
                                               ("full", "vs the baseline with all tokens", str)])
    claims = demo_claims(s, compare_rows)
    guard = guard_table(numbers, runs)
    names = {**BASELINES, "flux": f"Flux, selection from {base}", "flux_to": "Flux + TO"}
    series = {names[m]: points for m, points in spread.items()}
    dataset = _dataset_name(s)
    plot = plot_accuracy_vs_gflops(series, out / SUMMARY_PLOT,
                                   title=f"{dataset}: mean ± sd over {len(numbers)} seeds (test split)")
    seconds = time.perf_counter() - start
    per_seed = "\n\n".join(f"### Seed {k}\n\n{markdown_table(run.rows, _seed_columns(s))}\n\n"
                            f"([report]({seed_folder('.', k) / 'report.md'}))" for k, run in zip(numbers, runs))
    summary = write_text(out / "summary.md",
        f"# fluxvit demo over {len(numbers)} seeds\n\n"
        f"{dataset}, seeds {', '.join(map(str, numbers))}: each seed draws its own "
        f"{'benchmark, ' if s.data is None else ''}initial weights and data order. Top-1 (%) on each "
        "seed's test split, mean ± sd over seeds.\n\n"
        f"{table}\n\n![accuracy vs GFLOPs]({SUMMARY_PLOT})\n\n"
        "## Flux + TO against each baseline way, paired\n\n"
        "Points gained (Flux + TO minus the baseline) on the same seed's clips: the mean over seeds, the "
        "worst seed, and pooled over every (seed, clip) pair with its standard error. The best baseline "
        "way is picked per seed on the test split (in the baseline's favour).\n\n"
        f"{comparison}\n\n## The claims\n\n" + "\n".join(f"- {c}" for c in claims) + "\n\n"
        "## Token Optimization's guard\n\n"
        "Each budget's best grid on tune other than the default (the challenger), its lead over the default "
        "grid on tune in standard errors (the guard switches above 2), and the same two grids on test:\n\n"
        f"{guard}\n\n"
        f"## Each seed\n\n{per_seed}\n\n"
        f"Run time: {seconds / 60:.1f} min for this call (finished seeds reused).\n")
    write_text(out / "summary.json", json.dumps({
        "seeds": numbers, "settings": _settings_record(s),
        "mean_sd": table_rows,
        "paired": [{k: (v.to_dict() if hasattr(v, "to_dict") else v) for k, v in r.items()} for r in compare_rows],
        "claims": [asdict(c) for c in claims],
        "per_seed_rows": [run.rows for run in runs]}, indent=1) + "\n")
    return SeedsResult(numbers, runs, table, comparison, claims, summary, plot, seconds)


def _seed_columns(s: DemoSettings) -> list[tuple]:
    return [("budget", "tokens"), ("fraction", "of baseline"), *BASELINES.items(),
            ("flux", "Flux + selection"), ("flux_to", "Flux + TO"), ("to_grid", "TO grid")]


def guard_table(seeds: list[int], runs: list[DemoResult]) -> str:
    """One row per seed and budget where TO had a challenger to the default grid: the decision,
    the challenger's lead on tune (SE) and its test top-1 minus the default grid's."""
    rows = [{"seed": k, "budget": r["budget"], "challenger": r["to_challenger"], "se": r["to_gain_se"],
             "decision": "switched" if r["to_grid"] == r["to_challenger"] else "kept default",
             "test": r["flux_challenger"] - r["flux"]}
            for k, run in zip(seeds, runs) for r in run.rows if r.get("to_challenger") is not None]
    if not rows:
        return "(no budget had a challenger: the default grid was the best on tune everywhere)"
    return markdown_table(rows, [("seed", "seed"), ("budget", "tokens"), ("challenger", "challenger"),
                                 ("se", "lead on tune (SE)"), ("decision", "TO"),
                                 ("test", "challenger minus default on test (points)", lambda v: f"{v:+.1f}")])


def demo_claims(s: DemoSettings, comparisons: list[dict]) -> list[Claim]:
    """The demo's claims, checked on the paired comparisons over seeds (:func:`run_demo_seeds`):
    at every budget Flux + TO is at least the best baseline way on the mean and never more
    than 2 points below it in a seed; at 1/4 of the tokens it is within 1 point of the
    baseline with all tokens on the mean; at 1/8 it is at least 10 points above the best 1/8
    baseline way on the mean."""
    claims = []
    for c in comparisons:
        d = c.get("best")
        if d is None:
            continue
        claims.append(Claim(f"{c['budget']} tokens ({c['fraction']}): Flux + TO >= the best baseline way on the mean, "
                            "and never more than 2 points below it in a seed",
                            d.seed_mean >= -TOLERANCE and d.worst_seed >= -2.0 - TOLERANCE,
                            f"{d.seed_mean:+.1f} on the mean, worst seed {d.worst_seed:+.1f}"))
    by_budget = {c["budget"]: c for c in comparisons}
    quarter, eighth = s.base_tokens // 4, s.base_tokens // 8
    if quarter in by_budget and by_budget[quarter].get("full") is not None:
        d = by_budget[quarter]["full"]
        claims.append(Claim(f"{quarter} tokens (1/4): Flux + TO within 1 point of the baseline with all "
                            f"{s.base_tokens} tokens on the mean", d.seed_mean >= -1.0 - TOLERANCE,
                            f"{d.seed_mean:+.1f} on the mean, worst seed {d.worst_seed:+.1f}"))
    if eighth in by_budget and by_budget[eighth].get("best") is not None:
        d = by_budget[eighth]["best"]
        claims.append(Claim(f"{eighth} tokens (1/8): Flux + TO at least 10 points above the best 1/8 baseline "
                            "way on the mean", d.seed_mean >= 10.0 - TOLERANCE,
                            f"{d.seed_mean:+.1f} on the mean, worst seed {d.worst_seed:+.1f}"))
    return claims
