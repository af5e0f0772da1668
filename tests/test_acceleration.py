"""int8 and torch.compile (fluxvit.acceleration): the same logits as eager fp32 within a measured
tolerance, one-line refusals, the eager fallback, and the command line's --quantize/--compile."""

from __future__ import annotations

import copy
import json
import logging

import numpy as np
import pytest
import torch
from torch import nn

import fluxvit
from fluxvit import acceleration
from fluxvit.acceleration import compile_model, quantize_int8
from fluxvit.cli import build_parser, main
from fluxvit.data.encode import write_video
from fluxvit.errors import ConfigError
from fluxvit.evaluate.latency import _model_key
from fluxvit.placement import Placement

# Measured on random-weight nanos (LayerScale 1, so every block changes the logits; 4 seeds, 16
# clips of 8x56, all 64 tokens and 32 kept): int8 logits differ from fp32 by at most 0.0029
# (logits' std 0.16-0.29) and all 128 top-1s agreed. The bound keeps 3x headroom.
INT8_MAX_ABS_DIFF = 0.01
CLASSES = ["a", "b", "c", "d"]


def nano(depth: int = 6, **kw) -> nn.Module:
    torch.manual_seed(0)
    return fluxvit.create_model("fluxvit_nano_patch14", num_classes=10, depth=depth, init_values=1.0, **kw).eval()


def clips(n: int, frames: int = 8, size: int = 56, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, frames, size, size, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- int8
@pytest.mark.parametrize("tokens", [32, None])
def test_int8_logits_stay_close_to_fp32(tokens):
    model = nano()
    quantized = quantize_int8(copy.deepcopy(model))
    video = clips(16)
    with torch.inference_mode():
        ref, out = model(video, num_tokens=tokens), quantized(video, num_tokens=tokens)
    diff = (out - ref).abs().max().item()
    assert 0 < diff < INT8_MAX_ABS_DIFF  # changed (it is int8), but by little
    top2 = ref.topk(2, dim=1).values
    margin = top2[:, 0] - top2[:, 1]
    flipped = out.argmax(1) != ref.argmax(1)
    assert flipped.sum() <= 1 and bool((margin[flipped] < 2 * diff).all())  # only a near-tie may flip


def test_int8_swaps_exactly_the_block_linears():
    model = quantize_int8(nano(depth=2))
    dynamic = torch.ao.nn.quantized.dynamic.Linear
    swapped = sorted(name for name, m in model.named_modules() if isinstance(m, dynamic))
    assert swapped == sorted(f"blocks.{i}.{layer}" for i in range(2) for layer in acceleration.INT8_LAYERS)
    assert all(type(h) is nn.Linear for h in model.heads) and type(model.projectors[0].k) is nn.Linear
    assert model.acceleration == "int8" and not model.training
    assert quantize_int8(model) is model  # a second call changes nothing
    assert _model_key(model) != _model_key(nano(depth=2))  # the latency cache keeps int8 apart


def test_int8_leaves_the_quantized_engine_and_warnings_as_they_were(recwarn):
    before = torch.backends.quantized.engine
    quantize_int8(nano(depth=1), engine="fbgemm")
    assert torch.backends.quantized.engine == before
    # torch.ao's notices of its own deprecation, silenced on purpose (fluxvit.acceleration's docstring)
    assert not [w for w in recwarn if str(w.message).startswith(("torch.ao.quantization", "torch.quantize_per"))]


@pytest.mark.parametrize("placement, words", [
    (Placement(torch.device("cuda", 0), torch.float32), "int8 runs on a CPU, not on cuda:0"),
    (Placement(torch.device("cpu"), torch.bfloat16), "int8 keeps the rest of the model in fp32, not bf16"),
])
def test_int8_refuses_placements_it_cannot_run(placement, words):
    model = nano(depth=1)
    with pytest.raises(ConfigError, match=words):
        quantize_int8(model, placement)
    assert getattr(model, "acceleration", None) is None and type(model.blocks[0].attn.qkv) is nn.Linear


def test_int8_refuses_a_torch_without_a_quantized_engine(monkeypatch):
    monkeypatch.setattr(acceleration, "INT8_ENGINES", ("mythical",))
    with pytest.raises(ConfigError, match=r"no quantized CPU engine \(it has: .*x86"):
        quantize_int8(nano(depth=1))
    with pytest.raises(ConfigError, match="int8 engine 'mythical' is not one of"):
        quantize_int8(nano(depth=1), engine="mythical")


# ----------------------------------------------------------------------------- torch.compile
def test_compiled_logits_equal_eager():
    """Two shapes (the second one recompiles); a 2-block nano keeps the compile to seconds."""
    model = nano(depth=2)
    compiled = compile_model(copy.deepcopy(model))
    assert compiled.acceleration == "compiled" and compiled.state_dict().keys() == model.state_dict().keys()
    video = clips(3)
    with torch.inference_mode():
        for batch, tokens in ((3, 32), (2, None)):
            ref, out = model(video[:batch], num_tokens=tokens), compiled(video[:batch], num_tokens=tokens)
            assert out.shape == ref.shape and (out - ref).abs().max().item() < 1e-5


def test_int8_then_compiled_equals_int8_eager():
    model = quantize_int8(nano(depth=2))
    compiled = compile_model(copy.deepcopy(model))
    assert compiled.acceleration == "int8+compiled"
    with torch.inference_mode():
        assert (compiled(clips(2), num_tokens=32) - model(clips(2), num_tokens=32)).abs().max().item() < 1e-5


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "fluxvit.acceleration" and r.levelno >= logging.WARNING]


