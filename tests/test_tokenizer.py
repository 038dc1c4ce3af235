"""SentencePiece tokenizer: training, special ids, round trips, saving and checkpoints."""

import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import sentencepiece as spm
import torch

from seq2seq.corpus import read_lines
from seq2seq.errors import UserError
from seq2seq.tokenizer import BOS_ID, EOS_ID, PAD_ID, POOLED_FROM, UNK_ID, Tokenizer


def lines(corpus: Path, name: str, count: int = 150) -> list[str]:
    return list(read_lines(corpus / name))[:count]


@pytest.fixture(scope="module", params=["unigram", "bpe"])
def model_type(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module", params=[True, False], ids=["joint", "separate"])
def trained(tiny_corpus: Path, model_type: str, request: pytest.FixtureRequest) -> Tokenizer:
    return Tokenizer.train(
        iter(lines(tiny_corpus, "train.de")),
        iter(lines(tiny_corpus, "train.en")),
        vocab_size=70,
        model_type=model_type,
        joint=request.param,
    )


def test_special_ids_and_sizes(trained: Tokenizer) -> None:
    assert (trained.pad_id, trained.bos_id, trained.eos_id) == (PAD_ID, BOS_ID, EOS_ID)
    pieces = trained.tgt_pieces([PAD_ID, UNK_ID, BOS_ID, EOS_ID])
    assert pieces == ["<pad>", "<unk>", "<s>", "</s>"]
    assert 4 < trained.src_vocab_size <= 70
    assert 4 < trained.tgt_vocab_size <= 70
    if trained.joint:
        assert trained.src_vocab_size == trained.tgt_vocab_size


def test_round_trip_of_text(trained: Tokenizer, tiny_corpus: Path) -> None:
    texts = lines(tiny_corpus, "val.en", 20)
    ids = trained.encode_tgt(texts)
    assert all(4 <= i < trained.tgt_vocab_size for row in ids for i in row)
    assert trained.decode_tgt(ids) == texts
    framed = [[BOS_ID, *row, EOS_ID, PAD_ID, PAD_ID] for row in ids]
    assert trained.decode_tgt(framed) == texts
    assert trained.decode_tgt([]) == []


def test_short_and_long_lists_give_the_same_items(trained: Tokenizer, tiny_corpus: Path) -> None:
    """Lists shorter than POOLED_FROM go item by item, longer ones in one pooled call:
    each item comes out the same either way, empty ones included."""
    sources = ["", *lines(tiny_corpus, "train.de", 2 * POOLED_FROM)]
    targets = ["", *lines(tiny_corpus, "train.en", 2 * POOLED_FROM)]
    assert len(sources) > POOLED_FROM
    src_ids, tgt_ids = trained.encode_src(sources), trained.encode_tgt(targets)
    texts = trained.decode_tgt(tgt_ids)
    for start in range(0, len(sources), 7):  # lists of 7 items or fewer
        assert trained.encode_src(sources[start : start + 7]) == src_ids[start : start + 7]
        assert trained.encode_tgt(targets[start : start + 7]) == tgt_ids[start : start + 7]
        assert trained.decode_tgt(tgt_ids[start : start + 7]) == texts[start : start + 7]
    assert src_ids[0] == tgt_ids[0] == [] and texts[0] == ""
    assert texts[1:] == targets[1:]


def test_source_pieces_match_ids(trained: Tokenizer, tiny_corpus: Path) -> None:
    text = lines(tiny_corpus, "val.de", 1)[0]
    (ids,) = trained.encode_src([text])
    assert len(trained.src_pieces(text)) == len(ids) > 0
    assert "".join(trained.src_pieces(text)).replace("▁", " ").strip() == text


def test_separate_models_differ(tiny_corpus: Path) -> None:
    de, en = lines(tiny_corpus, "train.de"), lines(tiny_corpus, "train.en")
    tokenizer = Tokenizer.train(de, en, vocab_size=60, model_type="bpe", joint=False)
    assert not tokenizer.joint
    assert tokenizer.to_dict()["src"] != tokenizer.to_dict()["tgt"]


def test_save_and_load(trained: Tokenizer, tmp_path: Path, tiny_corpus: Path) -> None:
    paths = trained.save(tmp_path)
    names = ["spm.model"] if trained.joint else ["spm.src.model", "spm.tgt.model"]
    assert [p.name for p in paths] == names
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)  # no temporary files
    loaded = Tokenizer.load(*paths) if len(paths) == 2 else Tokenizer.load(paths[0])
    assert loaded.fingerprint == trained.fingerprint
    assert Tokenizer.load_dir(tmp_path).fingerprint == trained.fingerprint
    texts = lines(tiny_corpus, "test.de", 5)
    assert loaded.encode_src(texts) == trained.encode_src(texts)


def test_checkpoint_dict_loads_with_weights_only(trained: Tokenizer, tiny_corpus: Path) -> None:
    buffer = io.BytesIO()
    torch.save({"tokenizer": trained.to_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    restored = Tokenizer.from_dict(state["tokenizer"])
    assert restored.fingerprint == trained.fingerprint
    assert restored.joint == trained.joint
    texts = lines(tiny_corpus, "test.en", 5)
    assert restored.encode_tgt(texts) == trained.encode_tgt(texts)


def test_fingerprint_depends_on_models(tiny_corpus: Path) -> None:
    a = Tokenizer.train(lines(tiny_corpus, "train.de"), [], vocab_size=50, model_type="bpe")
    b = Tokenizer.train(lines(tiny_corpus, "train.de"), [], vocab_size=60, model_type="bpe")
    assert a.fingerprint != b.fingerprint


def test_load_missing_or_invalid_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=re.escape(str(tmp_path / "absent.model"))):
        Tokenizer.load(tmp_path / "absent.model")
    garbage = tmp_path / "garbage.model"
    garbage.write_bytes(b"not a model")
    with pytest.raises(UserError, match=re.escape(f"{garbage}: not a valid")):
        Tokenizer.load(garbage)


def test_load_rejects_other_special_ids(tmp_path: Path, tiny_corpus: Path) -> None:
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines(tiny_corpus, "train.en")),
        model_writer=model,
        vocab_size=60,
        model_type="bpe",
        minloglevel=2,
    )  # SentencePiece's defaults: unk 0, bos 1, eos 2, no pad
    path = tmp_path / "other.model"
    path.write_bytes(model.getvalue())
    with pytest.raises(UserError, match=re.escape(f"{path}: special ids")):
        Tokenizer.load(path)


def test_training_errors_are_user_errors(tiny_corpus: Path) -> None:
    with pytest.raises(UserError, match="vocab_size=5"):
        Tokenizer.train(lines(tiny_corpus, "train.de"), [], vocab_size=5, model_type="bpe")

    def failing() -> Iterator[str]:
        yield "eins"
        raise UserError("train.de:2: invalid UTF-8")

    with pytest.raises(UserError, match=r"train\.de:2: invalid UTF-8"):
        Tokenizer.train(failing(), [], vocab_size=50, model_type="bpe")
