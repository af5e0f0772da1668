"""End-to-end latency: decode + preprocess + forward per grid and budget, the latency-aware
choice of grid and budget, and the commands that budget against it. Times are measured, never
asserted against a number (speed lives in benchmarks/); what is asserted is which candidate the
rule picks for given costs, and that every part of a request is counted."""

from __future__ import annotations

import json

import pytest

import fluxvit
from fluxvit.cli import main as cli
from fluxvit.errors import ConfigError
from fluxvit.evaluate.latency import EndToEnd, budget_ladder, choose_for_latency, measure_end_to_end
from fluxvit.flux.grid import Grid


@pytest.fixture(scope="module")
def latency_setup(setup):
    """The evaluation tests' split and checkpoint, its model, and one of its videos."""
    root, data, ckpt = setup
    return root, data, ckpt, fluxvit.load_checkpoint(ckpt), sorted((root / "data").rglob("*.mp4"))[0]


def test_the_choice_is_the_most_accurate_candidate_that_fits():
    """A fake cost table: the default grid is the most accurate but too slow for the target, so a
    cheaper grid is chosen; with room for everything the most accurate is; a tie goes to the
    cheaper; nothing fitting is one line naming the cheapest candidate."""
    default, fewer_frames, lower_res = Grid(8, 112, budget=128), Grid(4, 112, budget=128), Grid(8, 56, budget=64)
    accuracy = {default: 80.0, fewer_frames: 74.0, lower_res: 74.0}
    cost = {default: 60.0, fewer_frames: 31.0, lower_res: 22.0}
    assert choose_for_latency(accuracy, cost, 100.0) == default
    assert choose_for_latency(accuracy, cost, 40.0) == lower_res  # tie at 74%: the cheaper one
    assert choose_for_latency({**accuracy, fewer_frames: 76.0}, cost, 40.0) == fewer_frames
    with pytest.raises(ConfigError, match=r"nothing fits 10 ms end to end here: the cheapest candidate "
                                          r"\(8x56@64\) takes 22.0 ms"):
        choose_for_latency(accuracy, cost, 10.0)
    for bad in (0.0, -5.0, float("nan")):
        with pytest.raises(ConfigError, match="latency target must be positive"):
            choose_for_latency(accuracy, cost, bad)


def test_every_part_of_a_request_is_measured(latency_setup):
    _, _, _, model, video = latency_setup
    grids = [Grid(2, 28, budget=4), Grid(8, 56, budget=64), Grid(8, 56)]
    costs = measure_end_to_end(model, video, grids, repeats=2)
    assert list(costs) == grids
    for grid, c in costs.items():
        assert isinstance(c, EndToEnd) and c.decode_ms > 0 and c.preprocess_ms > 0 and c.forward_ms > 0, grid
        assert c.total_ms == pytest.approx(c.decode_ms + c.preprocess_ms + c.forward_ms)
        assert c.to_dict()["total_ms"] == pytest.approx(c.total_ms, abs=0.01)


def test_optimize_for_a_latency_target(latency_setup, tmp_path, capsys):
    """``optimize --cost latency --latency-ms X``: the choice is one of the scored grids, it fits
    X as measured, it is printed, written to the report and stored in the checkpoint."""
    root, data, ckpt, _, _ = latency_setup
    import shutil

    target = shutil.copy(ckpt, tmp_path / "c.safetensors")
    argv = ["optimize", "--checkpoint", str(target), "--data", str(data.val_csv), "--budgets", "8,20",
            "--frames", "2,4", "--sizes", "28,56", "--subset", "1", "--refine", "1", "--out", str(tmp_path / "to")]
    assert cli([*argv, "--cost", "latency", "--latency-ms", "100000"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("Latency target 100000 ms end to end: grid "))
    stored = fluxvit.load_checkpoint(target).checkpoint_meta["token_optimization_latency"]["100000"]
    assert stored["total_ms"] <= 100000 and stored["device"] == "cpu" and stored["video"].endswith(".mp4")
    assert f"grid {stored['grid']} at " in line
    assert "Latency target 100000 ms" in (tmp_path / "to" / "report.md").read_text()
    for extra, words in ((["--cost", "latency"], "--cost latency and --latency-ms X go together"),
                         (["--latency-ms", "50"], "--cost latency and --latency-ms X go together"),
                         (["--cost", "latency", "--latency-ms", "0.0001"], "nothing fits 0.0001 ms end to end")):
        assert cli([*argv, *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err, err


def test_predict_budgets_the_whole_request(latency_setup, capsys):
    """``predict --latency-ms``: with room for everything, the largest budget; a target below the
    decoding of the video itself fits no budget, and says end to end."""
    _, _, ckpt, model, video = latency_setup
    assert cli(["predict", str(video), "--checkpoint", str(ckpt), "--latency-ms", "100000", "--json"]) == 0
    (row,) = [json.loads(ln) for ln in capsys.readouterr().out.splitlines() if ln.startswith("{")]
    assert row["tokens"] == budget_ladder(Grid(4, 56).num_patches(14))[-1] == 64
    assert cli(["predict", str(video), "--checkpoint", str(ckpt), "--latency-ms", "0.001"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no token budget fits 0.001 ms end to end" in err, err


def test_bench_times_requests_end_to_end(latency_setup, capsys):
    _, _, _, _, video = latency_setup
    assert cli(["bench", "fluxvit_nano_patch14", "--tokens", "16,64", "--grid", "4x56", "--repeats", "1",
                "--end-to-end", str(video), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [r["tokens"] for r in result["rows"]] == [16, 64]
    for r in result["rows"]:
        e2e = r["end_to_end"]
        assert e2e["total_ms"] == pytest.approx(e2e["decode_ms"] + e2e["preprocess_ms"] + e2e["forward_ms"], abs=0.02)
    assert cli(["bench", "fluxvit_nano_patch14", "--end-to-end", str(video.parent / "missing.mp4")]) == 2
    assert "no such video file" in capsys.readouterr().err
