"""Bounded loopback soak of organiser mode: participants submitting and reading while the server is killed.

`python benchmarks/bench_soak.py [--participants 6] [--seconds 90] [--kills 3] [--total 12] [--disk-seconds 30]`

Participants (one thread each) loop until the time is up: submit one mask per case to a phase, read the
leaderboard, list their own submissions. Every seconds/(kills+1) the server gets SIGKILL and is started again
on the same data dir. Afterwards, with the server up, the run checks (and exits 1 if any fails):
- nothing accepted is lost: every submission answered 201 is listed once, scored, with the same aggregates;
- budgets are exact: each participant's used total equals their submissions that count (a submission cut
  off by a kill is `interrupted` and does not count), never over the phase's total, and equal to the total
  for every participant who was told it was spent;
- the leaderboard equals `python -m evaluation rank` over each participant's ranked submission's metrics.json.
Then a filling disk (a phase of its own, with a budget the participants cannot spend): the server is started
again with `--min-free` a little under the data folder's free space, a ballast file beside the data folder
grows (posix_fallocate, 32 MiB at a time, 2 GiB at most) until the free space is well under that minimum, is
held, then removed. The run checks that new submissions got 503 naming --min-free while the disk was short, that
201s came back as soon as the space was freed, that no answer was a 500, and the same three points as above.
Prints throughput and latencies; writes bench-out/bench_soak.json. Everything runs on 127.0.0.1.
"""
from __future__ import annotations

import argparse
import json
import os
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

from petct.argtypes import whole_number
from suite_helpers import test_helpers

REPO = Path(__file__).resolve().parents[1]

Server = test_helpers("app_helpers").Server
write_mask = test_helpers("app_helpers").write_mask

ORGANISER = "organiser-token-for-the-soak-0123456"
CASES = ("CASE_A", "CASE_B", "CASE_C")
SHAPE = (16, 16, 16)
PHASE = "soak"
DISK_PHASE = "soak-disk"
BALLAST_STEP = 32 * 1024**2
BALLAST_CAP = 2 * 1024**3  # the most the soak ever takes of the real disk
HEADROOM = 256 * 1024**2  # --min-free is this much under the free space when the disk phase starts
DISK_BUDGET = 100_000  # the disk phase's budget: a spent one would answer 429 before any 503


@dataclass
class Tally:
    """What one participant saw."""

    accepted: dict[str, dict] = field(default_factory=dict)  # submission id -> aggregates answered
    spent: bool = False  # told the budget was used up
    submit_s: list[float] = field(default_factory=list)
    board_s: list[float] = field(default_factory=list)
    codes: dict[int, int] = field(default_factory=dict)
    unanswered: int = 0  # connection lost (a kill) before an answer
    answers: list[tuple[float, float, int]] = field(default_factory=list)  # monotonic asked, answered; status
    refusals_without_reason: int = 0  # a 503 that does not name --min-free


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
                work: Path, seed: int, phase: str = PHASE) -> None:
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
                asked, started = time.monotonic(), time.perf_counter()
                answer = client.post(f"/v1/phases/{phase}/submissions", files=files)
                tally.submit_s.append(time.perf_counter() - started)
                tally.codes[answer.status_code] = tally.codes.get(answer.status_code, 0) + 1
                tally.answers.append((asked, time.monotonic(), answer.status_code))
                if answer.status_code == 503 and "--min-free" not in answer.text:
                    tally.refusals_without_reason += 1
                if answer.status_code == 201:
                    body = answer.json()
                    tally.accepted[body["id"]] = body["aggregates"]
                elif answer.status_code == 429 and "no more submissions" in answer.text:
                    tally.spent = True
                started = time.perf_counter()
                client.get(f"/v1/phases/{phase}/leaderboard").raise_for_status()
                tally.board_s.append(time.perf_counter() - started)
                client.get(f"/v1/phases/{phase}/submissions").raise_for_status()
        except (httpx.TransportError, httpx.HTTPStatusError):
            tally.unanswered += 1
            time.sleep(0.2)  # the server is being restarted
        if tally.spent:
            time.sleep(0.5)  # keep reading at a gentler pace


