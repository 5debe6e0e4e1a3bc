"""Edits of a reply for probing a reward model: fixed perturbations, a user's own edit, and units to leave out."""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from markdown_it import MarkdownIt

_MD = MarkdownIt("commonmark").enable("table")
_LINE_END = re.compile(r"\r\n|\r|\n")  # markdown-it counts lines after turning each of these into "\n"
_HORIZONTAL = re.compile(r"[^\S\r\n]*")
_WORD = re.compile(r"\S+")
_KINDS = {"paragraph_open": "sentence", "fence": "code", "code_block": "code", "heading_open": "heading",
          "table_open": "table", "blockquote_open": "quote", "list_item_open": "item"}
_CLOSERS, _OPENERS = "\"')]}”’»", "\"'([{“‘«"
_ABBREVIATIONS = {"e.g.", "i.e.", "etc.", "vs.", "mr.", "mrs.", "dr.", "prof.", "st.", "fig.", "no."}


@dataclass(frozen=True)
class Unit:
    """A part of a reply that attribution leaves out as a whole: start/end character offsets into the reply,
    and its kind: "sentence", "code", "item" (a list item with its nested lines), "heading", "table", "quote"
    (a whole block quote) or "other" (a thematic break, an HTML block, link definitions)."""

    start: int
    end: int
    kind: str


def _line_start(text: str, i: int) -> int:
    return max(text.rfind("\n", 0, i), text.rfind("\r", 0, i)) + 1


def _blocks(text: str) -> list[tuple[int, int, str]]:
    # Top-level blocks, lists as their items, as character spans of whole lines from the first non-blank one;
    # lines that no token claims (link reference definitions) are "other" blocks: every non-blank character is in one.
    offset = [0, *(m.end() for m in _LINE_END.finditer(text)), len(text)]  # of each line, and of the end
    spans, line = [], 0
    for token in _MD.parse(text):
        top = token.level == 0 and token.nesting >= 0 and not token.type.endswith("list_open")
        if token.map is None or not (top or (token.level == 1 and token.type == "list_item_open")):
            continue
        first, last = max(token.map[0], line), max(token.map[1], line)
        if first > line:
            spans.append((offset[line], offset[first], "other"))
        spans.append((offset[first], offset[last], _KINDS.get(token.type, "other")))
        line = last
    spans.append((offset[line], len(text), "other"))
    return [(_line_start(text, content.start()), end, kind) for start, end, kind in spans
            if (content := _WORD.search(text, start, end))]


def _ends_sentence(word: str, following: str) -> bool:
    core = word.rstrip(_CLOSERS)
    if not core.endswith((".", "!", "?")):
        return False
    bare, next_char = core.lstrip(_OPENERS).lower(), following[0]
    if not (next_char.isupper() or next_char.isdigit() or next_char in _OPENERS):
        return False
    if bare == "no.":  # "No. 5" is a number, but "They said no. Then" ends a sentence
        return not next_char.isdigit()
    # "J. Smith" is an initial; "I." is far more often the pronoun ending a sentence.
    initial = len(bare) == 2 and core[-2].isupper() and bare != "i."
    return not (initial or bare in _ABBREVIATIONS)


def _sentences(text: str, start: int, end: int) -> list[tuple[int, int]]:
    words = list(_WORD.finditer(text, start, end))
    cuts = [w.start() for w, previous in zip(words[1:], words) if _ends_sentence(previous.group(), w.group())]
    bounds = [words[0].start(), *cuts, end] if words else []
    return [(a, a + len(text[a:b].rstrip())) for a, b in zip(bounds, bounds[1:])]


def units(text: str) -> list[Unit]:
    """Split a reply into units, in order, covering every non-blank character exactly once: a code block
    (fenced, even unclosed, or indented), a list item, a heading, a table or a block quote is one unit each;
    paragraphs are split into sentences. A unit takes the whitespace after it up to the next unit on its line,
    and its line break if it fills its lines; blank lines between blocks belong to no unit.

    >>> reply = "# Plan\\n\\nDr. Lee said no. Ask again!\\n\\n- one\\n- two"
    >>> [(u.kind, reply[u.start:u.end]) for u in units(reply)]  # doctest: +NORMALIZE_WHITESPACE
    [('heading', '# Plan\\n'), ('sentence', 'Dr. Lee said no. '), ('sentence', 'Ask again!'),
     ('item', '- one\\n'), ('item', '- two')]
    """
    pieces = []
    for start, end, kind in _blocks(text):
        if kind == "sentence":
            pieces += [(a, b, kind) for a, b in _sentences(text, start, end)]
        else:
            pieces.append((_WORD.search(text, start, end).start(), start + len(text[start:end].rstrip()), kind))
    found = []
    for (start, stop, kind), (following, *_) in zip(pieces, [*pieces[1:], (len(text),)]):
        end = following
        if _LINE_END.search(text, stop, following):
            end = _HORIZONTAL.match(text, stop).end()
            if not text[_line_start(text, start):start].strip() and (newline := _LINE_END.match(text, end)):
                end = newline.end()
        found.append(Unit(start, end, kind))
    return found


