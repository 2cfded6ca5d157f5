"""A shared thread pool for CPU work that releases the GIL (numpy kernels, torch copies, hashing).

Invariants:

* Results never depend on the number of threads: work is split into position-addressed chunks
  (chunk ``[s, e)`` of a result is computed from ``s`` and ``e`` alone), so 1 or N workers write the
  same bits.
* No deadlock from nesting: code already running on a pool worker runs nested work inline.
* Fork safe: a child process (e.g. a DataLoader worker) builds its own pool on first use.

``PEMN_THREADS`` (an integer >= 1) overrides the worker count, which is otherwise the number of
CPUs this process may run on, at most 8.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

__all__ = ["BARRIER", "for_chunks", "ordered", "workers"]

BARRIER = object()  # in an ``ordered`` task stream: finish everything submitted so far first

_state = threading.local()
_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_key: tuple[int, int] | None = None  # (pid, workers) the pool was built for


def workers() -> int:
    """Worker threads for CPU-bound chunked work."""
    text = os.environ.get("PEMN_THREADS", "").strip()
    if text.isdigit() and int(text) >= 1:
        return int(text)
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(8, n))


def _mark_worker() -> None:
    _state.in_pool = True


def _get_pool() -> ThreadPoolExecutor | None:
    """The process's pool, or None where work must run inline (one worker, or already on a worker)."""
    global _pool, _pool_key
    n = workers()
    if n == 1 or getattr(_state, "in_pool", False):
        return None
    key = (os.getpid(), n)
    with _lock:
        if _pool is None or _pool_key != key:
            _pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="pemn", initializer=_mark_worker)
            _pool_key = key
        return _pool


def for_chunks(fn: Callable[[int, int], object], total: int, chunk: int) -> None:
    """Call ``fn(start, stop)`` for every chunk of ``range(total)``, spread over the workers."""
    bounds = [(s, min(s + chunk, total)) for s in range(0, total, chunk)]
    pool = _get_pool() if len(bounds) > 1 else None
    if pool is None:
        for s, e in bounds:
            fn(s, e)
        return
    for future in [pool.submit(fn, s, e) for s, e in bounds]:
        future.result()  # re-raises the first failure


def ordered(tasks: Iterable, window: int = 8) -> Iterator:
    """Run zero-argument callables on the workers; yield their results in submission order.

    At most ``window`` tasks are in flight (this bounds the memory of results not yet consumed).
    A ``BARRIER`` item makes every earlier task finish (its result consumed) before any later one
    starts: tasks after it may read what tasks before it wrote.
    """
    pool = _get_pool()
    if pool is None:
        for task in tasks:
            if task is not BARRIER:
                yield task()
        return
    pending: deque = deque()
    try:
        for task in tasks:
            if task is BARRIER:
                while pending:
                    yield pending.popleft().result()
                continue
            while len(pending) >= window:
                yield pending.popleft().result()
            pending.append(pool.submit(task))
        while pending:
            yield pending.popleft().result()
    finally:  # a failure or an abandoned consumer: let running tasks end, drop queued ones
        for future in pending:
            future.cancel()
        for future in pending:
            if not future.cancelled():
                try:
                    future.result()
                except Exception:  # noqa: BLE001 - the first failure was already raised
                    pass
