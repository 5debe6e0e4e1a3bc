"""Memory of LM 7B + RM 7B in 4-bit vs bf16: peak with N=8 x 2k tokens on CUDA, resident weight size on CPU."""
from __future__ import annotations

import gc

import torch
from torch import nn

from starling_demo.value_passes import value_groups

from .bench_generation import stream
from .common import (build, cpu_snapshot, lm_config, machine, module_bytes, parse_args, quantize_4bit, random_ids,
                     report_contention, rm_config, table, verdict)

GIB = 2**30
N, CONTEXT, NEW = 8, 2048, 248  # 8 candidates of 2048 tokens: a 1800-token prompt and 248 new tokens
TARGET_GIB = 12


def true_shape_weights(kind: str, precision: str) -> int:
    """Resident bytes of the true-shape model, without allocating it all.

    Everything but the decoder layers is counted from a meta-device build in the GPU dtype (bf16; the RM's
    v_head fp32); one real decoder layer is quantised on the CPU (or counted in bf16) and multiplied by the
    number of layers, which all have the same shape.
    """
    from transformers import MistralForCausalLM

    from starling_demo.loading import StarlingRewardModel

    config = lm_config(True) if kind == "lm" else rm_config(True)
    cls = MistralForCausalLM if kind == "lm" else StarlingRewardModel
    with torch.device("meta"):
        model = cls._from_config(config, dtype=torch.bfloat16)
    if kind == "rm":
        model.v_head.float()
    layers = model.base_model.layers
    rest = sum(p.numel() * p.element_size() for name, p in model.named_parameters() if ".layers." not in name)
    layer = layers[0].to_empty(device="cpu")
    for parameter in layer.parameters():
        nn.init.normal_(parameter, std=0.02)
    if precision == "4bit":
        quantize_4bit(layer, [], "cpu")
    return rest + len(layers) * module_bytes(layer)


def kv_bytes(kind: str, rows: int, tokens: int) -> int:
    """bf16 KV cache of `rows` x `tokens`: 2 (K, V) x layers x KV heads x head dim x 2 bytes per token."""
    config = lm_config(True) if kind == "lm" else rm_config(True)
    head_dim = config.hidden_size // config.num_attention_heads
    return 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * 2 * rows * tokens


def cpu_report() -> None:
    rows = []
    for precision in ("bf16", "4bit"):
        small = {k: module_bytes(build(k, False, precision, "cpu")) for k in ("lm", "rm")}
        true = {k: true_shape_weights(k, precision) for k in ("lm", "rm")}
        rows.append([precision, small["lm"] / 2**20, small["rm"] / 2**20, true["lm"] / GIB, true["rm"] / GIB,
                     (true["lm"] + true["rm"]) / GIB])
        gc.collect()
    print("Resident weight size (parameters + buffers + 4-bit statistics), NOT peak memory. Small models: the CPU "
          "benchmark shape, where 4-bit keeps embeddings and lm_head in the CPU compute dtype fp32. True shapes: "
          "one real decoder layer x 32 plus the rest in bf16, as on a GPU.")
    print(table(["precision", "small LM MiB", "small RM MiB", "LM-7B GiB", "RM-7B GiB", "LM+RM GiB"], rows))
    lm_kv = kv_bytes("lm", N, CONTEXT)
    # Scoring stores the shared prefix once (batch 1); the N-fold keys exist one layer at a time.
    rm_kv = kv_bytes("rm", 1, CONTEXT - NEW) + kv_bytes("rm", N, CONTEXT) / rm_config(True).num_hidden_layers
    weights = rows[1][5]
    print(f"Estimated (not measured) bf16 KV caches for N={N} x {CONTEXT} tokens: LM {lm_kv / GIB:.2f} GiB "
          f"(8 KV heads); RM {rm_kv / GIB:.2f} GiB (the shared prefix stored once, plus one layer's N-fold keys). "
          f"4-bit weights + the larger cache: {weights + max(lm_kv, rm_kv) / GIB:.2f} GiB, "
          f"against a target of {TARGET_GIB} GiB, before activations. Measure it with --device cuda.")


@torch.inference_mode()
def cuda_peak(precision: str) -> list[list]:
    """A row per decoding path (eager, then the app's replayed graph): weights, and peaks after generating and
    after scoring N=8 candidates of 2048 tokens, what stays allocated after the turn beside the weights (the graph's
    static cache is kept for the next turn), in GiB."""
    lm, rm = build("lm", True, precision, "cuda"), build("rm", True, precision, "cuda")
    gc.collect()
    torch.cuda.empty_cache()
    weights = torch.cuda.memory_allocated()
    generator = torch.Generator().manual_seed(0)
    prompt = [1] + random_ids(CONTEXT - NEW - 1, generator)
    conversation = [1] + random_ids(CONTEXT - NEW - 1, generator)
    rows = []
    for path in ("eager", "graph"):
        torch.cuda.reset_peak_memory_stats()
        for state in stream(lm, prompt, N, NEW, path):
            pass
        generated = torch.cuda.max_memory_allocated()
        candidates = [conversation + [min(t, 31999) for t in ids] for ids in state.ids]
        value_groups(rm, [candidates], 0, CONTEXT - 1)
        scored = torch.cuda.max_memory_allocated()
        del state
        gc.collect()
        kept = torch.cuda.memory_allocated() - weights
        # What a smaller card must hold besides the tensors: the caching allocator's reserve and the CUDA context.
        reserved = torch.cuda.max_memory_reserved()
        free, total = torch.cuda.mem_get_info()
        rows.append([precision, path, weights / GIB, generated / GIB, scored / GIB, kept / GIB, reserved / GIB,
                     (total - free) / GIB])
    del lm, rm
    gc.collect()
    torch.cuda.empty_cache()
    return rows


def main() -> None:
    args = parse_args(__doc__)
    before = cpu_snapshot()
    print(f"# bench_memory on {machine()}")
    if args.device == "cpu":
        cpu_report()
    else:
        rows = [row for p in ("4bit", "bf16") for row in cuda_peak(p)]
        print(f"torch.cuda.max_memory_allocated, LM-7B + RM-7B, N={N} candidates x {CONTEXT} tokens "
              f"({CONTEXT - NEW} prompt + {NEW} generated), then value_groups on the 8 rows:")
        print(table(["precision", "decoding", "weights GiB", "peak after generation GiB", "peak after scoring GiB",
                     "kept after the turn GiB", "peak reserved GiB",
                     "device memory in use at the end GiB (CUDA context included)"], rows))
        verdict("4-bit LM + RM peak, the app's graph path", rows[1][4], "<=", TARGET_GIB, " GiB")
    report_contention(before)


if __name__ == "__main__":
    main()
