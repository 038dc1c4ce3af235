"""Sampling: greedy at its limits, reproducible in any batch, draws from the filtered
distribution; translate.py --sampling."""

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from test_search import PAD, TableModel, random_batch, teacher_force
from torch import Tensor

from seq2seq.cli import translate as translate_module
from seq2seq.cli.translate import main as translate_main
from seq2seq.model import Seq2Seq
from seq2seq.sampling import Sampling, sample_search
from seq2seq.search import Hypothesis, greedy_search


def tiny_model() -> Seq2Seq:
    """An untrained GRU with attention: near-uniform outputs, so samples vary."""
    return Seq2Seq(9, 11, embed_dim=8, hidden_size=8, dropout=0.0).eval()


def token_lists(found: list[list[Hypothesis]]) -> list[list[list[int]]]:
    return [[h.tokens for h in samples] for samples in found]


def assert_same_samples(found: list[Hypothesis], expected: list[Hypothesis]) -> None:
    assert [h.tokens for h in found] == [h.tokens for h in expected]
    assert [h.log_prob for h in found] == pytest.approx([h.log_prob for h in expected], rel=1e-5)


@pytest.mark.parametrize("kind", ["table", "seq2seq"])
@pytest.mark.parametrize("constraints", [{}, {"min_len": 3, "no_repeat_ngram": 2}])
@pytest.mark.parametrize("filters", [{"topk": 1}, {"temperature": 1e-4}])
def test_topk_one_and_cold_temperature_are_greedy(
    kind: str, constraints: dict[str, int], filters: dict[str, Any]
) -> None:
    model = TableModel(seed=2, eos_bias=0.5) if kind == "table" else tiny_model()
    src, src_lengths = random_batch([4, 1, 6, 3], vocab_size=6)
    options: dict[str, Any] = dict(max_len_a=1.0, max_len_b=3, **constraints)
    greedy = greedy_search(model, src, src_lengths, **options)
    found = sample_search(
        model, src, src_lengths, seeds=[7, 8, 9, 10], num_samples=3, **filters, **options
    )
    for samples, best in zip(found, greedy, strict=True):
        assert_same_samples(samples, [best] * 3)
        assert [h.score for h in samples] == pytest.approx([best.score] * 3, rel=1e-5)


def test_samples_are_the_models_hypotheses() -> None:
    """Valid tokens; log_prob is the model's own (unfiltered), score log_prob / length."""
    model = tiny_model()
    src, src_lengths = random_batch([5, 2, 7], vocab_size=9)
    found = sample_search(
        model,
        src,
        src_lengths,
        seeds=[1, 2, 3],
        num_samples=4,
        topk=4,
        topp=0.9,
        temperature=1.5,
        max_len_a=1.0,
        max_len_b=2,
        return_attention=True,
    )
    max_lens = (src_lengths + 2).tolist()
    for i, samples in enumerate(found):
        n = int(src_lengths[i])
        for hyp in samples:
            assert not {PAD, model.bos_id, model.eos_id} & set(hyp.tokens)
            ended = len(hyp.tokens) < max_lens[i]
            log_prob, attention = teacher_force(model, src[i], n, hyp.tokens, ended)
            assert hyp.log_prob == pytest.approx(log_prob, rel=1e-4)
            assert hyp.score == pytest.approx(log_prob / (len(hyp.tokens) + ended), rel=1e-4)
            torch.testing.assert_close(hyp.attention, attention, rtol=1e-4, atol=1e-6)


def test_same_samples_alone_in_a_batch_and_in_any_order() -> None:
    model = tiny_model()
    src, src_lengths = random_batch([6, 1, 4, 9, 2], vocab_size=9)
    seeds = Sampling(seed=3).seeds(range(5))
    options: dict[str, Any] = dict(num_samples=4, topp=0.95, max_len_a=1.0, max_len_b=3)
    batched = sample_search(model, src, src_lengths, seeds=seeds, **options)
    assert len({tuple(h.tokens) for samples in batched for h in samples}) > 10  # random indeed
    order = torch.tensor([3, 0, 4, 2, 1])
    shuffled = sample_search(
        model, src[order], src_lengths[order], seeds=torch.tensor(seeds)[order], **options
    )
    for i, n in enumerate(src_lengths.tolist()):
        alone = src[i : i + 1, :n], src_lengths[i : i + 1]
        assert_same_samples(
            sample_search(model, *alone, seeds=[seeds[i]], **options)[0], batched[i]
        )
        assert_same_samples(shuffled[order.tolist().index(i)], batched[i])
        fewer = options | {"num_samples": 2}  # the first samples do not depend on how many
        assert_same_samples(
            sample_search(model, *alone, seeds=[seeds[i]], **fewer)[0], batched[i][:2]
        )


def test_different_seeds_differ() -> None:
    model = tiny_model()
    src, src_lengths = random_batch([5, 3, 7], vocab_size=9)
    ids = range(3)
    assert Sampling(seed=1).seeds(ids) != Sampling(seed=2).seeds(ids)
    assert len(set(Sampling(seed=1).seeds(range(1000)))) == 1000
    runs = [
        token_lists(sample_search(model, src, src_lengths, seeds=Sampling(seed=s).seeds(ids)))
        for s in (1, 2, 1)
    ]
    assert runs[0] == runs[2] != runs[1]