def test_compile_unavailable_runs_eager_with_one_line(monkeypatch, caplog):
    def refuse(*args, **kwargs):
        raise RuntimeError("torch.compile is not supported on this platform")

    monkeypatch.setattr(torch, "compile", refuse)
    model = nano(depth=2)
    ref = model(clips(2), num_tokens=32)
    assert compile_model(model) is model
    assert _warnings(caplog) == ["torch.compile is unavailable here (torch.compile is not supported on this "
                                 "platform); running eager"]
    assert getattr(model, "acceleration", None) is None and "forward" not in vars(model.blocks[0])
    assert torch.equal(model(clips(2), num_tokens=32), ref)


def test_compile_failing_at_the_first_call_falls_back_once_for_all_blocks(monkeypatch, caplog):
    calls = []

    def compile_that_fails(fn, **kwargs):
        def run(*args, **kw):
            calls.append(fn)
            raise RuntimeError("InductorError: no C++ compiler found")
        return run

    monkeypatch.setattr(torch, "compile", compile_that_fails)
    model = nano(depth=3)
    ref = model(clips(2), num_tokens=32)
    compile_model(model)
    for _ in range(2):
        assert torch.equal(model(clips(2), num_tokens=32), ref)
    assert len(calls) == 1  # the first block failed; no block tried again
    assert _warnings(caplog) == ["torch.compile failed (InductorError: no C++ compiler found); running eager from "
                                 "here on"]


def test_compile_fallback_still_raises_an_error_of_the_input(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: lambda *a, **k: (_ for _ in ()).throw(RuntimeError("x")))
    model = compile_model(nano(depth=1))
    with pytest.raises(RuntimeError, match=r"expected input with shape \[\*96\]"):
        model.blocks[0](torch.randn(1, 5, 7))  # 7 channels, not 96: the eager forward's own error


