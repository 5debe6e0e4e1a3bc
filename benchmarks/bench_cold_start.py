"""Cold start at the true sizes: random 7B checkpoints in the real repos' layouts, loaded by the project's loader.

Writes Starling-LM-7B-beta's layout (Mistral-7B, bf16 safetensors shards with their index) and
Starling-RM-7B-alpha's (one PyTorch checkpoint of the card's GPTRewardModel: `model.model.*` and
`transformer.*` sharing storage as torch.save writes them, `model.lm_head.weight`, `v_head.weight`) to a
scratch folder, one at a time, and loads each with `load_lm` / `load_rm` on the CPU, in 4-bit and in bf16,
each load in a fresh process. Reports wall time, peak host RSS, RSS after the load and the transient cost
(peak minus after); target: transient at most 4 GiB, so LM and RM load one after the other on a 15 GB host.
RM-34B (69 GB of bf16 shards) is sized on paper only. The scratch checkpoints are deleted afterwards.

    python -m benchmarks.bench_cold_start [--scratch DIR] [--keep]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import LlamaForCausalLM, MistralForCausalLM

from starling_demo.loading import TOKENIZER_FILES, load_lm, load_rm
from starling_demo.presets import lm_preset, rm_preset
from starling_demo.tiny import tiny_checkpoint

from .common import lm_config, machine, module_bytes, rm_config, table, verdict

GIB = 2**30
SHARD_BYTES = 5 * 10**9  # the real LM repo: three shards of at most 5 GB
TARGET_TRANSIENT_GIB = 4
RM_34B = dict(hidden_size=7168, num_hidden_layers=60, num_attention_heads=56, num_key_value_heads=8,
              intermediate_size=20480, vocab_size=64000)


def random_tensor(shape: torch.Size) -> torch.Tensor:
    return torch.empty(shape, dtype=torch.bfloat16).normal_(std=0.02)


def shapes(model_class, config) -> dict[str, torch.Size]:
    with torch.device("meta"):
        return {name: tensor.shape for name, tensor in model_class(config).state_dict().items()}


def copy_tokenizer(source: Path, folder: Path) -> None:
    for name in TOKENIZER_FILES:
        if (source / name).exists():
            shutil.copy(source / name, folder / name)


def write_lm(folder: Path) -> None:
    """Mistral-7B in bf16 safetensors shards of at most 5 GB, with model.safetensors.index.json, one shard in memory."""
    config = lm_config(True)
    config.architectures, config.dtype = ["MistralForCausalLM"], "bfloat16"
    layout = shapes(MistralForCausalLM, config)
    groups, current, size = [], [], 0
    for name, shape in layout.items():
        nbytes = shape.numel() * 2
        if current and size + nbytes > SHARD_BYTES:
            groups, current, size = groups + [current], [], 0
        current, size = current + [name], size + nbytes
    groups.append(current)
    folder.mkdir(parents=True)
    weight_map = {}
    for i, names in enumerate(groups, 1):
        file = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
        save_file({name: random_tensor(layout[name]) for name in names}, folder / file, metadata={"format": "pt"})
        weight_map |= dict.fromkeys(names, file)
    total = sum(shape.numel() * 2 for shape in layout.values())
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                     "weight_map": weight_map}, indent=2))
    config.save_pretrained(folder)
    copy_tokenizer(tiny_checkpoint("lm"), folder)  # the real Mistral tokenizer, in Starling-LM's files


def write_rm_7b(folder: Path) -> None:
    """The card's GPTRewardModel state dict in one torch.save file (bf16), the backbone stored once."""
    config = rm_config(True)
    config.architectures = ["LLMForSequenceRegression"]
    state = {}
    for name, shape in shapes(LlamaForCausalLM, config).items():
        state[f"model.{name}"] = tensor = random_tensor(shape)
        if name.startswith("model."):
            state[f"transformer.{name.removeprefix('model.')}"] = tensor  # same storage, saved once
    state["v_head.weight"] = random_tensor(torch.Size([1, config.hidden_size]))
    folder.mkdir(parents=True)
    torch.save(state, folder / "pytorch_model.bin")
    del state
    config.save_pretrained(folder)
    # The real repo has no tokenizer (it comes from the gated Llama-2 repo); the tiny RM's is the same layout.
    copy_tokenizer(tiny_checkpoint("rm-7b"), folder)


