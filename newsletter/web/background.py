"""A bounded background queue: work a request hands over and never waits for.

A few daemon threads of its own work through a queue of fixed size. A full queue
refuses new work at once (logged) instead of growing or blocking the request, so a
relay or broker that hangs can hold at most these threads, never the web server's
own thread pool that every page needs. Each job must bound its own time (the SMTP
client's timeout, the broker's retry policy).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

Job = Callable[[], object]


class BackgroundQueue:
    """`threads` daemon threads working through at most `capacity` waiting jobs."""

    def __init__(self, name: str, threads: int = 2, capacity: int = 200) -> None:
        self.name = name
        self._jobs: queue.Queue[Job] = queue.Queue(maxsize=capacity)
        self._threads = threads
        self._started = False
        self._lock = threading.Lock()

    def submit(self, job: Job) -> bool:
        """Queue `job`; False (and a log line) when the queue is full."""
        self._start()
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            log.error(
                "%s: %d jobs already waiting; this one is dropped", self.name, self._jobs.maxsize
            )
            return False
        return True

    def drain(self, timeout: float) -> bool:
        """Wait until every queued job has run, at most `timeout` seconds; True if so."""
        deadline = time.monotonic() + timeout
        with self._jobs.all_tasks_done:
            while self._jobs.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._jobs.all_tasks_done.wait(remaining):
                    return False
        return True

    def _start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
            for number in range(self._threads):
                threading.Thread(
                    target=self._work, name=f"{self.name}-{number}", daemon=True
                ).start()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                job()
            except Exception:  # a job's failure is its own; the thread goes on
                log.exception("%s: a job failed", self.name)
            finally:
                self._jobs.task_done()
