"""The app's turn end to end (N=4 candidates of 256 new tokens, streamed, then scored) and the rewards' batch invariance.

On CUDA the LM and RM have the true 7B shapes in 4-bit, as the app loads them; on CPU the small benchmark shapes.
Batch invariance: each of 8 candidates scored alone and among the 7 others (the app's batch-invariant scoring, the
shared prefix and plain batching), in 4-bit and bf16 on CUDA (fp32 on CPU): RewardBench users see rewards move with
the batch size; this says by how much they move here, that the app's own scoring does not move them (0 on every
device, or the benchmark fails), and what that costs against the batched passes.
"""
from __future__ import annotations

import gc
import time

import torch

from starling_demo.engine import Engine, Settings
from starling_demo.value_passes import value_groups

from .bench_scoring import MAX_LENGTH, UNK, conversation, text_conversation
from .common import (build, clock, cpu_snapshot, engine_of, machine, medians, parse_args, report_contention, sync,
                     table)

N, NEW_TOKENS, PROMPT_WORDS = 4, 256, 400


def turn(engine: Engine, messages: list[dict], seed: int, device: str) -> list[float]:
    """[first update, generation, scoring, whole turn] seconds and [new tokens] of one turn as the UI runs it; then
    [scoring again] seconds: the same candidates once more, whose shapes have all run before (a turn's replies have
    new lengths every time, so set-up that depends on the shape shows as the difference)."""
    settings = Settings(n=N, max_new_tokens=NEW_TOKENS, seed=seed)
    sync(device)
    start = time.perf_counter()
    first = None
    for update in engine.generate(messages, settings):
        if first is None:
            first = time.perf_counter() - start
    sync(device)
    generated = time.perf_counter() - start
    scores = engine.score(messages, update.texts)
    sync(device)
    total = time.perf_counter() - start
    assert len(scores.rewards) == N
    again = clock(lambda: engine.score(messages, update.texts), device)
    return [first, generated, total - generated, total, sum(update.token_counts), again]


def profile_scoring(engine: Engine, messages: list[dict], device: str) -> None:
    """Where a turn's scoring time goes: one more turn (replies of lengths not seen before), its `score` under
    torch.profiler, the top operations by host time and by device time. A scoring far slower than its kernels,
    with one operation's host time on top, names the cause of the gap to `bench_scoring`."""
    from torch.profiler import ProfilerActivity, profile

    update = None
    for update in engine.generate(messages, Settings(n=N, max_new_tokens=NEW_TOKENS, seed=1000)):
        pass
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    sync(device)
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        engine.score(messages, update.texts)
        sync(device)
        wall = time.perf_counter() - start
    events = prof.key_averages()
    print(f"profile of a turn's scoring (new shapes): {1e3 * wall:.0f} ms wall")
    print(events.table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=60))
    if device == "cuda":
        print(events.table(sort_by="self_device_time_total", row_limit=10, max_name_column_width=60))


@torch.inference_mode()
def invariance(model, device: str, repeats: int) -> list[float]:
    """Largest |reward alone - reward among 8| over 8 candidates of a 1,500-token conversation, batch invariant
    (`invariant_values`), with the shared prefix and with plain batching, at the last token and at the card's
    position 2047; the spread (max - min) of the 8 rewards at the last token, for scale; and the time to score
    the 8, invariant and with the shared prefix (median of `repeats`)."""
    rows = conversation(1500, seed=1500)
    starts = [[1500] * len(rows)]  # BOS and the 1,499 ids of the conversation, then each reply
    differences = []
    for mode in ("invariant", True, False):
        together = value_groups(model, [rows], UNK, MAX_LENGTH - 1, share_prefix=mode is not False,
                                starts=starts if mode == "invariant" else None)[0]
        alone = [value_groups(model, [[row]], UNK, MAX_LENGTH - 1, share_prefix=mode is not False,
                              starts=[[1500]] if mode == "invariant" else None)[0] for row in rows]
        differences += [max(abs(a.last[0] - t) for a, t in zip(alone, together.last)),
                        max(abs(a.query[0] - t) for a, t in zip(alone, together.query))]
    times = medians({"invariant": lambda: clock(lambda: value_groups(model, [rows], UNK, MAX_LENGTH - 1,
                                                                     starts=starts), device),
                     "shared": lambda: clock(lambda: value_groups(model, [rows], UNK, MAX_LENGTH - 1), device)},
                    repeats)
    return differences + [max(together.last) - min(together.last), 1e3 * times["shared"], 1e3 * times["invariant"],
                          times["invariant"] / times["shared"]]


def main() -> None:
    before = cpu_snapshot()
    args = parse_args(__doc__, cudnn_attention=(
        bool, False, "cuDNN's attention back on, as torch picks it on Hopper and Blackwell GPUs (the app turns it off: "
                     "a plan built for every new shape)"),
        turn_only=(bool, False, "the turn alone, without the batch-invariance tables"),
        profile_scoring=(bool, False, "profile one more turn's scoring (new shapes) and print its top operations"))
    device, cuda = args.device, args.device == "cuda"
    print(f"# bench_turn on {machine()}; {'true 7B shapes, 4-bit' if cuda else 'hidden 256, 4 layers, fp32'}; "
          f"cuDNN attention {'on' if args.cudnn_attention else 'off, as the app has it'}")
    engine = engine_of(device, with_lm=True)
    if args.cudnn_attention:
        torch.backends.cuda.enable_cudnn_sdp(True)  # after engine_of's models, whose build turned it off
    messages, _ = text_conversation(PROMPT_WORDS, seed=0)
    prompt = len(engine.prompt(messages, Settings(n=N, max_new_tokens=NEW_TOKENS))[0].ids)
    turns = [turn(engine, messages, seed, device) for seed in range(1 + args.repeats)][1:]
    first, generated, scoring, total, tokens, again = (sorted(column)[len(column) // 2] for column in zip(*turns))
    print(f"turn: prompt {prompt} LM tokens, N={N} x {NEW_TOKENS} new tokens (stop tokens may end one early), "
          f"median of {args.repeats} after a warm-up")
    print(table(["first update ms", "generation s", "scoring ms", "turn s", "new tokens", "tokens/s (N together)",
                 "scoring again ms"], [[1e3 * first, generated, 1e3 * scoring, total, tokens, tokens / generated,
                                        1e3 * again]]))
    if args.profile_scoring:
        profile_scoring(engine, messages, device)
    del engine
    if args.turn_only:
        report_contention(before)
        return
    gc.collect()
    rows = []
    for precision in ("4bit", "bf16") if cuda else ("fp32",):
        model = build("rm", cuda, precision, device)
        rows.append([precision, *invariance(model, device, args.repeats)])
        del model
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    print("batch invariance: max |reward scored alone - scored among 8| over 8 candidates (1,500-token prompt, "
          "~200-token replies)")
    print(table(["precision", "invariant, last token", "invariant, card 2047", "shared prefix, last token",
                 "shared prefix, card 2047", "plain, last token", "plain, card 2047", "spread of the 8 rewards",
                 "shared prefix ms", "invariant ms", "invariant/shared"], rows))
    assert all(row[1] == row[2] == 0 for row in rows), "the app's scoring must not depend on the batch"
    report_contention(before)


if __name__ == "__main__":
    main()
