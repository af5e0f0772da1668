"""Starting ``fluxvit serve``: the model and service made once per process, then uvicorn.

One process (``--workers 1``) builds its app here and runs it; with ``--workers N`` uvicorn starts
N processes that each build their own from :func:`app_from_environment` (the launch settings
travel as JSON in :data:`ENVIRONMENT`). Each process measures its own operating points and keeps
its own metrics: the service is stateless between requests, so replicas need nothing shared.
SIGTERM or Ctrl-C stops taking connections, lets the requests in flight finish (up to
``shutdown_timeout_s``) and then closes the service.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

from fluxvit.serve.service import InferenceService
from fluxvit.serve.settings import ServeSettings

ENVIRONMENT = "FLUXVIT_SERVE_LAUNCH"
CONNECTION_ALLOWANCE = 16  # connections beyond twice --max-concurrent (health checks, metrics scrapes)


@dataclass(frozen=True)
class Launch:
    """Everything a server process needs to build its service."""

    checkpoint: str
    device: str = "auto"
    dtype: str = "auto"
    quantize: str = "none"
    compile: bool = False
    settings: ServeSettings = field(default_factory=ServeSettings)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Launch:
        data = json.loads(text)
        return cls(**{**data, "settings": ServeSettings(**data["settings"])})


def build_service(launch: Launch, model=None) -> InferenceService:
    """Load the checkpoint (unless ``model``, already loaded from it, is given), place (and
    optionally accelerate) the model, measure its operating points and start the service's threads."""
    from fluxvit.models import load_checkpoint
    from fluxvit.placement import Placement

    model = model if model is not None else load_checkpoint(launch.checkpoint)
    placement = Placement.resolve(launch.device, launch.dtype)
    if launch.quantize != "none" or launch.compile:
        from fluxvit.acceleration import accelerate, check_int8_placement

        if launch.quantize == "int8":
            check_int8_placement(placement)
        model = accelerate(model, launch.quantize, launch.compile, placement)
    return InferenceService(model, placement, launch.settings)


def app_from_environment():
    """The app of one of ``--workers N`` processes (uvicorn calls this in each)."""
    import logging

    from fluxvit.serve.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(message)s")  # a fresh process: say what it serves
    return create_app(build_service(Launch.from_json(os.environ[ENVIRONMENT])))


def run(launch: Launch, host: str, port: int, workers: int = 1, shutdown_timeout_s: int = 30, model=None) -> None:
    """Serve until SIGTERM or Ctrl-C. ``model``: the checkpoint already loaded (one process serves
    it; each of ``workers`` > 1 loads its own)."""
    import uvicorn

    from fluxvit.serve.app import create_app

    # connections beyond what the service admits (and a few for /health and /metrics) get uvicorn's 503
    # at once: slow or idle clients cannot hold an unbounded number of sockets and uploads
    connections = 2 * launch.settings.max_concurrent + CONNECTION_ALLOWANCE
    common = {"host": host, "port": port, "timeout_graceful_shutdown": shutdown_timeout_s, "access_log": False,
              "limit_concurrency": connections}
    if workers == 1:
        uvicorn.run(create_app(build_service(launch, model)), **common)
        return
    os.environ[ENVIRONMENT] = launch.to_json()
    uvicorn.run("fluxvit.serve.server:app_from_environment", factory=True, workers=workers, **common)
