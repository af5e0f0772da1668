"""Jobs in worker processes that never outlive their run (``fluxvit synth``, ``fluxvit prepare``).

:func:`run_in_processes` maps a function over jobs in a process pool, in order, with a progress
bar: forked where the system can (a spawned worker would first re-import the package and torch),
each worker ending itself once the process that started it is gone (a run killed outright, by
SIGKILL or for memory, leaves no worker blocked on its queue or still writing), and the queue
dropped on Ctrl-C or an error, keeping what was done.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Sequence

PARENT_CHECK_S = 0.5  # how often a worker checks that the run it works for is still alive


def run_in_processes(fn: Callable, jobs: Sequence, workers: int, progress: bool = False, desc: str = "",
                     done: Callable[[int, object], None] | None = None, chunksize: int = 1,
                     unit: str = "video") -> None:
    """``done(i, fn(jobs[i]))`` for every job, in order, in ``workers`` processes (<= 1, or a
    single job: in this process); a tqdm bar when ``progress``."""
    from tqdm import tqdm

    done = done or (lambda _i, _result: None)
    with tqdm(total=len(jobs), desc=desc, unit=unit, disable=not progress, dynamic_ncols=True) as bar:
        if workers <= 1 or len(jobs) <= 1:
            for i, job in enumerate(jobs):
                done(i, fn(job))
                bar.update()
            return
        from concurrent.futures import ProcessPoolExecutor

        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
        pool = ProcessPoolExecutor(min(workers, len(jobs)), mp_context=ctx, initializer=_end_with_parent,
                                   initargs=(os.getpid(),))
        try:
            for i, result in enumerate(pool.map(fn, jobs, chunksize=chunksize)):
                done(i, result)
                bar.update()
        except BaseException:  # Ctrl-C, a full disk: stop the queue, keep what was done
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()


def _end_with_parent(parent: int) -> None:
    """A worker's initializer: a thread that ends the worker once ``parent`` is gone."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_S)
        os._exit(1)

    threading.Thread(target=watch, name="fluxvit-parent-watch", daemon=True).start()
