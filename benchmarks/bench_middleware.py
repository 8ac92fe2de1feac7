"""Per-request cost of the browser-safety middleware (security headers, the cross-site check), in process.

`python benchmarks/bench_middleware.py [--calls 20000]`

One ASGI app that answers at once, called directly (no sockets) with and without app.service.security's
BrowserSafety around it, alternating in blocks; a GET and a cookie-carrying POST. Prints microseconds per call
and the difference: the overhead every HTTP answer of the service now carries, free of network noise.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

from app.service.security import BrowserSafety
from app.service.sessions import SESSION_COOKIE
from petct.argtypes import whole_number

REPO = Path(__file__).resolve().parents[1]


async def bare(scope, receive, send):
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"{}"})


def scope(method: str) -> dict:
    headers = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"bench"), (b"accept", b"*/*")]
    if method == "POST":
        headers += [(b"origin", b"http://127.0.0.1:8000"), (b"cookie", f"{SESSION_COOKIE}=abc".encode())]
    return {"type": "http", "method": method, "path": "/v1/jobs", "headers": headers}


async def per_call_s(app, request: dict, calls: int) -> float:
    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        pass

    started = time.perf_counter()
    for _ in range(calls):
        await app(request, receive, send)
    return (time.perf_counter() - started) / calls


async def main_async(calls: int, blocks: int) -> None:
    wrapped = BrowserSafety(bare, session_cookie=SESSION_COOKIE)
    for method in ("GET", "POST"):
        request = scope(method)
        times = {"bare": [], "with middleware": []}
        for _ in range(blocks):
            for name, app in (("bare", bare), ("with middleware", wrapped)):
                times[name].append(await per_call_s(app, request, calls // blocks))
        medians = {name: statistics.median(values) * 1e6 for name, values in times.items()}
        print(f"{method}: bare {medians['bare']:.2f} µs, with middleware {medians['with middleware']:.2f} µs, "
              f"overhead {medians['with middleware'] - medians['bare']:.2f} µs per request")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=whole_number(100), default=20000)
    parser.add_argument("--blocks", type=whole_number(1), default=20)
    args = parser.parse_args()
    asyncio.run(main_async(args.calls, args.blocks))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
