"""Probes: 8 candidates x 10 edits (80 variants + 8 originals), shared-prefix passes vs one `score()` per variant.

Same process, same random RM as `bench_scoring` (CPU: Llama hidden 256, 4 layers, fp32, the real 32k Mistral
vocabulary through the tiny RM-7B preset's tokenizer; CUDA: Llama-2-7B shape, 4-bit). A multi-turn conversation
of about --prompt-tokens RM tokens and 8 markdown candidates of 150-300 tokens (two paragraphs and a list), built
from fixed English sentences with a seed, so that each of the 10 `edits.EDITS` changes each candidate into a
variant of its own: 88 rows, asserted before timing (81 distinct texts: the refusal edit gives each candidate
the same one, which `probe` scores once per candidate).

- baseline: `score(rm, messages, [text])` once per row, 88 calls, each one pass over its whole row;
- probe: `probes.probe(rm, messages, candidates, EDITS)`, the project's path: the distinct rows are the candidates
  of one conversation in `batching.score_stream`, which encodes the conversation once per batch of at most
  `batching.BATCH_TOKENS` ids and runs the replies in passes of similar length.

Both give the same rewards (asserted within 1e-4 on CPU, fp32). The methods take turns within each repeat; medians
are reported. The model's forward is wrapped with a timer, which gives the share of each method's time spent in
model passes (the rest: tokenisation, the token-text traces `score` builds, the edits themselves) and the number
of positions the passes computed, padding and the card's query column included.
"""
from __future__ import annotations

import random
import resource
import time

from starling_demo import probes
from starling_demo.edits import EDITS
from starling_demo.scoring import score
from starling_demo.templates import reward_inputs, reward_template

from .common import (clock, cpu_snapshot, machine, medians, parse_args, report_contention, reward_model, table,
                     time_forward)

N = 8
REPLY_TOKENS = (150, 300)
TOLERANCE = 1e-4

