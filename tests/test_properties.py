"""Property tests (hypothesis): batching, collate, translate.py's lines, SentencePiece."""

from collections import Counter
from itertools import chain
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seq2seq.batching import TokenBatchSampler, collate
from seq2seq.cli.translate import main as translate_main
from seq2seq.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer

FIXTURES_OK = settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)


@st.composite
def sampler_setups(draw: st.DrawFn) -> tuple[list[int], int, int, int, int, bool]:
    lengths = draw(st.lists(st.integers(1, 60), min_size=1, max_size=300))
    max_tokens = draw(st.integers(max(lengths), 400))
    world_size = draw(st.integers(1, 4))
    seed, epoch = draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 1000))
    return lengths, max_tokens, world_size, seed, epoch, draw(st.booleans())


@settings(max_examples=200, deadline=None)
@given(sampler_setups())
def test_sampler_stays_within_budget_and_covers_every_example(setup: tuple) -> None:
    lengths, max_tokens, world_size, seed, epoch, shuffle = setup
    costs = np.array(lengths)
    shards = []
    for rank in range(world_size):
        sampler = TokenBatchSampler(
            costs, max_tokens, shuffle=shuffle, seed=seed, num_replicas=world_size, rank=rank
        )
        sampler.set_epoch(epoch)
        shards.append(list(sampler))
        assert len(sampler) == len(shards[-1])
    batches = list(chain.from_iterable(shards))
    assert all(len(b) * costs[b].max() <= max_tokens for b in batches)
    counts = Counter(chain.from_iterable(batches))
    assert set(counts) == set(range(len(lengths)))  # every example, somewhere
    sizes = {len(shard) for shard in shards}
    if shuffle:  # training: equal counts; repeats only at the end, copying the first batches
        assert len(sizes) == 1
        total = world_size * len(shards[0])
        interleaved = [shards[i % world_size][i // world_size] for i in range(total)]
        assert any(
            _is_padded(interleaved, total - short, len(lengths)) for short in range(world_size)
        )
    else:  # evaluation: each example exactly once, counts differ by at most one
        assert set(counts.values()) == {1}
        assert max(sizes) - min(sizes) <= 1


def _is_padded(batches: list[list[int]], real: int, examples: int) -> bool:
    """Whether the first `real` batches hold each example once and the rest repeat them."""
    once = sorted(chain.from_iterable(batches[:real])) == list(range(examples))
    return once and all(batches[i] == batches[(i - real) % real] for i in range(real, len(batches)))


token_lists = st.lists(st.integers(4, 500), max_size=30)


@given(st.lists(st.tuples(token_lists, token_lists), min_size=1, max_size=20))
def test_collate_then_unpad_gives_back_the_examples(
    pairs: list[tuple[list[int], list[int]]],
) -> None:
    examples = [{"src_ids": s, "tgt_ids": t, "index": i} for i, (s, t) in enumerate(pairs)]
    batch = collate(examples, pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID)
    for i, (src, tgt) in enumerate(pairs):
        n, m = int(batch["src_lengths"][i]), int(batch["tgt_lengths"][i])
        assert (n, m) == (len(src), len(tgt) + 1)
        assert batch["src"][i, :n].tolist() == src
        assert batch["tgt_in"][i, :m].tolist() == [BOS_ID, *tgt]
        assert batch["tgt_out"][i, :m].tolist() == [*tgt, EOS_ID]
        for key, length in (("src", n), ("tgt_in", m), ("tgt_out", m)):
            assert set(batch[key][i, length:].tolist()) <= {PAD_ID}
    assert batch["index"].tolist() == list(range(len(pairs)))


WORDS = ["drei", "zehn", "und", "zwanzig", "hundert", "sieben", "elf"]
input_lines = st.one_of(
    st.just(b""),
    st.sampled_from([b" ", b"\t", b"  \t "]),  # whitespace only
    st.lists(st.sampled_from(WORDS), min_size=1, max_size=6).map(lambda w: " ".join(w).encode()),
    st.integers(200, 600).map(lambda n: b" ".join([b"dreizehn"] * n)),  # over max_len
    st.sampled_from([b"zw\xf6lf", b"\xff\xfe drei", b"und \xc3"]),  # not UTF-8
)


@settings(FIXTURES_OK, max_examples=25)
@given(st.lists(input_lines, max_size=12), st.sampled_from([["--greedy"], ["--beam-size", "3"]]))
def test_translate_keeps_one_output_line_per_input_line(
    trained: Path, tmp_path: Path, lines: list[bytes], search: list[str]
) -> None:
    source, out = tmp_path / "in.de", tmp_path / "out.en"
    source.write_bytes(b"".join(line + b"\n" for line in lines))
    checkpoint = str(trained / "checkpoints" / "best.ckpt")
    translate_main(
        ["--checkpoint", checkpoint, "--input", str(source), "--output", str(out), *search]
    )
    outputs = out.read_text(encoding="utf-8").split("\n")
    assert outputs.pop() == ""  # every line ends with a newline
    assert len(outputs) == len(lines)
    for line, output in zip(lines, outputs, strict=True):
        assert (output == "") == (line.strip() == b""), (line[:30], output)


@pytest.fixture(scope="module")
def tokenizer(tiny_corpus: Path) -> Tokenizer:
    src = (tiny_corpus / "train.de").read_text(encoding="utf-8").splitlines()
    tgt = (tiny_corpus / "train.en").read_text(encoding="utf-8").splitlines()
    return Tokenizer.train(src, tgt, vocab_size=60, model_type="unigram", joint=True)


@FIXTURES_OK
@given(st.text(alphabet="adefghilnorstuvwxy \t", max_size=80))
def test_sentencepiece_round_trips_normalized_text(tokenizer: Tokenizer, text: str) -> None:
    # SentencePiece's normalization here: whitespace runs become one space, ends stripped.
    (decoded,) = tokenizer.decode_tgt(tokenizer.encode_tgt([text]))
    assert decoded == " ".join(text.split())
