"""Batch scoring of a JSONL file: RewardBench's loop vs the project row by row vs the project batched, end to end.

(a) RewardBench's Starling pipeline as `run_rm.py` drives it: 16 rows a batch, each candidate position of the batch
    tokenized together, padded to the longest (pad = unk), read at the token before the first pad (the last real
    one): RewardBench's reward at --batch_size 1; its own PAD_ID (the BOS id) reads shorter rows of a larger batch at
    the batch's last column, which no fixed read-out reproduces, so (a) keeps its batching and cost, not that.
(b) The project row by row, as before this issue: one `score` per row, building every candidate's trace (the
    per-token values and token texts) as it did on every score, its candidates in one padded pass
    (`value_passes.SUFFIX_SPREAD` 0); and (b') row by row with this issue's scoring: no traces, the candidates in passes
    of similar length.
(c) The project batched: `evaluation.evaluate` on the file read as a stream (`batching.score_stream`), each reward
    batch invariant (the prompt in a pass of its own, each reply in one after it); (c') its scoring with the replies
    in padded batches of similar length instead, not batch invariant: what invariance costs.

Same process, model and file; (a) and (b)/(c) get the same text (RewardBench's format, last-token read-out), so their
rewards must agree; (c) is also run with the card's read-out. Reports rows per second, the share of the wall time
spent in model passes, and the peak memory above the loaded model.
"""
from __future__ import annotations

import json
import random
import tempfile
import threading
import time
from pathlib import Path

import torch

from starling_demo.backends.local import Loaded
from starling_demo.batching import score_stream
from starling_demo.detokenize import token_texts
from starling_demo.engine import Engine
from starling_demo.eval_layouts import eval_rows
from starling_demo.evaluation import evaluate, evaluation_result
from starling_demo.limits import utf8_lines
from starling_demo import value_passes
from starling_demo.scoring import score
from starling_demo.templates import llama2_chat_parts, render_parts

from .common import (cpu_snapshot, engine_of, machine, parse_args, report_contention, sync, table, time_forward,
                     verdict)

RB_BATCH, MAX_LENGTH = 16, 2048
PROMPT, REPLY = (50, 1500), (50, 400)  # RM tokens
WORDS = ("the a model reply answer reward token long short good best people water light house city river "
         "because however which could would should data value first second number").split()


def write_rows(path: Path, rows: int, tokenizer, seed: int = 0) -> None:
    """`rows` lines: pairs (chosen/rejected) and, every third, a 4-way ranking; prompt and reply lengths drawn
    uniformly in RM tokens (PROMPT, REPLY), as words of this tokenizer."""
    rng = random.Random(seed)
    per_word = len(tokenizer(" ".join(WORDS), add_special_tokens=False)["input_ids"]) / len(WORDS)
    text = lambda tokens: " ".join(rng.choice(WORDS) for _ in range(round(tokens / per_word)))  # noqa: E731
    with open(path, "w", encoding="utf-8") as file:
        for i in range(rows):
            messages = [{"role": "user", "content": text(rng.randint(*PROMPT))}]
            replies = [text(rng.randint(*REPLY)) for _ in range(4 if i % 3 == 2 else 2)]
            row = {"messages": messages, "candidates": replies} if len(replies) == 4 else \
                {"messages": messages, "chosen": replies[0], "rejected": replies[1]}
            file.write(json.dumps(row) + "\n")


class PeakMemory:
    """Peak memory above what was in use when entered: CUDA's allocator peak, or this process's resident size
    sampled every 50 ms on CPU (a pass takes longer; sampling more often slowed the passes' threads)."""

    def __init__(self, device: str):
        self.device, self.peak = device, 0

    def __enter__(self):
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        self.base = self.peak = rss()
        self.done = threading.Event()

        def sample():
            while not self.done.wait(0.05):
                self.peak = max(self.peak, rss())

        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.device == "cuda":
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self.done.set()
            self.thread.join()
            self.peak = max(self.peak, rss())
        self.above = self.peak - self.base


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def rows_of(path: Path) -> list[dict]:
    with open(path, "rb") as file:
        return list(eval_rows(utf8_lines(file)))


