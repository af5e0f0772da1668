"""Shared parts of the hostile-input suite: a tiny checkpoint, the command line run in-process
or as a real process, and the check every user error must pass."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hypothesis import settings

import fluxvit
from fluxvit.cli import main

from .media import clip

ROOT = Path(__file__).resolve().parents[2]
CLASSES = ["red", "green", "blue", "grey"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread (the child processes get OMP_NUM_THREADS=1): on a busy shared machine
    a second thread is often descheduled and every parallel op waits for it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@dataclass
class CliRun:
    """What one command did: its exit code and what it printed."""

    code: int
    out: str
    err: str

    def json_lines(self) -> list[dict]:
        return [json.loads(line) for line in self.out.splitlines() if line.startswith("{")]


def assert_user_error(run: CliRun, command: str, *needles: object, code: int = 2, after_logs: bool = False) -> str:
    """One line on stderr, ``fluxvit COMMAND: error: ...`` naming every needle; exit ``code``;
    no traceback. ``after_logs``: progress lines may come before it (a real ``fluxvit train``
    process logs as it goes). Returns the line."""
    assert "Traceback" not in run.err, run.err
    assert run.code == code, (run.code, run.err)
    lines = run.err.strip().splitlines()
    assert len(lines) == 1 or after_logs and lines, run.err
    assert sum(": error: " in line for line in lines) == 1, run.err
    assert lines[-1].startswith(f"fluxvit {command}: error: "), lines[-1]
    for needle in needles:
        assert str(needle) in lines[-1], (needle, lines[-1])
    return lines[-1]


@pytest.fixture
def cli(capsys):
    """``cli(*args)`` -> :class:`CliRun`: ``fluxvit ARGS`` through :func:`fluxvit.cli.main`."""

    def run(*args: object) -> CliRun:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliRun(code, captured.out, captured.err)

    return run


def run_process(*args: object, prefix: tuple[str, ...] = (), timeout: float = 120, **kw) -> CliRun:
    """``fluxvit ARGS`` as a real process (``python -m fluxvit``), optionally under ``prefix``."""
    proc = subprocess.run([*prefix, sys.executable, "-m", "fluxvit", *map(str, args)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=timeout, **kw)
    return CliRun(proc.returncode, proc.stdout, proc.stderr)


# Root reads any file whatever its mode. Dropping the two capabilities that let it do so
# (DAC_OVERRIDE, DAC_READ_SEARCH) from a child process makes file permissions bite again.
SETPRIV = shutil.which("setpriv")
UNPRIVILEGED = (SETPRIV, "--bounding-set=-dac_override,-dac_read_search",
                "--inh-caps=-dac_override,-dac_read_search") if SETPRIV else ()


def unreadable(path: Path) -> Path:
    """``path`` with mode 000; skips the test when no process of ours could be refused it."""
    path.chmod(0)
    if os.geteuid() != 0:
        return path
    if not SETPRIV:
        pytest.skip("running as root, which ignores file modes, and setpriv is not installed to drop "
                    "CAP_DAC_OVERRIDE from a child process")
    probe = subprocess.run([*UNPRIVILEGED, "cat", str(path)], capture_output=True)
    if probe.returncode == 0:
        pytest.skip("running as root, and dropping CAP_DAC_OVERRIDE did not make the file unreadable here")
    return path


def csv_train_config(folder: Path, out: Path) -> Path:
    """A 2-step fixed-grid training config over a CSV of two real 8-frame clips in ``folder``
    (checkpoint and metrics every step), for tests of ``fluxvit train`` as users run it."""
    csv = folder / "train.csv"
    csv.write_text("".join(f"{clip(folder, f'v{i}.mp4', 8)} {i % 2}\n" for i in range(2)))
    config = folder / "train.yaml"
    config.write_text(f"out_dir: {out}\nsteps: 2\nckpt_every: 1\nprogress: false\nlog_every: 1\n"
                      f"data:\n  source: csv\n  train: {csv}\n  batch_size: 2\n"
                      "flux:\n  fixed: 2x28\nobjective:\n  name: fixed\n")
    return config


@pytest.fixture(scope="session")
def nano_ckpt(tmp_path_factory) -> Path:
    """A 2-block FluxViT-nano with random weights, 4 classes, default grid 4x56."""
    torch.manual_seed(0)
    model = fluxvit.create_model("fluxvit_nano_patch14", num_classes=len(CLASSES), depth=2, default_grid=(4, 56))
    return fluxvit.save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "nano.safetensors", classes=CLASSES)


@pytest.fixture(scope="session")
def good_video(tmp_path_factory) -> Path:
    """A valid 12-frame coded clip."""
    return clip(tmp_path_factory.mktemp("good"), "good.mp4", 12)


# Hypothesis: CI (``CI`` set) replays a fixed sequence of examples, so a red build is reproducible
# and never depends on the draw; locally every run explores new examples. A failure found either
# way is pinned with ``@example`` next to its test.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("dev")
settings.load_profile("ci" if os.environ.get("CI") else "dev")
