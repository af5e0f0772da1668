"""``fluxvit eval --report DIR``: the metrics of where a model fails, on hand-made lists with
hand-computed numbers, the plot at 400 classes, and the folder written end to end."""

import csv
import json
import shutil

import numpy as np
import pytest

from fluxvit.cli import main as cli
from fluxvit.errors import ConfigError
from fluxvit.evaluate.failures import (
    check_report_dir,
    class_metrics,
    confusion_matrix,
    macro_f1,
    most_confused,
    plot_classes,
    plot_confusion,
)

from .conftest import CLASSES

# 9 videos, 5 classes: class 3 is predicted once but has no video, class 4 never occurs
TRUE = [0, 0, 0, 1, 1, 2, 2, 2, 2]
PRED = [0, 0, 2, 0, 0, 2, 2, 3, 2]


def test_confusion_matrix_counts_every_pair_rows_true_columns_predicted():
    m = confusion_matrix(TRUE, PRED, 5)
    assert m.shape == (5, 5) and m.sum() == len(TRUE)
    assert m.tolist() == [[2, 0, 1, 0, 0],
                          [2, 0, 0, 0, 0],
                          [0, 0, 3, 1, 0],
                          [0, 0, 0, 0, 0],
                          [0, 0, 0, 0, 0]]
    with pytest.raises(ConfigError, match=r"pair 1 \(0, 5\) names a class outside 0..4"):
        confusion_matrix([0, 0], [1, 5], 5)
    with pytest.raises(ConfigError, match="2 true labels but 1 predictions"):
        confusion_matrix([0, 0], [1], 5)


def test_precision_recall_f1_by_hand():
    metrics = class_metrics(confusion_matrix(TRUE, PRED, 5), ["a", "b", "c", "d", "e"])
    by = {m.name: m for m in metrics}
    # a: 2 of its 3 videos found, 2 of the 4 videos called a are a; F1 = 2*2 / (2*2 + 2 FP + 1 FN)
    assert (by["a"].precision, by["a"].recall, by["a"].f1) == (pytest.approx(0.5), pytest.approx(2 / 3),
                                                              pytest.approx(4 / 7))
    # b: never predicted (precision undefined), none of its 2 videos found
    assert (by["b"].precision, by["b"].recall, by["b"].f1, by["b"].support, by["b"].predicted) == (None, 0, 0, 2, 0)
    # c: 3 of 4 found, 3 of 4 calls right
    assert (by["c"].precision, by["c"].recall, by["c"].f1) == (0.75, 0.75, 0.75)
    # d: predicted once, wrongly, and has no video (recall undefined)
    assert (by["d"].precision, by["d"].recall, by["d"].f1, by["d"].support) == (0, None, 0, 0)
    # e: occurs nowhere: nothing is defined, and it is left out of macro-F1
    assert (by["e"].precision, by["e"].recall, by["e"].f1) == (None, None, None)
    assert macro_f1(metrics) == pytest.approx((4 / 7 + 0 + 0.75 + 0) / 4)
    assert most_confused(confusion_matrix(TRUE, PRED, 5)) == [(1, 0, 2), (0, 2, 1), (2, 3, 1)]


def test_each_videos_top_classes_average_its_views():
    import math

    import torch

    from fluxvit.evaluate.metrics import ViewAccumulator

    acc = ViewAccumulator(3)
    acc.add(torch.tensor([[0.0, 0.0, 5.0], [1.0, 0.0, 0.0]]), torch.tensor([2, 2]), [7, 7])  # two views of video 7
    e5, e1 = math.exp(5), math.exp(1)
    p2, p0 = (e5 / (e5 + 2) + 1 / (e1 + 2)) / 2, (1 / (e5 + 2) + e1 / (e1 + 2)) / 2
    ((c2, q2), (c0, q0)) = acc.result(per_video_top=2)["per_video_top"][7]
    assert (c2, c0) == (2, 0) and q2 == pytest.approx(p2, abs=1e-6) and q0 == pytest.approx(p0, abs=1e-6)
    assert len(acc.result(per_video_top=5)["per_video_top"][7]) == 3  # at most every class