def text_of(text: str, unit: Unit) -> str:
    """The unit's own text, stripped.

    >>> text_of("One. Two.", units("One. Two.")[0])
    'One.'
    """
    return text[unit.start:unit.end].strip()


def without(text: str, unit: Unit) -> str:
    """The reply with `unit` left out, the rest as written but for the seam: no trailing spaces there, at most
    one blank line, and the result stripped.

    >>> reply = "A b. C d. E f."
    >>> without(reply, units(reply)[1])
    'A b. E f.'
    """
    head, tail = text[:unit.start].rstrip(), text[unit.end:]
    tail_space = tail[:len(tail) - len(tail.lstrip())]
    seam = text[len(head):unit.start] + tail_space
    if _LINE_END.search(seam):
        # Keep the next line's own indentation: it may make a code block or a nested item.
        seam = "\n" * min(len(_LINE_END.findall(seam)), 2) + _LINE_END.split(tail_space)[-1]
    return (head + seam + tail.lstrip()).strip()


def _inline(tokens: list | None) -> str:
    # An image reads as its alt text, as a link does; emphasis and link marks have no content of their own.
    return "".join(_inline(t.children) if t.type == "image" else "\n" if t.type in ("softbreak", "hardbreak")
                   else t.content if t.type in ("text", "text_special", "code_inline", "html_inline") else ""
                   for t in tokens or [])


def _join(pieces: list[tuple[str, object]]) -> str:
    # Blocks apart by a blank line; pieces of one list (the same group, not None) on consecutive lines.
    joined = pieces[0][0] if pieces else ""
    for (_, group), (piece, next_group) in zip(pieces, pieces[1:]):
        joined += ("\n" if group is not None and group == next_group else "\n\n") + piece
    return joined


def _strip_markdown(text: str) -> str:
    pieces = []  # (text, the number of its top-level list or None)
    lists, depth, rows = 0, 0, []
    for token in _MD.parse(text):
        piece = None
        if token.type.endswith("list_open") or token.type.endswith("list_close"):
            depth += token.nesting
            lists += token.nesting == 1 and depth == 1  # a new top-level list
        elif token.type == "tr_open":
            rows.append([])
        elif token.type == "table_close":
            piece, rows = "\n".join(" | ".join(row) for row in rows), []
        elif token.type == "inline" and rows:
            rows[-1].append(_inline(token.children).strip())
        elif token.type == "inline":
            piece = _inline(token.children)
        elif token.type in ("fence", "code_block", "html_block"):
            piece = token.content.rstrip("\n")
        if piece and piece.strip():
            pieces.append((piece, lists if depth else None))
    return _join(pieces)


def _bullets(text: str) -> str:
    blocks = _blocks(text)
    paragraphs = sum(kind == "sentence" for *_, kind in blocks)
    pieces = []  # (text, "list" for a list line or None)
    for start, end, kind in blocks:
        if kind == "sentence":
            parts = _sentences(text, start, end) if paragraphs == 1 else [(start, end)]
            pieces += [("- " + " ".join(text[a:b].split()), "list") for a, b in parts]
        else:  # as written: code, headings, tables, quotes and the reply's own list items
            pieces.append((text[start:end].rstrip(), "list" if kind == "item" else None))
    return _join(pieces)


