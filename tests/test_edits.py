import re

import pytest

from starling_demo.edits import EDITS, Edit, Unit, custom_edit, pick_edits, text_of, units, without

SAMPLE = ("# Tips\n\nUse a *fresh* pot. Boil `water` first.\n\n- Add [tea](http://t.ea)\n- Wait 3 min.\n\n"
          "```\nsteep()\n```")
CODE = "Run this. It prints.\n\n```python\nx = 1.5  # e.g. a float. Yes.\n\n\nprint(x)\n```\n\nThen stop. Done."
LISTS = ("Steps:\n\n- Open the lid.\n  Keep it open.\n- Pour. Wait.\n  - nested one\n\n"
         "1. First.\n   More on first.\n2. Second.")
TABLE = "Compare:\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\nSo b wins."
AWKWARD = ["", "   ", "\n\n", "```\nunclosed", "é" * 5, "1. a\n2. b", "# Title", "> quote", "---", "[x]: http://a",
           "    indented code", "A\r\nB.\r\n\r\nC", "\x00\x0c\u2028", "word " * 1000,
           "Ünïcödé. Ça va? Oui! 日本語。",
           ((SAMPLE + "\n\n" + LISTS + "\n\n") * 40)[:5000]]
SAMPLES = [SAMPLE, CODE, LISTS, TABLE, "Dr. Smith went home. He slept.", "```\nopen. Fence.\n\nstill code",
           "Title\n=====\nText.", "[ref]: http://x\n\nSee [it][ref]. Now.", "  Lead.  Two.  \n\n\n  Three.  "] + AWKWARD


def spans(text):
    return [(u.kind, text[u.start:u.end]) for u in units(text)]


def test_edit_names_in_order():
    assert list(EDITS) == ["first_half", "repeat", "strip_markdown", "bullets", "flattering_opener",
                           "confident_closing", "refusal", "lowercase", "drop_last_sentence", "wrong_claim"]
    assert all(isinstance(e, Edit) and e.name == name and e.description for name, e in EDITS.items())
    assert "What a great question! " in EDITS["flattering_opener"].description


@pytest.mark.parametrize("name, expected", [
    ("first_half", "# Tips\n\nUse a *fresh* pot. Boil `water` first."),
    ("repeat", SAMPLE + "\n\n" + SAMPLE),
    ("strip_markdown", "Tips\n\nUse a fresh pot. Boil water first.\n\nAdd tea\nWait 3 min.\n\nsteep()"),
    ("bullets", "# Tips\n\n- Use a *fresh* pot.\n- Boil `water` first.\n- Add [tea](http://t.ea)\n- Wait 3 min."
                "\n\n```\nsteep()\n```"),
    ("flattering_opener", "What a great question! " + SAMPLE),
    ("confident_closing", SAMPLE + "\n\nI am completely confident that this answer is correct and complete."),
    ("refusal", "I'm sorry, but I can't help with that request."),
    ("lowercase", "# tips\n\nuse a *fresh* pot. boil `water` first.\n\n- add [tea](http://t.ea)\n- wait 3 min."
                  "\n\n```\nsteep()\n```"),
    ("drop_last_sentence", "# Tips\n\nUse a *fresh* pot. Boil `water` first.\n\n- Add [tea](http://t.ea)\n"
                           "- Wait 3 min."),
    ("wrong_claim", SAMPLE + "\n\nIt is a well-established fact that the Great Wall of China is easily visible from the"
                             " Moon with the naked eye."),
])
def test_each_edit_on_markdown(name, expected):
    assert EDITS[name].apply(SAMPLE) == expected


def test_first_half_of_one_unit_cuts_words():
    assert EDITS["first_half"].apply("one two three four five") == "one two"
    assert EDITS["first_half"].apply("single") == "single"
    assert EDITS["first_half"].apply("A b. C d. E f.") == "A b."


