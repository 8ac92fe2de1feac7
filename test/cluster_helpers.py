"""Killing a busy Dask worker mid-task, as the fault tests of the kit's Dask commands do."""
from __future__ import annotations

import os
import signal
import time


def busy_workers(dask_worker) -> tuple[int, list[str]]:
    """(pid, keys of the tasks it is running) of one worker; `client.run(busy_workers)` asks every worker."""
    return os.getpid(), [str(task.key) for task in dask_worker.state.executing]


def kill_a_busy_worker(client, *, timeout_s: float, poll_s: float = 0.02) -> tuple[int, str] | None:
    """SIGKILL the first worker found running a task, polling until `timeout_s`: its pid and that task's key
    (None when no worker was busy in time)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for pid, keys in client.run(busy_workers).values():
            if keys:
                os.kill(pid, signal.SIGKILL)
                return pid, keys[0]
        time.sleep(poll_s)
    return None
