"""Word alignments from attention: pieces pooled into words, each output word to the
source word with the most of its attention; a model trained on a known alignment prints it."""

import random
from pathlib import Path

import numpy as np
import pytest

from seq2seq.alignment import pharaoh, word_alignment, word_of_each_piece
from seq2seq.cli.train import fit_and_test
from seq2seq.cli.translate import main as translate_main
from seq2seq.tokenizer import UNK_ID, Tokenizer


def test_pieces_are_grouped_into_words() -> None:
    pieces = ["▁ein", "und", "zwanzig", "▁", ",", "▁Haus"]
    assert word_of_each_piece(pieces).tolist() == [0, 0, 0, 1, 1, 2]
    assert word_of_each_piece(["und", "▁x"]).tolist() == [0, 1]  # a first piece without ▁
    assert word_of_each_piece([]).tolist() == []
    # SentencePiece decodes "▁a", "<unk>", "b" to "a ⁇ b": three words
    assert word_of_each_piece(["▁a", "<unk>", "b", "▁c"]).tolist() == [0, 1, 2, 3]


def test_unknown_pieces_are_words_as_sentencepiece_decodes_them(tiny_corpus: Path) -> None:
    """The words counted from pieces are the words of the decoded text, unknowns too."""
    lines = {
        lang: (tiny_corpus / f"train.{lang}").read_text().splitlines() for lang in ["de", "en"]
    }
    tokenizer = Tokenizer.train(lines["de"], lines["en"], vocab_size=60)
    ids = tokenizer.encode_tgt(["three hundred twelve"])[0]
    for output in ([UNK_ID, *ids], [*ids[:2], UNK_ID, *ids[2:]], ids):
        text = tokenizer.decode_tgt([output])[0]
        words = word_of_each_piece(tokenizer.tgt_pieces(output))
        assert words[-1] + 1 == len(text.split()), (text, tokenizer.tgt_pieces(output))


def test_each_output_word_takes_the_source_word_with_the_most_attention() -> None:
    """Source words "▁a" (1 piece) and "▁b c" (2 pieces); output words "▁x y" and "▁z".
    x attends 0.6 to a, 0.2 + 0.2 to b's pieces; y attends 0.3 to a, 0.4 + 0.3 to b's:
    word x+y pools 0.9 on a against 1.1 on b -> b. z attends 0.6 / 0.25 / 0.15 -> a."""
    src, tgt = ["▁a", "▁b", "c"], ["▁x", "y", "▁z"]
    attention = np.array(
        [[0.6, 0.2, 0.2], [0.3, 0.4, 0.3], [0.6, 0.25, 0.15], [0.1, 0.1, 0.8]]  # last: EOS
    )
    pairs = word_alignment(attention, src, tgt)
    assert pairs == [(1, 0), (0, 1)]
    assert pharaoh(pairs) == "1-0 0-1"


def test_a_diagonal_attention_aligns_word_for_word_and_reversed() -> None:
    words = ["▁w0", "▁w1", "▁w2", "▁w3"]
    assert word_alignment(np.eye(4), words, words) == [(0, 0), (1, 1), (2, 2), (3, 3)]
    reverse = word_alignment(np.eye(4)[::-1], words, words)
    assert pharaoh(reverse) == "3-0 2-1 1-2 0-3"


def test_empty_outputs_have_no_pairs_and_shapes_must_fit() -> None:
    assert word_alignment(np.ones((1, 2)), ["▁a", "▁b"], []) == []
    with pytest.raises(ValueError, match="does not fit 2 output and 3 source pieces"):
        word_alignment(np.ones((2, 2)), ["▁a", "▁b", "▁c"], ["▁x", "▁y"])


def write_reversal_corpus(folder: Path, seed: int = 3) -> Path:
    """Sentences of 3 to 6 words from 12, translated word by word (each to its own target
    word) in reverse order: output word j comes from source word n - 1 - j."""
    rng = random.Random(seed)
    vocabulary = {f"q{w}a": f"z{w}o" for w in "bcdfghjklmnp"}
    for split, size in {"train": 3000, "val": 40, "test": 40}.items():
        sources = [rng.choices(list(vocabulary), k=rng.randint(3, 6)) for _ in range(size)]
        targets = [[vocabulary[w] for w in reversed(words)] for words in sources]
        for lang, lines in (("de", sources), ("en", targets)):
            (folder / f"{split}.{lang}").write_text("\n".join(map(" ".join, lines)) + "\n")
    return folder


@pytest.mark.slow
def test_translate_prints_the_known_alignment_of_a_reversal(tmp_path: Path) -> None:
    """A small model trained to translate word by word in reverse order: where its output
    is right, translate.py's --alignment prints the reversal, "i-j" with i = n - 1 - j
    (at least 90% of those outputs word for word)."""
    corpus = write_reversal_corpus(tmp_path)
    out = tmp_path / "run"
    fit_and_test(
        [
            *("--data.train", str(corpus / "train"), "--data.val", str(corpus / "val")),
            *("--data.test", "null", "--data.cache_dir", str(out / "cache")),
            *("--data.vocab_size", "40", "--data.max_tokens", "600"),
            *("--model.embed_dim", "32", "--model.hidden_size", "32", "--model.dropout", "0"),
            *("--model.lr", "0.005", "--trainer.max_epochs", "8"),
            *("--trainer.default_root_dir", str(out), "--trainer.enable_progress_bar", "false"),
        ]
    )
    sources = (corpus / "test.de").read_text().splitlines()
    references = (corpus / "test.en").read_text().splitlines()
    output = tmp_path / "test.aligned"
    checkpoint = str(out / "checkpoints" / "best.ckpt")
    arguments = ["--input", str(corpus / "test.de"), "--output", str(output), "--alignment"]
    translate_main(["--checkpoint", checkpoint, *arguments])
    rows = [row.split("\t") for row in output.read_text().splitlines()]
    right = [
        (source, alignment)
        for source, reference, (text, alignment) in zip(sources, references, rows, strict=True)
        if text == reference
    ]
    reversal = [
        " ".join(f"{len(s.split()) - 1 - j}-{j}" for j in range(len(s.split()))) for s, _ in right
    ]
    exact = sum(
        alignment == expected for (_, alignment), expected in zip(right, reversal, strict=True)
    )
    assert len(right) >= 0.8 * len(sources) and exact >= 0.9 * len(right), (len(right), exact)
