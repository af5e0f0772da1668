"""The toy run of ``tests/train/run_toy.py``, sabotaged while it writes a training checkpoint.

python -m tests.hostile.crash_toy MODE STEP OUT_DIR STEPS BATCH [--resume]

* ``kill``: the checkpoint of step STEP is half written to disk, then the process SIGKILLs
  itself: a crash in the middle of a save.
* ``full``: from the checkpoint of step STEP on, no file may grow beyond 1 MB (RLIMIT_FSIZE,
  with SIGXFSZ ignored), so the kernel fails the writes with EFBIG as a full disk fails them
  with ENOSPC.
"""

import io
import os
import resource
import signal
import sys

import torch

from tests.train import run_toy


def main() -> None:
    mode, target = sys.argv[1], int(sys.argv[2])
    real_save = torch.save

    def sabotaged(obj, f, *args, **kwargs):
        step = obj.get("step", -1) if isinstance(obj, dict) else -1
        if mode == "kill" and step == target:
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            f.write(buffer.getvalue()[: buffer.tell() // 2])
            f.flush()  # into the kernel's page cache, which outlives the process
            os.kill(os.getpid(), signal.SIGKILL)
        if mode == "full" and step >= target:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        return real_save(obj, f, *args, **kwargs)

    torch.save = sabotaged
    sys.argv = [sys.argv[0], *sys.argv[3:]]
    run_toy.main()


if __name__ == "__main__":
    main()
