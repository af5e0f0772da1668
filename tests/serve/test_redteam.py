"""Regression tests for the bugs a red-team review of ``fluxvit serve`` found (each failed before
its fix): malformed forms and over-long paths answered 500, a client leaving while its video waited
for the model killed the model thread, a batched error named another request's file, forged
stored records crashed the start, a broken sample video made ``--workers N`` restart forever."""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import os
import subprocess
import sys
import threading
import time

import pytest
import torch

import fluxvit
from fluxvit.errors import CheckpointError
from fluxvit.evaluate.runner import Views
from fluxvit.evaluate.token_optimization import META_KEY
from fluxvit.flux.grid import Grid
from fluxvit.placement import Placement
from fluxvit.serve.scheduler import BudgetScheduler, OperatingPoint
from fluxvit.serve.service import operating_points

from .conftest import ROOT, client, free_port, service


def _multipart(*parts: bytes) -> bytes:
    return b"".join(parts) + b"--b--\r\n"


def _part(name: str, content: bytes, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
    return b"--b\r\nContent-Disposition: " + disposition.encode() + b"\r\n\r\n" + content + b"\r\n"


# -- the form parser's own refusals


@pytest.mark.parametrize("body", [
    _multipart(_part("video", b"a", "a.mp4"), _part("video", b"b", "b.mp4")),  # two files (max_files=1)
    _multipart(*[_part("topk", b"1") for _ in range(7)]),  # more fields than max_fields
    _multipart(_part("path", b"a" * 5000)),  # a text field over FORM_FIELD_BYTES
    _multipart(_part("video", b"junk", "x" * 100_000 + ".mp4")),  # a part header over the parser's limit
    b"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--\r\n",  # a part without a name
    b"xx",  # not multipart at all
], ids=["two_videos", "too_many_fields", "field_too_big", "huge_filename", "no_name", "garbage"])
def test_malformed_forms_get_400_not_500(serve_ckpt, body):
    with client(serve_ckpt) as c:
        r = c.post("/v1/classify", content=body, headers={"content-type": "multipart/form-data; boundary=b"})
        assert r.status_code == 400, r.text
        assert r.json()["kind"] == "bad_request"
        assert 'code="500"' not in c.get("/metrics").text


def test_multipart_without_a_boundary_gets_400(serve_ckpt):
    with client(serve_ckpt) as c:
        r = c.post("/v1/classify", content=b"x", headers={"content-type": "multipart/form-data"})
        assert r.status_code == 400, r.text


# -- paths under the media root


@pytest.mark.parametrize("text", ["a" * 300, "sub/" + "a" * 300 + ".mp4"])
def test_a_path_with_an_over_long_name_is_4xx(serve_ckpt, tmp_path, text):
    root = tmp_path / "media"
    (root / "sub").mkdir(parents=True)
    with client(serve_ckpt, media_root=str(root)) as c:
        r = c.post("/v1/classify", data={"path": text})
        assert 400 <= r.status_code < 500, r.text
        assert "\n" not in r.json()["error"]


# -- error messages


def test_an_upload_named_with_a_line_feed_still_gets_one_line(serve_ckpt):
    with client(serve_ckpt) as c:
        r = c.post("/v1/classify", content=_multipart(_part("video", b"junk", "a\nb.mp4")),
                   headers={"content-type": "multipart/form-data; boundary=b"})
        assert r.status_code == 415
        assert "\n" not in r.json()["error"], r.json()


def test_an_error_of_a_batch_names_no_other_requests_file(serve_ckpt, serve_clip, monkeypatch):
    import fluxvit.evaluate.predict as predict

    read_views = predict.read_views

    def slow_read(*a, **k):  # both requests decode at once, so the first waits for the second: one batch
        time.sleep(0.3)
        return read_views(*a, **k)

    monkeypatch.setattr(predict, "read_views", slow_read)
    with client(serve_ckpt, decode_workers=2, max_batch=2, batch_wait_ms=1000, budget_mode="fixed") as c:
        with torch.no_grad():  # weights that overflow: every output is inf (as fp16 can)
            for p in c.service.model.parameters():
                p.fill_(float("inf"))
        data = serve_clip.read_bytes()
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(lambda name: c.post("/v1/classify", files={"video": (name, data)}),
                                    ["first.mp4", "second.mp4"]))
        assert all(r.status_code == 422 for r in answers), [r.text for r in answers]
        for r in answers:
            error = r.json()["error"]
            assert str(c.service.upload_dir) not in error, error


# -- the model thread and the scheduler's slots


def test_a_client_gone_while_its_video_waits_for_the_model_does_not_stop_the_server(serve_ckpt, serve_clip,
                                                                                   tmp_path, monkeypatch):
    import fluxvit.evaluate.predict as predict

    slow = tmp_path / "slow.mp4"
    slow.write_bytes(serve_clip.read_bytes())
    read_views = predict.read_views

    def slow_read(path, *a, **k):  # one video whose decoding keeps the model thread waiting for its batch
        if "slow" in str(path):
            time.sleep(1.5)
        return read_views(path, *a, **k)

    monkeypatch.setattr(predict, "read_views", slow_read)
    with service(serve_ckpt, decode_workers=2, max_batch=4, batch_wait_ms=1000, budget_mode="fixed") as svc:
        s = svc.scheduler
        first = svc.submit(s.admit(), slow)
        ticket = s.admit()
        gone = svc.submit(ticket, serve_clip)  # decoded at once: waits in the ready queue

        async def client_goes_away():  # what the classify handler does on a disconnect
            waiting = asyncio.wrap_future(gone)
            await asyncio.sleep(0.3)
            s.cancel(ticket)
            waiting.cancel()
            await asyncio.sleep(0.01)

        asyncio.run(client_goes_away())
        first.result(timeout=30)
        later = svc.submit(s.admit(), serve_clip)
        assert later.result(timeout=15).point.tokens == 64
        assert svc._model_thread.is_alive() and s.in_flight() == 0