def test_400_classes_plot_the_most_confused_pairs(tmp_path):
    """At 400 classes the plot shows the classes of the most-confused pairs, at most 30: pair i
    (class 10i mistaken for 10i + 5) happens 20 - i times, so the 15 largest pairs fill it."""
    true = [c for c in range(400) for _ in range(3)]
    pred = list(true)
    for i in range(20):
        true += [10 * i] * (20 - i)
        pred += [10 * i + 5] * (20 - i)
    m = confusion_matrix(true, pred, 400)
    assert m.sum() == len(true) == 1200 + 210 and np.trace(m) == 1200
    assert most_confused(m, 3) == [(0, 5, 20), (10, 15, 19), (20, 25, 18)]
    shown = plot_classes(m)
    assert shown == sorted(c for i in range(15) for c in (10 * i, 10 * i + 5))
    names = [f"class_{c:03d}_with_a_long_name" for c in range(400)]
    png = plot_confusion(m, names, shown, tmp_path / "confusion.png")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and 20_000 < len(data) < 3_000_000
    import matplotlib.image

    h, w = matplotlib.image.imread(png).shape[:2]
    assert 1000 < h < 4000 and 1000 < w < 4000  # about 45 px a class, names included
    # a perfect classifier: no pair to show, so the most frequent classes are plotted
    assert plot_classes(confusion_matrix([1, 1, 7, 7, 7, 3], [1, 1, 7, 7, 7, 3], 40), 2) == [1, 7]


def test_the_report_folder_must_be_new_or_empty(tmp_path, monkeypatch):
    assert check_report_dir(tmp_path / "new", 4) == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    check_report_dir(tmp_path / "empty", 4)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"full: not empty \(it holds notes.txt\)"):
        check_report_dir(tmp_path / "full", 4)
    with pytest.raises(ConfigError, match="not a directory"):
        check_report_dir(tmp_path / "full" / "notes.txt", 4)
    with pytest.raises(ConfigError, match=r"notes.txt/r: cannot be made \(.*notes.txt is not a folder"):
        check_report_dir(tmp_path / "full" / "notes.txt" / "r", 4)  # said before the evaluation, not after
    with pytest.raises(ConfigError, match="name is empty"):
        check_report_dir("", 4)  # not the current folder
    monkeypatch.setenv("FLUXVIT_MAX_CONFUSION_CLASSES", "100")
    with pytest.raises(ConfigError, match="400 classes in one confusion matrix is more than the cap of 100"):
        check_report_dir(tmp_path / "new", 400)