def filtered_distribution(
    log_probs: list[float], topk: int, topp: float, temperature: float
) -> dict[int, float]:
    """Token -> probability after the filters, written plainly (log_probs: allowed tokens
    finite, others -inf)."""
    allowed = [t for t, lp in enumerate(log_probs) if lp > -math.inf]
    weights = {t: math.exp(log_probs[t] / temperature) for t in allowed}
    total = sum(weights.values())
    ranked = sorted(allowed, key=lambda t: -weights[t])[: topk or None]
    mass = sum(weights[t] / total for t in ranked)
    kept, cumulative = [], 0.0
    for t in ranked:
        kept.append(t)
        cumulative += weights[t] / total
        if cumulative >= topp * mass:
            break
    kept_total = sum(weights[t] for t in kept)
    return {t: weights[t] / kept_total for t in kept}


def chi_square_critical(df: int, z: float = 3.09) -> float:
    """The chi-square quantile at the standard normal quantile z (3.09: p = 0.001), by the
    Wilson-Hilferty approximation."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def first_step_log_probs(model: TableModel, src: Tensor, src_length: int) -> list[float]:
    """The model's log-probs of the first token, padding and BOS -inf (as search bans them)."""
    memory, state = model.encode(src[:src_length].unsqueeze(0), torch.tensor([src_length]))
    outputs, _, _ = model.decode_step(memory, state, torch.tensor([model.bos_id]))
    log_probs = model.log_probs(outputs)[0]
    log_probs[[model.pad_id, model.bos_id]] = -math.inf
    return log_probs.tolist()


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"temperature": 2.0},
        {"temperature": 0.5},
        {"topk": 3},
        {"topp": 0.45},
        {"topk": 5, "topp": 0.8},
    ],
)
def test_first_tokens_follow_the_filtered_distribution(filters: dict[str, Any]) -> None:
    """4000 one-token samples of one sentence: no token outside the kept set, and the
    counts pass a chi-square test (p = 0.001) against the filtered model distribution."""
    model = TableModel(vocab_size=9, seed=12, eos_bias=1.0)
    src, src_lengths = random_batch([3], vocab_size=9)
    settings = {"topk": 0, "topp": 1.0, "temperature": 1.0} | filters
    expected = filtered_distribution(first_step_log_probs(model, src[0], 3), **settings)
    samples = 4000
    (found,) = sample_search(
        model,
        src,
        src_lengths,
        seeds=[5],
        num_samples=samples,
        max_len_a=0.0,
        max_len_b=1,
        **filters,
    )
    counts = torch.bincount(
        torch.tensor([h.tokens[0] if h.tokens else model.eos_id for h in found]), minlength=9
    )
    assert set(counts.nonzero().flatten().tolist()) <= set(expected)
    assert all(samples * p >= 5 for p in expected.values())  # the test's precondition
    statistic = sum(
        (counts[t].item() - samples * p) ** 2 / (samples * p) for t, p in expected.items()
    )
    assert len(expected) > 1 and statistic < chi_square_critical(len(expected) - 1)


def test_invalid_options_raise() -> None:
    model, (src, src_lengths) = TableModel(), random_batch([2, 3])
    for kwargs, match in [
        ({"topk": -1}, "topk"),
        ({"topp": 0.0}, "topp"),
        ({"topp": 1.5}, "topp"),
        ({"temperature": 0.0}, "temperature"),
        ({"num_samples": 0}, "num_samples"),
        ({"seeds": [1]}, "seed"),
        ({"min_len": -1}, "min_len"),
    ]:
        with pytest.raises(ValueError, match=match):
            sample_search(model, src, src_lengths, **{"seeds": [1, 2]} | kwargs)
    with pytest.raises(ValueError, match="seed"):
        Sampling(seed=-1)


@pytest.fixture(scope="module")
def checkpoint(trained: Path) -> str:
    return str(trained / "checkpoints" / "best.ckpt")


def test_translate_sampling_is_reproducible(
    checkpoint: str, tiny_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--sampling --nbest 3: 3 lines per input line, the same in every run and when the
    input is read in chunks; another seed gives other samples."""
    source = tmp_path / "src.de"
    source.write_text("\n".join((tiny_corpus / "test.de").read_text().splitlines()[:8]) + "\n")
    common = ["--checkpoint", checkpoint, "--input", str(source), "--sampling", "--nbest", "3"]

    def run(name: str, *extra: str) -> list[str]:
        translate_main([*common, "--output", str(tmp_path / name), "--temperature", "2", *extra])
        return (tmp_path / name).read_text().splitlines()

    first = run("first", "--seed", "5")
    assert len(first) == 8 * 3 and all("\t" in row for row in first)
    assert run("again", "--seed", "5") == first
    assert run("other", "--seed", "6") != first
    monkeypatch.setattr(translate_module, "CHUNK_LINES", 3)
    chunked = run("chunked", "--seed", "5")
    assert [row.split("\t")[1] for row in chunked] == [row.split("\t")[1] for row in first]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--topk", "5"], "error: --topk given without --sampling"),
        (["--seed", "2", "--topp", "0.5"], "error: --topp, --seed given without --sampling"),
        (["--sampling", "--topp", "0"], "error: --sampling: topp must be in (0, 1], got 0.0"),
        (["--sampling", "--temperature", "0"], "error: --sampling: temperature must be above 0"),
        (["--sampling", "--nbest", "0"], "error: --nbest must be at least 1, got 0"),
    ],
)
def test_bad_sampling_options_are_one_line_errors(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        translate_main(["--checkpoint", str(tmp_path / "absent.ckpt"), *args])
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err
    assert len(stderr.strip().splitlines()) == 1 and stderr.startswith(message)
