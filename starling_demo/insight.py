"""Pure helpers that turn reward-model scores into rankings, probabilities, metrics and exports."""

import json
import math
import warnings

import numpy as np
from scipy import stats


def _sigmoid(x: float) -> float:
    # Branching keeps exp() from overflowing for large gaps of either sign.
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def win_probabilities(rewards: list[float]) -> list[list[float]]:
    """Bradley-Terry matrix P[i][j] = sigmoid(r_i - r_j), the chance i beats j.

    >>> win_probabilities([1.0, 0.0])[0]
    [0.5, 0.7310585786300049]
    """
    return [[_sigmoid(ri - rj) for rj in rewards] for ri in rewards]


# benchmarks/RESULTS.md, "Batch invariance": each of 8 candidates scored alone and among the 8 in padded batches, the
# largest reward difference (true 7B shapes on an NVIDIA H200; fp32 on the CPU at a small model's shapes). The app's
# scoring no longer moves a reward so; a gap that small is still the kernels' rounding, not the model's preference.
BATCH_NOISE = {"4bit": 0.189, "bf16": 0.116}
SHOWN_DIGIT = 0.0005  # rewards are shown with 3 decimals: half the last one
NOISE_SOURCE = "benchmarks/RESULTS.md, batch invariance"
PRECISION_NAMES = {"4bit": "4-bit", "bf16": "bf16", "fp16": "fp16", "fp32": "fp32"}


def _machine(device: str) -> str:
    """Which kind of machine a device string names, for the measured figures: "cpu", "gpu", "mps" or "served"."""
    device = device.strip().lower()
    if device in ("cpu", "mps"):
        return device
    return "gpu" if device.startswith("cuda") else "served"  # anything else is a server's name or URL


def tie_margin(device: str, precision: str) -> tuple[float, str]:
    """The reward difference below which two candidates are a tie on `device` in `precision`, and where it comes from.

    >>> tie_margin("cuda:0", "4bit")[0], tie_margin("cpu", "fp32")[0], tie_margin("mps", "fp16")[0]
    (0.189, 0.0005, 0.189)
    >>> tie_margin("cuda", "bf16")[1]
    "0.116: the largest change of a reward with its batch measured in bf16 on a GPU, the size of its kernels' summation-order noise (H200; benchmarks/RESULTS.md, batch invariance)."
    """
    machine, name = _machine(device), PRECISION_NAMES.get(precision, precision)
    if machine == "cpu" and precision == "fp32":
        # The measured noise is far below what the table shows, so the shown digits set the margin.
        return SHOWN_DIGIT, (f"{SHOWN_DIGIT:g}: half the last shown digit; on CPU in fp32 padded batches moved a "
                             f"reward by at most 4.2e-7 ({NOISE_SOURCE}).")
    if machine == "gpu" and precision in BATCH_NOISE:
        margin = BATCH_NOISE[precision]
        return margin, (f"{margin:g}: the largest change of a reward with its batch measured in {name} on a GPU, "
                        f"the size of its kernels' summation-order noise (H200; {NOISE_SOURCE}).")
    # Unmeasured set-ups (fp16 or fp32 on a GPU, a 4-bit or bf16 CPU, MPS, a served model) could be as noisy as
    # the noisiest one measured, so they take that.
    worst = max(BATCH_NOISE, key=BATCH_NOISE.get)
    where = {"cpu": "on CPU", "gpu": "on a GPU", "mps": "on MPS", "served": "on a served model"}[machine]
    return BATCH_NOISE[worst], (f"{BATCH_NOISE[worst]:g}: not measured for {name} {where}; the largest change of a "
                                f"reward with its batch measured on a GPU ({PRECISION_NAMES[worst]}, H200; "
                                f"{NOISE_SOURCE}).")


def ranking(rewards: list[float]) -> list[int]:
    """Candidate indices best first; ties go to the lower index.

    >>> ranking([0.5, 2.0, 0.5])
    [1, 0, 2]
    """
    # sorted() is stable, so equal rewards keep their original order.
    return sorted(range(len(rewards)), key=lambda i: -rewards[i])


def human_rank(order: list[int] | None, i: int) -> int | None:
    """Candidate i's 1-based place in a person's ranking `order` (0-based, best first), or None if unranked.

    >>> human_rank([2, 0], 0), human_rank([2, 0], 1)
    (2, None)
    """
    return order.index(i) + 1 if order and i in order else None


