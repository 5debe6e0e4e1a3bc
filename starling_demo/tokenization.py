"""Read tokenizers exactly as the Starling models saw them: tokenizer.json as written, tokenizer.model as SentencePiece.

A folder with a `tokenizer.json` (Starling-LM, the Llama-2 tokenizer of RM-7B) is used exactly as written:
transformers 4 wrote those files, and its conversion is what the models were trained and scored with.
A folder with only `tokenizer.model` (Yi-34B-Chat, RM-34B's tokenizer) is converted here, because
transformers 5 converts it unlike SentencePiece: its merges are ranked by vocabulary id, not by the
merged piece's score, so runs of whitespace split differently (`"\\n    return"` gives `▁▁▁▁`+`return`
where SentencePiece gives `▁▁▁`+`▁return`). Here the merges are ranked as SentencePiece applies them,
so every text segment gets SentencePiece's own ids.
"""
from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, models, normalizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

NORMAL, BPE = 1, 2  # SentencePiece's piece type of ordinary pieces, and its model type for BPE


def sentencepiece_proto(path: Path):
    """The parsed `tokenizer.model` (SentencePiece's ModelProto)."""
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(Path(path).read_bytes())
    return proto


def sentencepiece_normalizer(proto) -> normalizers.Normalizer:
    """SentencePiece's identity normaliser as a `tokenizers` pipeline: the word prefix, then spaces as `▁`.

    Where the model asks for it (`add_dummy_prefix`, as Llama's does), SentencePiece prepends the prefix to
    every text it encodes, so after a special token too, as the tokenizer.json files of transformers 4 do.
    """
    spec = proto.normalizer_spec
    if spec.precompiled_charsmap or spec.remove_extra_whitespaces:
        raise ValueError("its SentencePiece normaliser is not the identity one Llama and Yi use (it rewrites or "
                         "collapses characters); provide a tokenizer.json")
    prefix = [normalizers.Prepend("▁")] if spec.add_dummy_prefix else []
    return normalizers.Sequence(prefix + [normalizers.Replace(" ", "▁")])


def sentencepiece_merges(vocab: dict[str, int], scores: dict[str, float]) -> list[tuple[str, str]]:
    """Every split of each scored piece into two vocabulary pieces, in the order SentencePiece merges them.

    SentencePiece merges, among adjacent symbols, the pair whose merged piece scores highest; ranking each
    merge by its piece's score (then the longer left part, then the longer right part first, as transformers 4
    did) reproduces that.

    >>> vocab = {"▁": 0, "r": 1, "▁▁": 2, "▁r": 3, "▁▁▁": 4}
    >>> sentencepiece_merges(vocab, {"▁▁": -1.0, "▁r": -2.0, "▁▁▁": -3.0})
    [('▁', '▁'), ('▁', 'r'), ('▁▁', '▁'), ('▁', '▁▁')]
    """
    merges = [(-score, -i, i - len(piece), vocab[piece], vocab[piece[:i]], piece[:i], piece[i:])
              for piece, score in scores.items() for i in range(1, len(piece))
              if piece[:i] in vocab and piece[i:] in vocab]
    return [(left, right) for *_, left, right in sorted(merges)]


def sentencepiece_bpe(proto) -> models.BPE:
    """SentencePiece's BPE model as a `tokenizers` BPE with the same ids and the same merge order.

    Only ordinary pieces come out of a merge, so typed `<s>` stays three characters, as in SentencePiece.
    """
    if proto.trainer_spec.model_type != BPE:
        raise ValueError("its tokenizer.model is not a SentencePiece BPE model; provide a tokenizer.json")
    vocab = {piece.piece: i for i, piece in enumerate(proto.pieces)}
    scores = {piece.piece: piece.score for piece in proto.pieces if piece.type == NORMAL}
    unk = proto.pieces[proto.trainer_spec.unk_id].piece
    return models.BPE(vocab, sentencepiece_merges(vocab, scores), unk_token=unk, fuse_unk=True,
                      byte_fallback=proto.trainer_spec.byte_fallback)


def as_sentencepiece(backend: Tokenizer, model_file: Path) -> None:
    """Make a converted `tokenizers` backend encode every text segment as SentencePiece does."""
    proto = sentencepiece_proto(model_file)
    backend.model = sentencepiece_bpe(proto)
    backend.normalizer = sentencepiece_normalizer(proto)
    backend.pre_tokenizer = None


def read_tokenizer(source: Path) -> PreTrainedTokenizerFast:
    """The tokenizer in `source`: its tokenizer.json as written, else its tokenizer.model as SentencePiece.

    >>> from starling_demo.tiny import tiny_checkpoint
    >>> tokenizer = read_tokenizer(tiny_checkpoint("rm-34b"))  # a Yi-style folder: tokenizer.model only
    >>> tokenizer.convert_ids_to_tokens(tokenizer("\\n    return", add_special_tokens=False).input_ids)
    ['▁', '<0x0A>', '▁▁▁', '▁return']
    """
    if (source / "tokenizer.json").exists():
        tokenizer = PreTrainedTokenizerFast.from_pretrained(source)
    else:
        tokenizer = AutoTokenizer.from_pretrained(source)
        as_sentencepiece(tokenizer.backend_tokenizer, source / "tokenizer.model")
    tokenizer.padding_side = "right"
    return tokenizer