@torch.inference_mode()
def rewardbench(loaded: Loaded, path: Path) -> list[list[float]]:
    """(a) RewardBench's loop: per batch of 16 rows, the k-th candidates of the batch as one pipeline call.

    As its StarlingPipeline: the tokenizer pads to the longest text of the call (pad = unk) and truncates at 2048;
    GPTRewardModel reads the value before the first pad id (the last column when there is none).
    """
    tokenizer, model = loaded.tokenizer, loaded.model
    pad_id = tokenizer.unk_token_id
    rows = rows_of(path)
    rewards: list[list[float]] = [[] for _ in rows]
    for start in range(0, len(rows), RB_BATCH):
        batch = rows[start:start + RB_BATCH]
        for k in range(max(len(row["candidates"]) for row in batch)):
            members = [i for i, row in enumerate(batch) if k < len(row["candidates"])]
            texts = [render_parts(llama2_chat_parts(batch[i]["messages"], batch[i]["candidates"][k])) for i in members]
            ids = [tokenizer(t, truncation=True, max_length=MAX_LENGTH)["input_ids"] for t in texts]
            width = max(map(len, ids))
            input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(ids), width), dtype=torch.long)
            for j, row in enumerate(ids):
                input_ids[j, :len(row)], mask[j, :len(row)] = torch.tensor(row), 1
            values = model(input_ids.to(model.device), attention_mask=mask.to(model.device))
            for j, i in enumerate(members):
                pads = (input_ids[j] == pad_id).nonzero()
                end = pads[0].item() if len(pads) else width
                rewards[start + i].append(values[j, end - 1].item())
    return rewards


def row_by_row(loaded: Loaded, path: Path, before: bool) -> list[list[float]]:
    """(b) One `score` per row; `before` this issue, every trace built and the candidates in one padded pass."""
    rewards, spread = [], value_passes.SUFFIX_SPREAD
    value_passes.SUFFIX_SPREAD = 0.0 if before else spread
    try:
        for row in rows_of(path):
            scores = score(loaded, row["messages"], row["candidates"], rm_format="rewardbench", traces=before)
            if before:
                [token_texts(loaded.tokenizer, ids) for ids in scores.reply_ids]  # what every score did then
            rewards.append(scores.rewards)
    finally:
        value_passes.SUFFIX_SPREAD = spread
    return rewards


def batched(engine: Engine, path: Path, readout: str, budget: int, statistics: dict | None = None) -> list[list[float]]:
    """(c) `evaluation.evaluate` on the file read as a stream, then its report (`evaluation_result`: accuracies, length
    control, bootstrap intervals, each row's result), as `python -m starling_demo eval` runs it; `statistics` gets the
    report's seconds, alone ("report") and with a second model's rows to compare ("comparison", the same rows)."""
    with open(path, "rb") as file:
        kept = evaluate(engine, eval_rows(utf8_lines(file)), readout=readout, rm_format="rewardbench", budget=budget)
    start = time.perf_counter()
    evaluation_result(kept, [])
    if statistics is not None:
        statistics["report"] = time.perf_counter() - start
        start = time.perf_counter()
        evaluation_result(kept, [], kept)
        statistics["comparison"] = time.perf_counter() - start
    return [row["rewards"] for row in kept if "rewards" in row]


def batched_variant(loaded: Loaded, path: Path, budget: int) -> list[list[float]]:
    """(c') (c)'s scoring with the candidates in padded batches (`invariant=False`), for the cost of invariance."""
    items = [(row["messages"], row["candidates"]) for row in rows_of(path)]
    return [scores.rewards for ready, _ in score_stream(loaded, items, "last-token", "rewardbench", budget=budget,
                                                        invariant=False) for _, scores in ready]