QUESTIONS = [
    "I have a small back garden, about four by six metres, that gets sun for most of the afternoon. "
    "I would like to grow some of our own vegetables this year. Where should I start?",
    "The soil is quite heavy clay and it stays wet for days after it rains. Is that going to be a problem?",
    "We also have two young children who want to help. Which crops are easy and quick enough to keep them "
    "interested?",
    "How much time per week should I expect to spend on it once everything is planted?",
    "What about slugs? Last year they ate every lettuce seedling I put out.",
    "Should I buy seedlings from a nursery or start everything from seed on the windowsill?",
    "Is it worth building raised beds, or can I just dig over the lawn?",
    "How do I plan the watering if we go away for two weeks in August?",
    "Can I grow anything useful through the winter, or does the garden just rest?",
]
ANSWERS = [
    "Start small: a bed you can look after well will give you more food than a large one that gets away from you.",
    "Afternoon sun is good news, since most fruiting vegetables need at least six hours of direct light a day.",
    "Before you buy anything, watch where the shadows fall at different times of day for a week or so.",
    "Clay holds nutrients well, so once it drains better it can be one of the most productive soils there is.",
    "Dig in plenty of well-rotted compost or manure, and avoid walking on the beds when the ground is wet.",
    "A layer of mulch over the winter protects the structure of the soil and feeds the worms that open it up.",
    "Radishes, peas, runner beans and courgettes grow quickly and are hard to get wrong.",
    "Children tend to enjoy anything they can pick and eat straight away, such as cherry tomatoes and strawberries.",
    "Once the beds are planted, an hour or two a week is usually enough, more in a dry spell.",
    "Most of the work comes in spring, when you sow and plant, and in late summer, when everything ripens at once.",
    "Slugs hide in damp, shady places during the day, so keep the edges of the beds tidy and free of long grass.",
    "Going out with a torch on a damp evening and collecting them is tedious but works better than anything else.",
    "Beer traps, copper tape and wool pellets all help a little, but none of them is a complete answer.",
    "Seedlings from a nursery cost more but save you weeks, which matters for tomatoes and peppers.",
    "Sowing on a windowsill is cheap and satisfying, but the plants can get leggy if the light is poor.",
    "Raised beds warm up sooner in spring and drain better, which helps a great deal on clay.",
    "If the budget is tight, a simple frame of untreated timber filled with topsoil and compost does the job.",
    "A soaker hose on a cheap timer is the easiest way to keep a small plot watered while you are away.",
    "Water deeply once or twice a week rather than a little every day, so that the roots grow down, not sideways.",
    "Garlic, broad beans and winter salads such as lamb's lettuce will carry on through most winters.",
]
OPENINGS = [
    "Heavy clay in a sunny spot is a better start than it sounds, and a first season needs only a little planning.",
    "The short answer is yes, but the soil matters more than anything you plant in it.",
    "Here is a plan for the first year that fits a plot of that size and leaves room for the children.",
    "With afternoon sun and a bit of work on the soil, you can grow far more than you might expect.",
    "It is worth spending the first few weeks on the soil and the layout before you buy a single plant.",
    "Most first gardens fail because they are too big, not because the soil is poor.",
    "You do not need special tools or a greenhouse to get a good harvest in the first year.",
    "A good first season comes down to three things: the soil, the watering and a short list of crops.",
]
ITEMS = [
    "**Raised beds**: two beds of 1.2 by 2.4 metres, with a path between them that you never dig.",
    "**Compost**: at least a wheelbarrow per square metre, forked into the top of the clay.",
    "**Quick crops**: radishes and salad leaves, ready in four to six weeks from sowing.",
    "**Climbing beans**: on a wigwam of canes, where they take up little ground and crop all summer.",
    "**Tomatoes**: two or three plants from a nursery, against the sunniest wall you have.",
    "**Courgettes**: one plant is plenty for a family, and two is already too many.",
    "**Slug patrol**: a torch walk after rain, twice a week, from April to June.",
    "**Watering**: a soaker hose on a timer, checked before you go away.",
    "**Herbs**: parsley, chives and mint in pots by the door, where you will use them.",
    "**Record keeping**: a notebook with what you sowed, when, and how it did.",
]
MIDDLES = [
    "Clay drains slowly, so raising the beds a little and adding organic matter every year will change it more than "
    "any single treatment.",
    "Let the children choose one crop each and give them a small square to look after on their own.",
    "Keep the first year simple and learn what grows well in your particular corner before you expand.",
    "If something fails, it is usually the weather or the slugs rather than anything you did wrong.",
    "Do not worry about a perfect rotation in the first year; just avoid planting the same family in the same spot "
    "two years running.",
    "A cold frame or a few cloches will let you start earlier in spring and carry on later in autumn.",
]
CLOSINGS = [
    "Good luck, and enjoy the first harvest.",
    "By late summer you should be eating something from the garden most days.",
    "Start with the soil this month and the rest will follow.",
    "Above all, keep it small enough that it stays a pleasure rather than a chore.",
]


def reply_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def candidate(tokenizer, rng: random.Random) -> str:
    """Markdown of REPLY_TOKENS tokens: an opening paragraph, a list, a middle paragraph and a closing sentence."""
    target = rng.randint(*REPLY_TOKENS)
    opening, items, middle = [rng.choice(OPENINGS)], rng.sample(ITEMS, 3), rng.sample(MIDDLES, 1)
    closing = rng.choice(CLOSINGS)
    spare = [("item", i) for i in ITEMS if i not in items] + [("middle", m) for m in MIDDLES if m not in middle]
    rng.shuffle(spare)
    text = lambda: " ".join(opening) + "\n\n" + "\n".join(f"- {i}" for i in items) + "\n\n" + " ".join(middle) \
        + " " + closing  # noqa: E731
    while spare and reply_tokens(tokenizer, text()) < target:
        kind, piece = spare.pop()
        (items if kind == "item" else middle).append(piece)
        if reply_tokens(tokenizer, text()) > REPLY_TOKENS[1]:
            (items if kind == "item" else middle).pop()
    return text()


def conversation(tokenizer, template: str, prompt_tokens: int, seed: int) -> tuple[list[dict], list[str], int]:
    """Alternating user and assistant turns, ending with a user turn, of at least `prompt_tokens` RM tokens before
    the reply; N candidate replies; the conversation's length in RM tokens."""
    rng = random.Random(seed)
    questions = QUESTIONS[:]
    messages = [{"role": "user", "content": questions.pop(0)}]
    length = lambda: reward_inputs(tokenizer, template, messages, [""], True, 10**6)[0].reply_start  # noqa: E731
    while length() < prompt_tokens:
        if not questions:
            questions = QUESTIONS[1:]
        messages += [{"role": "assistant", "content": " ".join(rng.sample(ANSWERS, rng.randint(4, 7)))},
                     {"role": "user", "content": questions.pop(0)}]
    return messages, [candidate(tokenizer, rng) for _ in range(N)], length()


