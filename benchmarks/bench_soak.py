"""Bounded loopback soak of organiser mode: participants submitting and reading while the server is killed.

`python benchmarks/bench_soak.py [--participants 6] [--seconds 90] [--kills 3] [--total 12]`

Participants (one thread each) loop until the time is up: submit one mask per case to a phase, read the
leaderboard, list their own submissions. Every seconds/(kills+1) the server gets SIGKILL and is started again
on the same data dir. Afterwards, with the server up, the run checks (and exits 1 if any fails):
- nothing accepted is lost: every submission answered 201 is listed once, scored, with the same aggregates;
- budgets are exact: each participant's used total equals their submissions that count (a submission cut
  off by a kill is `interrupted` and does not count), never over the phase's total, and equal to the total
  for every participant who was told it was spent;
- the leaderboard equals `python -m evaluation rank` over each participant's ranked submission's metrics.json.
Prints throughput and latencies; writes bench-out/bench_soak.json. Everything runs on 127.0.0.1.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "test")]

from app_helpers import Server, write_mask  # noqa: E402
from petct.argtypes import whole_number  # noqa: E402

ORGANISER = "organiser-token-for-the-soak-0123456"
CASES = ("CASE_A", "CASE_B", "CASE_C")
SHAPE = (16, 16, 16)
PHASE = "soak"


@dataclass
class Tally:
    """What one participant saw."""

    accepted: dict[str, dict] = field(default_factory=dict)  # submission id -> aggregates answered
    spent: bool = False  # told the budget was used up
    submit_s: list[float] = field(default_factory=list)
    board_s: list[float] = field(default_factory=list)
    codes: dict[int, int] = field(default_factory=dict)
    unanswered: int = 0  # connection lost (a kill) before an answer


class Target:
    """The server's current URL, changed by each restart."""

    def __init__(self, url: str):
        self._url = url
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        with self._lock:
            return self._url

    @url.setter
    def url(self, value: str) -> None:
        with self._lock:
            self._url = value


def setup(work: Path) -> tuple[Path, Path, dict[str, str], dict[str, np.ndarray]]:
    rng = np.random.default_rng(20)
    truth = {case: (rng.uniform(size=SHAPE) < 0.1).astype(np.uint8) for case in CASES}
    for case, array in truth.items():
        write_mask(array, work / "gt" / f"{case}_SEG.mha")
    data = work / "data"
    return work / "gt", data, {}, truth


def cli(*args: str, data: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "app", *args, "--data-dir", str(data)], cwd=REPO, text=True,
                          capture_output=True, check=True, timeout=120)
    return done.stdout.strip()


