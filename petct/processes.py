"""Killable processes: the kit's one home for running code that may hang, crash or exhaust memory.

Two ways to use them, one child protocol (`_answer`: the function's value, or its exception as one line):

- `run_isolated` gives every item a fresh process (the scorer over a submission's studies): a pool that
  shares workers between items breaks as a whole when one worker dies (segfault, memory kill) and can hang
  on it. Each item's process answers through its own pipe and is killed when it runs past the time limit; a
  process that dies without answering is reported for its item alone.
- `KillableProcesses` keeps a few long-lived worker processes (the service's scoring requests): starting one
  costs more than scoring a small study. A call that passes its deadline has its process killed (a thread
  cannot be stopped), and a fresh one takes that slot on the next call.

Processes come from a fork server that has imported the callers' `preload` modules, so each starts warm.
"""
from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import queue
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)
Item = TypeVar("Item")
EXIT_GRACE_S = 10.0


def _answer(function: Callable, *args: Any, **kwargs: Any) -> tuple[str, Any]:
    """Child side: ("value", its result) or ("exception", "Type: message"), with the traceback on stderr."""
    try:
        return "value", function(*args, **kwargs)
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the caller
        traceback.print_exc()
        return "exception", f"{type(exc).__name__}: {exc}"


# --- one fresh process per item -------------------------------------------------------------------------


@dataclass
class Outcome(Generic[Item]):
    """What came of one item: its return value, or why there is none."""

    item: Item
    value: Any = None
    failure: str | None = None


def run_isolated(function: Callable[[Item], Any], items: Iterable[Item], *, workers: int, preload: list[str],
                 what: str, timeout_s: float | None = None, on_done: Callable[[Outcome], None] | None = None
                 ) -> list[Outcome[Item]]:
    """Call `function(item)` for every item, `workers` processes at a time; outcomes in item order.

    `function` must be importable by name (a module-level function). An exception it raises becomes
    the item's failure (with the traceback on stderr), as does a crash or running past `timeout_s`;
    `what` names the work in those failures ("scoring").
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(preload)
    pending = list(enumerate(items))[::-1]
    outcomes: dict[int, Outcome] = {}
    running: dict[multiprocessing.connection.Connection, tuple[int, Item, Any, float]] = {}
    while pending or running:
        while pending and len(running) < max(1, workers):
            index, item = pending.pop()
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(target=_child, args=(function, item, sender), daemon=True)
            process.start()
            sender.close()  # the child holds the only writer, so its death reads as end of file
            running[receiver] = (index, item, process, time.monotonic())
        ready = multiprocessing.connection.wait(list(running), timeout=_next_deadline(running, timeout_s))
        for receiver in ready:
            index, item, process, _ = running.pop(receiver)
            outcomes[index] = _collect(receiver, process, item, what=what)
            if on_done:
                on_done(outcomes[index])
        for receiver, (index, item, process, started) in list(running.items()):
            if timeout_s is not None and time.monotonic() - started > timeout_s:
                del running[receiver]
                process.kill()
                process.join()
                receiver.close()
                outcomes[index] = Outcome(item=item, failure=f"{what} took longer than {timeout_s:g} s; stopped")
                if on_done:
                    on_done(outcomes[index])
    return [outcomes[i] for i in sorted(outcomes)]


def _next_deadline(running: dict, timeout_s: float | None) -> float | None:
    if timeout_s is None:
        return None
    now = time.monotonic()
    return max(0.0, min(started + timeout_s - now for _, _, _, started in running.values()))


def _collect(receiver, process, item, *, what: str) -> Outcome:
    try:
        kind, payload = receiver.recv()
    except (EOFError, OSError):
        kind, payload = None, None
    finally:
        receiver.close()
    # The answer is in; a child that then fails to exit (stuck in interpreter shutdown) must not stall us.
    process.join(EXIT_GRACE_S)
    if process.is_alive():
        process.kill()
        process.join()
    if kind == "value":
        return Outcome(item=item, value=payload)
    if kind == "exception":
        return Outcome(item=item, failure=f"internal error: {payload}")
    code = process.exitcode
    how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
    hint = " (out of memory?)" if code == -9 else ""
    return Outcome(item=item, failure=f"{what} process died ({how}){hint}")


def _child(function: Callable, item: Any, sender) -> None:
    sender.send(_answer(function, item))
    sender.close()


# --- a few long-lived worker processes --------------------------------------------------------------------


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
        connection.send(_answer(function, **kwargs))  # the process lives on after a failure


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
