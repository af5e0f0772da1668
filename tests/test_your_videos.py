"""A user's own videos end to end: a folder of class folders (with a broken file, a duplicate and
a too-short clip) -> ``prepare`` -> ``train`` -> ``eval --report`` -> ``features`` -> ``predict
--window``, each output's numbers checked against the inputs."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
from safetensors.torch import load_file

from fluxvit.cli import main
from fluxvit.data.encode import write_video
from fluxvit.data.video import PyAVReader

CLASSES = ("jump", "run", "sit")
ROOT = Path(__file__).resolve().parents[1]


def _clip(path: Path, seed: int, frames: int = 16) -> Path:
    """A 56x56 clip at 8 fps whose class shows in its mean colour (so a few steps can learn it)."""
    rng = np.random.default_rng(seed)
    video = rng.integers(0, 60, (frames, 56, 56, 3), dtype=np.uint8)
    video[..., CLASSES.index(path.parent.name)] += 150
    return write_video(path, video, fps=8, reproducible=False)


def test_prepare_train_report_features_and_a_timeline_on_a_folder(tmp_path, capsys):
    src = tmp_path / "my_videos"
    for c, name in enumerate(CLASSES):
        for i in range(6):
            _clip(src / name / f"clip{i}.mp4", 10 * c + i)
    (src / "jump" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x01" * 300)
    shutil.copy(src / "run" / "clip0.mp4", src / "run" / "clip0 (copy).mp4")
    _clip(src / "sit" / "blink.mp4", 99, frames=3)
    data = tmp_path / "prepared"

    assert main(["prepare", str(src), str(data), "--val-fraction", "0.34", "--seed", "0", "--workers", "0"]) == 0
    summary = json.loads((data / "summary.json").read_text())
    assert summary["videos"] == {"listed": 21, "kept": 18, "broken": 1, "short": 1, "duplicate": 1}
    assert summary["splits"] == {"train": 12, "val": 6, "test": 0}
    assert (data / "classes.txt").read_text().split() == list(CLASSES)
    val_rows = [ln.split("\t") for ln in (data / "val.csv").read_text().splitlines()]
    assert sorted(int(label) for _, label in val_rows) == [0, 0, 1, 1, 2, 2]  # stratified
    capsys.readouterr()

    run = tmp_path / "run"
    assert main(["train", str(ROOT / "configs" / "folder_nano_flux_multi.yaml"),
                 "--set", f"out_dir={run}", "--set", f"data.train={data / 'train.csv'}",
                 "--set", f"data.val={data / 'val.csv'}", "--set", "steps=4", "--set", "ckpt_every=4",
                 "--set", "data.workers=0", "--set", "data.batch_size=4", "--set", "optim.warmup_steps=1",
                 "--set", "flux.frames=[4,8,2]", "--set", "flux.sizes=[56,56,14]", "--set", "flux.min_tokens=64",
                 "--set", "flux.max_tokens=128", "--set", "model.head_budgets=[64,32,16]",
                 "--set", "eval.grid=4x56"]) == 0
    checkpoint = run / "model.safetensors"
    assert checkpoint.is_file()
    capsys.readouterr()

    report = tmp_path / "report"
    assert main(["eval", "--checkpoint", str(checkpoint), "--data", str(data / "val.csv"), "--grid", "4x56",
                 "--budget", "32", "--views", "1x1", "--report", str(report), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    with open(report / "predictions.csv", newline="") as f:
        predictions = list(csv.DictReader(f))
    assert result["videos"] == len(predictions) == 6
    assert sorted(p["label"] for p in predictions) == sorted(c for c in CLASSES for _ in range(2))
    with open(report / "confusion.csv", newline="") as f:
        confusion = [row[1:] for row in list(csv.reader(f))[1:]]
    assert sum(int(x) for row in confusion for x in row) == 6  # every evaluated video once
    correct = sum(int(p["correct"]) for p in predictions)
    assert correct == sum(int(confusion[i][i]) for i in range(3))
    assert result["top1"] == 100.0 * correct / 6
    assert "report.md" in {p.name for p in report.iterdir()}

    feats = tmp_path / "train_features.safetensors"
    assert main(["features", str(data / "train.csv"), "--checkpoint", str(checkpoint), "--grid", "4x56",
                 "--budget", "32", "--out", str(feats)]) == 0
    t = load_file(str(feats))
    train_labels = [int(ln.split("\t")[1]) for ln in (data / "train.csv").read_text().splitlines()]
    assert t["features"].shape[0] == 12 and t["labels"].tolist() == train_labels

    video = src / "jump" / "clip1.mp4"
    timeline = tmp_path / "timeline.csv"
    assert main(["predict", str(video), "--checkpoint", str(checkpoint), "--grid", "4x56", "--window", "0.5",
                 "--out", str(timeline)]) == 0
    with open(timeline, newline="") as f:
        rows = list(csv.DictReader(f))
    duration = PyAVReader().probe(video).duration  # 16 frames at 8 fps: 2 s
    assert len(rows) == 4 and float(rows[0]["start"]) == 0.0
    assert float(rows[-1]["end"]) == duration == 2.0
    assert all(float(a["end"]) == float(b["start"]) for a, b in zip(rows, rows[1:]))  # no gap, no overlap
    assert all(r["label"] in CLASSES for r in rows)
