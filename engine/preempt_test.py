"""Watchdog: claims its signal only when free and from the main thread; spots overdue deadlines."""

from __future__ import annotations

import signal
import threading
import time

from engine import preempt


class Run:
    def __init__(self, deadlines: dict[str, float]):
        self.deadlines = deadlines


def test_overdue_compares_deadlines_with_the_limit():
    runs = [Run({"a": 10.0}), Run({})]
    assert preempt.Watchdog._overdue(runs, 10.5)
    assert not preempt.Watchdog._overdue(runs, 9.5)
    assert not preempt.Watchdog._overdue([], 100.0)


def test_install_refuses_outside_the_main_thread():
    result = []
    thread = threading.Thread(target=lambda: result.append(preempt.Watchdog(lambda frame: None).install()))
    thread.start()
    thread.join()
    assert result == [False]


def test_install_leaves_a_signal_someone_else_owns_alone():
    def theirs(signum, frame):
        pass

    previous = signal.signal(preempt.SIGNAL, theirs)
    try:
        assert preempt.Watchdog(lambda frame: None).install() is False
        assert signal.getsignal(preempt.SIGNAL) is theirs
    finally:
        preempt._owner = None  # hand the signal back to whoever installs next
        signal.signal(preempt.SIGNAL, previous)


def test_signals_the_main_thread_while_a_deadline_is_overdue():
    hits = []
    previous = signal.getsignal(preempt.SIGNAL)
    dog = preempt.Watchdog(lambda frame: hits.append(frame), poll=0.01, grace=0.0)
    try:
        assert dog.install() and dog.active
        dog.runs.add(Run({"n": time.monotonic() - 1}))
        end = time.monotonic() + 2
        while not hits and time.monotonic() < end:
            time.sleep(0.01)  # the signal interrupts this sleep; the handler records the frame
        assert hits
        dog.runs.clear()
        # The process-wide watchdog (re)installs itself on demand after this one.
        assert preempt.watchdog(lambda frame: None) is dog
    finally:
        preempt._owner = None  # hand the signal back to whoever installs next
        signal.signal(preempt.SIGNAL, previous)
