"""Exact resumption after SIGKILL, and two-process DDP on CPU."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _run_toy(out, steps, batch, *extra, env=ENV):
    return subprocess.Popen([sys.executable, "-m", "tests.train.run_toy", str(out), str(steps), str(batch), *extra],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _weights(path):
    return torch.load(path, weights_only=True)


def _assert_identical(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


def test_killed_run_resumes_to_bitwise_identical_weights(tmp_path):
    steps = 24
    full = _run_toy(tmp_path / "full", steps, 4)
    killed = _run_toy(tmp_path / "killed", steps, 4)
    ckpts = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 60
    while time.time() < deadline:  # kill as soon as a checkpoint is down, mid-run
        if ckpts.is_dir() and any(p.suffix == ".pt" and p.name.startswith("ckpt_") for p in ckpts.iterdir()):
            break
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed" / "model.safetensors").exists(), "run finished before the kill"
    assert full.wait(timeout=120) == 0, full.stdout.read().decode()
    resumed = _run_toy(tmp_path / "killed", steps, 4, "--resume")
    assert resumed.wait(timeout=120) == 0, resumed.stdout.read().decode()
    _assert_identical(_weights(tmp_path / "full" / "rank0.pt"), _weights(tmp_path / "killed" / "rank0.pt"))
    # The EMA and the metrics log continue too: every step is logged (the killed part may repeat
    # steps after its last checkpoint), and no temporary file is left behind.
    from safetensors.torch import load_file

    ema_full = load_file(str(tmp_path / "full" / "model_ema.safetensors"))
    ema_resumed = load_file(str(tmp_path / "killed" / "model_ema.safetensors"))
    _assert_identical(ema_full, ema_resumed)
    assert not list((tmp_path / "killed").rglob("*.part"))
    assert len(list(ckpts.glob("ckpt_*.pt"))) == 2  # keep_last


@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
                    reason="torchrun not installed")
def test_two_process_ddp_agrees_across_ranks_and_with_one_process(tmp_path):
    env = {**ENV, "TOY_NO_RANDOM_AUG": "1"}
    torchrun = str(Path(sys.executable).parent / "torchrun")
    two = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "tests.train.run_toy",
                          str(tmp_path / "ddp"), "6", "2"], cwd=ROOT, env=env, capture_output=True, timeout=180)
    assert two.returncode == 0, two.stderr.decode()[-3000:]
    one = _run_toy(tmp_path / "one", 6, 4, env=env)
    assert one.wait(timeout=120) == 0, one.stdout.read().decode()
    r0, r1 = _weights(tmp_path / "ddp" / "rank0.pt"), _weights(tmp_path / "ddp" / "rank1.pt")
    _assert_identical(r0, r1)  # DDP keeps the ranks in lockstep
    single = _weights(tmp_path / "one" / "rank0.pt")
    # Same global batch on one process: the same samples and grids, so the same losses ...
    from fluxvit.train.metrics import read_metrics

    steps_two = [r for r in read_metrics(tmp_path / "ddp" / "metrics.jsonl") if "ce" in r]
    steps_one = [r for r in read_metrics(tmp_path / "one" / "metrics.jsonl") if "ce" in r]
    assert [r["grid"] for r in steps_two] == [r["grid"] for r in steps_one]
    assert steps_two[0]["ce"] == pytest.approx(steps_one[0]["ce"], abs=1e-5)
    # ... and weights equal up to float summation order, which Adam's normalisation amplifies
    # for parameters with tiny gradients: well under one step's size (lr 1e-3).
    for k in single:
        torch.testing.assert_close(r0[k], single[k], atol=2e-4, rtol=1e-3)
    assert not (tmp_path / "ddp" / "rank1").exists()
    written = sorted(p.name for p in (tmp_path / "ddp").iterdir())
    assert written == ["checkpoints", "config.yaml", "metrics.jsonl", "model.safetensors", "model_ema.safetensors",
                       "rank0.pt", "rank1.pt"]
