"""Speed measurement (``fluxvit bench``): what is measured and reported, not how fast it is."""

import json

import pytest
import torch

import fluxvit
from fluxvit.cli import main as cli
from fluxvit.evaluate.speed import forward_speed, selector_seconds, time_call
from fluxvit.flux.grid import Grid


def test_time_call_takes_the_median_after_warm_up():
    calls = []
    seconds = time_call(lambda: calls.append(1), repeats=5, warmup=2)
    assert len(calls) == 7 and 0 <= seconds < 0.01


def test_forward_speed_counts_the_flops_of_the_selected_forward():
    model = fluxvit.create_model("fluxvit_nano_patch14", num_classes=5, depth=2)
    grid = Grid(4, 56)
    full = forward_speed(model, grid, 64, batch=2, repeats=1, peak_gflops=100.0)
    cut = forward_speed(model, grid, 16, batch=2, repeats=1)
    assert (full.tokens, full.grid, full.batch, full.dtype) == (64, "4x56", 2, "float32")
    macs = model.estimate_flops(grid).total  # 64 = all of 4x56's patches: no selection
    assert full.gflop_per_s == pytest.approx(2 * macs * 2 / (full.ms / 1e3) / 1e9, rel=0.01)
    assert full.fraction_of_peak == pytest.approx(full.gflop_per_s / 100.0, abs=1e-3)
    assert cut.fraction_of_peak is None and cut.ms > 0
    assert selector_seconds(model, grid, 16, batch=2, repeats=1) > 0


def test_cli_bench_extends_frames_to_hold_each_budget(capsys):
    assert cli(["bench", "fluxvit_nano_patch14", "--grid", "2x56", "--tokens", "16,96", "--batch", "1,2",
                "--repeats", "1", "--device", "cpu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    rows = [(r["tokens"], r["grid"], r["batch"]) for r in result["rows"]]
    # 2x56 holds 32 patches: 16 tokens are selected from it, 96 need 6 frames of 56 px
    assert rows == [(16, "2x56", 1), (16, "2x56", 2), (96, "6x56", 1), (96, "6x56", 2)]
    assert result["matmul_peak_gflops"] > 0 and result["machine"]["device"] == "cpu"
    assert all(r["ms"] > 0 and 0 < r["fraction_of_peak"] for r in result["rows"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cli_bench_without_cuda_is_one_line(capsys):
    assert cli(["bench", "fluxvit_nano_patch14", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "fluxvit bench: error: device 'cuda': no CUDA device is available here"
