"""Long blocking calls (XLA compiles, compiled programs) that Ctrl-C can still interrupt.

Python runs its SIGINT handler only between bytecodes of the main thread, so a compiled call
that trains for a minute would ignore Ctrl-C for that minute. :func:`call` runs such a call on a
worker thread while the main thread waits in short, interruptible slices, calling a heartbeat
(a progress line) every `every` seconds. On Ctrl-C the KeyboardInterrupt reaches the caller at
once; the abandoned worker dies with the process (`launch.py` ends it with `os._exit`). Nothing
is lost that matters: the search saves every scored architecture as soon as it is scored.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

POLL_SECONDS = 0.2


def call(
    fn: Callable[..., Any],
    *args,
    heartbeat: Callable[[float], None] | None = None,
    every: float = 30.0,
) -> Any:
    """Returns `fn(*args)`, run on a worker thread; Ctrl-C interrupts the wait at once.

    Args:
      fn: the blocking call.
      *args: its arguments.
      heartbeat: called with the seconds elapsed, every `every` seconds while `fn` runs.
      every: seconds between heartbeats.

    Raises:
      Whatever `fn` raises (re-raised here), or KeyboardInterrupt.
    """
    result: dict[str, Any] = {}
    done = threading.Event()

    def work():
        try:
            result['value'] = fn(*args)
        except BaseException as e:  # noqa: BLE001 - re-raised on the caller's thread.
            result['error'] = e
        finally:
            done.set()

    worker = threading.Thread(target=work, name='hwnas-worker', daemon=True)
    t0 = time.perf_counter()
    worker.start()
    next_beat = every
    while not done.wait(POLL_SECONDS):
        elapsed = time.perf_counter() - t0
        if heartbeat is not None and elapsed >= next_beat:
            heartbeat(elapsed)
            next_beat += every
    if 'error' in result:
        raise result['error']
    return result['value']
