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
