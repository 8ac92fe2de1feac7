"""Running one function per item, each in its own process, so that no item can stall or sink the others.

A process pool that shares workers between items breaks as a whole when one worker dies (segfault,
memory kill) and can hang on it. Here every item gets a fresh process from a fork server (cheap: the
server has already imported the scoring code), answers through its own pipe, and is killed when it
runs past the time limit. A process that dies without answering is reported for its item alone.
"""
from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")

# Imported once by the fork server, so each item's process starts with them loaded.
PRELOAD = ["evaluation.scoring"]
EXIT_GRACE_S = 10.0


@dataclass
class Outcome(Generic[Item]):
    """What came of one item: its return value, or why there is none."""

    item: Item
    value: Any = None
    failure: str | None = None


def default_workers() -> int:
    """The CPUs this process may use, at most 4: each study needs about half a GB at full size."""
    return max(1, min(4, len(os.sched_getaffinity(0))))


def run_isolated(function: Callable[[Item], Any], items: Iterable[Item], *, workers: int,
                 timeout_s: float | None = None, on_done: Callable[[Outcome], None] | None = None
                 ) -> list[Outcome[Item]]:
    """Call `function(item)` for every item, `workers` processes at a time; outcomes in item order.

    `function` must be importable by name (a module-level function). An exception it raises becomes
    the item's failure (with the traceback on stderr), as does a crash or running past `timeout_s`.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
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
            outcomes[index] = _collect(receiver, process, item)
            if on_done:
                on_done(outcomes[index])
        for receiver, (index, item, process, started) in list(running.items()):
            if timeout_s is not None and time.monotonic() - started > timeout_s:
                del running[receiver]
                process.kill()
                process.join()
                receiver.close()
                outcomes[index] = Outcome(item=item, failure=f"scoring took longer than {timeout_s:g} s; stopped")
                if on_done:
                    on_done(outcomes[index])
    return [outcomes[i] for i in sorted(outcomes)]


def _next_deadline(running: dict, timeout_s: float | None) -> float | None:
    if timeout_s is None:
        return None
    now = time.monotonic()
    return max(0.0, min(started + timeout_s - now for _, _, _, started in running.values()))


def _collect(receiver, process, item) -> Outcome:
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
        return Outcome(item=item, failure=payload)
    code = process.exitcode
    how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
    hint = " (out of memory?)" if code == -9 else ""
    return Outcome(item=item, failure=f"scoring process died ({how}){hint}")


def _child(function: Callable, item: Any, sender) -> None:
    try:
        message = ("value", function(item))
    except BaseException as exc:  # noqa: BLE001 - everything a child raises is reported for its item
        traceback.print_exc()
        message = ("exception", f"internal error: {type(exc).__name__}: {exc}")
    sender.send(message)
    sender.close()
