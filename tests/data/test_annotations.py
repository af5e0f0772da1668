"""Annotation files: separators, class lists, and errors that name file:line."""

from __future__ import annotations

import pytest

from fluxvit.data.annotations import parse_line, read_annotations, read_classes
from fluxvit.errors import AnnotationError


def test_separators_and_roots(tmp_path):
    csv = tmp_path / "train.csv"
    csv.write_text("a/x.mp4 3\nb/y y.mp4\t1\n\nc/z.mp4,0\n")
    ann = read_annotations(csv)
    assert [(r.path, r.label) for r in ann.records] == [
        (tmp_path / "a/x.mp4", 3), (tmp_path / "b/y y.mp4", 1), (tmp_path / "c/z.mp4", 0)
    ]
    assert ann.records[2].source == f"{csv}:4" and ann.num_classes == 4 and ann.classes is None
    other = read_annotations(csv, data_root=tmp_path / "videos")
    assert other.records[0].path == tmp_path / "videos" / "a/x.mp4"
    assert parse_line("  p.mp4   7  ") == ("p.mp4", "7")


def test_classes_file_beside_the_csv(tmp_path):
    (tmp_path / "classes.txt").write_text("walk\nrun\njump\n")
    csv = tmp_path / "val.csv"
    csv.write_text("v0.mp4 2\nv1.mp4 run\n")
    ann = read_annotations(csv)
    assert ann.classes == ("walk", "run", "jump") and [r.label for r in ann] == [2, 1]
    csv.write_text("v0.mp4 2\nv1.mp4 3\n")
    with pytest.raises(AnnotationError, match=rf"^{csv}:2: unknown label id 3 \(classes.txt has 3 classes\)"):
        read_annotations(csv)


@pytest.mark.parametrize("line, problem", [
    ("only_a_path.mp4", "expected 'relative/path.mp4<sep>label'"),
    ("clip.mp4 seven", "label 'seven' is not an integer"),
    ("clip.mp4 -1", "unknown label id -1"),
    ("clip.mp4,", "expected"),
])
def test_bad_lines_name_file_and_line(tmp_path, line, problem):
    csv = tmp_path / "bad.csv"
    csv.write_text(f"ok.mp4 0\n{line}\n")
    with pytest.raises(AnnotationError) as info:
        read_annotations(csv)
    msg = str(info.value)
    assert msg.startswith(f"{csv}:2: ") and problem in msg and "\n" not in msg
    ann = read_annotations(csv, skip_bad_lines=True)
    assert len(ann) == 1


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(AnnotationError, match="nope.csv: no such annotation file"):
        read_annotations(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("\n")
    with pytest.raises(AnnotationError, match="no clips listed"):
        read_annotations(tmp_path / "empty.csv")
    (tmp_path / "c.txt").write_text("a\n\nb\n")
    with pytest.raises(AnnotationError, match=r"c.txt:2: empty class name"):
        read_classes(tmp_path / "c.txt")
    (tmp_path / "d.txt").write_text("a\nb\na\n")
    with pytest.raises(AnnotationError, match="listed twice"):
        read_classes(tmp_path / "d.txt")