def rows_of(candidates: list[str]) -> list[str]:
    """The texts `probe` scores, in its order: each candidate, then its distinct changed variants.

    The refusal edit gives every candidate the same text: 7 of the 88 rows repeat another candidate's (`probe`
    scores each, as the baseline does).
    """
    rows = []
    for text in candidates:
        rows += [text, *dict.fromkeys(v for v in (edit.apply(text) for edit in EDITS.values()) if v != text)]
    return rows


def main() -> None:
    before = cpu_snapshot()
    args = parse_args(__doc__, prompt_tokens=(int, 600, "RM tokens of conversation before the reply"),
                      seed=(int, 0, "seed for the conversation and candidates"))
    cuda = args.device == "cuda"
    rm = reward_model(args.device)
    model, tokenizer, preset = rm.model, rm.tokenizer, rm.preset
    edits = list(EDITS.values())
    messages, candidates, prompt_len = conversation(tokenizer, reward_template(preset.template), args.prompt_tokens,
                                                    args.seed)
    start = time.perf_counter()
    rows = rows_of(candidates)
    t_edits = time.perf_counter() - start
    assert len(rows) == N * (len(edits) + 1), f"{len(rows)} rows: an edit left a candidate as it was, or two agreed"
    encoded = reward_inputs(tokenizer, reward_template(preset.template), messages, rows, preset.add_bos,
                            preset.max_length)
    reply = [reply_tokens(tokenizer, text) for text in candidates]
    row_lengths = [len(e.ids) for e in encoded]
    print(f"# bench_probes on {machine()}; RM {'Llama-2-7B shape, 4-bit' if cuda else 'hidden 256, 4 layers, fp32'}; "
          f"median of {args.repeats}")
    print(f"conversation: {len(messages)} turns, {prompt_len} tokens; {N} candidates of {min(reply)}-{max(reply)} "
          f"tokens; {len(rows)} rows ({N} + {N} x {len(edits)} edits) of {min(row_lengths)}-{max(row_lengths)} "
          f"tokens; truncated: {sum(e.truncated for e in encoded)}; the edits took {1e3 * t_edits:.0f} ms")

    spent = time_forward(model, args.device)
    baseline = lambda: [score(rm, messages, [text]).rewards[0] for text in rows]  # noqa: E731
    probe = lambda: probes.probe(rm, messages, candidates, edits)  # noqa: E731
    alone = baseline()  # the check's runs are also the warm-up
    together = [r for c in probe()["candidates"] for r in [c["reward"], *(e["reward"] for e in c["edits"])]]
    diff = max(abs(a - b) for a, b in zip(alone, together, strict=True))
    print(f"max |one call per variant - probe| reward: {diff:.2e} over {len(together)} rewards")
    if not cuda:  # fp32: the same numbers; 4-bit bf16 only approximately
        assert diff < TOLERANCE, "the probe's rewards differ from scoring each variant alone"

    def timed(fn):
        def run():
            spent[:] = [0.0, 0]
            seconds = clock(fn, args.device)
            return seconds, spent[0], float(spent[1])
        return run

    t = medians({"baseline": timed(baseline), "probe": timed(probe)}, args.repeats, warmup=0)
    out = []
    for name, label, calls in (("baseline", "one `score()` per variant", f"{len(rows)} calls"),
                               ("probe", "`probe()`, batched", "1 call")):
        seconds, forward, positions = t[name]
        out.append([label, calls, seconds, len(rows) / seconds, forward, f"{forward / seconds:.0%}",
                    round(1e3 * (seconds - forward)), int(positions), t["baseline"][0] / seconds])
    print(table(["method", "calls", "s", "variants/s", "forward s", "forward share", "outside forward ms",
                 "positions run", "speed-up"], out))
    print(f"speed-up one call per variant / probe: {t['baseline'][0] / t['probe'][0]:.2f}x; "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    report_contention(before)


if __name__ == "__main__":
    main()
