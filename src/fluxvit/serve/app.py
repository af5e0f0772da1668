"""The HTTP API of ``fluxvit serve`` (FastAPI), over an :class:`~fluxvit.serve.service.InferenceService`.

- ``POST /v1/classify``: multipart form with ``video`` (an uploaded file) or ``path`` (a video
  under ``--media-root``), optional ``budget`` (a served budget or ``auto``), ``topk`` and
  ``tokens`` (``1``: add the kept-token picture as a PNG data URL). Answers the top-k, the grid and
  budget used, and the queue/decode/forward milliseconds.
- ``GET /health``, ``GET /v1/model`` (classes, budgets, operating points, TO choices),
  ``GET /metrics`` (Prometheus), ``GET /`` (a page to try it by hand).

Errors are JSON ``{"error": one line, "kind": ...}``: 400 a bad field, 403 a path outside the
media root, 404 no such video there, 413 an upload over ``--max-upload-mb``, 415 a file that is
not a video, 422 a video that cannot be decoded (or decodes longer than ``--decode-timeout-s``),
503 with Retry-After when the latency target cannot be met or the server is draining. An upload
lives in a private temporary file for the length of its request only.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import re
import tempfile
import time
from importlib import resources
from pathlib import Path, PurePosixPath

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from fluxvit.errors import ConfigError, FluxViTError, VideoError
from fluxvit.files import inside
from fluxvit.serve.metrics import CONTENT_TYPE, Metrics
from fluxvit.serve.scheduler import Overloaded
from fluxvit.serve.service import Cancelled, InferenceService

log = logging.getLogger(__name__)

FIELDS = ("video", "path", "budget", "topk", "tokens")
FORM_FIELD_BYTES = 4096  # a text field (path, budget, ...) longer than this is refused by the parser
FORM_MARGIN_BYTES = 64 * 1024  # what a request may hold beyond its upload: the form's headers and fields
DISCONNECT_POLL_S = 0.05  # how often a waiting request checks that its client is still there
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,8}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # a client's file name never breaks the one-line error
# VideoError reasons that mean "this is not a video at all" (415) rather than "a broken video" (422)
_NOT_A_VIDEO = ("not a readable video", "no video stream", "empty file")


class ApiError(Exception):
    """An answer other than 200: the status, one line, its kind (the metrics' label) and headers."""

    def __init__(self, status: int, message: str, kind: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.headers = status, kind, headers or {}


def _overloaded(e: Overloaded) -> ApiError:
    return ApiError(503, str(e), "overloaded", {"Retry-After": str(e.retry_after_s)})


def _error_response(e: ApiError) -> JSONResponse:
    return JSONResponse({"error": str(e), "kind": e.kind}, status_code=e.status, headers=e.headers)


def _too_large(max_upload_mb: float) -> ApiError:
    return ApiError(413, f"upload is larger than this server's cap of {max_upload_mb:g} MB (--max-upload-mb)",
                    "too_large")


class BodyLimit:
    """ASGI middleware: a request body over ``max_upload_mb`` (and ``margin`` for the form's
    headers and text fields) gets 413 before it is all read, whether it declares its length or
    streams it in chunks."""

    def __init__(self, app, max_upload_mb: float, margin: int = FORM_MARGIN_BYTES, on_refused=None) -> None:
        self.app, self.max_upload_mb, self.on_refused = app, max_upload_mb, on_refused
        self.max_bytes = int(max_upload_mb * 2**20) + margin

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        seen, started = 0, False

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _too_large(self.max_upload_mb)  # the handler answers it, or else we do below
            return message

        async def watched(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except ApiError:
            if not started:
                await self._refuse(scope, receive, send)

    async def _refuse(self, scope, receive, send) -> None:
        if self.on_refused is not None and scope.get("path") == "/v1/classify":  # the metrics count classify
            self.on_refused(413, "too_large")
        await _error_response(_too_large(self.max_upload_mb))(scope, receive, send)


def _integer(form, name: str, default: int | None, lo: int, hi: int) -> int | None:
    text = form.get(name)
    if text is None:
        return default
    if not isinstance(text, str) or not re.fullmatch(r"\s*\d{1,9}\s*", text):
        raise ApiError(400, f"{name} must be an integer from {lo} to {hi}, got {str(text)[:40]!r}", "bad_request")
    value = int(text)
    if not lo <= value <= hi:
        raise ApiError(400, f"{name} must be from {lo} to {hi}, got {value}", "bad_request")
    return value


def resolve_media_path(text: str, root: str | os.PathLike | None) -> Path:
    """The file a ``path`` field names under ``root``: relative, no ``..``, and still inside
    ``root`` once symbolic links are resolved; anything else is an :class:`ApiError`."""
    if root is None:
        raise ApiError(403, "this server takes uploads only (it was started without --media-root)", "forbidden")
    if "\x00" in text or not text.strip():
        raise ApiError(400, "path must be a non-empty relative path", "bad_request")
    parts = PurePosixPath(text.replace("\\", "/"))
    if parts.is_absolute() or ".." in parts.parts or re.match(r"[A-Za-z]:", text):
        raise ApiError(403, f"path {text[:200]!r}: must be relative to the media root, without '..'", "forbidden")
    full = Path(root) / parts
    if not inside(full, root):
        raise ApiError(403, f"path {text[:200]!r}: leads outside the media root", "forbidden")
    try:
        exists = full.exists()
    except OSError as e:  # a name too long for this system, ...
        raise ApiError(400, f"path {text[:200]!r}: {e.strerror or e}", "bad_request") from None
    if not exists:
        raise ApiError(404, f"path {text[:200]!r}: no such video under the media root", "not_found")
    return full


def video_error_status(e: VideoError) -> int:
    """415 for a file that is not a video, 422 for a video that cannot be decoded."""
    return 415 if any(reason in str(e) for reason in _NOT_A_VIDEO) else 422


def create_app(service: InferenceService) -> FastAPI:
    """The app over ``service`` (closed when the app shuts down)."""
    settings, scheduler = service.settings, service.scheduler
    metrics = Metrics(scheduler)
    service.on_batch = lambda point, n: metrics.batch.observe(n)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await asyncio.to_thread(service.close)  # uvicorn has let the in-flight requests finish

    app = FastAPI(title="fluxvit", summary="FluxViT video classification at a latency target", lifespan=lifespan,
                  docs_url="/docs", redoc_url=None)

    def count(status: int, kind: str | None = None) -> None:
        metrics.requests.labels(str(status)).inc()
        if kind is not None:
            metrics.errors.labels(kind).inc()

    app.add_middleware(BodyLimit, max_upload_mb=settings.max_upload_mb, on_refused=count)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):  # the parser's own 400s, 404s, 405s
        return JSONResponse({"error": str(exc.detail), "kind": "bad_request"}, status_code=exc.status_code)

    @app.get("/health")
    async def health():
        return {"status": "ok", "in_flight": scheduler.in_flight(), "queue": scheduler.waiting()}

    @app.get("/v1/model")
    async def model_info():
        from fluxvit.evaluate.token_optimization import META_KEY

        model = service.model
        choices = (model.checkpoint_meta or {}).get(META_KEY)
        heads = getattr(model, "head_budgets", None)
        return {
            "model": (model.checkpoint_meta or {}).get("model"),
            "classes": list(model.class_names or []),
            "budgets": scheduler.budgets,
            "heads": [int(b) for b in heads.tolist()] if heads is not None else None,
            # every point measured; "frontier": among those adaptive chooses (the others: asked for, or fixed's)
            "operating_points": [p.to_dict() | {"frontier": p in scheduler.points} for p in scheduler.all_points],
            "token_optimization": choices if isinstance(choices, dict) else None,
            "latency_ms": scheduler.target_ms, "budget_mode": scheduler.mode, "views": settings.views,
            "max_upload_mb": settings.max_upload_mb, "max_topk": settings.max_topk,
            "media_root": settings.media_root is not None, **service.placement.to_dict(),
        }

    @app.get("/metrics")
    async def prometheus():
        return Response(metrics.text(), media_type=CONTENT_TYPE)

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return resources.files("fluxvit.serve").joinpath("page.html").read_text(encoding="utf-8")

    @app.post("/v1/classify")
    async def classify(request: Request):
        start = time.perf_counter()
        arrived = scheduler.clock()  # the scheduler counts the upload and the form against the target
        try:
            answer = await _classify(request, arrived)
        except ApiError as e:
            count(e.status, e.kind)
            return _error_response(e)
        except Exception:  # never a crash: a bug is a logged 500 with one line
            log.exception("classify failed")
            count(500, "internal")
            return JSONResponse({"error": "internal error (logged by the server)", "kind": "internal"},
                                status_code=500)
        if answer is None:  # the client went away: nobody to answer
            count(499, "cancelled")
            return Response(status_code=499)
        count(200)
        metrics.latency.observe(time.perf_counter() - start)
        metrics.budget.observe(answer["tokens"])
        return answer

    async def _classify(request: Request, arrived: float) -> dict | None:
        if not request.headers.get("content-type", "").startswith(("multipart/form-data",
                                                                  "application/x-www-form-urlencoded")):
            raise ApiError(415, "send the request as multipart/form-data (a video file, or a path)", "bad_request")
        try:
            form = await request.form(max_files=1, max_fields=len(FIELDS), max_part_size=FORM_FIELD_BYTES)
        except StarletteHTTPException as e:  # the parser's refusals: no boundary, a broken body, too many parts
            raise ApiError(400, f"malformed form: {e.detail}", "bad_request") from None
        except ClientDisconnect:  # the client went away mid-upload: nobody to answer
            return None
        try:
            return await _classify_form(request, form, arrived)
        finally:
            await form.close()

    async def _classify_form(request: Request, form, arrived: float) -> dict | None:
        unknown = sorted(set(form.keys()) - set(FIELDS))
        if unknown:
            raise ApiError(400, f"unknown field {unknown[0][:40]!r}; fields are {', '.join(FIELDS)}", "bad_request")
        upload, path_text = form.get("video"), form.get("path")
        if (upload is None) == (path_text is None):
            raise ApiError(400, "give one of: video (an uploaded file) or path (under the media root)", "bad_request")
        if upload is not None and not isinstance(upload, UploadFile):
            raise ApiError(400, "video must be an uploaded file (multipart), not text", "bad_request")
        if path_text is not None and not isinstance(path_text, str):
            raise ApiError(400, "path must be text, not a file", "bad_request")
        topk = _integer(form, "topk", 5, 1, settings.max_topk)
        raw = form.get("budget")  # (empty or "auto": the scheduler chooses)
        budget = None if isinstance(raw, str) and raw.strip() in ("", "auto") else _integer(form, "budget", None, 1,
                                                                                          10**9)
        tokens = form.get("tokens")
        if tokens not in (None, "0", "1", "true", "false"):
            raise ApiError(400, f"tokens must be 1 or 0, got {str(tokens)[:20]!r}", "bad_request")
        want_picture = tokens in ("1", "true")
        try:
            point = scheduler.point_for(budget) if budget is not None else None
        except ConfigError as e:
            raise ApiError(400, str(e), "bad_request") from None
        if upload is not None:
            name = _CONTROL.sub("?", Path(upload.filename or "upload").name[:120]) or "upload"
            source = None
        else:
            source = resolve_media_path(path_text, settings.media_root)
            name = _CONTROL.sub("?", path_text[:200])
        try:
            ticket = scheduler.admit(point, arrived_ms=arrived)
        except Overloaded as e:
            raise _overloaded(e) from None
        temp = None
        try:
            if upload is not None:
                temp = await asyncio.to_thread(_store_upload, upload, service.upload_dir, name,
                                               settings.max_upload_mb)
                source = temp
            future = service.submit(ticket, source, topk, want_picture)
        except BaseException as e:
            scheduler.finish(ticket)
            if temp is not None:
                temp.unlink(missing_ok=True)
            if isinstance(e, Overloaded):  # shutting down
                raise _overloaded(e) from None
            raise
        if temp is not None:
            future.add_done_callback(lambda _f, temp=temp: temp.unlink(missing_ok=True))
        waiting = asyncio.wrap_future(future)
        while True:
            done, _ = await asyncio.wait({waiting}, timeout=DISCONNECT_POLL_S)
            if done:
                break
            if await request.is_disconnected():
                scheduler.cancel(ticket)  # (its future is the service's to end: not cancelled here)
                return None
        try:
            result = waiting.result()
        except Cancelled:
            return None
        except VideoError as e:
            status = video_error_status(e)
            raise ApiError(status, str(e).replace(str(source), name), "not_video" if status == 415
                           else "broken_video") from None
        except FluxViTError as e:  # (the server's own files are not the client's business)
            checkpoint = str(getattr(service.model, "checkpoint_path", None) or "\0")
            raise ApiError(422, str(e).replace(str(source), name).replace(checkpoint, "the model"), "model") from None
        answer = {"video": name, **result.to_dict(), **service.placement.to_dict(), "budget_mode": scheduler.mode}
        if result.tokens_png is not None:
            answer["tokens_png"] = "data:image/png;base64," + base64.b64encode(result.tokens_png).decode()
        return answer

    return app


def _store_upload(upload: UploadFile, folder: Path, name: str, max_mb: float) -> Path:
    """Copy the upload into a private file in ``folder`` (its suffix from ``name``, for formats
    that are known by it), refusing more than ``max_mb``; removed again on any error."""
    max_bytes = int(max_mb * 2**20)
    suffix = Path(name).suffix if _SUFFIX.fullmatch(Path(name).suffix or "") else ".bin"
    fd, temp = tempfile.mkstemp(suffix=suffix.lower(), dir=folder)
    path = Path(temp)
    try:
        with os.fdopen(fd, "wb") as out:
            upload.file.seek(0)
            copied = 0
            while chunk := upload.file.read(1 << 20):
                copied += len(chunk)
                if copied > max_bytes:
                    raise _too_large(max_mb)
                out.write(chunk)
        return path
    except BaseException:
        path.unlink(missing_ok=True)
        raise
