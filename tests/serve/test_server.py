"""``fluxvit serve`` as users start it: operating points measured at start, a real uvicorn process
on 127.0.0.1, graceful shutdown, and the command's own errors."""

from __future__ import annotations

import re
import signal
import threading
import time

import httpx
import pytest
import torch

import fluxvit
from fluxvit.cli import main as cli
from fluxvit.errors import CheckpointError, ConfigError
from fluxvit.evaluate.runner import Views
from fluxvit.evaluate.token_optimization import SCORES_KEY
from fluxvit.placement import Placement
from fluxvit.serve.service import operating_points
from tests.hostile.media import clip

from .conftest import CHOICES, CLASSES, real_server


def _model(meta: dict):
    torch.manual_seed(0)
    model = fluxvit.create_model("fluxvit_nano_patch14", num_classes=4, depth=2, default_grid=(4, 56))
    model.checkpoint_meta = meta
    return model


def test_operating_points_are_every_scored_grid_measured_here(serve_clip):
    scores = {"16": {"2x56x56": 60.0, "4x56x56": 55.0}, "64": {"4x56x56": 72.0, "8x56x56": 71.0}}
    points = operating_points(_model({SCORES_KEY: scores}), Placement(), Views(1, 1), None, serve_clip, repeats=1)
    assert {(str(p.grid), p.accuracy) for p in points} == {
        ("2x56@16", 60.0), ("4x56@16", 55.0), ("4x56@64", 72.0), ("8x56@64", 71.0)}
    assert all(p.decode_ms > 0 and p.forward_ms > 0 for p in points)
    by_grid = {str(p.grid): p for p in points}
    assert by_grid["4x56@16"].decode_ms == by_grid["4x56@64"].decode_ms  # one decode per shape
    assert by_grid["4x56@16"].forward_ms <= by_grid["4x56@64"].forward_ms  # fewer tokens never dearer
    capped = operating_points(_model({SCORES_KEY: scores}), Placement(), Views(1, 1), 32, serve_clip, repeats=1)
    assert {p.tokens for p in capped} == {16}
    with pytest.raises(ConfigError, match="--max-budget 8: the model serves no budget that small .its smallest is 16"):
        operating_points(_model({SCORES_KEY: scores}), Placement(), Views(1, 1), 8, serve_clip, repeats=1)


def test_without_stored_choices_the_default_grid_serves_a_ladder_of_budgets(serve_clip):
    points = operating_points(_model({}), Placement(), Views(1, 1), None, serve_clip, repeats=1)
    assert sorted(p.tokens for p in points) == [8, 12, 16, 24, 32, 48, 64]  # 1/8 to all of 4x56's 64
    assert {str(p.grid.with_budget(None)) for p in points} == {"4x56"} and all(p.accuracy is None for p in points)


@pytest.mark.parametrize("record", [{"16": {"2x56x56": "high"}}, {"16": ["2x56x56"]}, {"x": {"2x56": 1.0}},
                                    {"16": {"2x57": 50.0}}, {"16": {"2x56": 150.0}}])
def test_forged_scores_are_one_checkpoint_error(record, serve_clip):
    with pytest.raises(CheckpointError, match="stored Token Optimization scores are malformed"):
        operating_points(_model({SCORES_KEY: record}), Placement(), Views(1, 1), None, serve_clip, repeats=1)


