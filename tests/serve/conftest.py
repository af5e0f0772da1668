"""Fixtures for the service: a tiny model with stored Token Optimization choices, small clips, the
service and its app in-process, and a real ``fluxvit serve`` process on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import fluxvit
from fluxvit.evaluate.token_optimization import META_KEY
from fluxvit.placement import Placement
from fluxvit.serve.scheduler import OperatingPoint
from fluxvit.serve.service import InferenceService
from fluxvit.serve.settings import ServeSettings
from tests.hostile.media import clip

ROOT = Path(__file__).resolve().parents[2]
CLASSES = ["red", "green", "blue", "grey"]
# Token Optimization's choices as a checkpoint stores them: a cheaper grid at the smaller budget
CHOICES = {"16": {"grid": "2x56x56", "top1": 61.5}, "32": {"grid": "4x56x56", "top1": 70.0},
           "64": {"grid": "4x56x56", "top1": 72.5}}


@pytest.fixture(scope="session")
def serve_ckpt(tmp_path_factory) -> Path:
    """A 2-block FluxViT-nano with random weights, 4 classes, default grid 4x56 (64 tokens) and TO
    choices at 16, 32 and 64 tokens."""
    torch.manual_seed(0)
    model = fluxvit.create_model("fluxvit_nano_patch14", num_classes=len(CLASSES), depth=2, default_grid=(4, 56))
    return fluxvit.save_checkpoint(model, tmp_path_factory.mktemp("serve") / "nano.safetensors", classes=CLASSES,
                                   extra={META_KEY: CHOICES})


@pytest.fixture(scope="session")
def serve_clip(tmp_path_factory) -> Path:
    """A valid 12-frame 48x64 clip."""
    return clip(tmp_path_factory.mktemp("serve_clip"), "clip.mp4", 12)


def measured_points(model) -> list[OperatingPoint]:
    """Made-up costs (ms) for the fixture model's three budgets, so tests need not measure."""
    from fluxvit.flux.grid import Grid

    return [OperatingPoint(Grid.parse(c["grid"], budget=int(b)), 10.0 * (i + 1), 5.0 * (i + 1), c["top1"])
            for i, (b, c) in enumerate(CHOICES.items())]


@contextlib.contextmanager
def service(checkpoint: Path, **settings) -> Iterator[InferenceService]:
    model = fluxvit.load_checkpoint(checkpoint)
    svc = InferenceService(model, Placement(), ServeSettings(**settings), points=measured_points(model))
    try:
        yield svc
    finally:
        svc.close()


@contextlib.contextmanager
def client(checkpoint: Path, **settings):
    """A FastAPI TestClient over a fresh service (lifespan run: closed at the end)."""
    from fastapi.testclient import TestClient

    from fluxvit.serve.app import create_app

    with service(checkpoint, **settings) as svc, TestClient(create_app(svc)) as c:
        c.service = svc
        yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def real_server(checkpoint: Path, *args: str, startup_s: float = 90,
                env: dict | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """``fluxvit serve`` in its own process on a free loopback port (``env``: more environment):
    (base URL, process), stopped with SIGTERM at the end (and killed if it does not stop)."""
    import httpx

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "fluxvit", "serve", "--checkpoint", str(checkpoint), "--port",
                             str(port), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_s
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"the server exited {proc.returncode}: {proc.stdout.read()}")
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("the server did not start in time")
            time.sleep(0.2)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
