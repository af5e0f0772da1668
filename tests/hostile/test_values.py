"""Hostile values on the command line: every numeric option of every command, out of range, not
finite, too large for its cap or not a number at all, ends in one line on stderr naming the value
and the problem, exit 2, nothing on stdout, nothing written; and a checkpoint whose weights (or
outputs) are NaN or inf is refused, never printed as ``nan%`` or as invalid JSON.

``VALUE_CASES`` runs with the caps' defaults (no ``FLUXVIT_MAX_*`` set): the fuzz test
(``test_fuzz_cli.py``) lowers them to stay fast, so their default values are asserted here.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import pytest
import torch

import fluxvit
from fluxvit import limits
from fluxvit.cli import main
from fluxvit.errors import CheckpointError, ConfigError

from .conftest import CLASSES, CliRun, assert_user_error

PRED = ("predict", "{video}", "--checkpoint", "{ckpt}")
EVAL = ("eval", "--checkpoint", "{ckpt}", "--data", "{csv}", "--views", "1x1")
# a search whose candidates exist (2x56, 4x28, 4x56 for 16 tokens), so that each value is what stops it
OPT = ("optimize", "--checkpoint", "{ckpt}", "--data", "{csv}", "--budgets", "16", "--frames", "2,4",
       "--sizes", "28,56", "--out", "{out}")
FLOPS = ("flops", "fluxvit_nano_patch14")
BENCH = ("bench", "fluxvit_nano_patch14", "--device", "cpu", "--repeats", "1")
SYNTH = ("synth", "{out}")
CONVERT = ("convert", "{release}", "{out}.safetensors", "--model", "fluxvit_small_patch14")
CAP_GRID = "tokens in one sampling grid is more than the cap of 131072 (raise it with FLUXVIT_MAX_GRID_TOKENS)"

VALUE_CASES: dict[str, tuple[tuple[str, ...], str]] = {
    # name: (argv, with {ckpt} {video} {csv} {out} {release} filled in; what the one line must say)
    # predict
    "predict_topk_negative": ((*PRED, "--topk", "-1"), "top-k must be a positive integer, got -1"),
    "predict_topk_zero": ((*PRED, "--topk", "0"), "top-k must be a positive integer, got 0"),
    "predict_topk_fraction": ((*PRED, "--topk", "2.5"), "argument --topk: '2.5' is not a whole number"),
    "predict_topk_text": ((*PRED, "--topk", "many"), "argument --topk: 'many' is not an integer"),
    "predict_topk_empty": ((*PRED, "--topk", ""), "argument --topk: '' is not an integer"),
    "predict_topk_nan": ((*PRED, "--topk", "nan"), "argument --topk: 'nan' is not an integer"),
    "predict_topk_of_40_digits": ((*PRED, "--topk", "9" * 40), "is too large (more than 18 digits)"),
    "predict_batch_size_zero": ((*PRED, "--batch-size", "0"), "batch size must be at least 1, got 0"),
    "predict_batch_size_1e6": ((*PRED, "--batch-size", "1e6"),
                               "batch size: 1000000 videos per forward is more than the cap of 1024 "
                               "(raise it with FLUXVIT_MAX_BATCH_SIZE)"),
    "predict_workers_negative": ((*PRED, "--workers", "-1"), "workers must be at least 0, got -1"),
    "predict_workers_10000": ((*PRED, "--workers", "10000"),
                              "workers: 10000 worker processes is more than the cap of 64 "
                              "(raise it with FLUXVIT_MAX_WORKERS)"),
    "predict_views_2000x3": ((*PRED, "--views", "2000x3"),
                             "views 2000x3: 6000 views per video is more than the cap of 64 "
                             "(raise it with FLUXVIT_MAX_VIEWS)"),
    "predict_views_of_many_digits": ((*PRED, "--views", "1" * 30 + "x1"),
                                     "more views per video than the cap of 64"),
    "predict_views_four_crops": ((*PRED, "--views", "1x4"), "views 1x4: need clips >= 1 and 1 to 3 crops"),
    "predict_views_zero_clips": ((*PRED, "--views", "0x1"), "views 0x1: need clips >= 1 and 1 to 3 crops"),
    "predict_views_not_a_shape": ((*PRED, "--views", "many"), "views 'many' is not CLIPSxCROPS"),
    "predict_latency_nan": ((*PRED, "--latency-ms", "nan"),
                            "argument --latency-ms: must be a finite number, got 'nan'"),
    "predict_latency_inf": ((*PRED, "--latency-ms", "inf"),
                            "argument --latency-ms: must be a finite number, got 'inf'"),
    "predict_latency_negative": ((*PRED, "--latency-ms", "-1"), "latency target must be positive, got -1.0 ms"),
    "predict_latency_zero": ((*PRED, "--latency-ms", "0"), "latency target must be positive, got 0.0 ms"),
    "predict_budget_zero": ((*PRED, "--budget", "0"), "token budget must be a positive integer, got 0"),
    "predict_budget_negative": ((*PRED, "--budget", "-5"), "token budget must be a positive integer, got -5"),
    "predict_budget_beyond_the_grid": ((*PRED, "--budget", "1e9"),
                                       "token budget 1000000000 is larger than the 64 tokens of grid 4x56x56"),
    "predict_budget_1e30": ((*PRED, "--budget", "1e30"), "argument --budget: '1e30' is too large"),
    "predict_grid_over_the_cap": ((*PRED, "--grid", "1000x994"), f"grid 1000x994: 5041000 {CAP_GRID}"),
    "predict_grid_zero_frames": ((*PRED, "--grid", "0x56"), "grid frames must be a positive integer, got 0"),
    "predict_device_abc": ((*PRED, "--device", "abc"), "device 'abc' is not one of auto, cpu, cuda, cuda:N"),
    "predict_device_cuda_99": ((*PRED, "--device", "cuda:99"), "device 'cuda:99': "),
    "predict_device_cuda_1234": ((*PRED, "--device", "cuda:1234"), "device 'cuda:1234' is not one of"),
    "predict_dtype_fp64": ((*PRED, "--dtype", "fp64"), "dtype 'fp64' is not one of auto, fp32, bf16, fp16"),
    # eval
    "eval_head_negative": ((*EVAL, "--head", "-1"), "option '--head' must be at least 0, got -1"),
    "eval_head_beyond_the_model": ((*EVAL, "--head", "3"), "head 3 does not exist; this model has 3 heads"),
    "eval_workers_negative": ((*EVAL, "--workers", "-1"), "workers must be at least 0, got -1"),
    "eval_workers_10000": ((*EVAL, "--workers", "10000"), "workers: 10000 worker processes is more than the cap of 64"),
    "eval_batch_size_zero": ((*EVAL, "--batch-size", "0"), "batch size must be at least 1, got 0"),
    "eval_batch_size_1000000": ((*EVAL, "--batch-size", "1000000"),
                                "batch size: 1000000 videos per forward is more than the cap of 1024"),
    "eval_views_2000x3": ((*EVAL, "--views", "2000x3"), "views 2000x3: 6000 views per video is more than the cap"),
    "eval_budget_zero": ((*EVAL, "--budget", "0"), "token budget must be a positive integer, got 0"),
    "eval_latency_nan": ((*EVAL, "--latency-ms", "nan"), "argument --latency-ms: must be a finite number"),
    "eval_device_abc": ((*EVAL, "--device", "abc"), "device 'abc' is not one of auto, cpu, cuda, cuda:N"),
    # optimize
    "optimize_refine_zero": ((*OPT, "--refine", "0"), "option '--refine' must be at least 1, got 0"),
    "optimize_refine_negative": ((*OPT, "--refine", "-1"), "option '--refine' must be at least 1, got -1"),
    "optimize_subset_nan": ((*OPT, "--subset", "nan"), "argument --subset: must be a finite number, got 'nan'"),
    "optimize_subset_zero": ((*OPT, "--subset", "0"), "Token Optimization 'subset' must be more than 0, got 0.0"),
    "optimize_subset_two": ((*OPT, "--subset", "2"), "Token Optimization 'subset' must be at most 1, got 2.0"),
    "optimize_max_factor_nan": ((*OPT, "--max-factor", "nan"), "argument --max-factor: must be a finite number"),
    "optimize_max_factor_half": ((*OPT, "--max-factor", "0.5"),
                                 "search space 'max_factor' must be at least 1, got 0.5"),
    "optimize_min_gain_se_nan": ((*OPT, "--min-gain-se", "nan"), "argument --min-gain-se: must be a finite number"),
    "optimize_min_gain_se_negative": ((*OPT, "--min-gain-se", "-1"), "min_gain_se must be >= 0 standard errors"),
    "optimize_frames_zero": ((*OPT, "--frames", "0"), "search space frames (0,): 0 is not a positive integer"),
    "optimize_frames_empty": ((*OPT, "--frames", ","), "argument --frames: ',' names no integer"),
    "optimize_frames_text": ((*OPT, "--frames", "2,x"), "argument --frames: '2,x': 'x' is not an integer"),
    "optimize_sizes_over_the_cap": ((*OPT, "--sizes", "28,4998"), f"grid 4x4998: 509796 {CAP_GRID}"),
    "optimize_frames_over_the_cap": ((*OPT, "--frames", "2,100000"), f"grid 100000x56: 1600000 {CAP_GRID}"),
    "optimize_budgets_zero": ((*OPT[:5], "--budgets", "0", *OPT[7:]), "token budget must be a positive integer, got 0"),
    "optimize_budgets_1e9": ((*OPT[:5], "--budgets", "16,1e9", *OPT[7:]),
                             f"token budget 1000000000: 1000000000 {CAP_GRID}"),
    "optimize_workers_10000": ((*OPT, "--workers", "10000"), "workers: 10000 worker processes is more than the cap"),
    "optimize_views_2000x3": ((*OPT, "--views", "2000x3"), "views 2000x3: 6000 views per video is more than the cap"),
    # flops
    "flops_tokens_1e9": ((*FLOPS, "--tokens", "1e9"), f"FLOPs count: 1000000000 {CAP_GRID}"),
    "flops_tokens_negative": ((*FLOPS, "--tokens", "-5"), "FLOPs count: tokens must be a positive integer, got -5"),
    "flops_tokens_zero": ((*FLOPS, "--tokens", "0"), "FLOPs count: tokens must be a positive integer, got 0"),
    "flops_tokens_nan": ((*FLOPS, "--tokens", "nan"), "argument --tokens: 'nan' is not an integer"),
    "flops_tokens_inf": ((*FLOPS, "--tokens", "inf"), "argument --tokens: 'inf' is not an integer"),
    "flops_grid_over_the_cap": ((*FLOPS, "--grid", "1000x994"), f"grid 1000x994: 5041000 {CAP_GRID}"),
    "flops_budget_beyond_the_grid": ((*FLOPS, "--grid", "4x56", "--tokens", "65"),
                                     "token budget 65 is larger than the 64 tokens of grid 4x56x56"),
    "flops_num_classes_zero": ((*FLOPS, "--tokens", "16", "--num-classes", "0"),
                               "model config 'num_classes' must be positive, got 0"),
    "flops_num_classes_negative": ((*FLOPS, "--tokens", "16", "--num-classes", "-3"),
                                   "model config 'num_classes' must be positive, got -3"),
    "flops_num_classes_1e9": ((*FLOPS, "--tokens", "16", "--num-classes", "1e9"),
                              "model config 'num_classes': 1000000000 classes is more than the cap of 100000 "
                              "(raise it with FLUXVIT_MAX_NUM_CLASSES)"),
    # bench
    "bench_repeats_zero": ((*BENCH[:-1], "0", "--tokens", "16"), "repeats must be a positive integer, got 0"),
    "bench_repeats_5000": ((*BENCH[:-1], "5000", "--tokens", "16"), "repeats 5000: at most 1000 timed calls per case"),
    "bench_tokens_1e9": ((*BENCH, "--tokens", "1e9"), f"grid 15625000x112: 1000000000 {CAP_GRID}"),
    "bench_tokens_zero": ((*BENCH, "--tokens", "16,0"), "tokens must be a positive integer, got 0"),
    "bench_tokens_text": ((*BENCH, "--tokens", "16,abc"), "argument --tokens: '16,abc': 'abc' is not an integer"),
    "bench_batch_1e6": ((*BENCH, "--tokens", "16", "--batch", "1e6"),
                        "batch: 1000000 videos per forward is more than the cap of 1024"),
    "bench_batch_1000000": ((*BENCH, "--tokens", "16", "--batch", "1,1000000"),
                            "batch: 1000000 videos per forward is more than the cap of 1024"),
    "bench_batch_zero": ((*BENCH, "--tokens", "16", "--batch", "0"), "batch must be a positive integer, got 0"),
    "bench_grid_over_the_cap": ((*BENCH, "--tokens", "16", "--grid", "1000x994"), f"grid 1000x994: 5041000 {CAP_GRID}"),
    "bench_device_abc": ((*BENCH[:2], "--device", "abc", "--tokens", "16"), "device 'abc' is not one of"),
    # synth
    "synth_per_class_1e8": ((*SYNTH, "--per-class", "1e8"),
                            "100000000 clips per class x 10 classes: 1000000000 synthetic clips is more than "
                            "the cap of 1000000 (raise it with FLUXVIT_MAX_SYNTH_CLIPS)"),
    "synth_per_class_100000000": ((*SYNTH, "--per-class", "100000000"), "synthetic clips is more than the cap"),
    "synth_per_class_zero": ((*SYNTH, "--per-class", "0"), "per-class 0 must be a positive number of clips"),
    "synth_frames_100000000": ((*SYNTH, "--frames", "100000000"),
                               "clips of 100000000 frames of 112x112: 1254400000000 decoded pixels in one clip is "
                               "more than the cap of 134217728 (raise it with FLUXVIT_MAX_CLIP_PIXELS)"),
    "synth_frames_one": ((*SYNTH, "--frames", "1"), "frames 1 must be an integer >= 2"),
    "synth_size_60000": ((*SYNTH, "--size", "60000"),
                         "clips of 16 frames of 60000x60000: 57600000000 decoded pixels in one clip is more than"),
    "synth_size_odd": ((*SYNTH, "--size", "33"), "size 33 must be an even number of pixels >= 32"),
    "synth_val_fraction_two": ((*SYNTH, "--val-fraction", "2"), "val fraction 2.0 must be in [0, 1)"),
    "synth_val_fraction_negative": ((*SYNTH, "--val-fraction", "-0.1"), "val fraction -0.1 must be in [0, 1)"),
    "synth_val_fraction_nan": ((*SYNTH, "--val-fraction", "nan"), "argument --val-fraction: must be a finite number"),
    "synth_workers_10000": ((*SYNTH, "--workers", "10000"),
                            "workers: 10000 worker processes is more than the cap of 64"),
    "synth_workers_negative": ((*SYNTH, "--workers", "-1"), "workers -1 must be a non-negative integer"),
    "synth_seed_negative": ((*SYNTH, "--seed", "-1"), "seed -1 must be a non-negative integer"),
    # demo
    "demo_steps_negative": (("demo", "--quick", "--out", "{out}", "--steps", "-1"),
                            "demo setting 'steps' must be at least 1, got -1"),
    "demo_steps_zero": (("demo", "--out", "{out}", "--steps", "0"), "demo setting 'steps' must be at least 1, got 0"),
    "demo_steps_fraction": (("demo", "--out", "{out}", "--steps", "2.5"),
                            "argument --steps: '2.5' is not a whole number"),
    "demo_seed_negative": (("demo", "--out", "{out}", "--seed", "-1"),
                           "demo setting 'seed' must be at least 0, got -1"),
    # convert (a release file of FluxViT-S with 4 classes)
    "convert_num_classes_zero": ((*CONVERT, "--num-classes", "0"),
                                 "model config 'num_classes' must be positive, got 0"),
    "convert_num_classes_1e9": ((*CONVERT, "--num-classes", "1e9"),
                                "model config 'num_classes': 1000000000 classes is more than the cap of 100000"),
    "convert_num_classes_text": ((*CONVERT, "--num-classes", "four"),
                                 "argument --num-classes: 'four' is not an integer"),
}


def run_cli(*args: object) -> CliRun:
    """``fluxvit ARGS`` in-process; argparse's refusals (SystemExit) count as the exit code."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:
            code = e.code
    return CliRun(code, out.getvalue(), err.getvalue())


