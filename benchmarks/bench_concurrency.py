"""Many visitors at once: per-turn latency for 1 and 8 gradio_client visitors, local backend against vLLM.

Both backends run the same tiny models (vLLM-servable shape, real vocabulary) in the same run: the local one in
the app's process, one turn at a time; the vLLM one on real vLLM CPU servers (tests/vllm_env.sh installs them),
turns side by side. Each visitor sends `--turns` messages with N candidates each, as fast as answers come; the
visitors are threads of a process of their own.

    python -m benchmarks.bench_concurrency [--visitors 1,8] [--turns 3] [--n 4] [--max-new-tokens 64] [--stream-interval 1]
"""
from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from gradio_client import Client

from benchmarks.common import machine
from starling_demo.engine import Engine
from starling_demo.ui import build_demo, launch_kwargs
from tests.vllm_servers import serve_tiny

KIND = "starling-rm-7b-alpha"


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile, linearly interpolated (numpy's default).

    >>> percentile([1.0, 2.0, 3.0, 4.0], 95)
    3.85
    """
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return round(ordered[low] + (ordered[high] - ordered[low]) * (position - low), 10)


def visit(url: str, settings: dict, visitors: int, turns: int) -> tuple[list[float], float]:
    """Every turn's seconds, and the wall time for all, with `visitors` clients each sending `turns` messages."""
    latencies, errors = [], []
    start = threading.Barrier(visitors)

    def visitor(k: int) -> None:
        # Each visitor from an address of its own, as the proxy reports it (one address may hold 4 jobs).
        client = Client(url, verbose=False, headers={"X-Forwarded-For": f"198.51.100.{k + 1}"})
        try:
            start.wait()
            for turn in range(turns):
                began = time.perf_counter()
                status = client.predict(f"Visitor {k}, message {turn}: tell me about the sea.",
                                        **(settings | {"seed": str(100 * k + turn)}), api_name="/chat")[1]
                latencies.append(time.perf_counter() - began)
                if "Scored" not in status:
                    raise RuntimeError(status)
        except Exception as error:  # reported after the run, with the visitor's number
            errors.append(f"visitor {k}: {error}")
        finally:
            client.close()

    threads = [threading.Thread(target=visitor, args=(k,)) for k in range(visitors)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError("; ".join(errors))
    return latencies, time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visitors", default="1,8", help="comma-separated numbers of simultaneous visitors")
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--turns-at-once", type=int, default=16, help="the app's limit with the vLLM backend")
    parser.add_argument("--stream-interval", type=int, default=1,
                        help="the LM server's --stream-interval: tokens per streamed chunk (vLLM's default 1)")
    args = parser.parse_args()
    crowds = [int(v) for v in args.visitors.split(",")]
    print(machine())
    with tempfile.TemporaryDirectory(prefix="bench-concurrency-") as folder, \
            ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as visitors_process:
        served = serve_tiny(Path(folder), classify=False, lm_flags=("--stream-interval", str(args.stream_interval)))
        try:
            settings = dict(lm=str(served.lm), rm=str(served.rm), n=args.n, temperature=0.7, top_p=1.0,
                            max_new_tokens=args.max_new_tokens, mode="GPT4 Correct", system="",
                            readout="last-token", rm2="none", rm_format="rlhf")
            rows = {}
            for backend in ("local", "vllm"):
                urls = dict(lm_url=served.lm_server.url, rm_url=served.rm_server.url) if backend == "vllm" else {}
                engine = Engine(str(served.lm), str(served.rm), "fp32", "cpu", rm_kind=KIND, backend=backend, **urls)
                demo = build_demo(engine, turns_at_once=args.turns_at_once if backend == "vllm" else 1,
                                  client_header="X-Forwarded-For")
                _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_kwargs())
                # The visitors run in a process of their own, as on their own machines: here they share the cores
                # with the app, but not its interpreter lock.
                try:
                    visitors_process.submit(visit, url, settings, 1, 1).result()  # warm-up: models loaded, passes done
                    for visitors in crowds:
                        latencies, total = visitors_process.submit(visit, url, settings, visitors, args.turns).result()
                        rows[backend, visitors] = (statistics.median(latencies), percentile(latencies, 95), total)
                        print(f"{backend:5} {visitors} visitor(s): p50 {rows[backend, visitors][0]:.2f} s, "
                              f"p95 {rows[backend, visitors][1]:.2f} s, all {total:.1f} s", flush=True)
                finally:
                    demo.close()
        finally:
            served.stop()
    print(f"\n{args.turns} turns per visitor, N={args.n}, {args.max_new_tokens} new tokens at most, LM server "
          f"--stream-interval {args.stream_interval}")
    print("| backend | visitors | turn p50 s | turn p95 s | all turns s | p95 / p95 of 1 visitor |")
    print("|---|---|---|---|---|---|")
    for (backend, visitors), (p50, p95, total) in rows.items():
        alone = rows.get((backend, crowds[0]), (None, p95))[1]
        print(f"| {backend} | {visitors} | {p50:.2f} | {p95:.2f} | {total:.1f} | {p95 / alone:.2f}x |")


if __name__ == "__main__":
    main()
