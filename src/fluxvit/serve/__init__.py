"""``fluxvit serve``: an HTTP inference service that trades tokens for latency under load.

:mod:`~fluxvit.serve.scheduler` chooses each request's budget, :mod:`~fluxvit.serve.service`
decodes, batches and runs the model, :mod:`~fluxvit.serve.app` is the FastAPI app (the API, the
page at ``/``, Prometheus metrics). Nothing else in fluxvit imports this package; it needs the
``serve`` extra (FastAPI, uvicorn, prometheus_client, python-multipart).
"""

from __future__ import annotations

import importlib.util

from fluxvit.errors import ConfigError

INSTALL = "pip install 'fluxvit[serve]'"
# package -> the modules it may be imported as (python-multipart's was ``multipart`` before 0.0.13)
PACKAGES = {"fastapi": ("fastapi",), "uvicorn": ("uvicorn",), "prometheus_client": ("prometheus_client",),
            "python-multipart": ("python_multipart", "multipart")}


def check_installed() -> None:
    """One line naming the missing package and the extra, when the service cannot run here."""
    for package, modules in PACKAGES.items():
        if not any(importlib.util.find_spec(m) is not None for m in modules):
            raise ConfigError(f"fluxvit serve needs {package}: {INSTALL}")