def main() -> None:
    before = cpu_snapshot()
    args = parse_args(__doc__, rows=(int, 2000, "rows in the JSONL file"),
                      batched_only=(bool, None, "run (c) alone, and time its statistics (the report's share of its "
                                                "wall time): at 2,000 rows (a) alone takes over an hour on a CPU"),
                      invariance_only=(bool, None, "run (c) and (c') alone: what batch invariance costs (a GPU's "
                                                   "short check)"),
                      batch_tokens=(int, None, "--batch-tokens of the batched run (default: the CLI's, "
                                                "`Loaded.batch_tokens`)"))
    cuda = args.device == "cuda"
    engine = engine_of(args.device)
    loaded = engine.rm()
    args.batch_tokens = args.batch_tokens or loaded.batch_tokens()
    spent = time_forward(loaded.model, args.device)
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "rows.jsonl"
        write_rows(path, args.rows, loaded.tokenizer)
        lengths = [len(loaded.tokenizer(render_parts(llama2_chat_parts(r["messages"], c)))["input_ids"])
                   for r in rows_of(path)[:200] for c in r["candidates"]]
        print(f"# bench_eval on {machine()}; RM {'Llama-2-7B shape, 4-bit' if cuda else 'hidden 256, 4 layers, fp32'}; "
              f"{args.rows} rows (pairs, and 4-way every third), RM inputs of {min(lengths)}-{max(lengths)} tokens "
              f"(first 200 rows); --batch-tokens {args.batch_tokens}")
        runs = {"(a) RewardBench loop, batch 16": lambda: rewardbench(loaded, path),
                "(b) project, row by row, as before": lambda: row_by_row(loaded, path, before=True),
                "(b') project, row by row, this issue's scoring": lambda: row_by_row(loaded, path, before=False),
                "(c) project, batched": lambda: batched(engine, path, "last-token", args.batch_tokens, statistics),
                "(c) project, batched, card read-out": lambda: batched(engine, path, "card", args.batch_tokens),
                "(c') project, padded batches, not batch invariant": lambda: batched_variant(loaded, path,
                                                                                             args.batch_tokens)}
        if args.batched_only or args.invariance_only:
            kept = ["(c) project, batched"] + (["(c') project, padded batches, not batch invariant"]
                                               if args.invariance_only else [])
            runs = {name: run for name, run in runs.items() if name in kept}
        results, figures, statistics = {}, [], {}
        runs["warm-up"] = lambda: batched(engine, path.with_name("few.jsonl"), "last-token", args.batch_tokens)
        write_rows(path.with_name("few.jsonl"), 20, loaded.tokenizer, seed=1)
        runs = {"warm-up": runs.pop("warm-up"), **runs}
        for name, run in runs.items():
            spent[:] = [0.0, 0]
            with PeakMemory(args.device) as memory:
                sync(args.device)
                start = time.perf_counter()
                results[name] = run()
                sync(args.device)
                wall = time.perf_counter() - start
            if name == "warm-up":
                continue
            figures.append([name, wall, args.rows / wall, spent[0] / wall, spent[1] / 1e6, memory.above / 2**20])
            print(f"{name}: {wall:.1f} s, {args.rows / wall:.1f} rows/s, model passes {spent[0] / wall:.0%} of "
                  f"the wall time over {spent[1] / 1e6:.2f} M positions, peak memory +{memory.above / 2**20:.0f} MiB",
                  flush=True)
    wall_c = next(wall for name, wall, *_ in figures if name == "(c) project, batched")
    print(f"(c)'s statistics (accuracies, length control, bootstrap intervals, each row's result): "
          f"{statistics['report']:.2f} s, {statistics['report'] / wall_c:.1%} of its wall time; with a second "
          f"model's rows to compare, {statistics['comparison']:.2f} s, "
          f"{statistics['comparison'] / (2 * wall_c - statistics['report']):.1%} of two scorings")
    statistics_met = verdict("(c)'s statistics' share of its wall time", 100 * statistics["report"] / wall_c, "<=", 5,
                             unit="%")
    if args.batched_only:
        print(f"all eval targets met: {statistics_met}")
        return report_contention(before)
    if args.invariance_only:
        c, c2 = (results[name] for name in list(runs)[1:])
        print(f"max |reward difference| of (c) against (c'): "
              f"{max(abs(x - y) for r, s in zip(c, c2) for x, y in zip(r, s)):.2e}")
        print(f"(c)/(c'): batch invariance costs {figures[0][1] / figures[1][1]:.2f}x the padded batches' wall time")
        return report_contention(before)
    a, b, b2, c, card, c2 = (results[name] for name in list(runs)[1:])
    assert len(a) == len(b) == len(b2) == len(c) == len(c2) == args.rows
    difference = max(abs(x - y) for rows in (b, b2, c, c2) for r, s in zip(a, rows) for x, y in zip(r, s))
    print(f"max |reward difference| of (b), (b'), (c) and (c') against (a): {difference:.2e} "
          f"(card read-out rows differ from the last token's: {sum(r != s for r, s in zip(c, card))})")
    if not cuda:
        assert difference < 1e-4, "the three computations must give the same rewards"
    print(table(["run", "wall s", "rows/s", "model share", "M positions run", "peak MiB above the model"], figures))
    (_, wall_a, *_), (_, wall_b, *_), _, (_, wall_c, _, share_c, *_) = figures[:4]
    print(f"(c)/(c'): batch invariance costs {wall_c / figures[5][1]:.2f}x the padded batches' wall time")
    met = [verdict("(c) vs RewardBench's loop (a)", wall_a / wall_c, ">=", 4),
           verdict("(c) vs row by row (b)", wall_b / wall_c, ">=", 1.5),
           verdict("model passes' share of (c)", 100 * share_c, ">=", 85, unit="%"), statistics_met]
    print(f"all eval targets met: {all(met)}")
    report_contention(before)


if __name__ == "__main__":
    main()
