"""Scoring N=8 candidates: the RM-7B card's batch-1 loop padded to 2048 vs dynamic batching vs the shared prefix."""
from __future__ import annotations

import torch

from starling_demo.scoring import score
from starling_demo.value_passes import value_groups

from .common import (clock, cpu_snapshot, machine, medians, parse_args, random_ids, report_contention, reward_model,
                     table, verdict)

N, REPLY = 8, 200
MAX_LENGTH, UNK = 2048, 0  # the card pads with unk to 2048 and reads index 2047
PROMPTS = {"short": 100, "long": 1500}
WORDS = "the a model reply answer reward token long short good best people water light house city".split()


def conversation(prompt_len: int, seed: int) -> list[list[int]]:
    """N RM-7B rows: BOS + a shared conversation of `prompt_len` ids, then N replies of about 200 ids and </s>."""
    generator = torch.Generator().manual_seed(seed)
    prefix = [1] + random_ids(prompt_len - 1, generator)
    lengths = torch.randint(REPLY - 20, REPLY + 21, (N,), generator=generator).tolist()
    return [prefix + random_ids(length, generator) + [2] for length in lengths]


@torch.inference_mode()
def card_rewards(model, rows: list[list[int]]) -> list[float]:
    """The card's get_reward: one candidate at a time, right-padded with unk to 2048, use_cache left on.

    Its PAD_ID is the BOS id, so the "first pad" is position 0 and it returns the value at index 2047.
    """
    device, rewards = model.device, []
    for row in rows:
        row = row[-MAX_LENGTH:]
        ids = torch.full((1, MAX_LENGTH), UNK, dtype=torch.long)
        mask = torch.zeros((1, MAX_LENGTH), dtype=torch.long)
        ids[0, : len(row)], mask[0, : len(row)] = torch.tensor(row), 1
        hidden = model.transformer(ids.to(device), attention_mask=mask.to(device))[0]
        values = model.v_head(hidden.to(model.v_head.weight.dtype)).squeeze(-1)
        rewards.append(values[0, MAX_LENGTH - 1].item())
    return rewards


def project_rewards(model, rows: list[list[int]], share_prefix: bool) -> list[float]:
    """The rewards `score()` returns for the card read-out, through the same `value_groups` call."""
    return value_groups(model, [rows], UNK, MAX_LENGTH - 1, share_prefix=share_prefix)[0].query


def text_conversation(prompt_len: int, seed: int) -> tuple[list[dict], list[str]]:
    """A user message of about `prompt_len` tokens and N replies of about 200, for the end-to-end `score()`."""
    generator = torch.Generator().manual_seed(seed)
    words = lambda n: " ".join(WORDS[i] for i in torch.randint(len(WORDS), (n,), generator=generator))  # noqa: E731
    return [{"role": "user", "content": words(prompt_len)}], [words(REPLY) for _ in range(N)]


def main() -> None:
    before = cpu_snapshot()
    args = parse_args(__doc__)
    cuda = args.device == "cuda"
    loaded = reward_model(args.device)
    model = loaded.model
    print(f"# bench_scoring on {machine()}; RM {'Llama-2-7B shape, 4-bit' if cuda else 'hidden 256, 4 layers, fp32'}; "
          f"N={N}, replies ~{REPLY} tokens, median of {args.repeats}")
    rows_out, met = [], []
    for name, prompt_len in PROMPTS.items():
        rows = conversation(prompt_len, seed=prompt_len)
        card = card_rewards(model, rows)
        plain = project_rewards(model, rows, share_prefix=False)
        shared = project_rewards(model, rows, share_prefix=True)
        diff_plain = max(abs(a - b) for a, b in zip(card, plain))
        diff_shared = max(abs(a - b) for a, b in zip(card, shared))
        print(f"{name}: max |card - plain| {diff_plain:.2e}, max |card - shared prefix| {diff_shared:.2e}")
        if not cuda:  # fp32: the three computations must agree; 4-bit bf16 only approximately
            assert max(diff_plain, diff_shared) < 1e-4, "the rewards differ from the card's"
        messages, candidates = text_conversation(prompt_len, seed=prompt_len)
        t = medians({"card": lambda: clock(lambda: card_rewards(model, rows), args.device),
                     "plain": lambda: clock(lambda: project_rewards(model, rows, False), args.device),
                     "shared": lambda: clock(lambda: project_rewards(model, rows, True), args.device),
                     "score": lambda: clock(lambda: score(loaded, messages, candidates), args.device)}, args.repeats)
        t_card, t_plain, t_shared, t_score = t["card"], t["plain"], t["shared"], t["score"]
        rows_out.append([name, prompt_len, f"{min(map(len, rows))}-{max(map(len, rows))}", 1e3 * t_card,
                         1e3 * t_plain, 1e3 * t_shared, 1e3 * t_score, t_card / t_shared, t_plain / t_shared,
                         max(diff_plain, diff_shared)])
        met.append(verdict(f"{name}: shared prefix vs card", t_card / t_shared, ">=", 10 if name == "short" else 5))
        if name == "long":
            met.append(verdict("long: shared prefix vs plain dynamic batching", t_plain / t_shared, ">=", 3))
    print(table(["conversation", "prompt tok", "row tok", "card ms/turn", "plain batch ms", "shared prefix ms",
                 "score() e2e ms", "card/shared", "plain/shared", "max reward diff"], rows_out))
    print(f"all scoring targets met: {all(met)}")
    report_contention(before)


if __name__ == "__main__":
    main()