def memory() -> dict[str, int]:
    """This process's resident memory in bytes: all of it, anonymous, and file-backed (mapped checkpoints)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return {key: int(fields[key].split()[0]) * 1024 for key in ("VmRSS", "RssAnon", "RssFile")}


def load(kind: str, folder: str, precision: str):
    if kind == "lm":
        return load_lm(lm_preset(folder), precision, "cpu")
    return load_rm(rm_preset(folder, "starling-rm-7b-alpha"), precision, "cpu")


def read_every_weight(model) -> None:
    """What the first forward pass does to a lazily mapped checkpoint: read every weight once."""
    with torch.inference_mode():
        for tensor in [*model.parameters(), *model.buffers()]:
            tensor.sum()


def measured(work) -> tuple[dict, object]:
    """Run `work()`, sampling this process's RSS every 5 ms: (wall time and peak memory, its result)."""
    peaks, done = memory(), threading.Event()

    def sample():
        while not done.wait(0.005):
            for key, value in memory().items():
                peaks[key] = max(peaks[key], value)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    result = work()
    wall = time.perf_counter() - started
    done.set()
    sampler.join()
    return {"wall_s": wall, "peak": {key: max(value, memory()[key]) for key, value in peaks.items()}}, result


def load_in_this_process(kind: str, folder: str, precision: str) -> dict:
    """Load once, then read every weight once; wall time and memory of each step."""
    before = memory()
    loading, loaded = measured(lambda: load(kind, folder, precision))
    after = memory()
    reading, _ = measured(lambda: read_every_weight(loaded.model))
    return {"before": before, "load": loading, "after": after, "read": reading, "after_read": memory(),
            "model_bytes": module_bytes(loaded.model)}


def load_pair_in_this_process(lm_folder: str, rm_folder: str, precision: str) -> dict:
    """What the app does on its first turn: the LM, then the RM, into one process."""
    lm, rm = load("lm", lm_folder, precision), load("rm", rm_folder, precision)
    return {"after": memory(), "model_bytes": module_bytes(lm.model) + module_bytes(rm.model)}


