"""N candidates from a 1500-token prompt: the project's stream_candidates vs HF generate(num_return_sequences=N).

With --device cuda also the app's GPU path (`static_decoding`: each decode step a replayed CUDA graph), its decode
step against the eager one's and against its own kernels' time (profiled: the target is at most 1.5x).
"""
from __future__ import annotations

import time

import torch

from starling_demo.generation import stream_candidates
from starling_demo.static_decoding import stream_static

from .common import (H100_BANDWIDTH, build, clock, cpu_snapshot, machine, medians, module_bytes, parse_args,
                     random_ids, report_contention, sync, table, verdict)

PROMPT, NS, TEMPERATURE = 1500, (1, 4, 8), 0.7


def stream(model, prompt: list[int], n: int, new_tokens: int, path: str):
    """The candidates' states from the eager path or the GPU's replayed graph (`path` "graph"). No stop id: every
    row runs to the end."""
    if path == "graph":
        steps = stream_static(model, prompt, n, TEMPERATURE, 1.0, new_tokens, seed=0, stop_ids=frozenset(), graph=True)
        assert steps is not None, "the CUDA graph capture failed (see the log line)"
        return steps
    return stream_candidates(model, prompt, n, TEMPERATURE, 1.0, new_tokens, seed=0, stop_ids=frozenset())


def run_project(model, prompt: list[int], n: int, new_tokens: int, device: str, path: str = "eager",
                ) -> tuple[float, float]:
    """(TTFT, total) seconds; TTFT is the time to the first yielded state."""
    sync(device)
    start = time.perf_counter()
    ttft = None
    for state in stream(model, prompt, n, new_tokens, path):
        if ttft is None:
            sync(device)
            ttft = time.perf_counter() - start
    sync(device)
    assert all(len(ids) == new_tokens for ids in state.ids)
    return ttft, time.perf_counter() - start


@torch.inference_mode()
def run_generate(model, prompt: list[int], n: int, new_tokens: int, device: str) -> float:
    """Seconds of HF generate sampling `new_tokens` for N return sequences (min_new_tokens forbids an early stop)."""
    ids = torch.tensor([prompt], device=device)
    sync(device)
    start = time.perf_counter()
    out = model.generate(ids, num_return_sequences=n, do_sample=True, temperature=TEMPERATURE, top_p=1.0, top_k=0,
                         max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=0)
    sync(device)
    assert out.shape == (n, len(prompt) + new_tokens)
    return time.perf_counter() - start


