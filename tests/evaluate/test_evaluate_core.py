import json

import numpy as np
import pytest
import torch

import fluxvit
from fluxvit.errors import ConfigError
from fluxvit.evaluate.latency import budget_for_latency, budget_ladder, measure_latency
from fluxvit.evaluate.metrics import ViewAccumulator, per_class_accuracy, topk_accuracy
from fluxvit.evaluate.report import format_gflops, markdown_table, plot_accuracy_vs_gflops
from fluxvit.evaluate.token_optimization import (
    SearchSpace,
    choices_metadata,
    optimize_budget,
    plain_grids,
    stored_grid,
)
from fluxvit.evaluate.visualize import token_mosaic
from fluxvit.flux.grid import Grid


def test_views_are_averaged_per_video_in_softmax_space():
    acc = ViewAccumulator(num_classes=3)
    # video "a": view 1 says class 0 weakly, view 2 says class 2 strongly -> average picks 2
    acc.add(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 5.0]]), torch.tensor([2, 2]), ["a", "a"])
    acc.add(torch.tensor([[0.0, 3.0, 0.0]]), torch.tensor([0]), ["b"])
    res = acc.result(per_class=True)
    assert res["videos"] == 2 and res["views"] == 3
    assert res["top1"] == 50.0 and res["top5"] == 100.0
    assert res["per_class"] == [0.0, None, 100.0]


def test_topk_and_per_class():
    probs = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.1, 0.4], [0.2, 0.3, 0.5]])
    labels = torch.tensor([1, 2, 0])
    assert topk_accuracy(probs, labels, (1, 2)) == {"top1": pytest.approx(100 / 3), "top2": pytest.approx(200 / 3)}
    assert per_class_accuracy(probs, labels, 3) == [0.0, 100.0, 0.0]


def test_search_space_and_plain_grids():
    space = SearchSpace(frames=(2, 4, 8), sizes=(56, 112), max_factor=4)
    cands = space.candidates(128, 14)
    assert {str(g.with_budget(None)) for g in cands} == {"2x112", "4x112", "8x56", "8x112"}  # 128..512
    plain = plain_grids(128, Grid(8, 112), 14)
    assert str(plain["fewer_frames"]) == "2x112" and str(plain["lower_resolution"]) == "8x56"
    assert plain["fewer_frames"].num_patches(14) <= 128
    with pytest.raises(ConfigError, match="no candidate grid"):
        SearchSpace(frames=(1,), sizes=(28,)).candidates(1000, 14)


def test_two_stage_search_refines_the_best_subset_scores_and_prefers_cheaper_ties():
    cands = [Grid(2, 112), Grid(4, 112), Grid(8, 56), Grid(8, 112)]
    subset = {"2x112": 50.0, "4x112": 70.0, "8x56": 70.0, "8x112": 60.0}
    full = {"4x112": 80.0, "8x56": 80.0, "8x112": 90.0}
    calls = []

    def score(grid, on_subset):
        key = str(grid.with_budget(None))
        calls.append((key, on_subset))
        return subset[key] if on_subset else full[key]

    choice = optimize_budget(128, cands, score, refine_top=2)
    assert sorted(c[0] for c in calls if not c[1]) == ["4x112", "8x56"]  # top-2 refined
    assert str(choice.best) == "8x56@128"  # tie 80/80 -> fewer patches (512 vs 1024)
    meta = choices_metadata({128: choice})
    assert stored_grid(meta, 128) == Grid(8, 56, budget=128) and stored_grid(meta, 64) is None
    json.dumps(meta)  # storable


def test_latency_budget_is_measured_cached_and_monotone(tmp_path, monkeypatch):
    monkeypatch.setenv("FLUXVIT_CACHE", str(tmp_path))
    model = fluxvit.create_model("fluxvit_nano_patch14", num_classes=3, depth=2).eval()
    grid = Grid(4, 56)
    ladder = budget_ladder(grid.num_patches(14), smallest=8)
    assert ladder[0] == 8 and ladder[-1] == 64 and ladder == sorted(set(ladder))
    times = measure_latency(model, grid, ladder)
    assert (tmp_path / "latency.json").is_file()
    assert measure_latency(model, grid, ladder) == times  # second call: from the cache
    slowest = max(times.values())
    assert budget_for_latency(model, grid, slowest * 10) == 64
    with pytest.raises(ConfigError, match="no token budget fits"):
        budget_for_latency(model, grid, 1e-6)


def test_token_mosaic_dims_dropped_tokens():
    frames = np.full((2, 28, 28, 3), 200, dtype=np.uint8)
    img = token_mosaic(frames, torch.tensor([0, 7]), patch_size=14)  # frame 0 top-left, frame 1 bottom-right
    assert img.shape == (28, 28 * 2 + 2, 3)
    assert img[7, 7].mean() == 200 and img[7, 21].mean() == 50  # kept vs dimmed centre pixels
    assert img[21, 30 + 21].mean() == 200 and img[21, 30 + 7].mean() == 50


def test_report_table_and_plot(tmp_path):
    table = markdown_table([{"budget": 64, "acc": 51.25, "x": None}], [("budget", "N"), ("acc", "top-1"), ("x", "X")])
    assert table.splitlines()[2] == "| 64 | 51.2 | – |"
    rows = [{"g": g} for g in (439.6, 83.14, 0.04812, 0.0)]
    assert markdown_table(rows, [("g", "GFLOPs", format_gflops)]).splitlines()[2:] == [
        "| 440 |", "| 83.1 |", "| 0.0481 |", "| 0 |"]
    png = plot_accuracy_vs_gflops({"a": [(1.0, 50.0), (2.0, 60.0)], "b": [(1.5, 40.0)]}, tmp_path / "p.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not list(tmp_path.glob("*.part*"))
