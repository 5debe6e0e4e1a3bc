"""Streaming the text of N candidates: re-decoding every reply at every step vs `detokenize.TextStream`."""
from __future__ import annotations

import torch

from starling_demo.detokenize import TextStream
from starling_demo.loading import load_tokenizer
from starling_demo.tiny import tiny_checkpoint

from .common import clock, cpu_snapshot, machine, medians, parse_args, random_ids, report_contention, table, verdict

N = 8
WORDS = "the a model reply answer reward token long short good best people water light house city".split()


def replies(length: int, tokenizer) -> list[list[int]]:
    """N replies of `length` ids, of real text so that every step adds readable characters."""
    generator = torch.Generator().manual_seed(length)
    texts = [" ".join(WORDS[i % len(WORDS)] for i in random_ids(length, generator)) for _ in range(N)]
    return [tokenizer(t, add_special_tokens=False)["input_ids"][:length] for t in texts]


def redecode(tokenizer, rows: list[list[int]]) -> list[str]:
    """What the engine did before: decode every reply whole after each step."""
    for step in range(1, len(rows[0]) + 1):
        texts = tokenizer.batch_decode([row[:step] for row in rows], skip_special_tokens=True)
    return texts


def stream(tokenizer, rows: list[list[int]]) -> list[str]:
    streams = [TextStream(tokenizer) for _ in rows]
    for step in range(len(rows[0])):
        for text_stream, row in zip(streams, rows):
            text_stream.push(row[step])
    return [s.text for s in streams]


def main() -> None:
    before = cpu_snapshot()
    args = parse_args(__doc__)
    tokenizer = load_tokenizer(tiny_checkpoint("lm"))  # the real Mistral tokenizer, as Starling-LM's
    print(f"# bench_streaming on {machine()}; N={N} replies, median of {args.repeats}")
    out, met = [], []
    for length in (256, 1024, 2048):
        rows = replies(length, tokenizer)
        assert stream(tokenizer, rows) == redecode(tokenizer, rows), "the streamed text differs"
        t = medians({"redecode": lambda: clock(lambda: redecode(tokenizer, rows), "cpu"),
                     "stream": lambda: clock(lambda: stream(tokenizer, rows), "cpu")}, args.repeats)
        out.append([length, 1e3 * t["redecode"], 1e3 * t["stream"], 1e3 * t["stream"] / length,
                    t["redecode"] / t["stream"]])
        if length == 2048:
            met.append(verdict("2048 tokens: stream vs re-decoding", t["redecode"] / t["stream"], ">=", 10))
    print(table(["tokens per reply", "re-decode ms", "stream ms", "stream ms/step", "re-decode/stream"], out))
    print(f"all streaming targets met: {all(met)}")
    report_contention(before)


if __name__ == "__main__":
    main()