def check(server: Server, tokens: dict[str, str], tallies: dict[str, Tally], *, total: int, work: Path,
          phase: str = PHASE) -> list[str]:
    problems = []
    with server.client() as organiser:
        listed = organiser.get(f"/v1/phases/{phase}/submissions").json()["submissions"]
        board = organiser.get(f"/v1/phases/{phase}/leaderboard").json()["rows"]
    by_id: dict[str, list[dict]] = {}
    for s in listed:
        by_id.setdefault(s["id"], []).append(s)
    for name, tally in tallies.items():
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {tokens[name]}"}) as client:
            used = client.get(f"/v1/phases/{phase}").json()["used_total"]
            own = client.get(f"/v1/phases/{phase}/submissions").json()["submissions"]  # as they see them
        for sid, aggregates in tally.accepted.items():
            found = [s for s in own if s["id"] == sid]
            if len(by_id.get(sid, [])) != 1 or len(found) != 1 or found[0]["state"] != "scored" \
                    or found[0]["aggregates"] != aggregates:
                problems.append(f"{phase} {name}: accepted submission {sid} is not listed once with its answer")
        counting = [s for s in listed if s["participant"] == name and s["state"] != "interrupted"]
        if used != len(counting) or used > total or (tally.spent and used != total):
            problems.append(f"{phase} {name}: used {used}, counting {len(counting)}, total {total}, "
                            f"told spent {tally.spent}")
    # The leaderboard against `python -m evaluation rank` on the chosen submissions' metrics.json files.
    reports = work / "reports" / phase
    reports.mkdir(parents=True, exist_ok=True)
    arguments = []
    for row in sorted(board, key=lambda r: next(s["created_at"] for s in listed if s["id"] == r["submission"])):
        path = reports / f"{row['submission']}.json"
        path.write_text(json.dumps({"aggregates": by_id[row["submission"]][0]["aggregates"]}))
        arguments.append(f"{row['participant']}={path}")
    if arguments:
        ranked = subprocess.run([sys.executable, "-m", "evaluation", "rank", *arguments, "--challenge",
                                 "autopet-2022", "--output", str(reports / "rank.json")], cwd=REPO,
                                capture_output=True, text=True, timeout=120)
        expected = [r["submission"] for r in json.loads((reports / "rank.json").read_text())["leaderboard"]] \
            if ranked.returncode == 0 else ranked.stderr
        if expected != [r["participant"] for r in board]:
            problems.append(f"{phase}: leaderboard {[r['participant'] for r in board]} != rank {expected}")
    return problems


@dataclass
class Ballast:
    """A file beside the data folder that takes free space until the server's --min-free is crossed."""

    path: Path
    min_free: int
    size: int = 0
    short_at: float | None = None  # monotonic time the free space went under min_free
    freed_at: float | None = None

    def fill(self) -> None:
        # Well under the minimum, so that other programs freeing some space do not end the shortage early.
        target = self.min_free - HEADROOM // 2
        with open(self.path, "wb") as ballast:
            while self.size < BALLAST_CAP and shutil.disk_usage(self.path.parent).free >= target:
                os.posix_fallocate(ballast.fileno(), self.size, BALLAST_STEP)  # blocks taken, nothing written
                self.size += BALLAST_STEP
        if shutil.disk_usage(self.path.parent).free < self.min_free:
            self.short_at = time.monotonic()

    def free(self) -> None:
        if self.path.exists():
            self.path.unlink()
            self.freed_at = time.monotonic()


def summary(tallies: dict[str, Tally], listed: list[dict]) -> dict:
    """Answers, counts and latencies of one phase."""
    submit_s = [v for t in tallies.values() for v in t.submit_s]
    board_s = [v for t in tallies.values() for v in t.board_s]
    codes: dict[int, int] = {}
    for t in tallies.values():
        for code, n in t.codes.items():
            codes[code] = codes.get(code, 0) + n
    return {
        "accepted": sum(len(t.accepted) for t in tallies.values()), "answers": dict(sorted(codes.items())),
        "unanswered": sum(t.unanswered for t in tallies.values()),
        "interrupted": sum(s["state"] == "interrupted" for s in listed),
        "submit_p50_s": round(statistics.median(submit_s), 3) if submit_s else None,
        "leaderboard_p50_s": round(statistics.median(board_s), 4) if board_s else None,
        "leaderboard_max_s": round(max(board_s), 4) if board_s else None,
    }


def kill_phase(args, *, work: Path, data: Path, gt: Path, tokens: dict[str, str], truth: dict) -> dict:
    """Participants submitting and reading while the server is killed (SIGKILL) and started again."""
    server = Server(data_dir=data, args=["--ground-truth", str(gt)], env={"PETCT_KIT_TOKEN": ORGANISER},
                    token=ORGANISER).start()
    target = Target(server.url)
    tallies = {name: Tally() for name in tokens}
    started = time.monotonic()
    deadline = started + args.seconds
    restarts = []
    with ThreadPoolExecutor(max_workers=len(tokens)) as pool:
        futures = [pool.submit(participant, name, tokens[name], target, truth, deadline, tallies[name], work, i)
                   for i, name in enumerate(tokens)]
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
    return {"seconds": round(elapsed, 1), "kills": args.kills, "total": args.total, **summary(tallies, listed),
            "restart_s": [round(r, 1) for r in restarts], "problems": problems}