def profile_decode(model, prompt: list[int], n: int, path: str, steps: int = 32) -> float:
    """Where a decode step's time goes: GPU kernel time per step against wall time per step, and the top kernels;
    returns the kernels' ms per step. Two runs, of 8 and 8 + `steps` new tokens: their difference is decode only.

    A step far slower than its kernels is bound by the host launching them (Python and per-op overhead)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    figures = []
    for new_tokens in (8, 8 + steps):
        list(stream(model, prompt, n, new_tokens, path))  # warm (a graph is captured on its first run)
        sync("cuda")
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            start = time.perf_counter()
            list(stream(model, prompt, n, new_tokens, path))
            sync("cuda")
            wall = time.perf_counter() - start
        events = prof.key_averages()
        # Only the kernels themselves: an op's own row repeats its kernels' device time.
        kernels = sum(e.self_device_time_total for e in events if e.device_type == DeviceType.CUDA) / 1e3
        launches = sum(e.count for e in events if e.key.startswith(("cudaLaunchKernel", "cudaGraphLaunch")))
        figures.append((1e3 * wall, kernels, launches))
    wall, kernels, launches = ((b - a) / steps for a, b in zip(figures[0], figures[1]))
    print(f"profile {path} N={n}: {wall:.2f} ms wall per decode step, {kernels:.2f} ms of GPU kernels "
          f"({kernels / wall:.0%} busy; wall/kernels {wall / kernels:.2f}x), {launches:.0f} launches per step")
    print(events.table(sort_by="self_device_time_total", row_limit=12, max_name_column_width=60))
    return kernels


def bandwidth(device: str, given: float) -> float:
    """`given` B/s, or when it is 0, a measured device-to-device copy of 2 GiB (read + write bytes)."""
    if given > 0:
        return given
    src = torch.empty(2**30, dtype=torch.bfloat16, device=device)
    dst = torch.empty_like(src)
    seconds = medians({"copy": lambda: clock(lambda: dst.copy_(src), device)}, repeats=5)["copy"]
    return 2 * src.numel() * src.element_size() / seconds


def main() -> None:
    before = cpu_snapshot()
    args = parse_args(__doc__, new_tokens=(int, 48, "new tokens per candidate"),
                      bandwidth=(float, H100_BANDWIDTH, "memory bandwidth in B/s for the decode bound; 0 measures it"))
    cuda = args.device == "cuda"
    model = build("lm", cuda, "4bit" if cuda else "fp32", args.device)
    prompt = [1] + random_ids(PROMPT - 1, torch.Generator().manual_seed(0))
    t = args.new_tokens
    shape = "Mistral-7B shape, 4-bit" if cuda else "hidden 256, 4 layers, fp32"
    print(f"# bench_generation on {machine()}; LM {shape}; "
          f"prompt {PROMPT} tokens, {t} new tokens, sampling T={TEMPERATURE}, seed 0, median of {args.repeats}")
    paths = ("eager", "graph") if cuda else ("eager",)
    rows, results, graph_rows = [], {}, []
    for n in NS:
        if cuda:
            m = medians({path: lambda path=path: run_project(model, prompt, n, t, args.device, path)
                         for path in paths}, args.repeats)
            graph_rows.append([n, *(1e3 * (m[path][1] - m[path][0]) / (t - 1) for path in paths)])
        m = medians({"project": lambda: run_project(model, prompt, n, t, args.device),
                     "generate TTFT": lambda: run_generate(model, prompt, n, 1, args.device),
                     "generate": lambda: run_generate(model, prompt, n, t, args.device)}, args.repeats)
        (p_ttft, p_total), g_ttft, g_total = m["project"], m["generate TTFT"], m["generate"]
        results[n] = (p_ttft, p_total, g_ttft, g_total)
        rows.append([n, 1e3 * p_ttft, 1e3 * g_ttft, t / p_total, t / g_total, n * t / p_total, n * t / g_total,
                     g_total / p_total])
    print(table(["N", "project TTFT ms", "generate TTFT ms", "project tok/s/cand", "generate tok/s/cand",
                 "project tok/s total", "generate tok/s total", "generate/project time"], rows))
    met = [verdict("project TTFT N=8 / N=1", results[8][0] / results[1][0], "<=", 1.3),
           verdict("generate(num_return_sequences=8) time / project N=8 time", results[8][3] / results[8][1], ">=", 2)]
    if cuda:
        # Each decode step reads every weight once; the embedding only gathers N rows, so it is left out.
        weights = module_bytes(model) - module_bytes(model.get_input_embeddings())
        bound = weights / bandwidth(args.device, args.bandwidth)
        for n in NS:
            p_ttft, p_total = results[n][:2]
            step = (p_total - p_ttft) / (t - 1)
            print(f"N={n}: decode step {1e3 * step:.2f} ms, weight-bandwidth bound {1e3 * bound:.2f} ms "
                  f"({weights / 2**30:.2f} GiB/step): {bound / step:.0%} of the bound")
        for row in graph_rows:
            row += [row[1] / row[2], profile_decode(model, prompt, row[0], "graph")]
            row += [row[2] / row[4]]
            met.append(verdict(f"graph decode step / its kernels, N={row[0]}", row[5], "<=", 1.5))
        print(table(["N", "eager step ms", "graph step ms", "eager/graph", "graph kernels ms/step",
                     "graph step / kernels"], graph_rows))
        for n in (1, 8):
            profile_decode(model, prompt, n, "eager")
    print(f"all generation targets met: {all(met)}")
    report_contention(before)


if __name__ == "__main__":
    main()