def in_fresh_process(args: list[str], cgroup: Path | None = None) -> dict:
    """Run this script's child mode in a new process (inside the memory cgroup `cgroup`, if given)."""
    join = (lambda: (cgroup / "cgroup.procs").write_text(str(os.getpid()))) if cgroup else None
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_cold_start", "--child", *args],
                          capture_output=True, text=True, preexec_fn=join)
    if done.returncode:
        killed = " (killed: out of memory under the limit)" if done.returncode == -9 else ""
        raise RuntimeError(f"{' '.join(args)} failed{killed}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory_cgroup(limit: int) -> tuple[Path, str] | None:
    """A new memory cgroup limited to `limit` bytes (v1 or v2; needs root), and its peak-usage file; else None."""
    for root, limit_file, peak_file in (("/sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.max_usage_in_bytes"),
                                        ("/sys/fs/cgroup", "memory.max", "memory.peak")):
        group = Path(root) / f"starling-cold-{os.getpid()}"
        with contextlib.suppress(OSError):
            group.mkdir()
            (group / limit_file).write_text(str(limit))
            return group, peak_file
        with contextlib.suppress(OSError):
            group.rmdir()
    return None


def rm_34b_on_paper() -> str:
    """Bytes of RM-34B from its shape: bf16 checkpoint and NF4 resident size (linear layers at 0.5625 B/param)."""
    h, layers, inter, vocab = (RM_34B[k] for k in ("hidden_size", "num_hidden_layers", "intermediate_size",
                                                     "vocab_size"))
    kv = h // RM_34B["num_attention_heads"] * RM_34B["num_key_value_heads"]
    linear = layers * (2 * h * h + 2 * h * kv + 3 * h * inter)
    other = vocab * h + (2 * layers + 1) * h
    nf4 = linear * (0.5 + 4 / 64) + other * 2 + h * 4  # 4 bits and an fp32 absmax per 64 weights; bf16 rest
    return (f"RM-34B on paper: {(linear + other) / 1e9:.1f} B parameters, {(linear + other) * 2 / GIB:.1f} GiB in bf16 "
            f"(the checkpoint), about {nf4 / GIB:.1f} GiB resident in 4-bit: it needs a host with more than that "
            "plus the transient, and is not written here.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scratch", type=Path, help="folder for the checkpoints, created here (default: a new "
                        "temporary one); it must not exist yet, since it is deleted afterwards")
    parser.add_argument("--keep", action="store_true", help="keep the checkpoints instead of deleting them")
    parser.add_argument("--host-gib", type=float, default=15,
                        help="memory limit (a cgroup) under which the LM and then the RM load into one process")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, *rest = args.child
        print(json.dumps(load_in_this_process(*rest) if mode == "one" else load_pair_in_this_process(*rest)))
        return
    if args.scratch and args.scratch.exists():
        parser.error(f"{args.scratch} exists: name a new folder (it is deleted afterwards, unless --keep)")
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="starling-cold-"))
    print(f"machine: {machine()}; scratch: {scratch}")
    rows, worst = [], 0.0
    try:
        for kind, writer in (("lm", write_lm), ("rm", write_rm_7b)):
            started = time.perf_counter()
            writer(scratch / kind)
            size = sum(f.stat().st_size for f in (scratch / kind).iterdir())
            print(f"wrote {kind}: {size / GIB:.2f} GiB in {time.perf_counter() - started:.0f} s", flush=True)
            for precision in ("4bit", "bf16"):
                r = in_fresh_process(["one", kind, str(scratch / kind), precision])
                load, read = r["load"], r["read"]
                transient = (load["peak"]["RssAnon"] - r["after"]["RssAnon"]) / GIB
                worst = max(worst, transient)
                rows.append([kind, precision, load["wall_s"], read["wall_s"], r["model_bytes"] / GIB,
                             load["peak"]["RssAnon"] / GIB, load["peak"]["RssFile"] / GIB, r["after"]["RssAnon"] / GIB,
                             transient, r["after_read"]["VmRSS"] / GIB])
                print(f"  {kind} {precision}: {rows[-1]}", flush=True)
        limit = int(args.host_gib * GIB)
        cgroup = memory_cgroup(limit)
        if cgroup is None:
            print(f"no memory cgroup could be made here (needs root and cgroups): LM + RM under {args.host_gib} GiB "
                  "not tried")
        else:
            group, peak_file = cgroup
            try:
                r = in_fresh_process(["pair", str(scratch / "lm"), str(scratch / "rm"), "4bit"], group)
                print(f"LM then RM, 4-bit, one process, memory cgroup limited to {args.host_gib} GiB: loaded; "
                      f"cgroup peak (page cache included) {int((group / peak_file).read_text()) / GIB:.2f} GiB, "
                      f"process RSS after {r['after']['VmRSS'] / GIB:.2f} GiB (anon {r['after']['RssAnon'] / GIB:.2f}), "
                      f"weights {r['model_bytes'] / GIB:.2f} GiB")
            except RuntimeError as error:
                print(f"LM then RM under {args.host_gib} GiB: {error}")
            finally:
                group.rmdir()
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    print(table(["model", "precision", "load s", "read weights s", "weights GiB", "peak anon GiB", "peak mapped file GiB",
                 "anon after GiB", "transient anon GiB", "RSS after reading GiB"], rows))
    print(rm_34b_on_paper())
    verdict("largest transient anonymous memory during a load", worst, "<=", TARGET_TRANSIENT_GIB, " GiB")


if __name__ == "__main__":
    main()
