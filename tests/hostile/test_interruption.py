"""Interrupted training: SIGKILL at random steps again and again, a crash in the middle of
writing a checkpoint, damaged checkpoints, a disk that fills up while saving. Every time the
run resumes from the last good checkpoint and ends with exactly the weights (bitwise, CPU
fp32) of a run that was never interrupted; no checkpoint that loads is ever a wrong one.

The toy run is ``tests/train/run_toy.py`` (FluxViT-nano, 56-px clips, a checkpoint every 2
steps, the last 2 kept); ``crash_toy.py`` sabotages its saves.
"""

from __future__ import annotations

import json
import random
import signal
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from fluxvit.errors import CheckpointError
from fluxvit.train.checkpointing import list_checkpoints, load_training_state
from tests.train.test_resume_ddp import ENV, ROOT, _assert_identical, _run_toy, _weights

from .conftest import assert_user_error, csv_train_config, run_process

STEPS, BATCH = 16, 4


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("uninterrupted")
    proc = _run_toy(out, STEPS, BATCH)
    assert proc.wait(timeout=300) == 0, proc.stdout.read().decode()
    return _weights(out / "rank0.pt")


def _sabotaged(mode: str, step: int, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tests.hostile.crash_toy", mode, str(step), str(out), str(STEPS),
                           str(BATCH)], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)


def _resume_to_the_end(out: Path, expected: dict) -> None:
    proc = _run_toy(out, STEPS, BATCH, "--resume")
    assert proc.wait(timeout=300) == 0, proc.stdout.read().decode()
    _assert_identical(_weights(out / "rank0.pt"), expected)
    assert not list(out.rglob("*.part"))


def _last_logged_step(metrics: Path) -> int:
    """The step of the newest complete record in the run's metrics log (0: none yet)."""
    if not metrics.exists():
        return 0
    for line in reversed(metrics.read_text().splitlines()):
        try:
            return int(json.loads(line).get("step", 0))
        except ValueError:
            continue  # a line being written
    return 0


def test_sigkill_at_random_steps_again_and_again(tmp_path, uninterrupted):
    out = tmp_path / "run"
    metrics = out / "metrics.jsonl"
    targets = sorted(random.Random(1125).sample(range(2, STEPS - 1), 2))
    for target in targets:
        proc = _run_toy(out, STEPS, BATCH, *(["--resume"] if target != targets[0] else []))
        deadline = time.time() + 180
        while _last_logged_step(metrics) < target and proc.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        assert proc.poll() is None, f"the run ended before step {target}: {proc.stdout.read().decode()}"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
        assert _last_logged_step(metrics) >= target
        assert not (out / "model.safetensors").exists()
    _resume_to_the_end(out, uninterrupted)
    logged = {json.loads(line).get("step") for line in metrics.read_text().splitlines()}
    assert set(range(1, STEPS + 1)) <= logged  # every step was run (some twice) and logged


def _flip_a_weight_byte(path: Path) -> None:
    """Invert one byte in the middle of the largest tensor record (bit rot, a bad copy)."""
    with zipfile.ZipFile(path) as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26: info.header_offset + 30])
    data[info.header_offset + 30 + name_len + extra_len + info.file_size // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_crash_while_saving_and_damaged_checkpoints(tmp_path, uninterrupted):
    """Killed half-way through writing the checkpoint of step 10: the partial file never takes
    the checkpoint's name. Then worse than a crash can do: the partial file copied under the
    final name (a filesystem without atomic rename) and a byte of step 8's weights flipped.
    Both load with torch.load; both are refused; the run resumes from step 6."""
    out = tmp_path / "run"
    proc = _sabotaged("kill", 10, out)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    ckpts = out / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == [".ckpt_000000010.pt.part", "ckpt_000000006.pt",
                                                         "ckpt_000000008.pt"]
    partial = ckpts / ".ckpt_000000010.pt.part"
    assert 0 < partial.stat().st_size < (ckpts / "ckpt_000000008.pt").stat().st_size
    assert [s for s, _ in list_checkpoints(ckpts)] == [6, 8]  # the partial file is not a checkpoint

    cut = ckpts / "ckpt_000000010.pt"
    cut.write_bytes(partial.read_bytes())
    _flip_a_weight_byte(ckpts / "ckpt_000000008.pt")
    with pytest.raises(CheckpointError, match="ckpt_000000010.pt: not a readable training checkpoint"):
        load_training_state(cut)
    with pytest.raises(CheckpointError, match=r"ckpt_000000008.pt: damaged training checkpoint: record .* fails"):
        load_training_state(ckpts / "ckpt_000000008.pt")
    assert load_training_state(ckpts / "ckpt_000000006.pt")["step"] == 6
    _resume_to_the_end(out, uninterrupted)


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path, uninterrupted):
    """From step 8 on the kernel refuses to grow any file past 1 MB (EFBIG, as ENOSPC on a full
    disk): the run stops with one clear error, nothing half-written stays, the checkpoints of
    steps 4 and 6 still load, and resuming once there is room ends where it should."""
    out = tmp_path / "run"
    proc = _sabotaged("full", 8, out)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("fluxvit.errors.CheckpointError: ") and last.endswith(
        "ckpt_000000008.pt: could not write the training checkpoint (File too large); ckpt_000000006.pt is kept")
    ckpts = out / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["ckpt_000000004.pt", "ckpt_000000006.pt"]
    assert [load_training_state(p)["step"] for _, p in list_checkpoints(ckpts)] == [4, 6]
    _resume_to_the_end(out, uninterrupted)


def test_disk_full_through_the_command_line(tmp_path):
    """``fluxvit train`` under a 1 MB file-size limit: one line, exit 2, no partial checkpoint."""
    config = csv_train_config(tmp_path, tmp_path / "run")

    def limit_file_size():
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # ignored dispositions survive exec
        resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    run = run_process("train", config, preexec_fn=limit_file_size)
    assert_user_error(run, "train", tmp_path / "run" / "checkpoints" / "ckpt_000000001.pt",
                      "could not write the training checkpoint (File too large)", after_logs=True)
    assert list((tmp_path / "run" / "checkpoints").iterdir()) == []