def disk_phase(args, *, work: Path, data: Path, gt: Path, tokens: dict[str, str], truth: dict) -> dict:
    """Participants submitting while the disk fills past --min-free, stays short, and is freed."""
    ballast = Ballast(path=work / "ballast", min_free=shutil.disk_usage(work).free - HEADROOM)
    server = Server(data_dir=data, args=["--ground-truth", str(gt), "--min-free", str(ballast.min_free)],
                    env={"PETCT_KIT_TOKEN": ORGANISER}, token=ORGANISER).start()
    target = Target(server.url)
    tallies = {name: Tally() for name in tokens}
    started = time.monotonic()
    third = args.disk_seconds / 3
    try:
        with ThreadPoolExecutor(max_workers=len(tokens)) as pool:
            futures = [pool.submit(participant, name, tokens[name], target, truth, started + args.disk_seconds,
                                   tallies[name], work, 100 + i, DISK_PHASE) for i, name in enumerate(tokens)]
            time.sleep(third)
            filling = time.monotonic()
            ballast.fill()
            fill_s = time.monotonic() - filling
            time.sleep(max(0.0, started + 2 * third - time.monotonic()))
            ballast.free()
            for future in futures:
                future.result()
        problems = check(server, tokens, tallies, total=DISK_BUDGET, work=work, phase=DISK_PHASE)
        with server.client() as organiser:
            listed = organiser.get(f"/v1/phases/{DISK_PHASE}/submissions").json()["submissions"]
    finally:
        ballast.free()
        server.stop()
    answers = sorted(a for t in tallies.values() for a in t.answers)
    if ballast.short_at is None:
        problems.append(f"the free space never went under --min-free ({BALLAST_CAP} bytes of ballast)")
        short = after = []
    else:
        short = [code for asked, answered, code in answers if ballast.short_at < asked and answered < ballast.freed_at]
        after = [answered - ballast.freed_at for _, answered, code in answers
                 if answered > ballast.freed_at and code == 201]
        if 503 not in short:
            problems.append("no submission got 503 while the disk was short")
        if not after:
            problems.append("no submission was accepted after the space was freed")
    refused_without_reason = sum(t.refusals_without_reason for t in tallies.values())
    if refused_without_reason:
        problems.append(f"{refused_without_reason} answers 503 did not name --min-free")
    if any(code >= 500 and code not in (503, 507) for _, _, code in answers):
        problems.append("an answer was a 5xx other than 503/507")
    return {"seconds": round(time.monotonic() - started, 1), "ballast_bytes": ballast.size,
            "fill_s": round(fill_s, 2), **summary(tallies, listed),
            # answers to submissions sent while the disk was short
            "while_short": {str(code): short.count(code) for code in sorted(set(short))},
            "accepted_before_short": sum(code == 201 and answered < (ballast.short_at or 0)
                                         for _, answered, code in answers),
            "accepted_after_freed": len(after),
            "recovery_s": round(min(after), 2) if after else None, "problems": problems}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--participants", type=whole_number(1), default=6)
    parser.add_argument("--seconds", type=whole_number(10), default=90)
    parser.add_argument("--kills", type=whole_number(0), default=3)
    parser.add_argument("--total", type=whole_number(1), default=12, help="the phase's budget per participant")
    parser.add_argument("--disk-seconds", type=whole_number(0), default=30,
                        help="length of the filling-disk phase (0: none)")
    parser.add_argument("--out", type=Path, default=REPO / "bench-out")
    args = parser.parse_args()
    work = args.out / "bench_soak"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    gt, data, tokens, truth = setup(work)
    for name in (f"p{i:02d}" for i in range(args.participants)):
        tokens[name] = cli("participants", "add", name, data=data)
    (work / "cases.txt").write_text("\n".join(CASES) + "\n")
    cli("phases", "create", PHASE, "--cases", str(work / "cases.txt"), "--per-day", str(args.total), "--total",
        str(args.total), "--rank", "best", data=data)
    cli("phases", "create", DISK_PHASE, "--cases", str(work / "cases.txt"), "--per-day", str(DISK_BUDGET),
        "--total", str(DISK_BUDGET), "--rank", "best", data=data)
    figures = {"participants": args.participants,
               "kills": kill_phase(args, work=work, data=data, gt=gt, tokens=tokens, truth=truth)}
    if args.disk_seconds:
        figures["filling_disk"] = disk_phase(args, work=work, data=data, gt=gt, tokens=tokens, truth=truth)
    print(json.dumps(figures, indent=2))
    (args.out / "bench_soak.json").write_text(json.dumps(figures, indent=2) + "\n")
    return 1 if any(phase["problems"] for phase in figures.values() if isinstance(phase, dict)) else 0


if __name__ == "__main__":
    raise SystemExit(main())