def test_strip_markdown_details():
    text = ("## Head *em* __strong__\n\n> quoted **bold**\n\n1. one\n2. two\n   - sub\n\n![alt text](i.png) and "
            "[link](http://u)\n\n~~~\nkept *code*\n~~~\n\n| x | y |\n|---|---|\n| `1` | 2 |")
    assert EDITS["strip_markdown"].apply(text) == ("Head em strong\n\nquoted bold\n\none\ntwo\nsub\n\nalt text and link"
                                                   "\n\nkept *code*\n\nx | y\n1 | 2")
    assert EDITS["strip_markdown"].apply("line one\nline two  \nthree") == "line one\nline two\nthree"


def test_bullets_paragraphs_and_code():
    assert EDITS["bullets"].apply("First para\nwraps here.\n\nSecond one. Two sentences.") == (
        "- First para wraps here.\n- Second one. Two sentences.")
    assert EDITS["bullets"].apply("One. Two! Three?") == "- One.\n- Two!\n- Three?"
    assert EDITS["bullets"].apply(CODE) == ("- Run this. It prints.\n\n```python\nx = 1.5  # e.g. a float. Yes.\n\n\n"
                                            "print(x)\n```\n\n- Then stop. Done.")
    assert EDITS["bullets"].apply("1. a\n2. b") == "1. a\n2. b"


def test_drop_last_sentence_of_one_sentence_is_empty():
    assert EDITS["drop_last_sentence"].apply("Only one.") == ""
    assert EDITS["drop_last_sentence"].apply("One. Two.") == "One."


@pytest.mark.parametrize("text", AWKWARD)
def test_edits_never_raise_and_are_deterministic(text):
    for edit in EDITS.values():
        result = edit.apply(text)
        assert isinstance(result, str) and result == edit.apply(text)


def test_custom_edit():
    assert custom_edit() is None
    edit = custom_edit(prefix="Sure! ", suffix=" Hope this helps.", find="a.b", replace="X")
    assert edit.name == "custom"
    assert edit.apply("a.b and acb a.b") == "Sure! X and acb X Hope this helps."  # plain text, not a regex
    assert edit.description == 'replace "a.b" with "X", prefix "Sure! ", suffix " Hope this helps."'
    assert custom_edit(find="very ").apply("a very very big") == "a big"
    assert custom_edit(find="very ").description == 'delete "very "'
    assert custom_edit(suffix="\n\nBye").apply("Hi") == "Hi\n\nBye"
    long = custom_edit(prefix="x" * 100).description
    assert long == 'prefix "' + "x" * 39 + '…"'
    with pytest.raises(ValueError, match="find"):
        custom_edit(replace="b")


def test_pick_edits():
    assert pick_edits(None) == list(EDITS.values())
    assert [e.name for e in pick_edits(["wrong_claim", "repeat", "repeat"])] == ["repeat", "wrong_claim"]
    custom = custom_edit(prefix="P ")
    assert pick_edits([], custom) == [custom]
    assert pick_edits(None, custom)[-1] is custom
    with pytest.raises(ValueError, match="'nope'.*first_half, repeat"):
        pick_edits(["repeat", "nope"])


def test_units_sentences_and_abbreviations():
    assert [text_of(t, u) for t in ["Dr. Smith went home. He slept."] for u in units(t)] == [
        "Dr. Smith went home.", "He slept."]
    assert [k for k, _ in spans("I like e.g. apples. Yes.")] == ["sentence", "sentence"]
    assert spans("J. Smith came, i.e. late. No. 5 won. They said no. Then 3.14 left at www.x.com. \"Go.\" (Ok.)") == [
        ("sentence", "J. Smith came, i.e. late. "), ("sentence", "No. 5 won. "), ("sentence", "They said no. "),
        ("sentence", "Then 3.14 left at www.x.com. "), ("sentence", '"Go." '), ("sentence", "(Ok.)")]
    assert spans("one line.\nnext Line. Last.\n") == [("sentence", "one line.\nnext Line. "), ("sentence", "Last.")]
    assert units("") == [] and units(" \n\t\n") == []


