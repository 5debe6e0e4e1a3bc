"""Tokenizers against SentencePiece itself: tokenizer.model folders encode each text segment as `sentencepiece` does."""
import re
import shutil

import pytest
import sentencepiece
from hypothesis import given, settings, strategies as st
from tokenizers import Tokenizer
from transformers import LlamaTokenizer

from card_reference import sentencepiece_segments
from starling_demo.loading import LoadError, load_tokenizer
from starling_demo.templates import encode_plain, openchat_prompt, render_parts, reward_inputs, RM_TEMPLATES
from starling_demo.tiny import tiny_checkpoint
from starling_demo.tokenization import sentencepiece_proto

# Pieces that stress the conversion: runs of whitespace, edges, digits, long words, and characters the
# vocabulary lacks (byte fallback), mixed at random.
PIECES = [" ", "  ", "   ", "    ", "\t", "\t\t", "\n", "\n\n", "\r\n", " \n ", "\n    ", "a", "the", "The",
          "return", "def", "quicksort", "(", ")", "{", "}", ";", ":", ".", ",", "!", "?", "'", "\"", "-", "—", "**",
          "- ", "```", "#", "0", "7", "42", "2048", "3.14159", "1,000", "é", "ü", "ñ", "日本語", "中文", "한국어", "😀",
          "👍🏽", "🏳️‍🌈", "\u0301", "\u200b", "\xa0", "\u3000", "ꙮ", "𝔘𝔫𝔦", "\U000f0000", "▁", "_",
          "x" * 40, "antidisestablishmentarianism" * 3, "<s>", "</s>", "<unk>", "[INST]"]
TEXTS = st.one_of(st.lists(st.sampled_from(PIECES), max_size=14).map("".join),
                  st.text(st.characters(codec="utf-8"), max_size=30))
PROPERTY = settings(max_examples=400, derandomize=True, deadline=None, database=None)


def sentencepiece_of(folder) -> sentencepiece.SentencePieceProcessor:
    return sentencepiece.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))


@pytest.fixture(scope="module")
def llama_style(tmp_path_factory):
    """A tokenizer.model-only folder that adds a BOS, as Llama's tokenizer repos without tokenizer.json."""
    folder = tmp_path_factory.mktemp("llama-style")
    for name in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(tiny_checkpoint("rm-7b") / name, folder / name)
    return folder


@pytest.fixture(scope="module", params=["llama-style", "yi-style"])
def model_folder(request, llama_style):
    """Both kinds of tokenizer.model-only folder; Yi-34B-Chat's (the tiny RM-34B's layout) adds no BOS."""
    return llama_style if request.param == "llama-style" else tiny_checkpoint("rm-34b")


@pytest.fixture(scope="module")
def pair(model_folder):
    return load_tokenizer(model_folder), sentencepiece_of(model_folder)


@pytest.fixture(scope="module")
def reward_tokenizers(llama_style):
    """(template, BOS, tokenizer, SentencePiece) for RM-7B's Llama-style and RM-34B's Yi-style tokenizers."""
    return [(template, bos, load_tokenizer(folder), sentencepiece_of(folder))
            for folder, template, bos in [(llama_style, "llama2-rlhf", True),
                                          (tiny_checkpoint("rm-34b"), "chatml", False)]]


@pytest.fixture(scope="module")
def lm_pair():
    folder = tiny_checkpoint("lm")  # a tokenizer.json folder, rebuilt from the fixed conversion
    return load_tokenizer(folder), sentencepiece_of(folder)


@PROPERTY
@given(text=TEXTS)
def test_tokenizer_model_folders_encode_text_as_sentencepiece(pair, text):
    tokenizer, processor = pair
    bos = [tokenizer.bos_token_id] if tokenizer.add_bos_token else []
    assert encode_plain(tokenizer, text) == processor.encode(text)
    assert tokenizer(text, split_special_tokens=True).input_ids == bos + processor.encode(text)


@pytest.mark.parametrize("text, pieces", [
    ("\n    return", ["▁", "<0x0A>", "▁▁▁", "▁return"]),  # transformers 5 converts to "▁▁▁▁", "return"
    ("a  b", ["▁a", "▁", "▁b"]),
    (" leading", ["▁", "▁leading"]),
])
def test_whitespace_runs_split_as_sentencepiece_splits_them(pair, text, pieces):
    tokenizer, processor = pair
    ids = encode_plain(tokenizer, text)
    assert tokenizer.convert_ids_to_tokens(ids) == pieces == processor.encode(text, out_type=str)


MESSAGE = TEXTS.filter(lambda text: not re.search(r"</?s>|<unk>|<\|", text))
CONVERSATIONS = st.lists(MESSAGE, min_size=1, max_size=5).filter(lambda turns: len(turns) % 2)


def conversation(turns: list[str], system: str = "") -> list[dict]:
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]