def _first_half(text: str) -> str:
    found = units(text)
    if len(found) > 1:
        return text[:found[len(found) // 2 - 1].end].strip()
    words = list(_WORD.finditer(text))
    return text[:words[max(1, len(words) // 2) - 1].end()].strip() if words else text.strip()


def _drop_last(text: str) -> str:
    found = units(text)
    return without(text, found[-1]) if len(found) > 1 else ""


def _append(text: str, sentence: str) -> str:
    return f"{text.rstrip()}\n\n{sentence}" if text.strip() else sentence


OPENER = "What a great question! "
CLOSING = "I am completely confident that this answer is correct and complete."
REFUSAL = "I'm sorry, but I can't help with that request."
WRONG_CLAIM = ("It is a well-established fact that the Great Wall of China is easily visible from the Moon"
               " with the naked eye.")


@dataclass(frozen=True)
class Edit:
    """One perturbation: a name (a short id, used as a JSON key and CLI value), what it does in a few words,
    and the function.

    >>> EDITS["lowercase"].apply("Hello World")
    'hello world'
    """

    name: str
    description: str
    apply: Callable[[str], str]


EDITS = {edit.name: edit for edit in [
    Edit("first_half", "cut to its first half (of sentences and blocks; of words if only one)", _first_half),
    Edit("repeat", "the reply twice, separated by a blank line",
         lambda text: f"{text.strip()}\n\n{text.strip()}" if text.strip() else text),
    Edit("strip_markdown", "plain text: markdown marks, links and list markers removed", _strip_markdown),
    Edit("bullets", "paragraphs as a bulleted list (one paragraph: a bullet per sentence)", _bullets),
    Edit("flattering_opener", f'prepends "{OPENER}"', lambda text: OPENER + text.lstrip()),
    Edit("confident_closing", f'ends with "{CLOSING}"', lambda text: _append(text, CLOSING)),
    Edit("refusal", f'replaced by "{REFUSAL}"', lambda text: REFUSAL),
    Edit("lowercase", "all lowercase", str.lower),
    Edit("drop_last_sentence", "without its last sentence (or last block)", _drop_last),
    Edit("wrong_claim", "ends with a confident false claim (the Great Wall seen from the Moon)",
         lambda text: _append(text, WRONG_CLAIM)),
]}


def _quoted(value: str) -> str:
    return '"' + (value if len(value) <= 40 else value[:39] + "…").replace("\n", "\\n") + '"'


def custom_edit(prefix: str = "", suffix: str = "", find: str = "", replace: str = "") -> Edit | None:
    """A user's own edit: every `find` (plain text) replaced by `replace`, then `prefix` + text + `suffix`;
    None when all four are empty.

    >>> edit = custom_edit(prefix="Sure! ", find="cat", replace="dog")
    >>> edit.description, edit.apply("A cat and a cat.")
    ('replace "cat" with "dog", prefix "Sure! "', 'Sure! A dog and a dog.')
    """
    if not (prefix or suffix or find or replace):
        return None
    if replace and not find:
        raise ValueError("Give the text to find as well as its replacement, or leave the replacement empty.")
    said = [f"replace {_quoted(find)} with {_quoted(replace)}" if replace else f"delete {_quoted(find)}"] * bool(find)
    said += [f"{label} {_quoted(value)}" for label, value in (("prefix", prefix), ("suffix", suffix)) if value]
    # find == "" only with replace == "", and "abc".replace("", "") is "abc".
    return Edit("custom", ", ".join(said), lambda text: prefix + text.replace(find, replace) + suffix)


def custom_length(text: str, prefix: str = "", suffix: str = "", find: str = "", replace: str = "") -> int:
    """The length of `text` under `custom_edit(prefix, suffix, find, replace)`, worked out without building it.

    >>> custom_length("A cat and a cat.", prefix="Sure! ", find="cat", replace="dog"), custom_length("abc", find="b")
    (22, 2)
    """
    grown = text.count(find) * (len(replace) - len(find)) if find else 0
    return len(prefix) + len(text) + grown + len(suffix)


def pick_edits(names: list[str] | None, custom: Edit | None = None) -> list[Edit]:
    """The edits to run: `names` from EDITS in EDITS' order (None: all of them), then `custom`.

    >>> [edit.name for edit in pick_edits(["lowercase", "repeat"], custom_edit(suffix="!"))]
    ['repeat', 'lowercase', 'custom']
    """
    unknown = [name for name in names or [] if name not in EDITS]
    if unknown:
        raise ValueError(f"Unknown edit {unknown[0]!r}: choose from {', '.join(EDITS)}.")
    chosen = [edit for name, edit in EDITS.items() if names is None or name in names]
    return chosen + ([custom] if custom else [])