def test_a_real_server_classifies_over_http_and_finishes_in_flight_requests_on_sigterm(serve_ckpt, tmp_path):
    slow = clip(tmp_path, "slow.mp4", 96, 360, 480)  # long enough a request to be caught in flight
    with real_server(serve_ckpt, "--views", "4x3", "--latency-ms", "60000", "--sample-video", str(slow)) as (url,
                                                                                                        proc):
        info = httpx.get(f"{url}/v1/model").json()
        assert info["classes"] == CLASSES and info["token_optimization"] == CHOICES
        r = httpx.post(f"{url}/v1/classify", files={"video": ("slow.mp4", slow.read_bytes())}, timeout=60)
        assert r.status_code == 200 and len(r.json()["top"]) == 4
        assert 'fluxvit_requests_total{code="200"} 1.0' in httpx.get(f"{url}/metrics").text
        answers = []
        sender = threading.Thread(target=lambda: answers.append(
            httpx.post(f"{url}/v1/classify", files={"video": ("slow.mp4", slow.read_bytes())}, timeout=60)))
        sender.start()
        deadline = time.monotonic() + 20
        while httpx.get(f"{url}/health").json()["in_flight"] == 0:  # the request is inside the server
            assert time.monotonic() < deadline and sender.is_alive()
            time.sleep(0.002)
        proc.send_signal(signal.SIGTERM)
        sender.join(60)
        output, _ = proc.communicate(timeout=60)
    assert answers and answers[0].status_code == 200, answers and answers[0].text
    assert len(answers[0].json()["top"]) == 4
    assert "Application shutdown complete" in output, output
    assert re.search(r"serving 3 operating points; adaptive chooses among \d", output), output


def test_workers_run_as_processes_that_each_serve_and_all_stop_on_sigterm(serve_ckpt, serve_clip):
    with real_server(serve_ckpt, "--workers", "2", "--latency-ms", "60000") as (url, proc):
        for _ in range(4):
            r = httpx.post(f"{url}/v1/classify", files={"video": ("clip.mp4", serve_clip.read_bytes())}, timeout=60)
            assert r.status_code == 200 and r.json()["tokens"] == 64
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert len(re.findall(r"serving 3 operating points; adaptive chooses among \d", output)) == 2, output
    assert output.count("Application shutdown complete") == 2, output


def test_the_upload_folder_is_gone_after_shutdown(serve_ckpt, serve_clip, tmp_path):
    with real_server(serve_ckpt, "--latency-ms", "60000", env={"TMPDIR": str(tmp_path)}) as (url, proc):
        (folder,) = tmp_path.glob("fluxvit-serve-*")
        r = httpx.post(f"{url}/v1/classify", files={"video": ("clip.mp4", serve_clip.read_bytes())}, timeout=60)
        assert r.status_code == 200 and list(folder.iterdir()) == []
    assert not folder.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("args", "needle"), [
    (["--checkpoint", "missing.safetensors"], "missing.safetensors"),
    (["--latency-ms", "0"], "--latency-ms must be between 1 and"),
    (["--latency-ms", "nan"], "must be a finite number"),
    (["--port", "70000"], "'--port' must be between 0 and 65535, got 70000"),
    (["--workers", "0"], "'--workers' must be between 1 and 256, got 0"),
    (["--max-upload-mb", "-1"], "--max-upload-mb must be between"),
    (["--max-batch", "100000"], "--max-batch must be between 1 and 256"),
    (["--views", "1x9"], "views 1x9: need clips >= 1 and 1 to 3 crops"),
    (["--media-root", "/nonexistent/media"], "/nonexistent/media"),
    (["--budget", "cheap"], "invalid choice: 'cheap'"),
    (["--device", "tpu"], "tpu"),
    (["--selector", "best"], "best"),
])
def test_serve_refuses_bad_options_in_one_line_before_listening(serve_ckpt, args, needle, capsys):
    argv = ["serve", "--checkpoint", str(serve_ckpt), "--port", "1", *args]
    try:
        code = cli(argv)
    except SystemExit as e:  # argparse's own refusals
        code = e.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err and "Traceback" not in err, err


def test_serve_refuses_an_exported_model(serve_ckpt, tmp_path, capsys):
    onnx = tmp_path / "nano.onnx"
    onnx.write_bytes(b"not really onnx")
    assert cli(["serve", "--checkpoint", str(onnx)]) == 2
    assert "is an exported model; this command needs the checkpoint" in capsys.readouterr().err