@PROPERTY
@given(turns=CONVERSATIONS, reply=MESSAGE, system=MESSAGE)
def test_reward_templates_encode_as_sentencepiece(reward_tokenizers, turns, reply, system):
    for template, bos, tokenizer, processor in reward_tokenizers:
        messages = conversation(turns, system)
        encoded, = reward_inputs(tokenizer, template, messages, [reply], bos, max_length=10**6)
        text = render_parts(RM_TEMPLATES[template](messages, reply))
        # <unk>, <s>, </s> and the template markers are the added tokens
        assert encoded.ids == [1] * bos + sentencepiece_segments(text, tokenizer.added_tokens_encoder, processor)


@PROPERTY
@given(turns=CONVERSATIONS, system=MESSAGE)
def test_lm_template_encodes_as_openchat_with_sentencepiece(lm_pair, turns, system):
    """OpenChat tokenises role prefixes and message texts separately; each must be SentencePiece's ids."""
    tokenizer, processor = lm_pair
    expected = [1] + (processor.encode(system.strip()) + [32000] if system.strip() else [])
    for i, turn in enumerate(turns):
        role = "User" if i % 2 == 0 else "Assistant"
        expected += processor.encode(f"GPT4 Correct {role}:") + processor.encode(turn) + [32000]
    expected += processor.encode("GPT4 Correct Assistant:")
    assert openchat_prompt(tokenizer, conversation(turns), system=system).ids == expected


def test_tokenizer_json_is_read_exactly_as_written(tmp_path):
    """A tokenizer.json wins over tokenizer.model, even one whose merges SentencePiece would not make."""
    model_only = tmp_path / "model-only"
    model_only.mkdir()
    shutil.copy(tiny_checkpoint("lm") / "tokenizer.model", model_only)
    written = tmp_path / "written"
    LlamaTokenizer.from_pretrained(model_only).save_pretrained(written)  # transformers 5's own conversion
    shutil.copy(model_only / "tokenizer.model", written)
    as_written = Tokenizer.from_file(str(written / "tokenizer.json"))
    for text in ["\n    return x", "a  b", "Hello there", "😀 日本語"]:
        assert encode_plain(load_tokenizer(written), text) == as_written.encode(text, add_special_tokens=False).ids
    pieces = load_tokenizer(written).convert_ids_to_tokens(encode_plain(load_tokenizer(written), "\n    return"))
    assert pieces[-2:] == ["▁▁▁▁", "return"]  # not SentencePiece's: the file's merges were used


@pytest.mark.parametrize("name", ["lm", "rm-7b"])
def test_tiny_tokenizer_json_files_encode_as_sentencepiece(name):
    """The tiny presets' tokenizer.json were written by the fixed conversion, as transformers 4 wrote the real ones."""
    folder = tiny_checkpoint(name)
    written, processor = Tokenizer.from_file(str(folder / "tokenizer.json")), sentencepiece_of(folder)
    written.encode_special_tokens = True  # typed "<s>" is text, as in every message
    for text in PIECES + ["".join(PIECES), "  two  spaces  ", "x   \n\n  y"]:
        assert written.encode(text, add_special_tokens=False).ids == processor.encode(text), repr(text)


def write_model(folder, **normalizer):
    """A tokenizer.model-only folder like the tiny RM-34B's, its SentencePiece normaliser changed."""
    shutil.copytree(tiny_checkpoint("rm-34b"), folder, ignore=shutil.ignore_patterns("*.safetensors*"))
    proto = sentencepiece_proto(folder / "tokenizer.model")
    for key, value in normalizer.items():
        setattr(proto.normalizer_spec, key, value)
    (folder / "tokenizer.model").write_bytes(proto.SerializeToString())
    return folder


def test_a_model_without_the_word_prefix_encodes_as_sentencepiece(tmp_path):
    folder = write_model(tmp_path / "no-prefix", add_dummy_prefix=False)
    tokenizer, processor = load_tokenizer(folder), sentencepiece_of(folder)
    for text in ["Hello", " Hello", "\n    return", "a  b  "]:
        assert encode_plain(tokenizer, text) == processor.encode(text), repr(text)
    assert tokenizer.convert_ids_to_tokens(encode_plain(tokenizer, "Hello")) == ["Hello"]


def test_an_unsupported_normaliser_is_refused_with_a_sentence(tmp_path):
    folder = write_model(tmp_path / "collapsing", remove_extra_whitespaces=True)
    with pytest.raises(LoadError, match="not the identity one Llama and Yi use .*provide a tokenizer.json"):
        load_tokenizer(folder)


def test_a_new_tiny_cache_version_removes_the_stale_ones(tmp_path, monkeypatch):
    """Caches written by an older conversion are rebuilt under a new version, and the old ones deleted."""
    from starling_demo import tiny

    monkeypatch.setattr(tiny, "CACHE_ROOT", tmp_path)
    monkeypatch.setattr(tiny, "CACHE", tmp_path / f"tiny-{tiny.VERSION}")
    (tmp_path / "tiny-v5" / "rm-34b").mkdir(parents=True)
    (tmp_path / "views").mkdir()
    folder = tiny.tiny_checkpoint("rm-34b")
    assert folder == tmp_path / f"tiny-{tiny.VERSION}" / "rm-34b" and (folder / "tokenizer.model").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"tiny-{tiny.VERSION}", "views"]