def plackett_luce_probability(rewards: list[float], order: list[int] | None = None) -> float:
    """Probability of `order` (best first) under Plackett-Luce with scores exp(r).

    P = prod_k exp(r[o_k]) / sum_{m>=k} exp(r[o_m]); `order` defaults to ranking(rewards).

    >>> round(plackett_luce_probability([1000.0, 0.0]), 6)
    1.0
    """
    order = ranking(rewards) if order is None else list(order)
    if sorted(order) != list(range(len(rewards))):
        raise ValueError(f"order must be a permutation of 0..{len(rewards) - 1}, got {order}")
    scores = np.asarray([rewards[i] for i in order], dtype=float)
    # Log space so that rewards in the hundreds do not overflow exp().
    tails = np.logaddexp.accumulate(scores[::-1])[::-1]
    return float(np.exp(np.sum(scores - tails)))


def _correlation(fn, x: list[float], y: list[float]) -> float | None:
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length: {len(x)} != {len(y)}")
    if len(x) < 2:
        return None
    # Constant input is an expected case here (None), not something to warn about.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = fn(x, y)[0]
    return None if math.isnan(value) else float(value)


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman rank correlation (average ranks for ties); None if undefined.

    >>> spearman([1, 2, 3], [30, 20, 10])
    -1.0
    """
    return _correlation(stats.spearmanr, x, y)


def kendall_tau(x: list[float], y: list[float]) -> float | None:
    """Kendall tau-b rank correlation; None if undefined.

    >>> round(kendall_tau([1, 2, 3], [1, 3, 2]), 6)
    0.333333
    """
    return _correlation(stats.kendalltau, x, y)


def top1_agreement(rewards_a: list[float], rewards_b: list[float]) -> bool:
    """Whether both score lists pick the same best candidate.

    >>> top1_agreement([1, 3, 2], [0, 9, 5])
    True
    """
    return ranking(rewards_a)[0] == ranking(rewards_b)[0]


def length_bias(rewards: list[float], lengths: list[int]) -> dict:
    """How much the rewards follow reply length (in tokens).

    `longest_wins` is True when the top-reward reply is among the longest ones.

    >>> length_bias([0.1, 2.0, 1.0], [10, 50, 30])
    {'spearman': 1.0, 'longest_wins': True, 'best': 1, 'longest': 1}
    """
    best = ranking(rewards)[0]
    longest = ranking(lengths)[0]
    # A tie for the longest reply still counts as a win for length.
    return {"spearman": spearman(lengths, rewards), "longest_wins": lengths[best] == lengths[longest],
            "best": best, "longest": longest}


def length_penalised(rewards: list[float], lengths: list[int], alpha: float) -> list[float]:
    """Rewards with a length penalty: r_i - alpha * lengths_i / 100.

    alpha is the reward given up per 100 reply tokens.

    >>> length_penalised([2.0, 1.0], [200, 50], 0.5)
    [1.0, 0.75]
    """
    return [r - alpha * n / 100 for r, n in zip(rewards, lengths, strict=True)]


def best_of_n(rewards: list[float], lengths: list[int] | None = None, alpha: float = 0.0) -> int:
    """Index picked by best-of-n on the (optionally length-penalised) rewards.

    >>> best_of_n([2.0, 1.0], [200, 50], alpha=1.0)
    1
    """
    scores = rewards if lengths is None else length_penalised(rewards, lengths, alpha)
    return ranking(scores)[0]


def turn_insight(turn: dict, tokens: list[list[str]], alpha: float = 0.0) -> dict:
    """Every figure the insight panels show for a scored turn, as plain JSON (the `/insight` endpoint); `tokens` are
    the texts of each candidate's reply tokens, beside the turn's "traces".

    >>> turn = {"rewards": [0.0, 1.0], "lengths": [1, 300], "traces": [[0.1], [0.2]]}
    >>> facts = turn_insight(turn, [["a"], ["b"]], alpha=1.0)
    >>> facts["ranking"], facts["length_bias"]["longest_wins"], facts["length_penalised_best"]
    ([1, 0], True, 0)
    """
    rewards, lengths = turn["rewards"], turn["lengths"]
    facts = {
        "rewards": rewards,
        "ranking": ranking(rewards),
        "readout": turn.get("readout"),
        "rm_format": turn.get("rm_format"),
        "win_probabilities": win_probabilities(rewards),
        "plackett_luce": plackett_luce_probability(rewards),
        "length_bias": length_bias(rewards, lengths),
        "alpha": alpha,
        "length_penalised_rewards": length_penalised(rewards, lengths, alpha),
        "length_penalised_best": best_of_n(rewards, lengths, alpha),
        "traces": [{"tokens": t, "values": v} for t, v in zip(tokens, turn["traces"], strict=True)],
    }
    if turn.get("rewards2"):
        facts["comparison"] = {"rm": turn.get("rm"), "rm2": turn.get("rm2"), "rewards2": turn["rewards2"],
                               "kendall_tau": kendall_tau(rewards, turn["rewards2"]),
                               "top1_agreement": top1_agreement(rewards, turn["rewards2"])}
    return facts


def _jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def pairs_jsonl(turns: list[dict]) -> str:
    """Preference pairs: each turn's top-reward candidate against every other one, with the seed the turn used.

    A pair whose two replies are the same text (greedy decoding makes every candidate the same) or have the same
    reward states no preference, so it is left out.

    >>> turn = {"messages": [], "candidates": ["a", "b", "b"], "rewards": [0.0, 1.0, 1.0], "lm": "L", "rm": "R",
    ...         "seed": 7}
    >>> pairs_jsonl([turn])
    '{"messages": [], "chosen": "b", "rejected": "a", "chosen_reward": 1.0, "rejected_reward": 0.0, "lm": "L", "rm": "R", "seed": 7}\\n'
    """
    records = []
    for turn in turns:
        candidates, rewards = turn["candidates"], turn["rewards"]
        if len(candidates) < 2:
            continue
        best = ranking(rewards)[0]
        records += [
            {"messages": turn["messages"], "chosen": candidates[best], "rejected": candidates[i],
             "chosen_reward": rewards[best], "rejected_reward": rewards[i],
             "lm": turn.get("lm"), "rm": turn.get("rm"), "seed": turn.get("seed")}
            for i in range(len(candidates))
            if i != best and candidates[i] != candidates[best] and rewards[i] != rewards[best]
        ]
    return _jsonl(records)


def shared_ranks(texts: list[str], rewards: list[float]) -> list[int]:
    """1-based ranks by reward in which copies of one text, and equal rewards, share a rank (1, 2, 2, 4 ranking).

    Copies of a text score alike up to numerical noise, so each takes the reward of its best-scored copy:
    no rank says one copy beats another.

    >>> shared_ranks(["a", "b", "a", "c"], [1.0, 2.0, 1.1, 1.0])
    [2, 1, 2, 4]
    """
    best: dict[str, float] = {}
    for text, reward in zip(texts, rewards, strict=True):
        best[text] = max(reward, best.get(text, reward))
    scores = [best[text] for text in texts]
    return [1 + sum(other > score for other in scores) for score in scores]


def nectar_prompt(messages: list[dict]) -> str:
    """Render a conversation the way Nectar prompts are written.

    A system message, if any, goes first as plain text, as in Anthropic HH.

    >>> nectar_prompt([{"role": "user", "content": "Hi"}])
    '\\n\\nHuman: Hi\\n\\nAssistant:'
    """
    speaker = {"user": "\n\nHuman: ", "assistant": "\n\nAssistant: ", "system": ""}
    return "".join(speaker[m["role"]] + m["content"] for m in messages) + "\n\nAssistant:"


def nectar_jsonl(turns: list[dict]) -> str:
    """One Nectar-style record per turn: answers in candidate order with 1-based reward ranks, and the settings.

    Identical answers (e.g. every candidate of a greedy turn) are all kept, as a K-wise ranking lists every
    answer, and share a rank (`shared_ranks`), as do equal rewards; each keeps its own reward as scored.
    The settings' seed is the one the turn used, also when the settings asked for a random one. A turn judged
    blind gives each answer the person's `human_rank` too (None for one they left unranked).

    >>> turn = {"messages": [{"role": "user", "content": "Hi"}], "candidates": ["a", "b", "a"],
    ...         "rewards": [0.0, 1.0, 0.01], "lengths": [1, 1, 1], "chosen": 1, "settings": {"seed": None}, "seed": 3}
    >>> record = json.loads(nectar_jsonl([turn]))
    >>> [a["rank"] for a in record["answers"]], record["answers"][0], record["settings"]
    ([2, 1, 2], {'answer': 'a', 'rank': 2, 'reward': 0.0, 'length': 1, 'chosen': False}, {'seed': 3})
    """
    records = []
    for turn in turns:
        rewards, candidates = turn["rewards"], turn["candidates"]
        ranks = shared_ranks(candidates, rewards)
        human = turn.get("human")
        answers = [
            {"answer": text, "rank": ranks[i], "reward": rewards[i],
             "length": turn["lengths"][i], "chosen": i == turn.get("chosen")}
            | ({"human_rank": human_rank(human, i)} if human else {})
            for i, text in enumerate(candidates)
        ]
        settings = dict(turn.get("settings") or {})
        if turn.get("seed") is not None:  # the settings hold None for a random seed; the turn holds the one drawn
            settings["seed"] = turn["seed"]
        records.append({
            "prompt": nectar_prompt(turn["messages"]),
            "messages": turn["messages"],
            "answers": answers,
            "settings": settings,
            "lm": turn.get("lm"),
            "rm": turn.get("rm"),
            "num_responses": len(answers),
        })
    return _jsonl(records)
