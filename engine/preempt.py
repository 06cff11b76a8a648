"""Interrupts node code that blocks the event loop past its deadline (time.sleep, CPU-bound loops).

asyncio cannot preempt synchronous code: a node's timeout timer only fires
once control returns to the loop. A watchdog thread notices deadlines the
loop failed to honour and signals the main thread; the handler raises
`Interrupted` only when the frame being executed belongs to that overdue
node, so engine and server code are never interrupted. Works when the loop
runs in the main thread and the signal is free; otherwise the executor still
marks the overrun TIMED_OUT once the node gives control back.
"""

from __future__ import annotations

import signal
import threading
import time
import types
from typing import Any, Callable, Iterable, Protocol

# SIGALRM belongs to pytest-timeout and friends; SIGVTALRM is rarely claimed.
SIGNAL = signal.SIGVTALRM
POLL_INTERVAL = 0.05
# How late the loop may be before it counts as blocked rather than busy.
GRACE = 0.05


class Interrupted(BaseException):
    """Raised inside a node that kept the event loop blocked past its deadline.

    A BaseException, so a node's own `except Exception` does not swallow it.
    """


class Watched(Protocol):
    """A run the watchdog looks at: node id → monotonic deadline of each node in flight."""

    deadlines: dict[str, float]


OnSignal = Callable[[types.FrameType | None], None]


class Watchdog:
    """A daemon thread polling the deadlines of the runs in flight; one per process in practice."""

    def __init__(self, on_signal: OnSignal, *, poll: float = POLL_INTERVAL, grace: float = GRACE):
        self.runs: set[Any] = set()
        self.on_signal = on_signal
        self._poll = poll
        self._grace = grace
        self._thread: threading.Thread | None = None
        self._main_ident = threading.main_thread().ident

    def install(self) -> bool:
        """Claims the signal (main thread only, and only if nobody else holds it) and starts the thread."""
        if self.active:
            return True
        if threading.current_thread() is not threading.main_thread():
            return False
        if signal.getsignal(SIGNAL) not in (signal.SIG_DFL, signal.SIG_IGN, None, _dispatch):
            return False
        global _owner
        _owner = self
        signal.signal(SIGNAL, _dispatch)
        # Started on first use (after any sandbox lock is applied), never at import.
        self._thread = threading.Thread(target=self._loop, name="pipedreamer-watchdog", daemon=True)
        self._thread.start()
        return True

    @property
    def active(self) -> bool:
        return (
            self._thread is not None
            and self._thread.is_alive()
            and _owner is self
            and signal.getsignal(SIGNAL) is _dispatch
        )

    def _loop(self) -> None:
        while True:
            time.sleep(self._poll)
            if _owner is not self or signal.getsignal(SIGNAL) is not _dispatch:
                return
            if self._overdue(list(self.runs), time.monotonic() - self._grace):
                try:
                    signal.pthread_kill(self._main_ident, SIGNAL)
                except (OSError, ValueError):
                    return  # no signals here (sandbox, main thread gone): fall back to detection

    @staticmethod
    def _overdue(runs: Iterable[Watched], limit: float) -> bool:
        for run in runs:
            for deadline in list(run.deadlines.values()):
                if deadline < limit:
                    return True
        return False


_owner: Watchdog | None = None


def _dispatch(signum: int, frame: types.FrameType | None) -> None:
    if _owner is not None:
        _owner.on_signal(frame)


def watchdog(on_signal: OnSignal) -> Watchdog | None:
    """The process' watchdog (installed, or re-installed, on demand); None where it cannot run."""
    if _owner is not None and _owner.active:
        return _owner
    candidate = Watchdog(on_signal)
    return candidate if candidate.install() else None
