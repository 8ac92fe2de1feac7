"""Benchmark of the kit's HTTP service on loopback (`python benchmarks/bench_app.py`).

1. Scoring throughput: POST /v1/score requests per second for small studies (128 x 128 x 96), one
   client and four concurrent clients, against score_files called in-process on the same files.
2. Full-size latency: one 400 x 400 x 326 study scored over HTTP against score_files in-process.
3. Memory under 20 concurrent uploads of full-size, uncompressed mask pairs (about 100 MB each): the
   server's resident memory sampled every 20 ms, compared with the bytes in flight.
Everything runs on 127.0.0.1 with bounded loops; results also go to bench-out/bench_app.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil
import SimpleITK as sitk

from evaluation.scoring import score_files
from petct.argtypes import whole_number
from petct.imageio import write_image_atomic
from petct.phantom import make_study
from suite_helpers import test_helpers

REPO = Path(__file__).resolve().parents[1]

Server = test_helpers("app_helpers").Server


def mask_pair(folder: Path, *, size, seed: int, compress: bool) -> tuple[Path, Path]:
    """A phantom's lesion mask and a prediction that misses one lesion and adds a false positive."""
    study = make_study(seed, size=size, n_lesions=4)
    gt = sitk.GetArrayFromImage(study.seg)
    pred = gt.copy()
    pred[pred.shape[0] // 2, :4, :4] = 1  # a false positive away from every lesion
    if study.lesions:
        first = np.argwhere(gt)[0]
        pred[tuple(first)] = 0
    out = []
    for name, array in (("gt", gt), ("pred", pred)):
        image = sitk.GetImageFromArray(array)
        image.CopyInformation(study.seg)
        out.append(write_image_atomic(image, folder / f"{name}-{seed}.mha", compress=compress))
    return out[0], out[1]


def post_score(client: httpx.Client, gt: Path, pred: Path) -> dict:
    with open(gt, "rb") as g, open(pred, "rb") as p:
        response = client.post("/v1/score", files={"prediction": (pred.name, p), "ground_truth": (gt.name, g)})
    response.raise_for_status()
    return response.json()


def throughput(server: Server, pairs, *, requests: int, clients: int) -> float:
    """Requests per second with `clients` threads, each keeping its own connection."""
    def worker(k: int):
        with server.client() as client:
            for i in range(k, requests, clients):
                post_score(client, *pairs[i % len(pairs)])

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, range(clients)))
    return requests / (time.perf_counter() - started)


def in_process_rate(pairs, *, requests: int) -> float:
    started = time.perf_counter()
    for i in range(requests):
        score_files(ground_truth=pairs[i % len(pairs)][0], prediction=pairs[i % len(pairs)][1])
    return requests / (time.perf_counter() - started)


def rss_while(server: Server, action) -> tuple[int, int]:
    """(RSS before, peak RSS during) of the server process and its children (scoring processes) while `action()` runs."""
    proc = psutil.Process(server.proc.pid)

    def total() -> int:
        rss = proc.memory_info().rss
        for child in proc.children(recursive=True):
            try:
                rss += child.memory_info().rss
            except psutil.Error:  # gone between listing and reading
                pass
        return rss

    before = total()
    peak, done = before, threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, total())
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        action()
    finally:
        done.set()
        sampler.join()
    return before, peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench-out")
    parser.add_argument("--requests", type=whole_number(1), default=40)
    parser.add_argument("--uploads", type=whole_number(1), default=20)
    args = parser.parse_args()
    work = args.out / "bench_app"
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {}

    print("making studies ...", flush=True)
    small = [mask_pair(work, size="small", seed=s, compress=True) for s in (1, 2, 3, 4)]
    full_gt, full_pred = mask_pair(work, size="full", seed=9, compress=False)
    full_bytes = full_gt.stat().st_size + full_pred.stat().st_size

    with Server(data_dir=work / "data", args=["--scoring-workers", "2"]) as server, server.client() as client:
        post_score(client, *small[0])  # warm up imports and pools
        reference = in_process_rate(small, requests=args.requests)
        for clients in (1, 4):
            rate = throughput(server, small, requests=args.requests, clients=clients)
            results[f"small_rps_{clients}_clients"] = rate
            print(f"small studies, {clients} client(s): {rate:.1f} requests/s "
                  f"(in-process score_files {reference:.1f}/s, ratio {rate / reference:.2f})", flush=True)
        results["small_in_process_per_s"] = reference

        http_s, local_s = [], []
        for _ in range(3):
            started = time.perf_counter()
            body = post_score(client, full_gt, full_pred)
            http_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            score_files(ground_truth=full_gt, prediction=full_pred)
            local_s.append(time.perf_counter() - started)
        results.update(full_http_s=statistics.median(http_s), full_in_process_s=statistics.median(local_s),
                       full_request_bytes=full_bytes, full_dice=body["dice"])
        print(f"full-size study ({full_bytes / 2**20:.0f} MiB uncompressed pair): {statistics.median(http_s):.2f} s "
              f"over HTTP, {statistics.median(local_s):.2f} s in-process "
              f"(ratio {statistics.median(http_s) / statistics.median(local_s):.2f})", flush=True)

        def uploads():
            with ThreadPoolExecutor(args.uploads) as pool:
                def one(_):
                    with server.client() as c:
                        post_score(c, full_gt, full_pred)
                list(pool.map(one, range(args.uploads)))

        started = time.perf_counter()
        before, peak = rss_while(server, uploads)
        seconds = time.perf_counter() - started
        in_flight = args.uploads * full_bytes
        results.update(uploads=args.uploads, upload_seconds=seconds, rss_before=before, rss_peak=peak,
                       bytes_in_flight=in_flight)
        print(f"{args.uploads} concurrent full-size uploads ({in_flight / 2**30:.2f} GiB) in {seconds:.1f} s: server "
              f"RSS {before / 2**20:.0f} MiB before, {peak / 2**20:.0f} MiB peak (+{(peak - before) / 2**20:.0f} MiB "
              f"= {(peak - before) / in_flight:.1%} of the bytes in flight)", flush=True)

    (args.out / "bench_app.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
