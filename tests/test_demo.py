"""The main job end to end: ``fluxvit demo --quick`` on tiny settings, and on a user's folder."""

from __future__ import annotations

import contextlib
import io
import re

import pytest

from fluxvit.cli import main
from fluxvit.evaluate.token_optimization import stored_grid
from fluxvit.models.registry import load_checkpoint

# ``demo --quick`` on even less (6 clips a class, 6 steps, two search frame counts and sizes):
# every stage of the pipeline, in a fraction of the time; the numbers are near chance.
TINY = ["--quick", "--set", "per_class=6", "--set", "steps=6", "--set", "search_frames=[4,8]",
        "--set", "search_sizes=[56,112]"]


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "quick"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = main(["demo", *TINY, "--out", str(out)])
    return rc, printed.getvalue(), out


def _rows(table: str) -> list[list[str]]:
    lines = [ln for ln in table.splitlines() if re.match(r"\| \d+ \|", ln)]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]


def test_quick_demo_prints_the_table_and_writes_everything(quick_demo):
    rc, printed, out = quick_demo
    assert rc == 0
    rows = _rows(printed)
    # tokens, of baseline, GFLOPs, ms/clip, fewer frames, lower res., baseline + sel., Flux, Flux + TO, TO grid
    assert [(r[0], r[1]) for r in rows] == [("64", "1/8"), ("128", "1/4"), ("512", "1")]
    gflops = [float(r[2]) for r in rows]
    assert 0 < gflops[0] < gflops[1] < gflops[2] < 1.0  # a nano model: well under a GFLOP a view
    assert all(float(r[3]) > 0 for r in rows)
    accs = [[float(x) for x in r[4:9]] for r in rows]
    assert all(0.0 <= a <= 100.0 for row in accs for a in row)
    # At the baseline's own token count, "fewer frames", "lower resolution" and "selection" are
    # all the baseline on its full 8x112 grid: the same number.
    assert accs[2][0] == accs[2][1] == accs[2][2]
    assert all(re.fullmatch(r"\d+x\d+", r[9]) for r in rows)

    report = (out / "report.md").read_text()
    assert printed.strip().splitlines()[0] in report and "Run time:" in report
    assert (out / "accuracy_vs_gflops.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "token_optimization" / "token_optimization.png").is_file()
    assert not list(out.rglob("*.part"))


def test_quick_demo_checkpoints_load_and_carry_the_token_optimization(quick_demo):
    _, _, out = quick_demo
    base = load_checkpoint(out / "baseline" / "model.safetensors")
    flux = load_checkpoint(out / "flux" / "model.safetensors")
    assert base.config.head_budgets == (512,) and flux.config.head_budgets == (512, 256, 128)
    assert base.class_names == flux.class_names and len(flux.class_names) == 10
    # TO stored its best grid per budget with the Flux checkpoint, and the table shows that grid.
    _, printed, _ = quick_demo
    shown = {int(r[0]): r[9] for r in _rows(printed)}
    for budget, grid in shown.items():
        stored = stored_grid(flux.checkpoint_meta, budget)
        assert stored is not None and f"{stored.frames}x{stored.height}" == grid



def test_quick_demo_records_every_test_clips_outcome(quick_demo):
    """result.json (what `demo --seeds` compares) holds each method's outcome on every test clip,
    and each method's top-1 is the share of its clips it got right."""
    import json

    _, _, out = quick_demo
    record = json.loads((out / "result.json").read_text())
    test_clips = len((out / "test.csv").read_text().splitlines())
    assert record["settings"]["seed"] == 0 and record["settings"]["steps"] == 6
    methods = ("base_fewer_frames", "base_lower_resolution", "base_selection", "flux", "flux_to")
    for row in record["rows"]:
        outcomes = record["outcomes"][str(row["budget"])]
        for m in methods:
            assert len(outcomes[m]) == test_clips
            assert 100.0 * sum(outcomes[m].values()) / test_clips == pytest.approx(row[m])


def _accuracy_columns(printed: str) -> list[list[str]]:
    """Every table cell but the two measured-time columns (ms/clip and end-to-end ms)."""
    return [r[:3] + r[4:10] for r in _rows(printed)]


def test_demo_on_a_prepared_folder_gives_the_synthetic_demos_table(quick_demo, tmp_path):
    """``demo --data DIR`` runs the same experiment on a user's folder: given the benchmark that
    ``fluxvit synth`` writes with the demo's seed and sizes, the same table (all but the timings)."""
    _, builtin, _ = quick_demo
    assert main(["synth", str(tmp_path / "mine"), "--per-class", "6", "--seed", "0", "--val-fraction", "0.4"]) == 0
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["demo", *TINY, "--out", str(tmp_path / "folder"), "--data", str(tmp_path / "mine")]) == 0
    assert len(_rows(builtin)) == 3
    assert _accuracy_columns(printed.getvalue()) == _accuracy_columns(builtin)
    report = (tmp_path / "folder" / "report.md").read_text()
    assert f"dataset {tmp_path / 'mine'}" in report and not (tmp_path / "folder" / "data").exists()


@pytest.mark.parametrize("case", ["no_lists", "not_a_folder", "one_clip", "budget_too_big"])
def test_demo_refuses_bad_data_in_one_line(tmp_path, capsys, case):
    target, extra = tmp_path / "d", []
    target.mkdir()
    if case == "not_a_folder":
        target = tmp_path / "file.csv"
        target.write_text("a.mp4 0\n")
    elif case == "one_clip":
        (target / "train.csv").write_text("a.mp4 0\nb.mp4 1\n")
        (target / "val.csv").write_text("a.mp4 0\n")
    elif case == "budget_too_big":
        extra = ["--set", "budgets=[64,1024]"]
    expected = {"no_lists": "has no train.csv or val.csv", "not_a_folder": "not a directory",
                "one_clip": "cannot be split into a tune and a test half",
                "budget_too_big": "1024 tokens is more than the baseline grid 8x112 holds (512)"}[case]
    assert main(["demo", "--quick", "--data", str(target), "--out", str(tmp_path / "out"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err
    assert not (tmp_path / "out" / "baseline").exists()  # refused before any training
