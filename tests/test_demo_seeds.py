"""``fluxvit demo --seeds N``: the experiment over seeds, mean ± sd, paired comparisons, the claims.

The demo itself is replaced by a stand-in that returns chosen numbers (a real run is the
module-scoped quick demo of ``test_demo.py``), so every number the summary prints can be
worked out by hand.
"""

from __future__ import annotations

import json

import pytest

import fluxvit.demo as demo
from fluxvit.cli import main
from fluxvit.demo import DemoResult, DemoSettings, run_demo_seeds, write_result
from fluxvit.errors import ConfigError

CLIPS = 20  # each stand-in seed's test split; one clip = 5 points

# seed offset -> budget -> method -> top-1. Seeds 3, 4, 5 (offsets 0, 1, 2).
TABLE = {
    64: {"base_fewer_frames": [20, 20, 20], "base_lower_resolution": [30, 30, 30],
         "base_selection": [40, 45, 35], "flux": [55, 55, 55], "flux_to": [60, 55, 65]},
    128: {"base_fewer_frames": [50, 50, 50], "base_lower_resolution": [60, 60, 60],
          "base_selection": [45, 45, 45], "flux": [60, 60, 60], "flux_to": [70, 60, 65]},
    512: {"base_fewer_frames": [75, 70, 70], "base_lower_resolution": [75, 70, 70],
          "base_selection": [75, 70, 70], "flux": [80, 65, 70], "flux_to": [80, 65, 70]},
}


def _outcomes(top1: float) -> dict[str, bool]:
    """The first top1/5 clips right: a method with a higher top-1 gets a superset of the clips."""
    right = round(top1 * CLIPS / 100)
    return {str(i): i < right for i in range(CLIPS)}


@pytest.fixture
def stand_in(monkeypatch):
    calls = []

    def fake_run(s: DemoSettings) -> DemoResult:
        calls.append(s.seed)
        j = s.seed - 3
        rows, outcomes = [], {}
        for b, methods in TABLE.items():
            row = {"budget": b, "fraction": "1" if b == 512 else f"1/{512 // b}", "gflops": b / 1000, "ms": 1.0,
                   "to_grid": "8x112", "to_ms": 5.0}
            row.update({m: float(v[j]) for m, v in methods.items()})
            if b == 128:  # TO's challenger leads on tune by 1.5 / 2.5 / 3.5 SE; switched where over 2
                row.update(to_challenger="16x56", to_gain_se=1.5 + j, flux_challenger=65.0 + 5 * j,
                           to_grid="16x56" if j else "8x112")
            rows.append(row)
            outcomes[b] = {m: _outcomes(v[j]) for m, v in methods.items()}
            if b == 128:
                outcomes[b]["flux_challenger"] = _outcomes(row["flux_challenger"])
        result = DemoResult(rows, "", None, None, {}, 1.0, {}, outcomes)
        write_result(result, s)
        return result

    monkeypatch.setattr(demo, "run_demo", fake_run)
    return calls


def _settings(tmp_path, **changes) -> DemoSettings:
    s = DemoSettings.quick(out=str(tmp_path / "over"), seed=3)
    for k, v in changes.items():
        setattr(s, k, v)
    return s


