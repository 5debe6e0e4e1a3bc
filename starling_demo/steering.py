"""Steer a tiny random LM towards a fixed answer, so tests and benchmarks stream real-looking text of real lengths
through the real generation path (sampling, caching, detokenising), not noise.

A logit bias on the answer's next token at each step: strong enough that the answer comes through, weak enough
that sampling sometimes takes another token, so N candidates differ here and there as real ones do.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from .generation import EOT_ID

# What Starling writes: a heading, prose, lists, a code block and a table (336 tokens; `answer` repeats it).
MARKDOWN_ANSWER = """## Starlings in brief

The **common starling** (*Sturnus vulgaris*) is a medium-sized passerine known for its glossy plumage and
its remarkable vocal mimicry. Here is an overview:

1. **Range**: native to Europe and western Asia, introduced to North America, Australia and South Africa.
2. **Diet**: insects and larvae in spring, fruit and seeds in autumn.
3. **Behaviour**: huge winter flocks, called *murmurations*, that wheel over roosts at dusk.

### Why murmurations work

- Each bird tracks about **seven** neighbours, not the whole flock.
- A turn spreads through the flock faster than any single bird could react.
- The shape confuses predators such as peregrine falcons.

```python
def neighbours(bird, flock, k=7):
    # The k nearest birds: the only ones a starling follows.
    return sorted(flock, key=lambda other: bird.distance(other))[1 : k + 1]
```

| Feature | Summer | Winter |
|---|---|---|
| Plumage | glossy green-purple | white-spotted |
| Bill | yellow | dark |
| Flock size | small | up to a million |

> In short: a clever, adaptable bird, admired for its song and blamed for its appetite.

"""


def answer(tokenizer, length: int, text: str = MARKDOWN_ANSWER) -> list[int]:
    """The ids of `text` repeated until it has at least `length` tokens, then cut there."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    return (ids * (length // len(ids) + 1))[:length]


@contextlib.contextmanager
def steered(model: torch.nn.Module, target: list[int], bias: float = 10.0) -> Iterator[None]:
    """While open, `model`'s last logits get `bias` added at target[step] (then at the end-of-turn token), step
    counting the decoding steps since the last prefill (a forward of more than one token).

    >>> from starling_demo.engine import Engine
    >>> from starling_demo.engine import Settings
    >>> engine = Engine("tiny", "tiny", "fp32", "cpu")
    >>> lm = engine.lm()
    >>> with steered(lm.model, answer(lm.tokenizer, 12), bias=50.0):
    ...     *_, last = engine.generate([{"role": "user", "content": "Hi"}], Settings(n=2, max_new_tokens=20, seed=1))
    >>> last.texts[0] == last.texts[1] == "## Starlings in brief\\n\\nThe **common star", last.finished
    (True, ['stop', 'stop'])
    """
    step = 0

    def bias_logits(module, args, kwargs, output):
        nonlocal step
        ids = kwargs.get("input_ids", args[0] if args else None)
        step = 0 if ids.shape[-1] > 1 else step + 1
        token = target[step] if step < len(target) else EOT_ID
        output.logits[:, -1, token] += bias
        return output

    handle = model.register_forward_hook(bias_logits, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()