def _point(frames: int, tokens: int, cost: float, top1: float) -> OperatingPoint:
    return OperatingPoint(Grid(frames, 112, 112, tokens), decode_ms=cost * 0.6, forward_ms=cost * 0.4, accuracy=top1)


def test_slow_requests_do_not_lock_an_idle_server_out_for_good():
    now = [0.0]
    s = BudgetScheduler([_point(2, 64, 15.0, 60.0), _point(4, 128, 45.0, 70.0)], 100.0, "adaptive", 32,
                        clock=lambda: now[0])
    for _ in range(3):  # three long videos: each decodes 50x slower than the sample the costs were measured on
        t = s.admit()
        s.start(t)
        now[0] += 2000
        s.finish(t, measured_ms=2000)
    assert s.in_flight() == 0
    now[0] += 3_600_000  # an hour later, nothing in flight
    s.admit()  # was Overloaded for good ("would finish in 120 ms even at the cheapest budget"): fixed by the
    # owner during the review (an idle server admits any request); kept as a plain regression test


def test_a_request_while_draining_gets_503(serve_ckpt, serve_clip):
    with client(serve_ckpt) as c:
        c.service._closing = True
        try:
            r = c.post("/v1/classify", files={"video": ("a.mp4", serve_clip.read_bytes())})
        finally:
            c.service._closing = False
        assert r.status_code == 503 and "retry-after" in r.headers, r.text
        assert c.get("/health").json()["in_flight"] == 0


def test_a_client_gone_mid_upload_is_not_counted_as_a_500(serve_ckpt):
    from fluxvit.serve.app import create_app

    with service(serve_ckpt) as svc:
        app = create_app(svc)
        head = b'--b\r\nContent-Disposition: form-data; name="video"; filename="a.mp4"\r\n\r\n'
        messages = [{"type": "http.request", "body": head + b"\0" * 1000, "more_body": True},
                    {"type": "http.disconnect"}]
        sent = []

        async def receive():
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/v1/classify", "raw_path": b"/v1/classify",
                 "query_string": b"", "root_path": "", "scheme": "http", "server": ("test", 80),
                 "headers": [(b"content-type", b"multipart/form-data; boundary=b"),
                             (b"content-length", b"100000")], "http_version": "1.1"}
        asyncio.run(asyncio.wait_for(app(scope, receive, send), 10))
        assert 500 not in [m.get("status") for m in sent if m["type"] == "http.response.start"]
        metrics = asyncio.run(_get(app, "/metrics"))
        assert 'fluxvit_requests_total{code="500"}' not in metrics
        assert svc.scheduler.in_flight() == 0


async def _get(app, path: str) -> str:
    body, sent = [], []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)
        if message["type"] == "http.response.body":
            body.append(message.get("body", b""))

    scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "scheme": "http", "server": ("test", 80), "headers": [], "http_version": "1.1"}
    await app(scope, receive, send)
    return b"".join(body).decode()


# -- forged checkpoint metadata


def _model(meta: dict):
    torch.manual_seed(0)
    model = fluxvit.create_model("fluxvit_nano_patch14", num_classes=4, depth=2, default_grid=(4, 56))
    model.checkpoint_meta = meta
    return model


@pytest.mark.parametrize("record", [{"²": {"grid": "2x56x56", "top1": 50.0}}, {"16": {}}],
                         ids=["superscript_key", "empty_choice"])
def test_forged_choices_are_one_checkpoint_error(record, serve_clip):
    with pytest.raises(CheckpointError):
        operating_points(_model({META_KEY: record}), Placement(), Views(1, 1), None, serve_clip, repeats=1)


@pytest.mark.parametrize("top1", [float("nan"), 150.0], ids=["nan", "over_100"])
def test_a_forged_top1_is_refused_or_ignored(top1, serve_clip):
    record = {"16": {"grid": "2x56x56", "top1": top1}, "32": {"grid": "4x56x56", "top1": 70.0}}
    try:
        points = operating_points(_model({META_KEY: record}), Placement(), Views(1, 1), None, serve_clip, repeats=1)
    except CheckpointError:
        return
    assert all(p.accuracy is None or (math.isfinite(p.accuracy) and 0 <= p.accuracy <= 100) for p in points)


# -- the process


@pytest.mark.slow  # a real process, waited for up to 60 s
def test_a_broken_sample_video_with_two_workers_is_one_line_and_exit_2(serve_ckpt, tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(os.urandom(300))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "fluxvit", "serve", "--checkpoint", str(serve_ckpt), "--port",
                             str(free_port()), "--workers", "2", "--sample-video", str(garbage)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = []
    reader = threading.Thread(target=lambda: output.append(proc.stdout.read()), daemon=True)
    reader.start()
    try:
        code = proc.wait(60)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reader.join(10)
    text = "".join(output)
    assert code == 2, f"exit {code}; {text.count('Traceback')} tracebacks"
    assert "Traceback" not in text and "not a readable video" in text


def test_a_request_after_the_decoders_shut_down_gets_503(serve_ckpt, serve_clip):
    """close() shuts the decoders down before it marks the service closing (the model thread
    must drain what they decode): a request in between is refused, not a 500."""
    from fluxvit.serve.scheduler import Overloaded

    with service(serve_ckpt) as svc:
        svc._decoders.shutdown(wait=True)
        ticket = svc.scheduler.admit()
        with pytest.raises(Overloaded, match="shutting down"):
            svc.submit(ticket, serve_clip)
        assert svc.scheduler.in_flight() == 0
