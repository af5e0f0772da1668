import json

import pytest
from safetensors.torch import load_file

import fluxvit
from fluxvit.cli import main as cli
from fluxvit.flux.grid import Grid

from .conftest import CLASSES


def _json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_eval_reports_multiview_accuracy_flops_and_latency(setup, capsys):
    _, data, ckpt = setup
    assert cli(["eval", "--checkpoint", str(ckpt), "--data", str(data.val_csv), "--budget", "20",
                "--views", "2x3", "--json", "--per-class"]) == 0
    (res,) = _json_lines(capsys.readouterr().out)
    assert res["videos"] == 8 and res["views"] == 8 * 6 and res["broken"] == 0
    assert 0 <= res["top1"] <= res["top5"] <= 100 and res["top5"] == 100.0  # 4 classes: top-5 covers all
    assert res["budget"] == 20 and res["grid"] == "4x56x56" and len(res["per_class"]) == 4
    assert res["gflops"] > 0 and res["ms_per_view"] > 0


def test_eval_skips_and_counts_broken_videos(setup, tmp_path, capsys):
    _, data, ckpt = setup
    lines = data.val_csv.read_text().splitlines()
    (data.val_csv.parent / "garbage.mp4").write_bytes(b"not a video at all" * 10)
    bad = tmp_path / "val_broken.csv"
    bad.write_text("\n".join(lines + ["missing.mp4 0", "garbage.mp4 1"]) + "\n")
    assert cli(["eval", "--checkpoint", str(ckpt), "--data", str(bad), "--data-root", str(data.val_csv.parent),
                "--views", "1x1", "--json"]) == 0
    out = capsys.readouterr()
    (res,) = _json_lines(out.out)
    assert res["videos"] == 8 and res["broken"] == 2
    assert "missing.mp4" in out.err and "garbage.mp4" in out.err


def test_eval_refuses_labels_beyond_the_head(setup, tmp_path, capsys):
    _, data, ckpt = setup
    bad = tmp_path / "bad.csv"
    first = data.val_csv.read_text().splitlines()[0].rsplit(" ", 1)[0]
    bad.write_text(f"{first} 7\n")
    assert cli(["eval", "--checkpoint", str(ckpt), "--data", str(bad), "--data-root",
                str(data.val_csv.parent)]) == 2
    err = capsys.readouterr().err
    assert "label 7 is outside the model's 4 classes" in err and "Traceback" not in err


def test_optimize_stores_choices_used_by_eval_and_predict(setup, capsys):
    root, data, ckpt = setup
    work = root / "opt.safetensors"
    work.write_bytes(ckpt.read_bytes())
    assert cli(["optimize", "--checkpoint", str(work), "--data", str(data.val_csv), "--budgets", "16,32",
                "--frames", "2,4,8", "--sizes", "28,56", "--max-factor", "4", "--out", str(root / "opt")]) == 0
    out = capsys.readouterr().out
    assert "| tokens |" in out and (root / "opt" / "report.md").is_file()
    assert (root / "opt" / "token_optimization.png").read_bytes()[:4] == b"\x89PNG"
    model = fluxvit.load_checkpoint(work)
    stored = model.checkpoint_meta["token_optimization"]
    assert set(stored) == {"16", "32"}
    # every choice says why, against the model's default grid
    assert all(r["decision"].startswith(("kept default", "switched", "default grid is the best"))
               for r in stored.values())
    assert "| why (best other grid vs default, paired) |" in out
    # every grid scored on the whole split is stored too (what fluxvit serve trades among): the
    # choices among them, at the top-1 the choices report
    from fluxvit.evaluate.token_optimization import stored_scores

    scores = stored_scores(model.checkpoint_meta, model.patch_size)
    for budget in (16, 32):
        chosen = Grid.parse(stored[str(budget)]["grid"], budget=budget)
        assert scores[chosen] == stored[str(budget)]["top1"]
        assert len([g for g in scores if g.budget == budget]) >= 2
    assert cli(["eval", "--checkpoint", str(work), "--data", str(data.val_csv), "--budget", "16",
                "--views", "1x1", "--json"]) == 0
    (res,) = _json_lines(capsys.readouterr().out)
    assert res["grid"] == stored["16"]["grid"] and res["budget"] == 16


