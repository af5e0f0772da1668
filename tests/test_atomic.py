"""Every writer goes through one atomic write: a failure mid-write leaves neither a partial file
nor a stray temporary file, and whatever stood at the final name before is kept."""

from __future__ import annotations

import errno
import itertools
import os

import pytest
import torch

import fluxvit
from fluxvit import atomic
from fluxvit.atomic import atomic_write, write_text


class DiskFull(OSError):
    def __init__(self) -> None:
        super().__init__(errno.ENOSPC, "No space left on device")


def test_success_replaces_and_failure_keeps_the_old_file(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    write_text(target, "old")
    assert target.read_text() == "old"
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old" and sorted(os.listdir(target.parent)) == ["a.txt"]
    with atomic_write(target) as tmp:
        assert tmp.parent == target.parent and tmp.name == ".a.txt.part"
        tmp.write_text("new")
    assert target.read_text() == "new" and sorted(os.listdir(target.parent)) == ["a.txt"]


def _writers(tmp_path):
    """(name, call that writes its file under tmp_path/out, the file it writes)."""
    from fluxvit.evaluate.latency import measure_latency
    from fluxvit.evaluate.report import plot_accuracy_vs_gflops
    from fluxvit.evaluate.visualize import save_png
    from fluxvit.train.checkpointing import save_training_state
    from fluxvit.train.config import TrainConfig, save_config

    out = tmp_path / "out"
    model = fluxvit.create_model("fluxvit_nano_patch14", num_classes=3, depth=1)
    budgets = itertools.count(4)  # a new budget each call, so the cache is written each time
    return [
        ("report", lambda: write_text(out / "report.md", "# r\n"), out / "report.md"),
        ("plot", lambda: plot_accuracy_vs_gflops({"a": [(1.0, 50.0), (2.0, 60.0)]}, out / "p.png"), out / "p.png"),
        ("png", lambda: save_png(torch.zeros(4, 4, 3, dtype=torch.uint8).numpy(), out / "t.png"), out / "t.png"),
        ("config", lambda: save_config(TrainConfig(), out / "config.yaml"), out / "config.yaml"),
        ("latency cache", lambda: measure_latency(model, fluxvit.Grid(2, 28), [next(budgets)], repeats=1),
         out / "latency.json"),
        ("checkpoint", lambda: fluxvit.save_checkpoint(model, out / "m.safetensors"), out / "m.safetensors"),
        ("checkpoint dir", lambda: fluxvit.save_checkpoint(model, out / "mdir"), out / "mdir" / "model.safetensors"),
        ("training state", lambda: save_training_state({"model": {}, "step": 1}, out, 1, 2), out / "ckpt_000000001.pt"),
    ]


@pytest.mark.parametrize("index", range(8))
def test_a_failing_write_leaves_nothing_behind(tmp_path, monkeypatch, index):
    monkeypatch.setenv("FLUXVIT_CACHE", str(tmp_path / "out"))
    name, write, target = _writers(tmp_path)[index]
    write()  # a good write first: the file exists
    assert target.is_file(), name
    before = target.read_bytes()
    listing = sorted(p.name for p in target.parent.iterdir())

    def full_disk(path):
        raise DiskFull()

    monkeypatch.setattr(atomic, "_fsync", full_disk)  # the disk fills up as the new file is flushed
    with pytest.raises((OSError, fluxvit.FluxViTError)):
        write()
    assert target.read_bytes() == before, name  # the finished file is untouched
    assert sorted(p.name for p in target.parent.iterdir()) == listing, name  # and no temporary file stays


def test_a_full_disk_is_one_error_naming_the_final_file(tmp_path):
    """The system's error carries the temporary name (or none at all, from torch.save); the user
    is told the file they asked for, and whether an earlier one survived."""
    target = tmp_path / "feats.safetensors"
    with pytest.raises(fluxvit.OutputError) as caught:
        with atomic_write(target) as tmp:
            tmp.write_bytes(b"half")
            raise DiskFull()
    assert str(caught.value) == f"{target}: could not write (No space left on device); nothing was written"
    assert ".part" not in str(caught.value) and os.listdir(tmp_path) == []
    write_text(target, "old")
    with pytest.raises(fluxvit.OutputError, match="; the earlier file is kept$"):
        with atomic_write(target) as tmp:
            raise OSError(errno.EACCES, "Permission denied", str(tmp))  # named the temporary file
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["feats.safetensors"]


def test_other_errors_inside_a_write_pass_through(tmp_path):
    """An OSError about something else (an input the body reads) is not reported as a write error."""
    with pytest.raises(FileNotFoundError) as caught:
        with atomic_write(tmp_path / "out.csv"):
            open(tmp_path / "missing-input.mp4", "rb")
    assert not isinstance(caught.value, fluxvit.FluxViTError)
    assert os.listdir(tmp_path) == []


def test_an_output_under_a_file_names_the_output(tmp_path):
    (tmp_path / "plain").write_text("x")
    with pytest.raises(fluxvit.OutputError, match=r"plain/sub/r\.md: could not write \(a folder on its path is a "
                                                  r"file\); nothing was written"):
        write_text(tmp_path / "plain" / "sub" / "r.md", "# r\n")


def test_a_planted_link_at_the_temporary_name_is_not_written_through(tmp_path):
    """``.out.csv.part`` made a symbolic link to another file beforehand: the write replaces the
    link, never the file it points to, and the result is a regular file."""
    victim = tmp_path / "victim.safetensors"
    victim.write_bytes(b"weights")
    (tmp_path / ".out.csv.part").symlink_to(victim)
    write_text(tmp_path / "out.csv", "a,b\n")
    assert victim.read_bytes() == b"weights"
    assert (tmp_path / "out.csv").read_text() == "a,b\n" and not (tmp_path / "out.csv").is_symlink()
    assert sorted(os.listdir(tmp_path)) == ["out.csv", "victim.safetensors"]


def test_devices_fifos_and_folders_are_never_replaced(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "folder").mkdir()
    for target in (tmp_path / "pipe", tmp_path / "folder"):
        with pytest.raises(fluxvit.OutputError, match="not a regular file; refusing to replace it"):
            write_text(target, "x")
    assert (tmp_path / "folder").is_dir() and not (tmp_path / "folder").is_file()
    import stat

    assert stat.S_ISFIFO(os.stat(tmp_path / "pipe").st_mode)


_ADD_ONE_LOCKED = """
import sys
from pathlib import Path
from fluxvit.atomic import locked, write_text
for _ in range(int(sys.argv[2])):
    with locked(sys.argv[1]):
        write_text(sys.argv[1], str(int(Path(sys.argv[1]).read_text()) + 1))
"""


def test_locked_updates_from_several_processes_lose_nothing(tmp_path):
    """Read-modify-write under the lock from three processes (importing no torch): every
    increment survives."""
    import subprocess
    import sys

    counter = tmp_path / "counter.txt"
    counter.write_text("0")
    procs = [subprocess.Popen([sys.executable, "-c", _ADD_ONE_LOCKED, str(counter), "40"]) for _ in range(3)]
    assert [p.wait(120) for p in procs] == [0, 0, 0]
    assert counter.read_text() == "120"