@pytest.fixture(autouse=True)
def _default_caps(monkeypatch, tmp_path):
    """The caps' defaults, whatever the environment says; latency measurements cached per test."""
    for limit in limits.ALL:
        monkeypatch.delenv(limit.setting, raising=False)
    monkeypatch.setenv("FLUXVIT_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def paths(tmp_path_factory, nano_ckpt, good_video) -> dict[str, str]:
    root = tmp_path_factory.mktemp("values")
    csv = root / "val.csv"
    csv.write_text(f"{good_video} 0\n{good_video} 1\n")
    from tests.models.official_format import official_state_dict

    release = root / "release.pth"  # FluxViT-S in the release's format, 4 classes
    torch.save({"model": official_state_dict(0, num_classes=4)}, release)
    return {"ckpt": str(nano_ckpt), "video": str(good_video), "csv": str(csv), "release": str(release)}


@pytest.mark.parametrize("name", sorted(VALUE_CASES))
def test_a_hostile_value_is_one_line_and_exit_2(name, paths, tmp_path):
    argv, problem = VALUE_CASES[name]
    out = tmp_path / "out"
    run = run_cli(*(a.format(**paths, out=out) for a in argv))
    text = assert_user_error(run, argv[0], problem)
    assert run.out == "" and len(text) < 400
    assert not out.exists() and not Path(f"{out}.safetensors").exists()  # nothing written


def test_integers_are_read_as_users_type_them(paths):
    """``1e3`` and ``1_000`` are a thousand (a whole number in any notation); the range is the
    library's, so every accepted spelling reaches the same check."""
    for text in ("1000", "1e3", "1_000", "+1000", " 1000 ", "1000.0"):
        run = run_cli("flops", "fluxvit_nano_patch14", "--tokens", text, "--num-classes", "4", "--json")
        assert run.code == 0 and json.loads(run.out)["tokens"] == 1000, (text, run.err)
    assert json.loads(run_cli("flops", "fluxvit_nano_patch14", "--grid", "4x56", "--tokens", "1.6e1",
                              "--json").out)["tokens"] == 16


def test_caps_follow_their_settings(paths, monkeypatch):
    """A cap is raised (or lowered) by its FLUXVIT_MAX_* setting, read when checked."""
    monkeypatch.setenv("FLUXVIT_MAX_VIEWS", "6")
    run = run_cli("predict", paths["video"], "--checkpoint", paths["ckpt"], "--views", "3x3")
    assert_user_error(run, "predict", "views 3x3: 9 views per video is more than the cap of 6 "
                                      "(raise it with FLUXVIT_MAX_VIEWS)")
    monkeypatch.setenv("FLUXVIT_MAX_GRID_TOKENS", "2000000")
    run = run_cli("flops", "fluxvit_nano_patch14", "--tokens", "1e6", "--json")
    assert run.code == 0 and json.loads(run.out)["tokens"] == 10**6
    monkeypatch.setenv("FLUXVIT_MAX_BATCH_SIZE", "nan")
    run = run_cli("eval", "--checkpoint", paths["ckpt"], "--data", paths["csv"], "--views", "1x1", "--batch-size", "2")
    assert_user_error(run, "eval", "FLUXVIT_MAX_BATCH_SIZE='nan': must be a positive integer")


def test_library_doors_refuse_the_same_values():
    """What the command line refuses, the Python API refuses with the same one line."""
    from fluxvit.data.synthetic import make_synthetic_dataset
    from fluxvit.evaluate.runner import Views, check_loading, subset_indices
    from fluxvit.evaluate.speed import check_case
    from fluxvit.evaluate.token_optimization import SearchSpace
    from fluxvit.flux.grid import Grid

    cases = [
        (lambda: Views(2000, 3), "views 2000x3: 6000 views per video is more than the cap of 64"),
        (lambda: Views(True, 1), "views: clips must be an integer, got True"),
        (lambda: Views.parse("-1x1"), "views '-1x1' is not CLIPSxCROPS"),
        (lambda: Grid(8, 2800).check_size(14), f"grid 8x2800: 320000 {CAP_GRID}"),
        (lambda: Grid(8, 224, budget=0), "token budget must be a positive integer, got 0"),
        (lambda: SearchSpace(max_factor=math.nan), "search space 'max_factor' must be a finite number, got nan"),
        (lambda: SearchSpace(frames=()), "search space frames must be a non-empty list of integers, got ()"),
        (lambda: SearchSpace(sizes=(56, 2.5)), "search space sizes (56, 2.5): 2.5 is not a positive integer"),
        (lambda: SearchSpace().candidates(0, 14), "token budget must be a positive integer, got 0"),
        (lambda: check_loading(batch_size=2000), "batch size: 2000 videos per forward is more than the cap of 1024"),
        (lambda: check_loading(workers=-1), "workers must be at least 0, got -1"),
        (lambda: subset_indices(10, math.inf), "Token Optimization 'subset' must be a finite number, got inf"),
        (lambda: check_case(Grid(4, 56), 65), "token budget 65 is larger than the 64 tokens of grid 4x56x56"),
        (lambda: check_case(Grid(4, 56), 16, repeats=0), "repeats must be a positive integer, got 0"),
        (lambda: fluxvit.create_model("fluxvit_nano_patch14", num_classes=10**6),
         "model config 'num_classes': 1000000 classes is more than the cap of 100000"),
        (lambda: fluxvit.create_model("fluxvit_nano_patch14", depth=1).estimate_flops(-5),
         "FLOPs count: tokens must be a positive integer, got -5"),
        (lambda: make_synthetic_dataset("/nonexistent/never", per_class=10**6),
         "1000000 clips per class x 10 classes: 10000000 synthetic clips is more than the cap of 1000000"),
        (lambda: make_synthetic_dataset("/nonexistent/never", val_fraction="half"),
         "val fraction 'half' must be in [0, 1)"),
    ]
    for make, problem in cases:
        with pytest.raises(ConfigError) as info:
            make()
        assert problem in str(info.value) and "\n" not in str(info.value), (problem, str(info.value))
    assert not Path("/nonexistent/never").exists()


# ----------------------------------------------------------------------------- non-finite numbers
def _nano():
    torch.manual_seed(0)
    return fluxvit.create_model("fluxvit_nano_patch14", num_classes=len(CLASSES), depth=2, default_grid=(4, 56))


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_weights_holding_nan_or_inf_are_refused_at_load(value, tmp_path, paths):
    model = _nano()
    with torch.no_grad():
        model.blocks[1].mlp.fc1.weight[3, 5] = value
    ckpt = fluxvit.save_checkpoint(model, tmp_path / "poisoned.safetensors", classes=CLASSES)
    with pytest.raises(CheckpointError, match=r"poisoned.safetensors: weights contain NaN or inf "
                                              r"\(first: 'blocks.1.mlp.fc1.weight'\)"):
        fluxvit.load_checkpoint(ckpt)
    for argv in (("predict", paths["video"], "--checkpoint", ckpt, "--json"),
                 ("eval", "--checkpoint", ckpt, "--data", paths["csv"], "--views", "1x1", "--json")):
        run = run_cli(*argv)
        assert_user_error(run, argv[0], f"{ckpt}: weights contain NaN or inf (first: 'blocks.1.mlp.fc1.weight')")
        assert run.out == ""


def test_outputs_that_overflow_are_an_error_naming_checkpoint_and_video(tmp_path, paths):
    """Finite weights whose logits overflow fp32 (as fp16 can on real ones): every path from
    logits to a number (predict, eval, features, Token Optimization) stops with one line naming
    the checkpoint and the video, before anything is printed as nan% or NaN."""
    model = _nano()
    with torch.no_grad():
        for head in model.heads:
            head.weight.copy_(torch.randn_like(head.weight).sign() * 1e38)
            head.bias.fill_(3e38)
    assert all(bool(torch.isfinite(p).all()) for p in model.state_dict().values() if p.is_floating_point())
    ckpt = fluxvit.save_checkpoint(model, tmp_path / "overflow.safetensors", classes=CLASSES)
    problem = f"{ckpt}: its outputs for {paths['video']} are NaN or inf"
    features = tmp_path / "features.safetensors"
    for argv in (("predict", paths["video"], "--checkpoint", ckpt, "--json"),
                 ("predict", paths["video"], paths["video"], "--checkpoint", ckpt, "--batch-size", "2"),
                 ("eval", "--checkpoint", ckpt, "--data", paths["csv"], "--views", "1x1", "--json"),
                 ("eval", "--checkpoint", ckpt, "--data", paths["csv"], "--views", "1x1", "--save-features", features),
                 ("optimize", "--checkpoint", ckpt, "--data", paths["csv"], "--budgets", "16", "--frames", "2,4",
                  "--sizes", "28,56", "--out", tmp_path / "opt")):
        run = run_cli(*argv)
        assert_user_error(run, argv[0], problem)
        assert run.out == ""
    assert not features.exists() and not (tmp_path / "opt").exists()
    from fluxvit.evaluate.predict import predict_video

    with pytest.raises(ConfigError, match="are NaN or inf"):
        predict_video(fluxvit.load_checkpoint(ckpt), paths["video"], fluxvit.Grid(4, 56))


def test_json_printed_is_strict():
    """Every JSON the command line prints goes through one function, which refuses NaN and inf."""
    from fluxvit.cli import _json
    from fluxvit.errors import FluxViTError

    assert json.loads(_json({"top1": 12.5, "n": 3})) == {"top1": 12.5, "n": 3}
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(FluxViTError, match="the result holds NaN or inf, which is not JSON; nothing printed"):
            _json({"rows": [{"ms": bad}]})