def test_optimize_a_budget_beyond_the_default_grid(setup, capsys):
    # The default grid 4x56 has 64 tokens: at 96 there is no "selection from the default grid"
    # to compare (a dash), and no default to keep; this used to fail after the whole search.
    root, data, ckpt = setup
    work = root / "opt96.safetensors"
    work.write_bytes(ckpt.read_bytes())
    assert cli(["optimize", "--checkpoint", str(work), "--data", str(data.val_csv), "--budgets", "96",
                "--frames", "8,12", "--sizes", "56", "--out", str(root / "opt96")]) == 0
    row = capsys.readouterr().out.splitlines()[2].split(" | ")
    assert row[0] == "| 96" and row[4] == "–" and row[-1] == "best of the candidates (default grid too small) |"
    assert fluxvit.load_checkpoint(work).checkpoint_meta["token_optimization"]["96"]["grid"] in ("8x56x56", "12x56x56")


def test_optimize_rejects_a_negative_noise_threshold(setup, capsys):
    root, data, ckpt = setup
    assert cli(["optimize", "--checkpoint", str(ckpt), "--data", str(data.val_csv), "--budgets", "16",
                "--min-gain-se", "-1", "--out", str(root / "neg")]) == 2
    err = capsys.readouterr().err
    assert "min_gain_se must be >= 0" in err and err.count("\n") == 1 and "Traceback" not in err


def test_predict_prints_labels_draws_tokens_and_reports_broken(setup, tmp_path, capsys):
    root, data, ckpt = setup
    video = sorted((data.val_csv.parent / "val").rglob("*.mp4"))[0]
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(video.read_bytes()[:300])
    png = tmp_path / "tokens.png"
    code = cli(["predict", str(video), str(broken), "--checkpoint", str(ckpt), "--budget", "12",
                "--topk", "2", "--json", "--show-tokens", str(png)])
    out = capsys.readouterr()
    assert code == 2  # one video failed
    (pred,) = _json_lines(out.out)
    assert pred["video"] == str(video) and len(pred["top"]) == 2 and pred["top"][0]["label"] in CLASSES
    assert abs(sum(t["prob"] for t in pred["top"])) <= 1.0 + 1e-6
    assert "broken.mp4" in out.err and out.err.count("\n") == 1
    assert (tmp_path / "tokens_000.png").is_file() and not (tmp_path / "tokens_001.png").exists()


def test_features_are_written_per_video(setup, tmp_path, capsys):
    _, data, ckpt = setup
    feats = tmp_path / "f.safetensors"
    assert cli(["eval", "--checkpoint", str(ckpt), "--data", str(data.val_csv), "--views", "1x1",
                "--save-features", str(feats), "--json"]) == 0
    t = load_file(str(feats))
    assert t["features"].shape == (8, 192) and t["labels"].shape == (8,) and t["index"].tolist() == list(range(8))


def test_eval_and_predict_take_the_selector(setup, capsys):
    """--selector reaches the model from eval and predict (group_dynamic_release: the release's
    per-group counts, for comparisons with it); a selector that does not exist is one line."""
    _, data, ckpt = setup
    runs = {}
    for selector in ("group_dynamic", "group_dynamic_release", "uniform"):
        assert cli(["eval", "--checkpoint", str(ckpt), "--data", str(data.val_csv), "--budget", "30",
                    "--views", "1x1", "--json", "--selector", selector]) == 0
        (runs[selector],) = _json_lines(capsys.readouterr().out)
    assert all(r["videos"] == 8 for r in runs.values())
    video = str(data.val_csv.parent / data.val_csv.read_text().split()[0])
    assert cli(["predict", video, "--checkpoint", str(ckpt), "--budget", "30", "--json",
                "--selector", "group_dynamic_release"]) == 0
    (pred,) = _json_lines(capsys.readouterr().out)
    assert len(pred["top"]) == 4 and abs(sum(t["prob"] for t in pred["top"]) - 1) < 1e-3
    assert cli(["eval", "--checkpoint", str(ckpt), "--data", str(data.val_csv), "--selector", "sideways"]) == 2
    assert "unknown token selector 'sideways'; choose from group_dynamic" in capsys.readouterr().err


