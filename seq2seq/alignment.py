"""Word alignments from attention, in Pharaoh format: "i-j" pairs, i a source word and j
an output word, both counted from 0 over whitespace-separated words (as fairseq's
`--print-alignment` and Marian's `--alignment` print them).

SentencePiece marks the first piece of each word with "▁" (U+2581), and decodes an
unknown piece ("<unk>", only ever output) to " ⁇ ", a word of its own; the pieces of a
word pool their attention, and each output word is aligned to the source word that
received the most of it.

Shapes: T output pieces (EOS's row, if any, beyond them), S source pieces.
"""

import numpy as np

WORD_START = "\u2581"
UNKNOWN = "<unk>"  # SentencePiece's unknown piece, as `id_to_piece` names it


def word_of_each_piece(pieces: list[str]) -> np.ndarray:
    """(len(pieces),) the word each piece belongs to: a piece starting with "▁" starts a
    word, as does an unknown piece and the piece after it (the first piece starts word 0
    whatever it is)."""
    starts = [
        i > 0 and (piece.startswith(WORD_START) or UNKNOWN in (piece, pieces[i - 1]))
        for i, piece in enumerate(pieces)
    ]
    return np.cumsum(starts, dtype=np.int64)


def word_alignment(
    attention: np.ndarray, src_pieces: list[str], tgt_pieces: list[str]
) -> list[tuple[int, int]]:
    """(T(+1), S) attention of the output pieces over the source pieces -> one (source word,
    output word) pair per output word, in output order: the source word whose pieces got
    the most of the output word's pieces' attention, summed (ties: the first)."""
    if not tgt_pieces or not src_pieces:
        return []
    weights = np.asarray(attention, dtype=np.float64)[: len(tgt_pieces)]  # (T, S)
    if weights.shape != (len(tgt_pieces), len(src_pieces)):
        raise ValueError(
            f"attention {weights.shape} does not fit {len(tgt_pieces)} output and "
            f"{len(src_pieces)} source pieces"
        )
    src_words, tgt_words = word_of_each_piece(src_pieces), word_of_each_piece(tgt_pieces)
    mass = np.zeros((tgt_words[-1] + 1, src_words[-1] + 1))  # (output words, source words)
    np.add.at(mass, (tgt_words[:, None], src_words[None, :]), weights)
    return [(int(source), output) for output, source in enumerate(mass.argmax(axis=1))]


def pharaoh(pairs: list[tuple[int, int]]) -> str:
    """ "0-0 1-2 ...": the pairs as fairseq and Marian print them."""
    return " ".join(f"{source}-{output}" for source, output in pairs)
