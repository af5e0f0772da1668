"""Per-step metrics: a JSONL file (one object a line), optional TensorBoard and Weights & Biases.

TensorBoard and W&B are imported only by a writer that uses them, so both stay optional; a
missing package is a one-line :class:`~fluxvit.errors.ConfigError`.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import secrets
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from fluxvit.atomic import write_text
from fluxvit.errors import ConfigError, reason
from fluxvit.files import read_text

log = logging.getLogger(__name__)

WANDB_DIR = "wandb"  # W&B's own folder under the run's folder (offline runs, logs)
WANDB_ID_NAME = "fluxvit_run_id"  # inside WANDB_DIR: the W&B run id a resumed run continues
_NO_TENSORBOARD = "tensorboard: true needs the tensorboard package (pip install 'fluxvit[tensorboard]')"
WANDB_INIT_TIMEOUT_S = 30  # an online start that cannot reach W&B fails in this long, not its 90 s
_NO_WANDB = "logging.wandb needs the wandb package (pip install 'fluxvit[wandb]')"


@dataclass(frozen=True)
class WandbOptions:
    """A Weights & Biases run to mirror the metrics to: ``project``, ``mode`` (``online`` or
    ``offline``: written under the run's folder, uploaded later with ``wandb sync``) and the
    run's ``config`` (a plain dict, shown with the run)."""

    project: str
    mode: str = "online"
    config: dict = field(default_factory=dict)


def check_packages(tensorboard: bool = False, wandb: bool = False) -> None:
    """Raise the one-line :class:`ConfigError` a writer would raise for a missing package,
    without importing it: every rank of a job can check before any work, not only rank 0."""
    if tensorboard and not _installed("tensorboard"):
        raise ConfigError(_NO_TENSORBOARD)
    if wandb and not _installed("wandb"):
        raise ConfigError(_NO_WANDB)


def _installed(name: str) -> bool:
    """Whether ``import name`` would find a package (one imported already counts)."""
    if sys.modules.get(name) is not None:
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a broken parent package; a module without a spec
        return False


class MetricsWriter:
    """Append metric records to ``path`` (JSONL); mirror numbers to TensorBoard and W&B if asked.

    A run resumed at ``start_step`` first drops the records an interrupted attempt wrote after
    that step (they are about to be run again) and a line cut short by a kill, so the file
    describes each step once. TensorBoard is imported only when ``tensorboard_dir`` is given,
    ``wandb`` only when ``wandb`` is, so both stay optional.

    W&B (``wandb``): the run lives in ``<run folder>/wandb``, is named after the run's folder, and
    its id is kept in ``<run folder>/wandb/fluxvit_run_id``, so that a resumed training continues
    the same W&B run. Each record's numbers are logged at its ``step`` (text such as the grid is
    left to metrics.jsonl); the final record (``final: true``) goes into the run's summary.
    Steps the W&B run already holds (repeated by a resumed training after its last checkpoint)
    are not logged twice: W&B's history only grows.
    """

    def __init__(self, path: str | Path, tensorboard_dir: str | Path | None = None, start_step: int = 0,
                 wandb: WandbOptions | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = None
        self._tb = None
        self._wandb = None
        self._wandb_next = 0  # the first step the W&B run accepts
        wandb_dir = self.path.parent / WANDB_DIR
        fresh_wandb = not wandb_dir.exists()
        try:
            # W&B first: when it cannot start (no login, no network) the run folder is left as it was
            # found, so the next attempt (offline, say) is not refused as "an earlier run".
            if wandb is not None:
                self._wandb = _start_wandb(wandb, self.path.parent)
                self._wandb_next = _next_step(self._wandb)
            if tensorboard_dir is not None:
                try:
                    from torch.utils.tensorboard import SummaryWriter
                except ImportError:
                    raise ConfigError(_NO_TENSORBOARD) from None
                self._tb = SummaryWriter(str(tensorboard_dir))
            if self.path.exists():
                _keep_until(self.path, start_step)
            self._file = open(self.path, "a", buffering=1)  # line-buffered: a killed run keeps its lines
        except BaseException:
            self.close(failed=True)
            if fresh_wandb:
                shutil.rmtree(wandb_dir, ignore_errors=True)
            raise

    def write(self, record: dict) -> None:
        """One record; non-finite numbers become null in JSON (the file stays valid JSON)."""
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        self._file.write(json.dumps(clean) + "\n")
        if self._tb is not None and "step" in record:
            for key, value in _numbers(record).items():
                self._tb.add_scalar(key, value, record["step"])
        if self._wandb is not None:
            self._write_wandb(record)

    def _write_wandb(self, record: dict) -> None:
        if record.get("final"):
            self._wandb.summary.update({k: v for k, v in record.items() if k != "final"})
            return
        step = record.get("step")
        if not isinstance(step, int) or isinstance(step, bool) or step < self._wandb_next:
            return  # not a step's record, or a step the W&B run holds already
        numbers = _numbers(record)
        if numbers:
            self._wandb.log(numbers, step=step)
        self._wandb_next = step  # later records of the same step (validation) join its row

    def close(self, failed: bool = False) -> None:
        """Close the file and the writers; ``failed``: the training stopped with an error (the
        W&B run is marked failed, and an error while finishing it is logged, not raised over the
        training's own). Closing twice is harmless."""
        if self._file is not None:
            self._file.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            run, self._wandb = self._wandb, None
            try:
                run.finish(exit_code=1 if failed else 0)
            except Exception as e:
                if not failed:
                    raise
                log.warning("could not finish the W&B run (%s)", reason(e))


def _numbers(record: dict) -> dict:
    """The record's numbers but its step (booleans and text left out)."""
    return {k: v for k, v in record.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


def _start_wandb(options: WandbOptions, run_dir: Path):
    """Start (or, with the id kept in the run's folder, continue) the run's W&B run."""
    try:
        import wandb
    except ImportError:
        raise ConfigError(_NO_WANDB) from None
    folder = run_dir / WANDB_DIR
    folder.mkdir(parents=True, exist_ok=True)
    id_file = folder / WANDB_ID_NAME
    run_id = read_text(id_file, "W&B run id").strip() if id_file.exists() else ""
    if not run_id:
        run_id = secrets.token_hex(4)
        write_text(id_file, run_id + "\n")
    try:
        return wandb.init(project=options.project, dir=str(run_dir), mode=options.mode, config=options.config,
                          name=run_dir.resolve().name, id=run_id, resume="allow",
                          settings=wandb.Settings(init_timeout=WANDB_INIT_TIMEOUT_S))
    except Exception as e:  # no login, no network (online), a bad project name: W&B's own errors
        raise ConfigError(f"logging.wandb {options.project}: could not start the W&B run ({reason(e, 160)}); "
                          "log in with 'wandb login' or set logging.wandb_mode: offline") from None


def _next_step(run) -> int:
    """The first step a (resumed) W&B run accepts; 0 when it cannot say."""
    try:
        return int(run.step)
    except Exception:
        return 0


def _keep_until(path: Path, step: int) -> None:
    kept = []
    text = read_text(path, "metrics file")  # a regular file, bounded: never a FIFO left in a run folder
    for line in text.splitlines():
        try:
            record = json.loads(line)
            at = int(record.get("step") or 0)
        except (ValueError, TypeError, AttributeError, RecursionError):
            continue  # the last line of a killed run, or one that is not a step's record
        if not record.get("final") and at <= step:
            kept.append(line + "\n")
    write_text(path, "".join(kept))


def read_metrics(path: str | Path) -> list[dict]:
    """All records of a JSONL metrics file."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