def test_device_dtype_and_batch_size(setup, capsys, tmp_path, monkeypatch):
    """--dtype bf16 runs (on any CPU) and is recorded; several videos per forward give the same
    per-video outcomes as one; bad values are one line and exit 2."""
    monkeypatch.setenv("FLUXVIT_CACHE", str(tmp_path))
    _, data, ckpt = setup
    base = ["eval", "--checkpoint", str(ckpt), "--data", str(data.val_csv), "--budget", "20", "--views", "1x2",
            "--json", "--device", "cpu"]
    runs = {}
    for name, extra in {"fp32": ["--dtype", "fp32"], "fp32_b3": ["--dtype", "fp32", "--batch-size", "3"],
                        "bf16": ["--dtype", "bf16", "--batch-size", "8"]}.items():
        assert cli(base + extra) == 0
        (runs[name],) = _json_lines(capsys.readouterr().out)
    assert (runs["fp32"]["device"], runs["fp32"]["dtype"], runs["bf16"]["dtype"]) == ("cpu", "fp32", "bf16")
    assert runs["fp32_b3"]["top1"] == runs["fp32"]["top1"] and runs["fp32_b3"]["videos"] == 8
    assert abs(runs["bf16"]["top1"] - runs["fp32"]["top1"]) <= 25.0  # 8 videos: at most 2 flip in bf16
    video = str(data.val_csv.parent / data.val_csv.read_text().split()[0])
    assert cli(["predict", video, "--checkpoint", str(ckpt), "--json", "--dtype", "bf16", "--device", "cpu"]) == 0
    (pred,) = _json_lines(capsys.readouterr().out)
    assert (pred["device"], pred["dtype"]) == ("cpu", "bf16")
    for bad, message in ((["--device", "gpu"], "device 'gpu' is not one of auto, cpu, cuda, cuda:N"),
                         (["--dtype", "fp16"], "dtype 'fp16' needs a CUDA device"),
                         (["--dtype", "fp64"], "dtype 'fp64' is not one of auto, fp32, bf16, fp16")):
        assert cli(base + bad) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0]
    assert cli(base + ["--batch-size", "0"]) == 2  # the range: the loader's check, one line
    assert capsys.readouterr().err.strip() == "fluxvit eval: error: batch size must be at least 1, got 0"
    with pytest.raises(SystemExit) as info:  # not an integer: argparse's refusal, one line too
        cli(base + ["--batch-size", "x"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["fluxvit eval: error: argument --batch-size: 'x' is not an integer (see fluxvit eval --help)"]


def test_decode_once_search_scores_equal_grid_by_grid_evaluation(setup, tmp_path):
    """Token Optimization's scorer decodes each video once for all grids; every grid's per-video
    outcomes equal evaluating that grid on its own (same frames, same resize, same logits),
    broken videos skipped by both."""
    from fluxvit.data.annotations import read_annotations
    from fluxvit.evaluate.runner import Views, evaluate, token_optimization_scorer
    from fluxvit.flux.grid import Grid

    _, data, ckpt = setup
    model = fluxvit.load_checkpoint(ckpt)
    lines = data.val_csv.read_text().splitlines()
    (tmp_path / "bad.mp4").write_bytes(b"\x00" * 64)
    csv = tmp_path / "val.csv"
    csv.write_text("".join(f"{data.val_csv.parent / ln.split()[0]} {ln.split()[1]}\n" for ln in lines)
                   + f"{tmp_path / 'bad.mp4'} 0\n")
    ann = read_annotations(csv)
    views = Views(2, 1)
    grids = [Grid(2, 28, budget=6), Grid(4, 56, budget=20), Grid(8, 42, budget=40), Grid(6, 56), Grid(4, 42)]
    score_many = token_optimization_scorer(model, ann, views, subset=0.5)
    for on_subset in (True, False):
        together = score_many(grids, on_subset)
        rows = sorted(together[grids[0]].correct)
        assert len(rows) == (4 if on_subset else 8) and 8 not in rows  # the broken one is skipped
        for g in grids:
            alone = evaluate(model, ann, g, views, per_video=True,
                             indices=rows + ([8] if not on_subset else []))
            assert together[g].correct == alone.per_video, g


def test_predict_a_folder_in_batches_to_a_results_file(setup, tmp_path, capsys):
    """A folder (searched recursively) and a broken file: one row each, in input order, errors as
    rows with the reason; batches and decoding workers change no probability; an existing
    results file is never overwritten."""
    import csv

    _, data, ckpt = setup
    folder = data.val_csv.parent / "val"
    videos = sorted(folder.rglob("*.mp4"))
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video" * 20)
    rows = {}
    for name, extra in {"one": ["--batch-size", "1", "--workers", "0"],
                        "batched": ["--batch-size", "3", "--workers", "1"]}.items():
        out = tmp_path / f"{name}.jsonl"
        code = cli(["predict", str(folder), str(broken), "--checkpoint", str(ckpt), "--budget", "20", "--json",
                    "--out", str(out), *extra])
        assert code == 2  # the broken file
        captured = capsys.readouterr()
        assert "broken.mp4: not a readable video" in captured.err
        assert len(_json_lines(captured.out)) == len(videos)
        rows[name] = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["video"] for r in rows["one"]] == [str(v) for v in videos] + [str(broken)]
    assert "error" in rows["one"][-1] and "not a readable video" in rows["one"][-1]["error"]
    for a, b in zip(rows["one"][:-1], rows["batched"][:-1]):
        assert a["video"] == b["video"] and [t["label"] for t in a["top"]] == [t["label"] for t in b["top"]]
        assert max(abs(x["prob"] - y["prob"]) for x, y in zip(a["top"], b["top"])) < 1e-4
    table = tmp_path / "p.csv"
    assert cli(["predict", str(videos[0]), str(broken), "--checkpoint", str(ckpt), "--out", str(table)]) == 2
    parsed = list(csv.DictReader(table.open()))
    assert [r["video"] for r in parsed] == [str(videos[0]), str(broken)]
    assert parsed[0]["label"] in CLASSES and 0 < float(parsed[0]["prob"]) <= 1 and parsed[0]["error"] == ""
    assert parsed[1]["error"].startswith(str(broken)) and parsed[1]["label"] == ""
    before = table.read_bytes()
    assert cli(["predict", str(videos[0]), "--checkpoint", str(ckpt), "--out", str(table)]) == 2
    assert "exists; choose a new name" in capsys.readouterr().err and table.read_bytes() == before
    assert cli(["predict", str(videos[0]), "--checkpoint", str(ckpt), "--out", str(tmp_path / "p.txt")]) == 2
    assert ".csv or .jsonl" in capsys.readouterr().err
    assert not list(tmp_path.glob(".*.part"))


@pytest.mark.slow
def test_torchrun_eval_and_optimize_give_the_one_process_numbers(setup, tmp_path, capsys):
    """``torchrun --nproc_per_node=2`` (gloo): the videos are split across the ranks and their
    outcomes gathered, so accuracy, per-class results and Token Optimization's choices are those
    of one process; only rank 0 prints and writes."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists() and shutil.which("torchrun") is None:
        pytest.skip("torchrun not installed")
    _, data, ckpt = setup
    eval_args = ["eval", "--checkpoint", str(ckpt), "--data", str(data.val_csv), "--budget", "20",
                 "--views", "2x1", "--json", "--per-class", "--device", "cpu", "--dtype", "fp32"]
    assert cli(eval_args) == 0
    (alone,) = _json_lines(capsys.readouterr().out)
    one_ckpt, two_ckpt = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    for copy in (one_ckpt, two_ckpt):
        shutil.copy(ckpt, copy)
    opt = ["optimize", "--data", str(data.val_csv), "--budgets", "16,32", "--frames", "2,4,8",
           "--sizes", "28,56", "--device", "cpu", "--dtype", "fp32"]
    assert cli([*opt, "--checkpoint", str(one_ckpt), "--out", str(tmp_path / "one")]) == 0
    capsys.readouterr()

    def run2(*args):
        proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "fluxvit", *args],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout

    (both,) = _json_lines(run2(*eval_args))  # one JSON line: rank 0 alone prints
    for key in ("top1", "top5", "videos", "views", "broken", "per_class"):
        assert both[key] == alone[key], key
    run2(*opt, "--checkpoint", str(two_ckpt), "--out", str(tmp_path / "two"))
    one = fluxvit.load_checkpoint(one_ckpt).checkpoint_meta["token_optimization"]
    two = fluxvit.load_checkpoint(two_ckpt).checkpoint_meta["token_optimization"]
    assert one == two and set(one) == {"16", "32"}
    assert (tmp_path / "two" / "report.md").is_file()


def test_predict_at_a_latency_target(setup, tmp_path, capsys, monkeypatch):
    """--latency-ms picks the largest budget whose whole request (decode + preprocess + forward)
    fits on this device and precision."""
    monkeypatch.setenv("FLUXVIT_CACHE", str(tmp_path))
    _, data, ckpt = setup
    video = str(data.val_csv.parent / data.val_csv.read_text().split()[0])
    assert cli(["predict", video, "--checkpoint", str(ckpt), "--latency-ms", "100000", "--json",
                "--device", "cpu", "--dtype", "fp32"]) == 0
    (pred,) = _json_lines(capsys.readouterr().out)
    assert pred["tokens"] == 4 * 16 and pred["dtype"] == "fp32"  # the whole 4x56 grid fits
    assert cli(["predict", video, "--checkpoint", str(ckpt), "--latency-ms", "0.000001"]) == 2
    assert f"no token budget fits 1e-06 ms end to end ({video}) on cpu" in capsys.readouterr().err