def participant(name: str, token: str, target: Target, truth: dict, deadline: float, tally: Tally,
                work: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    folder = work / "masks" / name
    folder.mkdir(parents=True, exist_ok=True)
    headers = {"Authorization": f"Bearer {token}"}
    quality = rng.uniform(0.3, 0.95)
    while time.monotonic() < deadline:
        files = {}
        for case in CASES:  # keep a random part of the truth, add a few false positives
            mask = np.where(rng.uniform(size=SHAPE) < quality, truth[case], 0).astype(np.uint8)
            mask[rng.integers(0, SHAPE[0]), rng.integers(0, SHAPE[1]), rng.integers(0, SHAPE[2])] = 1
            files[case] = (f"{case}.mha", write_mask(mask, folder / f"{case}.mha").read_bytes())
        try:
            with httpx.Client(base_url=target.url, headers=headers, timeout=120) as client:
                started = time.perf_counter()
                answer = client.post(f"/v1/phases/{PHASE}/submissions", files=files)
                tally.submit_s.append(time.perf_counter() - started)
                tally.codes[answer.status_code] = tally.codes.get(answer.status_code, 0) + 1
                if answer.status_code == 201:
                    body = answer.json()
                    tally.accepted[body["id"]] = body["aggregates"]
                elif answer.status_code == 429 and "no more submissions" in answer.text:
                    tally.spent = True
                started = time.perf_counter()
                client.get(f"/v1/phases/{PHASE}/leaderboard").raise_for_status()
                tally.board_s.append(time.perf_counter() - started)
                client.get(f"/v1/phases/{PHASE}/submissions").raise_for_status()
        except (httpx.TransportError, httpx.HTTPStatusError):
            tally.unanswered += 1
            time.sleep(0.2)  # the server is being restarted
        if tally.spent:
            time.sleep(0.5)  # keep reading at a gentler pace


def check(server: Server, tokens: dict[str, str], tallies: dict[str, Tally], *, total: int, work: Path) -> list[str]:
    problems = []
    with server.client() as organiser:
        listed = organiser.get(f"/v1/phases/{PHASE}/submissions").json()["submissions"]
        board = organiser.get(f"/v1/phases/{PHASE}/leaderboard").json()["rows"]
    by_id: dict[str, list[dict]] = {}
    for s in listed:
        by_id.setdefault(s["id"], []).append(s)
    for name, tally in tallies.items():
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {tokens[name]}"}) as client:
            used = client.get(f"/v1/phases/{PHASE}").json()["used_total"]
            own = client.get(f"/v1/phases/{PHASE}/submissions").json()["submissions"]  # as they see them
        for sid, aggregates in tally.accepted.items():
            found = [s for s in own if s["id"] == sid]
            if len(by_id.get(sid, [])) != 1 or len(found) != 1 or found[0]["state"] != "scored" \
                    or found[0]["aggregates"] != aggregates:
                problems.append(f"{name}: accepted submission {sid} is not listed once with its answer")
        counting = [s for s in listed if s["participant"] == name and s["state"] != "interrupted"]
        if used != len(counting) or used > total or (tally.spent and used != total):
            problems.append(f"{name}: used {used}, counting {len(counting)}, total {total}, told spent {tally.spent}")
    # The leaderboard against `python -m evaluation rank` on the chosen submissions' metrics.json files.
    reports = work / "reports"
    reports.mkdir(exist_ok=True)
    arguments = []
    for row in sorted(board, key=lambda r: next(s["created_at"] for s in listed if s["id"] == r["submission"])):
        path = reports / f"{row['submission']}.json"
        path.write_text(json.dumps({"aggregates": by_id[row["submission"]][0]["aggregates"]}))
        arguments.append(f"{row['participant']}={path}")
    if arguments:
        ranked = subprocess.run([sys.executable, "-m", "evaluation", "rank", *arguments, "--challenge",
                                 "autopet-2022", "--output", str(work / "rank.json")], cwd=REPO, capture_output=True,
                                text=True, timeout=120)
        expected = [r["submission"] for r in json.loads((work / "rank.json").read_text())["leaderboard"]] \
            if ranked.returncode == 0 else ranked.stderr
        if expected != [r["participant"] for r in board]:
            problems.append(f"leaderboard {[r['participant'] for r in board]} != rank {expected}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--participants", type=whole_number(1), default=6)
    parser.add_argument("--seconds", type=whole_number(10), default=90)
    parser.add_argument("--kills", type=whole_number(0), default=3)
    parser.add_argument("--total", type=whole_number(1), default=12, help="the phase's budget per participant")
    parser.add_argument("--out", type=Path, default=REPO / "bench-out")
    args = parser.parse_args()
    work = args.out / "bench_soak"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    gt, data, tokens, truth = setup(work)
    names = [f"p{i:02d}" for i in range(args.participants)]
    for name in names:
        tokens[name] = cli("participants", "add", name, data=data)
    (work / "cases.txt").write_text("\n".join(CASES) + "\n")
    cli("phases", "create", PHASE, "--cases", str(work / "cases.txt"), "--per-day", str(args.total), "--total",
        str(args.total), "--rank", "best", data=data)
    server = Server(data_dir=data, args=["--ground-truth", str(gt)], env={"PETCT_KIT_TOKEN": ORGANISER},
                    token=ORGANISER).start()
    target = Target(server.url)
    tallies = {name: Tally() for name in names}
    started = time.monotonic()
    deadline = started + args.seconds
    restarts = []
    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        futures = [pool.submit(participant, name, tokens[name], target, truth, deadline, tallies[name], work, i)
                   for i, name in enumerate(names)]
        for k in range(args.kills):
            time.sleep(max(0.0, started + args.seconds * (k + 1) / (args.kills + 1) - time.monotonic()))
            server.kill()
            down = time.perf_counter()
            server.start()
            restarts.append(time.perf_counter() - down)
            target.url = server.url
        for future in futures:
            future.result()
    elapsed = time.monotonic() - started
    try:
        problems = check(server, tokens, tallies, total=args.total, work=work)
        with server.client() as organiser:
            listed = organiser.get(f"/v1/phases/{PHASE}/submissions").json()["submissions"]
    finally:
        server.stop()
    accepted = sum(len(t.accepted) for t in tallies.values())
    submit_s = [v for t in tallies.values() for v in t.submit_s]
    board_s = [v for t in tallies.values() for v in t.board_s]
    codes: dict[int, int] = {}
    for t in tallies.values():
        for code, n in t.codes.items():
            codes[code] = codes.get(code, 0) + n
    figures = {
        "participants": len(names), "seconds": round(elapsed, 1), "kills": args.kills, "total": args.total,
        "accepted": accepted, "answers": dict(sorted(codes.items())),
        "unanswered": sum(t.unanswered for t in tallies.values()),
        "interrupted": sum(s["state"] == "interrupted" for s in listed),
        "submit_p50_s": round(statistics.median(submit_s), 3) if submit_s else None,
        "leaderboard_p50_s": round(statistics.median(board_s), 4) if board_s else None,
        "leaderboard_max_s": round(max(board_s), 4) if board_s else None,
        "restart_s": [round(r, 1) for r in restarts], "problems": problems,
    }
    print(json.dumps(figures, indent=2))
    (args.out / "bench_soak.json").write_text(json.dumps(figures, indent=2) + "\n")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
