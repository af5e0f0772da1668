"""Fuzzing the command line: every command, 100 seeded examples each, with option values drawn
from a mix of valid, boundary and hostile ones (negative, zero, huge, nan, inf, 1e9, 40 digits,
words, empty). Whatever the draw, ``fluxvit.cli.main`` must end in exit 0 or 2 - nothing but
argparse's SystemExit escapes it -, with no traceback; exit 2 with exactly one ``error:`` line
(the last; ``predict`` says one line for each video it could not classify, and carries on);
exit 0 with ``--json`` printing strict JSON (no NaN, no inf), and no ``nan`` in a
table; each example within a time limit.

To stay fast, the caps of :mod:`fluxvit.limits` are lowered through their ``FLUXVIT_MAX_*``
settings (so a "valid" huge value is refused at once, and a valid run stays small: a 256-token
grid, 4 views, 8 videos a batch, 1 worker, 4 synthetic clips of 2**16 pixels), ``bench`` times at most 3
repeats with a small peak-measuring matmul, and ``demo`` runs its settings checks only (the
pipeline itself is stubbed; ``tests/test_demo.py`` runs it). The caps' defaults are tested in
``test_values.py``.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import re
import shutil
import time

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fluxvit.cli import main

from .conftest import CLASSES
from .media import clip

SETTINGS = settings(max_examples=100, derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SMALL_CAPS = {"GRID_TOKENS": 256, "VIEWS": 4, "BATCH_SIZE": 8, "WORKERS": 1, "NUM_CLASSES": 1000,
              "SYNTH_CLIPS": 4, "CLIP_PIXELS": 2**16}
SECONDS_PER_EXAMPLE = 60

# ----------------------------------------------------------------------------- values
HOSTILE = ["", " ", "abc", "nan", "NaN", "inf", "-inf", "1e9", "-1e9", "1e30", "1e309", "9" * 40, "0x10", "1,2",
           "None", "\u0661", "--", "1e-320", "\x00"]
INT = st.one_of(
    st.sampled_from(["0", "1", "2", "3", "4", "-1", "-5", "1000000", "100000000", "2.5", "1e3", "1_0", " 2 ", "+1",
                     "-0", "1.0", *HOSTILE]),
    st.integers(-3, 70).map(str),
    st.integers(-(2**70), 2**70).map(str),
)
FLOAT = st.one_of(
    st.sampled_from(["0", "-0", "1e-9", "0.3", "0.5", "1", "1.5", "2", "8", "-1", "1e308", "1e-3", "100000",
                     *HOSTILE]),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
)
GRID = st.one_of(
    st.sampled_from(["4x56", "2x28", "1x14", "2x28x42", "4X56", " 2 x 28 ", "0x56", "4x55", "8x112", "1000x994",
                     "99999999x14", "1x1", "x", "4x56x", *HOSTILE]),
    st.tuples(st.integers(-1, 20), st.integers(-14, 100)).map(lambda tr: f"{tr[0]}x{tr[1]}"),
)
VIEWS = st.one_of(
    st.sampled_from(["1x1", "2x1", "1x2", "1x3", "2x2", "0x1", "1x0", "1x4", "2000x3", "3x3", "-1x1", "1x1x1",
                     "99999999999x1", *HOSTILE]),
    st.tuples(st.integers(0, 6), st.integers(0, 4)).map(lambda v: f"{v[0]}x{v[1]}"),
)
DEVICE = st.sampled_from(["cpu", "auto", "CPU", " cpu ", "abc", "cuda:99", "cuda:1234", "cpu:0", "gpu", ""])
DTYPE = st.sampled_from(["fp32", "auto", "bf16", "fp16", "fp64", "FP32", "", "nan"])
SELECTOR = st.sampled_from(["group_dynamic", "uniform", "random", "static_drop", "sideways", ""])
FLAG = st.just(None)


def int_list(*nice: str) -> st.SearchStrategy[str]:
    """Comma-separated integers (1-3 of them, some ``nice`` for the option) or hostile text."""
    item = st.one_of(st.sampled_from(nice), INT) if nice else INT
    return st.one_of(st.lists(item, min_size=1, max_size=3).map(",".join),
                     st.sampled_from([",", "1,,2", "a,b", "16, 32", *HOSTILE]))


def options(spec: dict[str, st.SearchStrategy]) -> st.SearchStrategy[list[str]]:
    """A few of the options in ``spec`` (name -> value strategy; FLAG: no value), in any order."""
    names = st.lists(st.sampled_from(sorted(spec)), unique=True, max_size=4)
    return names.flatmap(lambda chosen: st.tuples(*(spec[n] for n in chosen)).map(
        lambda values: [part for n, v in zip(chosen, values) for part in ((n,) if v is None else (n, v))]))


# ----------------------------------------------------------------------------- the run and its checks
def _strict(text: str) -> None:
    def refuse(constant: str):
        raise AssertionError(f"invalid JSON constant {constant} in {text[:200]!r}")

    json.loads(text, parse_constant=refuse)


def check_run(argv: list[str]) -> tuple[int, str, str]:
    """Run ``fluxvit ARGV`` in-process and assert the contract of the module docstring."""
    command = argv[0]
    out, err = io.StringIO(), io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse: a value that does not parse, a missing argument
            code = e.code
    seconds = time.perf_counter() - start
    out, err = out.getvalue(), err.getvalue()
    context = f"argv={argv!r}\nexit={code}\nstderr={err[-2000:]}\nstdout={out[-500:]}"
    assert seconds < SECONDS_PER_EXAMPLE, f"{seconds:.0f} s\n{context}"
    assert code in (0, 2), context
    assert "Traceback" not in err and "Traceback" not in out, context
    errors = [line for line in err.splitlines() if ": error: " in line]
    if code == 2:
        assert errors and all(e.startswith(f"fluxvit {command}: error: ") and len(e) < 600 for e in errors), context
        if command != "predict":  # predict: a line for each video that failed, then goes on
            assert len(errors) == 1 and err.rstrip("\n").splitlines()[-1] == errors[0], context
    else:
        assert not errors, context
        if "--json" in argv:
            lines = [line for line in out.splitlines() if line.strip()]
            assert lines, context
            for line in lines:
                _strict(line)
        else:
            assert not re.search(r"\b(nan|inf)\b", out.lower()), context
    return code, out, err


# ----------------------------------------------------------------------------- the fixture
@pytest.fixture(scope="module")
def world(tmp_path_factory, nano_ckpt, good_video):
    """Tiny inputs, small caps, fast stand-ins for the expensive parts (bench's peak, the demo)."""
    root = tmp_path_factory.mktemp("fuzz")
    other = clip(root, "other.mp4", 8, 32, 40)
    csv = root / "val.csv"
    csv.write_text(f"{good_video} 0\n{other} 3\n")
    work = root / "work.safetensors"  # optimize stores its choices here (never in the shared checkpoint)
    shutil.copy(nano_ckpt, work)
    classes = root / "classes.txt"
    classes.write_text("\n".join(CLASSES) + "\n")
    wrong_classes = root / "three.txt"
    wrong_classes.write_text("a\nb\nc\n")
    existing = root / "existing.safetensors"  # convert's output, where a file already is
    shutil.copy(nano_ckpt, existing)
    (root / "existing_dir").mkdir()
    garbage = root / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint" * 64)
    from tests.models.official_format import official_state_dict

    release = root / "release.pth"  # FluxViT-S in the release's format, 4 classes
    torch.save({"model": official_state_dict(0, num_classes=4)}, release)

    import fluxvit.demo
    import fluxvit.evaluate.speed
    import fluxvit.timing

    peak = fluxvit.timing.matmul_gflops

    class Ran:
        table, report, plot, checkpoints, seconds = "| demo |", root / "report.md", root / "plot.png", {}, 1.0

    def stub_demo(settings):
        settings.check()  # what the real one does first; the pipeline is tests/test_demo.py's
        return Ran()

    counter = itertools.count()
    with pytest.MonkeyPatch.context() as mp:
        for name, cap in SMALL_CAPS.items():
            mp.setenv(f"FLUXVIT_MAX_{name}", str(cap))
        mp.setenv("FLUXVIT_CACHE", str(root / "cache"))
        mp.setattr(fluxvit.timing, "matmul_gflops",
                   lambda dtype=torch.float32, n=2048, device="cpu": peak(dtype, 64, device))
        mp.setattr(fluxvit.evaluate.speed, "MAX_REPEATS", 3)
        mp.setattr(fluxvit.demo, "run_demo", stub_demo)
        yield {"root": root, "ckpt": str(nano_ckpt), "work": str(work), "video": str(good_video), "other": str(other),
               "csv": str(csv), "classes": str(classes), "wrong_classes": str(wrong_classes),
               "release": str(release), "garbage": str(garbage), "existing": str(existing),
               "existing_dir": str(root / "existing_dir"), "fresh": lambda: root / f"out{next(counter)}"}


_PLACEHOLDER = re.compile(r"\{(\w+)(?:\+([^}]*))?\}")


def _fill(parts: list[str], world: dict) -> list[str]:
    """``{name}`` -> a path of the world; ``{fresh+.ext}`` -> a new path under the scratch folder."""
    def value(m: re.Match) -> str:
        return f"{world['fresh']() if m.group(1) == 'fresh' else world[m.group(1)]}{m.group(2) or ''}"

    return [_PLACEHOLDER.sub(value, part) for part in parts]


# ----------------------------------------------------------------------------- the commands
SAMPLING = {"--budget": st.one_of(st.sampled_from(["8", "16", "32", "64", "65"]), INT), "--latency-ms": FLOAT,
            "--grid": GRID, "--views": VIEWS, "--selector": SELECTOR, "--device": DEVICE, "--dtype": DTYPE,
            "--quantize": st.sampled_from(["none", "int8", "int4", ""])}


@SETTINGS
@given(opts=options({**SAMPLING, "--batch-size": INT, "--workers": INT, "--head": INT, "--per-class": FLAG,
                     "--save-features": st.just("{fresh+.safetensors}")}),
       json_flag=st.booleans())
def test_fuzz_eval(world, opts, json_flag):
    # 1x1 views unless drawn (the default 4x3 is over the lowered cap)
    argv = ["eval", "--checkpoint", "{ckpt}", "--data", "{csv}", "--views", "1x1", *opts,
            *(["--json"] if json_flag else [])]
    code, out, _ = check_run(_fill(argv, world))
    if code == 0 and json_flag:
        result = json.loads(out.splitlines()[-1])
        assert result["videos"] == 2 and 0 <= result["top1"] <= result["top5"] <= 100


@SETTINGS
@given(opts=options({**SAMPLING, "--batch-size": INT, "--workers": INT, "--topk": INT,
                     "--extensions": st.sampled_from(["mp4", "mp4,mkv", "", ",", "txt"]),
                     "--out": st.sampled_from(["{fresh+.jsonl}", "{fresh+.csv}", "{fresh+.txt}"]),
                     "--show-tokens": st.just("{fresh+.png}")}),
       videos=st.sampled_from([["{video}"], ["{video}", "{other}"], ["{root}"]]), json_flag=st.booleans())
def test_fuzz_predict(world, opts, videos, json_flag):
    argv = ["predict", *videos, "--checkpoint", "{ckpt}", *opts, *(["--json"] if json_flag else [])]
    code, out, _ = check_run(_fill(argv, world))
    if code == 0 and json_flag:
        for line in out.splitlines():
            probs = [t["prob"] for t in json.loads(line)["top"]]
            assert probs and all(0 <= p <= 1 for p in probs) and sum(probs) <= 1 + 1e-4


@SETTINGS
@given(opts=options({"--frames": int_list("1", "2", "4"), "--sizes": int_list("14", "28", "56"),
                     "--max-factor": FLOAT, "--views": VIEWS, "--subset": FLOAT, "--refine": INT,
                     "--min-gain-se": FLOAT, "--workers": INT, "--device": DEVICE, "--dtype": DTYPE}),
       budgets=int_list("4", "8", "16", "32"))
def test_fuzz_optimize(world, opts, budgets):
    # a small search space unless drawn (the default one holds grids over the lowered cap)
    argv = ["optimize", "--checkpoint", "{work}", "--data", "{csv}", "--budgets", budgets, "--out", "{fresh}",
            "--frames", "2,4", "--sizes", "28,56", *opts]
    check_run(_fill(argv, world))


@SETTINGS
@given(opts=options({"--tokens": st.one_of(st.sampled_from(["16", "64", "256", "257"]), INT), "--grid": GRID,
                     "--num-classes": INT}),
       model=st.sampled_from(["fluxvit_nano_patch14", "fluxvit_small_patch14", "fluxvit_base_patch14", "nope", ""]),
       json_flag=st.booleans())
def test_fuzz_flops(world, opts, model, json_flag):
    code, out, _ = check_run(["flops", model, *opts, *(["--json"] if json_flag else [])])
    if code == 0 and json_flag:
        row = json.loads(out)
        assert row["gflops"] > 0 and 1 <= row["tokens"] <= SMALL_CAPS["GRID_TOKENS"]


@SETTINGS
@given(opts=options({"--grid": GRID, "--batch": int_list("1", "2"), "--repeats": INT, "--device": DEVICE,
                     "--dtype": DTYPE, "--out": st.just("{fresh+.json}")}),
       tokens=int_list("8", "16", "64"), models=st.sampled_from([["fluxvit_nano_patch14"], ["nope"], []]),
       json_flag=st.booleans())
def test_fuzz_bench(world, opts, tokens, models, json_flag):
    # a small base grid unless drawn (the models' own are over the lowered cap)
    argv = ["bench", *models, "--tokens", tokens, "--grid", "2x28", *opts, *(["--json"] if json_flag else [])]
    code, out, _ = check_run(_fill(argv, world))
    if code == 0 and json_flag:
        assert all(row["ms"] > 0 for row in json.loads(out)["rows"])


@SETTINGS
@given(opts=options({"--classes": st.sampled_from(["brighten", "darken,plain", "checker stripes_h", "nope", ",",
                                                   "plain,plain", ""]),
                     "--per-class": st.one_of(st.sampled_from(["1", "2"]), INT),
                     "--size": st.one_of(st.sampled_from(["32", "48", "34"]), INT),
                     "--frames": st.one_of(st.sampled_from(["2", "4"]), INT), "--seed": INT, "--val-fraction": FLOAT,
                     "--workers": INT, "--force": FLAG}))
def test_fuzz_synth(world, opts):
    out = world["fresh"]()
    # two small clips unless drawn otherwise (the defaults make more than the lowered caps allow)
    code, _, _ = check_run(["synth", str(out), "--classes", "brighten", "--per-class", "2", "--size", "32",
                            "--frames", "2", *opts])
    if code == 0:
        assert (out / "train.csv").is_file() and (out / "classes.txt").is_file()
    else:
        assert not (out / "train.csv").exists()  # every argument is checked before anything is written


@SETTINGS
@given(opts=options({"--num-classes": st.one_of(st.sampled_from(["4"]), INT),
                     "--classes": st.sampled_from(["{classes}", "{wrong_classes}", "{root}/missing.txt"])}),
       # the release file (FluxViT-S: a second to convert) is one draw in 16
       src=st.sampled_from(["{release}", *["{ckpt}", "{garbage}", "{root}", "{root}/missing.pth", "{video}", "",
                                           "{csv}", "{classes}"] * 2, "{existing_dir}"]),
       dst=st.sampled_from(["{fresh+.safetensors}", "{fresh}", "{existing}", "{existing_dir}", "{garbage}", ""]),
       model=st.sampled_from(["fluxvit_small_patch14", "fluxvit_nano_patch14", "nope"]))
def test_fuzz_convert(world, opts, src, dst, model):
    check_run(_fill(["convert", src, dst, "--model", model, *opts], world))


@SETTINGS
@given(opts=options({"--seed": INT, "--steps": INT, "--quick": FLAG, "--out": st.just("{fresh}")}))
def test_fuzz_demo(world, opts):
    code, out, _ = check_run(_fill(["demo", *opts], world))
    assert code == 2 or out.startswith("| demo |")
