"""Per-step metrics: a JSONL file (one object a line), an optional TensorBoard writer."""

from __future__ import annotations

import json
import math
from pathlib import Path

from fluxvit.atomic import write_text
from fluxvit.errors import ConfigError
from fluxvit.files import read_text


class MetricsWriter:
    """Append metric records to ``path`` (JSONL); mirror numbers to TensorBoard if asked.

    A run resumed at ``start_step`` first drops the records an interrupted attempt wrote after
    that step (they are about to be run again) and a line cut short by a kill, so the file
    describes each step once. TensorBoard is imported only when ``tensorboard_dir`` is given, so
    it stays optional.
    """

    def __init__(self, path: str | Path, tensorboard_dir: str | Path | None = None, start_step: int = 0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            _keep_until(self.path, start_step)
        self._file = open(self.path, "a", buffering=1)  # line-buffered: a killed run keeps its lines
        self._tb = None
        if tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError("tensorboard: true needs the tensorboard package "
                                  "(pip install 'fluxvit[tensorboard]')") from None
            self._tb = SummaryWriter(str(tensorboard_dir))

    def write(self, record: dict) -> None:
        """One record; non-finite numbers become null in JSON (the file stays valid JSON)."""
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        self._file.write(json.dumps(clean) + "\n")
        if self._tb is not None and "step" in record:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


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
