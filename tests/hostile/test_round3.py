"""Round 3 of hostile inputs, aimed at the folder datasets, ``fluxvit prepare``, ``eval --report``,
``predict --stream`` and ``demo --data``: links that lead a class folder's search back into the
dataset, file and class names that are not UTF-8, header CSVs that name a column twice, label ids
that would make a billion classes, a FIFO nobody writes to, demo settings that failed only after
training, outputs inside the inputs, and a prepare killed outright with its workers running."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fluxvit.data.annotations import read_annotations
from fluxvit.data.windows import iter_windows
from fluxvit.errors import VideoError

from .conftest import CLASSES, ENV, ROOT, assert_user_error
from .media import clip

NOT_UTF8 = os.fsdecode(b"caf\xe9")  # Latin-1 bytes: a name Python holds as surrogates


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return clip(tmp_path_factory.mktemp("round3"), "v.mp4", 12)


def _dataset(root: Path, video: Path, classes=("red", "green"), per_class: int = 1) -> Path:
    """``root/CLASS/vN.mp4``: byte-distinct copies (a prepare would drop byte twins)."""
    data = video.read_bytes()
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            (root / name / f"v{i}.mp4").write_bytes(data + bytes([c, i]))  # trailing bytes: still decodes
    return root


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` and its bytes (what a command must leave as it was)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- folder datasets
def test_a_link_back_into_the_dataset_is_not_a_second_listing_under_another_label(tmp_path, video, cli):
    data = _dataset(tmp_path / "data", video)
    (data / "red" / "up").symlink_to("..")  # red's search would list green's videos as red
    ann = read_annotations(data)
    assert ann.classes == ("green", "red")
    assert [(p.path.relative_to(data).as_posix(), p.label) for p in ann] == [("green/v0.mp4", 0), ("red/v0.mp4", 1)]
    # a class folder that is another class (or the dataset folder) is refused, nothing written
    (data / "alias").symlink_to("red")
    out = tmp_path / "out"
    assert_user_error(cli("prepare", data, out), "prepare", data / "alias", "the same folder as class folder 'red'")
    assert not out.exists()
    (data / "alias").unlink()
    (data / "self").symlink_to(".")
    assert_user_error(cli("prepare", data, out), "prepare", data / "self", "the dataset folder itself")
    assert not out.exists()


def test_a_header_naming_a_column_twice_is_refused(tmp_path, video, cli):
    listing = tmp_path / "list.csv"
    listing.write_text(f"\ufeffpath,label,Path\n{video},red,other.mp4\n")
    out = tmp_path / "out"
    assert_user_error(cli("prepare", listing, out), "prepare", f"{listing}:1", "'path' column 2 times")
    assert not out.exists()


def test_a_huge_label_id_is_refused_by_the_class_cap(tmp_path, video, cli):
    listing = tmp_path / "ids.txt"
    listing.write_text(f"{video} 0\n{video} 999999999999\n")  # prepare would name 10**12 classes
    out = tmp_path / "out"
    started = time.monotonic()
    assert_user_error(cli("prepare", listing, out), "prepare", f"{listing}:2", "label id 999999999999",
                      "FLUXVIT_MAX_NUM_CLASSES")
    assert time.monotonic() - started < 10 and not out.exists()


# ----------------------------------------------------------------------------- names not UTF-8
def test_a_class_folder_name_that_is_not_utf8_is_one_line(tmp_path, video, cli):
    data = _dataset(tmp_path / "data", video, classes=("red", NOT_UTF8))
    out = tmp_path / "out"
    line = assert_user_error(cli("prepare", data, out), "prepare", "not UTF-8", "rename the folder")
    assert "caf" in line and not out.exists()


def test_a_video_name_that_is_not_utf8_is_left_out_of_the_lists(tmp_path, video, cli):
    data = _dataset(tmp_path / "data", video, per_class=2)
    shutil.copy(video, data / "red" / f"{NOT_UTF8}.mp4")
    out = tmp_path / "out"
    run = cli("prepare", data, out, "--workers", "0", "--val-fraction", "0")
    assert run.code == 0 and "Traceback" not in run.err, run.err
    assert "bytes that are not UTF-8" in run.out
    listed = (out / "train.csv").read_text(encoding="utf-8").splitlines()  # readable: UTF-8 throughout
    assert len(listed) == 4 and not any("caf" in line for line in listed)
    assert read_annotations(out / "train.csv").classes == ("green", "red")


def _strict_locale_run(*args: object) -> tuple[int, bytes, str]:
    """``fluxvit ARGS`` as a process whose stdout refuses what is not UTF-8, as under a
    ``en_US.UTF-8`` locale (C.UTF-8 would let Python escape it): exit code, stdout, stderr."""
    proc = subprocess.run([sys.executable, "-m", "fluxvit", *map(str, args)], cwd=ROOT,
                          env={**ENV, "PYTHONIOENCODING": "utf-8:strict"}, capture_output=True, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr.decode("utf-8", "backslashreplace")


def test_predictions_and_reports_name_a_file_that_is_not_utf8(tmp_path, video, nano_ckpt):
    data = _dataset(tmp_path / "data", video, classes=CLASSES[:2])
    odd = data / CLASSES[0] / f"{NOT_UTF8}.mp4"
    shutil.copy(video, odd)
    table = tmp_path / "p.csv"
    code, out, err = _strict_locale_run("predict", odd, "--checkpoint", nano_ckpt, "--grid", "4x56", "--views", "1x1",
                                        "--out", table)
    assert code == 0 and "Traceback" not in err, err
    assert os.fsencode(odd) in out and os.fsencode(odd) in table.read_bytes()  # the very name, byte for byte
    report = tmp_path / "report"
    code, out, err = _strict_locale_run("eval", "--checkpoint", nano_ckpt, "--data", data, "--grid", "4x56",
                                        "--views", "1x1", "--report", report)
    assert code == 0 and "Traceback" not in err, err
    assert os.fsencode(odd) in (report / "predictions.csv").read_bytes()
    assert (report / "report.md").is_file()


# ----------------------------------------------------------------------------- outputs inside inputs
def test_eval_report_inside_the_folder_dataset_is_refused(tmp_path, video, nano_ckpt, cli):
    data = _dataset(tmp_path / "data", video, classes=CLASSES[:2])
    before = _tree(data)
    (tmp_path / "link").symlink_to(data)
    for report in (data / "report", tmp_path / "link" / "report", data / CLASSES[0] / "report"):
        run = cli("eval", "--checkpoint", nano_ckpt, "--data", data, "--grid", "4x56", "--report", report)
        assert_user_error(run, "eval", report, "inside the dataset folder")
    assert _tree(data) == before and sorted(p.name for p in data.iterdir()) == sorted(CLASSES[:2])


def test_a_report_interrupted_while_written_leaves_no_half_folder(tmp_path, video, nano_ckpt, cli, monkeypatch):
    from fluxvit.evaluate import failures

    data = _dataset(tmp_path / "data", video, classes=CLASSES[:2])
    report = tmp_path / "report"
    args = ("eval", "--checkpoint", nano_ckpt, "--data", data, "--grid", "4x56", "--views", "1x1", "--report", report)

    def interrupted(*a, **kw):  # Ctrl-C once the CSVs are written, while the plot is drawn
        raise KeyboardInterrupt

    monkeypatch.setattr(failures, "plot_confusion", interrupted)
    run = cli(*args)
    assert run.code == 130 and "Traceback" not in run.err, run.err
    assert not report.exists() and os.listdir(tmp_path) == ["data"]  # no predictions.csv alone, no temporary
    monkeypatch.undo()
    assert cli(*args).code == 0  # the same command again: the folder was never half made
    assert sorted(os.listdir(report)) == ["confusion.csv", "confusion.png", "per_class.csv", "predictions.csv",
                                          "report.md"]


def test_train_out_dir_inside_the_folder_dataset_is_refused(tmp_path, video, cli):
    data = _dataset(tmp_path / "data", video)
    before = _tree(data)
    config = tmp_path / "train.yaml"
    config.write_text(f"out_dir: {data / 'run'}\nsteps: 1\nprogress: false\ndata:\n  source: csv\n"
                      f"  train: {data}\n  batch_size: 2\nflux:\n  fixed: 2x28\nobjective:\n  name: fixed\n")
    assert_user_error(cli("train", config), "train", data / "run", "inside data.train")
    assert _tree(data) == before and sorted(p.name for p in data.iterdir()) == ["green", "red"]


# ----------------------------------------------------------------------------- demo --data
@pytest.fixture
def prepared(tmp_path) -> Path:
    """What the demo checks of a prepared folder before its work: its lists exist."""
    folder = tmp_path / "prepared"
    folder.mkdir()
    for name in ("train.csv", "val.csv", "classes.txt"):
        (folder / name).write_text("x\n")
    return folder


@pytest.mark.parametrize("setting, needle", [
    ("budgets=[]", "'budgets' must list at least one"),
    ("flux_tokens=[1024,256]", "flux.min_tokens 1024 is more than flux.max_tokens 256"),
    ("flux_frames=[16,4,2]", "stop 4 is below start 16"),
    ("search_frames=[100000]", "FLUXVIT_MAX_GRID_TOKENS"),
    ("search_frames=[1]", "no candidate grid"),
])
def test_demo_settings_that_failed_after_training_are_refused_before_it(tmp_path, prepared, cli, setting, needle):
    out = tmp_path / "out"
    started = time.monotonic()
    run = cli("demo", "--quick", "--out", out, "--data", prepared, "--set", setting)
    assert_user_error(run, "demo", needle)
    assert time.monotonic() - started < 10 and not out.exists()


def test_demo_out_that_is_its_data_folder_is_refused(tmp_path, prepared, cli):
    before = _tree(prepared)
    (tmp_path / "same").symlink_to(prepared)
    assert_user_error(cli("demo", "--quick", "--out", tmp_path / "same", "--data", prepared), "demo",
                      "is the --data folder")
    assert _tree(prepared) == before


# ----------------------------------------------------------------------------- streams
def test_a_stream_fifo_nobody_writes_to_ends_at_the_open_timeout(tmp_path):
    fifo = tmp_path / "live"
    os.mkfifo(fifo)  # opening it for reading waits in the system, where FFmpeg's timeout never fires
    started = time.monotonic()
    with pytest.raises(VideoError, match=rf"^{fifo}: cannot open the stream \(no answer within 1 s\)$"):
        list(iter_windows(fifo, 2, 2, 4, live=True, open_timeout=1))
    assert time.monotonic() - started < 5
    try:  # a writer releases the thread left waiting
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


def test_a_streams_caps_are_their_own_line_not_a_broken_stream(tmp_path, video, nano_ckpt, cli, monkeypatch):
    out = tmp_path / "rows.csv"
    stream = ("predict", "--stream", video, "--checkpoint", nano_ckpt, "--grid", "4x56", "--views", "1x1")
    # windows open at once: a live source has no plan for the windows cap to bound
    run = cli(*stream, "--window", "3600", "--stride", "0.001", "--out", out)
    assert_user_error(run, "predict", "3600001 windows per video", "FLUXVIT_MAX_WINDOWS")
    assert not out.exists()
    # the memory they hold, checked at the first frame's size: not "the stream broke off"
    monkeypatch.setenv("FLUXVIT_MAX_WINDOW_BUFFER_PIXELS", "1000")
    line = assert_user_error(cli(*stream, "--window", "0.2"), "predict", "FLUXVIT_MAX_WINDOW_BUFFER_PIXELS")
    assert "broke off" not in line
    # of several files, the one whose frames are too large for the cap is skipped, the others go on
    small = clip(tmp_path, "small.mp4", 12, 16, 16)
    monkeypatch.setenv("FLUXVIT_MAX_WINDOW_BUFFER_PIXELS", "10000")
    run = cli("predict", video, small, "--window", "0.2", "--checkpoint", nano_ckpt, "--grid", "4x56", "--views", "1x1",
              "--out", out)
    assert run.code == 2 and "Traceback" not in run.err, run.err
    assert f"{video}: windows of 0.2 s" in run.err and "FLUXVIT_MAX_WINDOW_BUFFER_PIXELS" in run.err
    assert [line.split(" ")[0] for line in run.out.splitlines()] == [str(small), str(small)]
    assert "wrote" in run.err and out.read_text().count(str(small)) == 2


# ----------------------------------------------------------------------------- prepare killed
def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists(),
                    reason="needs /proc/PID/task/PID/children")
def test_a_prepare_killed_outright_leaves_no_worker_behind(tmp_path, video):
    data = _dataset(tmp_path / "data", video, per_class=12)
    proc = subprocess.Popen([sys.executable, "-m", "fluxvit", "prepare", str(data), str(tmp_path / "out"),
                             "--workers", "2", "--short-side", "32"], cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(workers) < 2 and proc.poll() is None and time.monotonic() < deadline:
            workers = _children(proc.pid)
            time.sleep(0.05)
        assert len(workers) >= 2, "the run ended before its workers were seen"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 5
        while any(map(_alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(map(_alive, workers))
    finally:
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_path_holding_a_line_separator_character_stays_one_line(tmp_path):
    """U+2028 and a form feed are characters of a path, not line ends: the list keeps one record
    per line and error line numbers stay the editor's."""
    from fluxvit.data.annotations import read_annotations
    from fluxvit.errors import AnnotationError

    csv = tmp_path / "list.csv"
    csv.write_text("odd\u2028name.mp4 0\nform\x0cfeed.mp4 1\r\nlast.mp4 0\n", encoding="utf-8")
    ann = read_annotations(csv)
    assert [r.path.name for r in ann.records] == ["odd\u2028name.mp4", "form\x0cfeed.mp4", "last.mp4"]
    csv.write_text("a\u2028b.mp4 0\nbroken-line\n", encoding="utf-8")
    with pytest.raises(AnnotationError, match=r"list.csv:2: "):
        read_annotations(csv)