# ----------------------------------------------------------------------------- command line
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("accel")
    torch.manual_seed(0)
    model = fluxvit.create_model("fluxvit_nano_patch14", num_classes=len(CLASSES), depth=2, default_grid=(4, 56),
                                 init_values=1.0)
    ckpt = fluxvit.save_checkpoint(model, root / "nano.safetensors", classes=CLASSES)
    rng = np.random.default_rng(0)
    videos = [write_video(root / f"v{i}.mp4", rng.integers(0, 255, (8, 56, 56, 3), dtype=np.uint8), fps=8)
              for i in range(3)]
    (root / "val.csv").write_text("".join(f"v{i}.mp4 {i}\n" for i in range(3)))
    return ckpt, videos, root / "val.csv"


def run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def _probs(out: str) -> list[list[float]]:
    return [[t["prob"] for t in json.loads(line)["top"]] for line in out.splitlines() if line.startswith("{")]


def test_predict_int8_and_compiled_give_the_fp32_answers(files, capsys):
    ckpt, videos, _ = files
    base = ("predict", *videos, "--checkpoint", ckpt, "--device", "cpu", "--json", "--topk", "4", "--workers", "0")
    code, out, err = run(capsys, *base)
    assert code == 0, err
    fp32 = _probs(out)
    for extra in (("--quantize", "int8"), ("--compile",), ("--quantize", "int8", "--compile")):
        code, out, err = run(capsys, *base, *extra)
        assert code == 0, err
        got = _probs(out)
        assert len(got) == 3 and np.abs(np.array(got) - np.array(fp32)).max() < 2e-3, extra


def test_eval_int8_compiled_keeps_the_accuracy(files, capsys):
    ckpt, _, csv = files
    base = ("eval", "--checkpoint", ckpt, "--data", csv, "--views", "1x1", "--budget", "32", "--json",
            "--device", "cpu")
    (fp32,), (fast,) = ([json.loads(line) for line in run(capsys, *base, *extra)[1].splitlines()]
                        for extra in ((), ("--quantize", "int8", "--compile")))
    assert fast["videos"] == fp32["videos"] == 3 and fast["top1"] == fp32["top1"]
    assert fast["dtype"] == "fp32"


def test_bench_int8_records_what_it_measured(capsys):
    code, out, err = run(capsys, "bench", "fluxvit_nano_patch14", "--tokens", "32", "--repeats", "1",
                         "--quantize", "int8", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["quantize"] == "int8" and result["compile"] is False and result["rows"][0]["ms"] > 0


@pytest.mark.parametrize("command", ["eval", "predict", "bench"])
def test_cli_refuses_int8_in_bf16_in_one_line(files, capsys, command):
    ckpt, videos, csv = files
    args = {"eval": ("eval", "--checkpoint", ckpt, "--data", csv), "predict": ("predict", videos[0], "--checkpoint",
            ckpt), "bench": ("bench", "fluxvit_nano_patch14", "--tokens", "32")}[command]
    code, out, err = run(capsys, *args, "--device", "cpu", "--dtype", "bf16", "--quantize", "int8")
    assert code == 2 and out == ""
    assert err.strip() == (f"fluxvit {command}: error: --quantize int8 keeps the rest of the model in fp32, not bf16 "
                           f"(pass --dtype fp32 or auto)")


def test_cli_refuses_int8_on_a_gpu_in_one_line(files, capsys, monkeypatch):
    import fluxvit.cli

    ckpt, videos, _ = files
    monkeypatch.setattr(fluxvit.cli, "_placement", lambda args, sharded=False: Placement(torch.device("cuda", 0)))
    code, _, err = run(capsys, "predict", videos[0], "--checkpoint", ckpt, "--quantize", "int8")
    assert code == 2
    assert err.strip() == ("fluxvit predict: error: --quantize int8 runs on a CPU, not on cuda:0 (pass --device cpu; "
                           "on a GPU use --dtype bf16)")


def test_cli_quantize_choices_are_the_librarys():
    for name in ("eval", "predict", "bench"):
        parser = build_parser()._subparsers._group_actions[0].choices[name]
        (action,) = [a for a in parser._actions if a.dest == "quantize"]
        assert tuple(action.choices) == acceleration.QUANTIZE_CHOICES and action.default == "none"
