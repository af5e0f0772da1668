"""The HTTP API in-process (FastAPI's TestClient): answers, errors, limits and hostile uploads."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import time

import pytest

import fluxvit
from fluxvit.evaluate.predict import predict_video
from fluxvit.evaluate.runner import Views
from fluxvit.flux.grid import Grid
from tests.hostile.media import BROKEN, ODD

from .conftest import CHOICES, CLASSES, client, service

# the broken files a client can upload (the rest are not files: they are tried as paths below)
UPLOADABLE = sorted(k for k in BROKEN if k not in ("missing", "directory", "fifo", "device", "symlink_loop",
                                                   "dangling_symlink", "path_too_long"))


def upload(c, data: bytes, name: str = "clip.mp4", **fields):
    return c.post("/v1/classify", files={"video": (name, data)}, data={k: str(v) for k, v in fields.items()})


def _left_behind(c) -> list[str]:
    return sorted(os.listdir(c.service.upload_dir))


def test_classify_answers_what_predict_answers_at_the_chosen_point(serve_ckpt, serve_clip):
    model = fluxvit.load_checkpoint(serve_ckpt)
    with client(serve_ckpt) as c:
        r = upload(c, serve_clip.read_bytes(), topk=3)
        assert r.status_code == 200, r.text
        body = r.json()
        # idle: the most accurate point, 64 tokens at 4x56 (TO's top-1 72.5)
        assert (body["grid"], body["tokens"], body["batch"]) == ("4x56x56", 64, 1)
        expected = predict_video(model, serve_clip, Grid(4, 56, 56, 64), Views(1, 1), topk=3)
        assert [t["label"] for t in body["top"]] == [name for name, _ in expected.top]
        assert [t["prob"] for t in body["top"]] == pytest.approx([p for _, p in expected.top], abs=1e-5)
        assert set(body["timing_ms"]) == {"queue", "decode", "forward"}
        assert body["timing_ms"]["decode"] > 0 and body["timing_ms"]["forward"] > 0
        # a budget asked for: its own grid (TO's choice at 16 tokens is 2x56)
        r = upload(c, serve_clip.read_bytes(), budget=16, topk=10, tokens=1)
        body = r.json()
        assert (body["grid"], body["tokens"]) == ("2x56x56", 16)
        assert len(body["top"]) == len(CLASSES) and sum(t["prob"] for t in body["top"]) == pytest.approx(1, abs=1e-4)
        assert body["tokens_png"].startswith("data:image/png;base64,iVBORw0KGgo")
        assert _left_behind(c) == []


@pytest.mark.parametrize(("fields", "status", "needle"), [
    ({"budget": "17"}, 400, "budget 17 is not served here; choose one of 16, 32, 64 (or auto)"),
    ({"budget": "-3"}, 400, "budget must be an integer from 1 to"),
    ({"topk": "0"}, 400, "topk must be from 1 to 100, got 0"),
    ({"topk": "abc"}, 400, "topk must be an integer"),
    ({"topk": "9" * 40}, 400, "topk must be an integer"),
    ({"tokens": "yes"}, 400, "tokens must be 1 or 0"),
    ({"colour": "red"}, 400, "unknown field 'colour'"),
    ({"path": "clip.mp4"}, 400, "give one of: video"),
])
def test_bad_fields_get_400_with_one_line(serve_ckpt, serve_clip, fields, status, needle):
    with client(serve_ckpt) as c:
        r = upload(c, serve_clip.read_bytes(), **fields)
        assert r.status_code == status and needle in r.json()["error"], r.text
        assert "\n" not in r.json()["error"]
        assert c.get("/health").json()["in_flight"] == 0 and _left_behind(c) == []


def test_requests_without_a_video_or_not_a_form_are_refused(serve_ckpt):
    with client(serve_ckpt) as c:
        r = c.post("/v1/classify", data={"topk": "3"})
        assert r.status_code == 400 and "give one of: video" in r.json()["error"]
        r = c.post("/v1/classify", json={"path": "a.mp4"})
        assert r.status_code == 415 and "multipart/form-data" in r.json()["error"]
        r = c.post("/v1/classify", data={"video": "not a file"})
        assert r.status_code == 400 and "video must be an uploaded file" in r.json()["error"]
        r = c.post("/v1/classify", content=b"--x\r\nbroken",
                   headers={"content-type": "multipart/form-data; boundary=x"})
        assert r.status_code == 400
        assert c.get("/nowhere").status_code == 404


def test_paths_stay_under_the_media_root(serve_ckpt, serve_clip, tmp_path):
    root = tmp_path / "media"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "clip.mp4").write_bytes(serve_clip.read_bytes())
    outside = tmp_path / "secret.mp4"
    outside.write_bytes(serve_clip.read_bytes())
    (root / "escape.mp4").symlink_to(outside)
    (root / "inside.mp4").symlink_to(root / "sub" / "clip.mp4")
    with client(serve_ckpt, media_root=str(root)) as c:
        def classify(path):
            return c.post("/v1/classify", data={"path": path})

        assert classify("sub/clip.mp4").status_code == 200
        assert classify("inside.mp4").status_code == 200  # a link that stays inside is followed
        for bad in ("../secret.mp4", "sub/../../secret.mp4", str(outside), "/etc/passwd", "escape.mp4",
                    "C:/x.mp4", "sub\\..\\..\\secret.mp4"):
            r = classify(bad)
            assert r.status_code == 403, (bad, r.text)
            assert r.json()["kind"] == "forbidden"
        r = classify("sub/none.mp4")
        assert r.status_code == 404 and "no such video under the media root" in r.json()["error"]
        r = classify("sub")  # a folder
        assert r.status_code == 422 and "not a regular file" in r.json()["error"]
    with client(serve_ckpt) as c:
        r = c.post("/v1/classify", data={"path": "sub/clip.mp4"})
        assert r.status_code == 403 and "without --media-root" in r.json()["error"]


def test_uploads_over_the_cap_get_413_before_they_are_read(serve_ckpt, serve_clip):
    with client(serve_ckpt, max_upload_mb=0.01) as c:  # 10 KiB
        r = upload(c, b"\0" * 200_000)
        assert r.status_code == 413 and "larger than this server's cap of 0.01 MB" in r.json()["error"]

        def chunks():  # no Content-Length: the body is counted as it streams
            head = b'--b\r\nContent-Disposition: form-data; name="video"; filename="a.mp4"\r\n\r\n'
            yield head
            for _ in range(50):
                yield b"\0" * 8192

        r = c.post("/v1/classify", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"})
        assert r.status_code == 413
        # a file just over the cap whose request fits the body's margin: refused when copied
        r = upload(c, b"\0" * (int(0.01 * 2**20) + 10))
        assert r.status_code == 413
        assert c.get("/health").json()["in_flight"] == 0 and _left_behind(c) == []
        metrics = c.get("/metrics").text
        assert 'fluxvit_requests_total{code="413"} 3.0' in metrics


def test_every_broken_video_of_the_catalogue_gets_one_line_and_the_server_carries_on(serve_ckpt, serve_clip,
                                                                                     tmp_path):
    with client(serve_ckpt) as c:
        for kind in UPLOADABLE:
            make, reason = BROKEN[kind]
            path = make(tmp_path / kind) if (tmp_path / kind).mkdir() is None else None
            r = upload(c, path.read_bytes(), name=path.name)
            assert r.status_code in (413, 415, 422), (kind, r.status_code, r.text)
            error = r.json()["error"]
            assert error.startswith(f"{path.name}: ") and "\n" not in error, (kind, error)
            assert str(c.service.upload_dir) not in error  # the client's name, not the server's file
            if kind != "decompression_bomb":
                assert reason in error, (kind, error)
        assert upload(c, serve_clip.read_bytes()).status_code == 200
        assert _left_behind(c) == []
        health = c.get("/health").json()
        assert health == {"status": "ok", "in_flight": 0, "queue": 0}


def test_the_non_files_of_the_catalogue_are_refused_as_paths(serve_ckpt, tmp_path):
    root = tmp_path / "media"
    root.mkdir()
    with client(serve_ckpt, media_root=str(root)) as c:
        for kind in ("directory", "fifo", "symlink_loop", "dangling_symlink"):
            path = BROKEN[kind][0](root)
            r = c.post("/v1/classify", data={"path": path.name})
            assert r.status_code in (403, 404, 422), (kind, r.text)
            assert "\n" not in r.json()["error"]
        assert c.get("/health").json()["in_flight"] == 0


def test_every_odd_but_valid_video_of_the_catalogue_is_classified(serve_ckpt, tmp_path):
    with client(serve_ckpt) as c:
        for kind in sorted(ODD):
            (tmp_path / kind).mkdir()
            odd = ODD[kind](tmp_path / kind)
            r = upload(c, odd.path.read_bytes(), name=odd.path.name)
            assert r.status_code == 200, (kind, r.text)
            assert len(r.json()["top"]) == len(CLASSES)


def test_an_overloaded_server_answers_503_with_retry_after(serve_ckpt, serve_clip):
    with client(serve_ckpt, latency_ms=10) as c:  # the cheapest point costs 15 ms (conftest)
        assert upload(c, serve_clip.read_bytes()).status_code == 200  # an idle server takes any request
        other = c.service.scheduler.admit()  # one in flight: now the prediction decides
        r = upload(c, serve_clip.read_bytes())
        assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1
        assert "even at the cheapest budget (16 tokens at 2x56" in r.json()["error"]
        # a budget asked for is served as asked
        assert upload(c, serve_clip.read_bytes(), budget=32).status_code == 200
        assert 'fluxvit_errors_total{kind="overloaded"} 1.0' in c.get("/metrics").text
        c.service.scheduler.finish(other)
    with client(serve_ckpt, latency_ms=10, budget_mode="fixed") as c:  # a plain server: no shedding
        r = upload(c, serve_clip.read_bytes())
        assert r.status_code == 200 and r.json()["tokens"] == 64


def test_model_health_and_metrics(serve_ckpt, serve_clip):
    with client(serve_ckpt, latency_ms=120) as c:
        info = c.get("/v1/model").json()
        assert info["classes"] == CLASSES and info["budgets"] == [16, 32, 64]
        assert [p["tokens"] for p in info["operating_points"]] == [16, 32, 64]
        assert info["token_optimization"] == CHOICES
        assert (info["latency_ms"], info["budget_mode"], info["device"], info["dtype"]) == (120, "adaptive", "cpu",
                                                                                          "fp32")
        for _ in range(2):
            assert upload(c, serve_clip.read_bytes()).status_code == 200
        assert upload(c, b"junk" * 10).status_code == 415
        text = c.get("/metrics").text
        for line in ('fluxvit_requests_total{code="200"} 2.0', 'fluxvit_requests_total{code="415"} 1.0',
                     'fluxvit_errors_total{kind="not_video"} 1.0', "fluxvit_request_latency_seconds_count 2.0",
                     'fluxvit_budget_tokens_bucket{le="64.0"} 2.0', "fluxvit_budget_tokens_sum 128.0",
                     "fluxvit_queue_depth 0.0", "fluxvit_in_flight 0.0", "fluxvit_latency_target_seconds 0.12",
                     "fluxvit_batch_size_count 2.0"):
            assert line in text, line
        page = c.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")


def test_requests_of_one_point_share_a_forward_and_get_their_own_answers(serve_ckpt, serve_clip):
    model = fluxvit.load_checkpoint(serve_ckpt)
    expected = predict_video(model, serve_clip, Grid(4, 56, 56, 64), Views(1, 1), topk=4)
    with service(serve_ckpt, decode_workers=2, max_batch=4, batch_wait_ms=500, budget_mode="fixed") as svc:
        tickets = [svc.scheduler.admit() for _ in range(4)]
        futures = [svc.submit(t, serve_clip, topk=4) for t in tickets]
        results = [f.result(timeout=60) for f in futures]
    assert max(r.batch for r in results) >= 2
    for r in results:
        assert [n for n, _ in r.top] == [n for n, _ in expected.top]
        assert [p for _, p in r.top] == pytest.approx([p for _, p in expected.top], abs=1e-5)


def test_a_client_that_goes_away_frees_its_slot(serve_ckpt, serve_clip):
    """The handler sees the disconnect while its request waits, takes it out of the queue and
    answers nobody; the slot is free at once."""
    from fluxvit.serve.app import create_app

    with service(serve_ckpt) as svc:
        never = concurrent.futures.Future()  # decoding that does not end while the client waits
        svc.submit = lambda ticket, *a, **k: never
        app = create_app(svc)
        boundary = "b"
        body = (f'--{boundary}\r\nContent-Disposition: form-data; name="video"; filename="c.mp4"\r\n\r\n').encode() \
            + serve_clip.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        sent = []

        hang_up = time.monotonic() + 0.3  # the client hangs up a moment after sending

        async def receive():
            if messages:
                return messages.pop(0)
            if time.monotonic() > hang_up:
                return {"type": "http.disconnect"}
            await asyncio.Event().wait()  # nothing yet (the server's poll cancels this wait)

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/v1/classify", "raw_path": b"/v1/classify",
                 "query_string": b"", "root_path": "", "scheme": "http", "server": ("test", 80),
                 "headers": [(b"content-type", f"multipart/form-data; boundary={boundary}".encode()),
                             (b"content-length", str(len(body)).encode())], "http_version": "1.1"}
        asyncio.run(asyncio.wait_for(app(scope, receive, send), 10))
        assert svc.scheduler.in_flight() == 0 and svc.scheduler.waiting() == 0
        assert [m.get("status") for m in sent if m["type"] == "http.response.start"] == [499]


def test_a_decode_that_runs_past_its_cap_is_refused(serve_ckpt, serve_clip, monkeypatch):
    import fluxvit.data.video as video

    class SlowClock:  # every look at the clock finds 0.4 s more gone: the decoding of a slow file
        def __init__(self) -> None:
            self.now = 0.0

        def monotonic(self) -> float:
            self.now += 0.4
            return self.now

    with client(serve_ckpt, decode_timeout_s=1) as c:
        monkeypatch.setattr(video, "time", SlowClock())
        r = upload(c, serve_clip.read_bytes(), name="long.mp4")
        assert r.status_code == 422 and "long.mp4: decoding took longer than the cap of 1 s" in r.json()["error"]
        monkeypatch.undo()
        assert upload(c, serve_clip.read_bytes()).status_code == 200  # the next request has its own time
        assert _left_behind(c) == []


def test_settings_out_of_range_are_one_line():
    from fluxvit.errors import ConfigError
    from fluxvit.serve.settings import ServeSettings

    for kw, needle in (({"latency_ms": 0}, "--latency-ms must be between 1 and"),
                       ({"max_batch": 2.5}, "--max-batch must be an integer"),
                       ({"max_upload_mb": float("nan")}, "--max-upload-mb must be between"),
                       ({"decode_workers": 0}, "--decode-workers must be between 1 and 64"),
                       ({"budget_mode": "cheap"}, "--budget must be adaptive or fixed"),
                       ({"views": "2000x3"}, "views")):
        with pytest.raises(ConfigError, match=needle):
            ServeSettings(**kw)