def test_units_code_block_is_one_unit():
    # A sentence that starts mid-line keeps its line break out, so that leaving it out keeps the lines.
    assert spans(CODE) == [("sentence", "Run this. "), ("sentence", "It prints."),
                           ("code", "```python\nx = 1.5  # e.g. a float. Yes.\n\n\nprint(x)\n```\n"),
                           ("sentence", "Then stop. "), ("sentence", "Done.")]
    assert spans("Intro.\n\n```\nopen. Fence.\n\nstill code") == [("sentence", "Intro.\n"),
                                                                   ("code", "```\nopen. Fence.\n\nstill code")]
    assert spans("Intro.\n\n    code. Here.\n    more\n") == [("sentence", "Intro.\n"),
                                                              ("code", "code. Here.\n    more\n")]


def test_units_lists_heading_table():
    assert spans(LISTS) == [("sentence", "Steps:\n"), ("item", "- Open the lid.\n  Keep it open.\n"),
                            ("item", "- Pour. Wait.\n  - nested one\n"), ("item", "1. First.\n   More on first.\n"),
                            ("item", "2. Second.")]
    assert spans("# Title\nBody. More.") == [("heading", "# Title\n"), ("sentence", "Body. "), ("sentence", "More.")]
    assert spans(TABLE) == [("sentence", "Compare:\n"), ("table", "| a | b |\n|---|---|\n| 1 | 2 |\n"),
                            ("sentence", "So b wins.")]
    assert spans("> A. B.\n> C.\n\n---\n\n[r]: http://x") == [("quote", "> A. B.\n> C.\n"), ("other", "---\n"),
                                                              ("other", "[r]: http://x")]


@pytest.mark.parametrize("text", SAMPLES)
def test_units_cover_every_non_blank_character_once(text):
    found = units(text)
    assert all(isinstance(u, Unit) and u.start < u.end for u in found)
    assert all(a.end <= b.start for a, b in zip(found, found[1:]))
    assert all(not text[u.start].isspace() for u in found)  # no leading whitespace
    squeeze = re.compile(r"\s+")
    assert squeeze.sub("", "".join(text[u.start:u.end] for u in found)) == squeeze.sub("", text)


@pytest.mark.parametrize("text", SAMPLES)
def test_without_leaves_out_exactly_that_unit(text):
    squeeze = re.compile(r"\s+")
    for unit in units(text):
        rest = without(text, unit)
        assert squeeze.sub("", rest) == squeeze.sub("", text[:unit.start] + text[unit.end:])
        assert rest == rest.strip()
        if "\n\n\n" not in text:
            assert "\n\n\n" not in rest


def test_without_examples():
    text = "A b. C d. E f."
    assert [without(text, u) for u in units(text)] == ["C d. E f.", "A b. E f.", "A b. C d."]
    items = units(LISTS)
    assert without(LISTS, items[2]) == ("Steps:\n\n- Open the lid.\n  Keep it open.\n\n1. First.\n   More on first."
                                         "\n2. Second.")
    assert without("- a\n- b\n- c", units("- a\n- b\n- c")[1]) == "- a\n- c"
    assert without("  - a\n  - b\n  - c", units("  - a\n  - b\n  - c")[1]) == "- a\n  - c"
    assert without(CODE, units(CODE)[2]) == "Run this. It prints.\n\nThen stop. Done."
    assert without("A b. C d.\nE f.", units("A b. C d.\nE f.")[1]) == "A b.\nE f."
    assert without("One.  \n\n\n\nTwo.\n\nThree.", units("One.  \n\n\n\nTwo.\n\nThree.")[1]) == "One.\n\nThree."
    assert without("Only.", units("Only.")[0]) == ""