def _rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def test_eval_report_end_to_end(setup, tmp_path, capsys):
    """eval --report on the shared split plus one corrupted video: one prediction row per video
    evaluated (labels as in the annotation file), the broken one counted; metrics that agree with
    the confusion matrix; a folder holding a report is refused in one line."""
    _, data, ckpt = setup
    val = data.val_csv.parent
    lines = [ln.split() for ln in data.val_csv.read_text().splitlines()]
    broken = tmp_path / "broken.mp4"
    broken.write_bytes((val / lines[0][0]).read_bytes()[:300])  # a cut-off copy of a real clip
    listed = [(str(val / rel), int(label)) for rel, label in lines] + [(str(broken), 2)]
    ann_csv = tmp_path / "val.csv"
    ann_csv.write_text("".join(f"{p} {label}\n" for p, label in listed))
    shutil.copy(val / "classes.txt", tmp_path / "classes.txt")
    out = tmp_path / "report"
    out.mkdir()  # an empty folder is taken
    args = ["eval", "--checkpoint", str(ckpt), "--data", str(ann_csv), "--budget", "20", "--views", "1x1",
            "--device", "cpu", "--dtype", "fp32", "--report", str(out)]
    assert cli([*args, "--json"]) == 0
    captured = capsys.readouterr()
    (res,) = [json.loads(line) for line in captured.out.splitlines() if line.startswith("{")]
    assert res["videos"] == 8 and res["broken"] == 1 and res["report"] == str(out / "report.md")
    assert "per_video_top" not in res and "broken.mp4" in captured.err
    assert sorted(p.name for p in out.iterdir()) == ["confusion.csv", "confusion.png", "per_class.csv",
                                                     "predictions.csv", "report.md"]  # no temporary left

    header, *rows = _rows(out / "predictions.csv")
    assert header == ["path", "label", "top1", "prob1", "top2", "prob2", "top3", "prob3", "top4", "prob4",
                      "correct"]
    assert [(r[0], r[1]) for r in rows] == [(p, CLASSES[label]) for p, label in listed[:-1]]
    for r in rows:
        probs = [float(p) for p in r[3:10:2]]
        assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1, abs=1e-3)
        assert sorted(r[2:10:2]) == sorted(CLASSES) and r[10] == str(int(r[2] == r[1]))
    correct = sum(int(r[10]) for r in rows)
    assert 100 * correct / 8 == pytest.approx(res["top1"])

    head, *matrix = _rows(out / "confusion.csv")
    assert head == ["true \\ predicted", *CLASSES] and [r[0] for r in matrix] == CLASSES
    counts = np.array([[int(v) for v in r[1:]] for r in matrix])
    assert counts.sum() == 8 and counts.sum(1).tolist() == [2, 2, 2, 2] and np.trace(counts) == correct
    _, *per_class = _rows(out / "per_class.csv")
    for (cid, name, precision, recall, f1, support, predicted), row, col in zip(per_class, counts, counts.T):
        assert name == CLASSES[int(cid)] and int(support) == row.sum() == 2 and int(predicted) == col.sum()
        assert float(recall) == pytest.approx(row[int(cid)] / 2, abs=1e-4)
        assert precision == ("" if col.sum() == 0 else f"{row[int(cid)] / col.sum():.4f}")
        assert f1 == f"{2 * row[int(cid)] / (row.sum() + col.sum()):.4f}"  # 2 TP / (2 TP + FN + FP)

    md = (out / "report.md").read_text()
    for text in (str(ckpt), "grid 4x56x56", "budget 20 tokens", "views 1x1", "device cpu, dtype fp32",
                 "over 8 videos evaluated; 1 broken (skipped)", f"top-1 {res['top1']:.2f}%", "macro-F1 ",
                 "](predictions.csv)", "](per_class.csv)", "](confusion.csv)", "](confusion.png)",
                 "## Most-confused pairs", "## Per class (worst F1 first)", "broken.mp4"):
        assert text in md, text

    before = (out / "report.md").read_bytes()
    assert cli(args) == 2  # a finished report is never written over
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not empty" in err and "Traceback" not in err
    assert (out / "report.md").read_bytes() == before


def test_table_cells_from_user_files_cannot_break_a_markdown_table():
    """Class names and paths come from a user's folders: every cell is one line with ``|``,
    ``\\`` and ``<`` escaped, and bounded, so each row keeps its column count."""
    from fluxvit.evaluate.report import markdown_cell, markdown_table

    table = markdown_table([{"name": "a|b\nc", "n": 1.25}, {"name": "<img src=x>", "n": None}],
                           [("name", "class"), ("n", "value")])
    lines = table.splitlines()
    assert lines[2] == "| a\\|b c | 1.2 |" and lines[3] == "| &lt;img src=x> | – |"
    assert all(line.replace("\\|", "").count("|") == 3 for line in lines)
    assert markdown_cell("x" * 500, 10) == "x" * 9 + "…" and markdown_cell("back\\slash") == "back\\\\slash"