def test_seeds_give_mean_sd_paired_differences_and_the_claims(tmp_path, stand_in):
    over = run_demo_seeds(_settings(tmp_path), seeds=3)
    assert over.seeds == [3, 4, 5] and stand_in == [3, 4, 5]
    for k in (3, 4, 5):
        assert (tmp_path / "over" / f"seed-{k}" / "result.json").is_file()
    rows = {int(line.split("|")[1]): [c.strip() for c in line.strip("|").split("|")]
            for line in over.table.splitlines() if line.startswith("| ") and line.split("|")[1].strip().isdigit()}
    # columns: tokens, of baseline, GFLOPs, fewer frames, lower res, + selection, best way, Flux, Flux + TO
    assert rows[64][6] == "40.0 ± 5.0"  # the best way per seed: selection 40 / 45 / 35
    assert rows[64][8] == "60.0 ± 5.0"
    assert rows[128][6] == "60.0 ± 0.0"  # lower resolution in every seed

    # one claim per budget, then 1/4 against the full baseline, then 1/8's ten points
    at64, at128, at512, quarter, eighth = over.claims
    # 64: +20 / +10 / +30 over the best way: both the budget claim and the 1/8 claim hold
    assert at64.holds and at64.detail == "+20.0 on the mean, worst seed +10.0"
    assert eighth.holds and eighth.detail == at64.detail and "10 points" in eighth.text
    # 128: +10 / 0 / +5 over the best way, but -5 / -10 / -5 against the full baseline (75 / 70 / 70)
    assert at128.holds and at128.detail == "+5.0 on the mean, worst seed +0.0"
    assert not quarter.holds and quarter.detail == "-6.7 on the mean, worst seed -10.0"
    # 512: +5 / -5 / 0: the mean is not below, but one seed is 5 points under: does not hold
    assert not at512.holds and at512.detail == "+0.0 on the mean, worst seed -5.0"

    # the guard: one row per seed at 128 tokens, the challenger's test top-1 minus the default grid's
    guard = [ln for ln in over.summary.read_text().splitlines() if "kept default |" in ln or "switched |" in ln]
    assert [[c.strip() for c in ln.strip("|").split("|")] for ln in guard] == [
        ["3", "128", "16x56", "1.5", "kept default", "+5.0"],
        ["4", "128", "16x56", "2.5", "switched", "+10.0"],
        ["5", "128", "16x56", "3.5", "switched", "+15.0"]]

    summary = json.loads((tmp_path / "over" / "summary.json").read_text())
    best64 = next(r for r in summary["paired"] if r["budget"] == 64)["best"]
    assert best64["per_seed"] == pytest.approx([20.0, 10.0, 30.0])
    assert best64["pairs"] == 3 * CLIPS and best64["only_a"] == 4 + 2 + 6 and best64["only_b"] == 0
    assert best64["mean"] == pytest.approx(20.0)
    text = over.summary.read_text()
    assert "### Seed 4" in text and "does not hold" in text
    assert over.plot.read_bytes()[:4] == b"\x89PNG"


def test_finished_seeds_are_reused_and_changed_settings_rerun(tmp_path, stand_in):
    first = run_demo_seeds(_settings(tmp_path), seeds=2)
    again = run_demo_seeds(_settings(tmp_path), seeds=3)  # seeds 3 and 4 finished: only 5 runs
    assert stand_in == [3, 4, 5]
    assert again.table != first.table  # three seeds now
    (tmp_path / "over" / "seed-4" / "result.json").write_text("{not json")
    run_demo_seeds(_settings(tmp_path), seeds=3)
    assert stand_in == [3, 4, 5, 4]  # a damaged record: that seed runs again
    run_demo_seeds(_settings(tmp_path, steps=61), seeds=1)
    assert stand_in[-1] == 3 and len(stand_in) == 5  # other settings: not the same run


@pytest.mark.parametrize("seeds", [0, -1, 51, True, 2.0])
def test_bad_seed_counts_are_refused(tmp_path, stand_in, seeds):
    with pytest.raises(ConfigError, match="--seeds"):
        run_demo_seeds(_settings(tmp_path), seeds=seeds)
    assert stand_in == []


def test_cli_seeds_prints_the_claims_and_refuses_zero(tmp_path, stand_in, capsys):
    out = str(tmp_path / "cli")
    assert main(["demo", "--quick", "--seed", "3", "--seeds", "2", "--out", out]) == 0
    printed = capsys.readouterr().out
    assert "paired on the same seeds and clips" in printed and "[holds]" in printed
    assert "[does not hold]" in printed and f"{out}/summary.md" in printed
    assert main(["demo", "--quick", "--seeds", "0", "--out", str(tmp_path / "zero")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--seeds 0" in err
    assert not (tmp_path / "zero").exists()
