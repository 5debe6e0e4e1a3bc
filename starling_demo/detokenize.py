"""Text of a growing list of token ids, decoding only its last few tokens per step (streaming, reward traces)."""
from __future__ import annotations

from dataclasses import dataclass, field

# A character split over byte tokens decodes as U+FFFD until its last byte arrives (UTF-8 needs at most 4
# bytes, after a word-start token). Past this many held tokens the bytes are garbage: show them.
MAX_HELD = 6


@dataclass
class TextStream:
    """Decoded text of ids fed one at a time, as vLLM detokenizes: decode from `prefix` (a token already
    shown, so that the next token keeps its leading space) and keep what goes past the text up to `read`.

    >>> class Chars:  # a tokenizer whose tokens are characters
    ...     def decode(self, ids, skip_special_tokens=True): return "".join(map(chr, ids)).lstrip()
    >>> stream = TextStream(Chars())
    >>> [stream.push(i) for i in map(ord, " a b")], stream.text
    (['', 'a', ' ', 'b'], 'a b')
    """

    tokenizer: object
    ids: list[int] = field(default_factory=list)
    text: str = ""
    prefix: int = 0
    read: int = 0

    def push(self, token: int) -> str:
        """Add one token; return the text it completes (empty while a character is unfinished)."""
        self.ids.append(token)
        return self._advance(final=False)

    def flush(self) -> str:
        """The text of tokens still held back, even if they end inside a character: the reply is over."""
        return self._advance(final=True)

    def _advance(self, final: bool) -> str:
        decode = self.tokenizer.decode
        shown = decode(self.ids[self.prefix: self.read], skip_special_tokens=True)
        new = decode(self.ids[self.prefix:], skip_special_tokens=True)
        held = new.endswith("\ufffd") and len(self.ids) - self.read < MAX_HELD
        if len(new) <= len(shown) or (held and not final):
            return ""
        piece = new[len(shown):]
        self.prefix, self.read, self.text = self.read, len(self.ids), self.text + piece
        return piece


def token_texts(tokenizer, ids: list[int]) -> list[str]:
    """The text each token adds to the decoded string; a token inside an unfinished character adds "".

    Joined, they give `tokenizer.decode(ids)`, in time linear in the number of tokens.
    """
    stream = TextStream(tokenizer)
    texts = [stream.push(token) for token in ids]
    if texts:
        texts[-1] += stream.flush()
    return texts
