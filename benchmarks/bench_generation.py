"""N candidates from a 1500-token prompt: the project's stream_candidates vs HF generate(num_return_sequences=N)."""
from __future__ import annotations

import time

import torch

from starling_demo.generation import stream_candidates

from .common import (H100_BANDWIDTH, build, clock, cpu_snapshot, machine, medians, module_bytes, parse_args,
                     random_ids, report_contention, sync, table, verdict)

PROMPT, NS, TEMPERATURE = 1500, (1, 4, 8), 0.7


def run_project(model, prompt: list[int], n: int, new_tokens: int, device: str) -> tuple[float, float]:
    """(TTFT, total) seconds; TTFT is the time to the first yielded state. No stop id: every row runs to the end."""
    sync(device)
    start = time.perf_counter()
    ttft = None
    for state in stream_candidates(model, prompt, n, TEMPERATURE, 1.0, new_tokens, seed=0, stop_ids=frozenset()):
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


def profile_decode(model, prompt: list[int], n: int, steps: int = 8) -> None:
    """Where a decode step's time goes: GPU kernel time per step against wall time per step, and the top kernels.

    A step far slower than its kernels is bound by the host launching them (Python and per-op overhead)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    stream = stream_candidates(model, prompt, n, TEMPERATURE, 1.0, 3 * steps, seed=0, stop_ids=frozenset())
    for _ in range(steps):  # the prefill and a few steps first: only decode steps are profiled
        next(stream)
    sync("cuda")
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            next(stream)
        sync("cuda")
        wall = (time.perf_counter() - start) / steps
    events = prof.key_averages()
    # Only the kernels themselves: an op's own row repeats its kernels' device time.
    kernels = sum(e.self_device_time_total for e in events if e.device_type == DeviceType.CUDA) / 1e3 / steps
    launches = sum(e.count for e in events if e.key.startswith("cudaLaunchKernel")) / steps
    print(f"profile N={n}: {1e3 * wall:.2f} ms wall per decode step, {kernels:.2f} ms of GPU kernels "
          f"({kernels / (1e3 * wall):.0%} busy), {launches:.0f} kernel launches per step")
    print(events.table(sort_by="self_device_time_total", row_limit=12, max_name_column_width=60))


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
    rows, results = [], {}
    for n in NS:
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
        for n in (1, 8):
            profile_decode(model, prompt, n)
    print(f"all generation targets met: {all(met)}")
    report_contention(before)


if __name__ == "__main__":
    main()
