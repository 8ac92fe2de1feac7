"""Scoring processes that can be killed: each request runs in one of a few long-lived worker processes.

A request that passes its deadline has its process killed (a thread cannot be stopped), and a fresh
one takes that slot on the next request. Unlike evaluation.pool, which starts a process per study,
the processes here live on between requests: starting one costs more than scoring a small study.
"""
from __future__ import annotations

import logging
import multiprocessing
import queue
import threading
import traceback
from collections.abc import Callable
from typing import Any

log = logging.getLogger("app.processes")


class Timeout(Exception):
    """The call ran past its deadline; its process was killed."""


class Died(Exception):
    """The process died without answering (memory kill, crash)."""


def _serve(connection) -> None:
    """Worker process: answer (function, kwargs) requests until the pipe closes."""
    while True:
        try:
            function, kwargs = connection.recv()
        except (EOFError, OSError):
            return
        try:
            answer = ("value", function(**kwargs))
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the caller, the process lives on
            traceback.print_exc()
            answer = ("exception", f"{type(exc).__name__}: {exc}")
        connection.send(answer)


class _Worker:
    def __init__(self, context, preload_hint: str):
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child,), daemon=True, name=f"scoring-{preload_hint}")
        self.process.start()
        child.close()

    def kill(self) -> None:
        self.process.kill()
        self.process.join()
        self.connection.close()


class KillableProcesses:
    """`size` worker processes from a fork server that has imported `preload`; call() blocks its thread."""

    def __init__(self, *, size: int, preload: list[str]):
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(preload)
        self._idle: queue.Queue[_Worker | None] = queue.Queue()
        for _ in range(size):
            self._idle.put(None)  # started on first use
        self._all: set[_Worker] = set()
        self._lock = threading.Lock()

    def call(self, function: Callable, *, timeout_s: float, **kwargs) -> Any:
        """`function(**kwargs)` in a worker process: its value, Timeout, Died, or RuntimeError(its exception)."""
        worker = self._idle.get()
        try:
            if worker is None or not worker.process.is_alive():
                worker = self._start()
            worker.connection.send((function, kwargs))
            if not worker.connection.poll(timeout_s):
                self._discard(worker)
                worker = None
                raise Timeout()
            try:
                kind, payload = worker.connection.recv()
            except (EOFError, OSError):
                self._discard(worker)
                worker = None
                raise Died() from None
        except BaseException:
            if worker is not None and not worker.process.is_alive():
                self._discard(worker)
                worker = None
            raise
        finally:
            self._idle.put(worker)
        if kind == "exception":
            raise RuntimeError(payload)
        return payload

    def _start(self) -> _Worker:
        worker = _Worker(self._context, "worker")
        with self._lock:
            self._all.add(worker)
        return worker

    def _discard(self, worker: _Worker) -> None:
        worker.kill()
        with self._lock:
            self._all.discard(worker)

    def close(self) -> None:
        with self._lock:
            workers, self._all = list(self._all), set()
        for worker in workers:
            worker.kill()
