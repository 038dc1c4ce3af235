"""The encoder-decoder: shapes, padding invariance, step/forward agreement, overfitting."""

import itertools

import pytest
import torch
from torch import Tensor

from seq2seq import precision
from seq2seq.errors import UserError
from seq2seq.model import Seq2Seq, build_model

# attention[/score]: no score is the default, additive
VARIANTS = ["none", "bahdanau", "bahdanau/general", "luong", "luong/general", "luong/dot"]
COMBINATIONS = list(itertools.product(["gru", "lstm", "rnn"], VARIANTS))
SRC_VOCAB, TGT_VOCAB = 17, 19


def tiny_model(cell: str, variant: str, **overrides) -> Seq2Seq:
    """A small model; `variant` is attention[/score]. Dot scores need a memory as wide as
    the decoder: a unidirectional encoder then."""
    attention, _, score = variant.partition("/")
    settings = dict(
        cell=cell,
        attention=attention,
        attention_score=score or None,
        embed_dim=12,
        hidden_size=16,
        encoder_layers=2,
        decoder_layers=2,
        bidirectional=score != "dot",
        dropout=0.0,
    )
    settings.update(overrides)
    return Seq2Seq(SRC_VOCAB, TGT_VOCAB, **settings).eval()


def padded_batch(lengths: list[int], vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, max_len) random ids >= 4 with zero padding, and the lengths."""
    batch = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for row, n in enumerate(lengths):
        batch[row, :n] = torch.randint(4, vocab, (n,))
    return batch, torch.tensor(lengths)


@pytest.mark.parametrize(("cell", "attention"), COMBINATIONS)
def test_shapes(cell: str, attention: str) -> None:
    model = tiny_model(cell, attention)
    src, src_lengths = padded_batch([5, 3, 1], SRC_VOCAB)
    tgt_in, _ = padded_batch([4, 4, 4], TGT_VOCAB)
    assert model(src, src_lengths, tgt_in).shape == (3, 4, TGT_VOCAB)
    memory, state = model.encode(src, src_lengths)
    assert memory.states.shape == (3, 5, 16 if attention == "luong/dot" else 32)  # 2 * hidden
    assert state.hidden.shape == (2, 3, 16)
    outputs, state, weights = model.decode_step(memory, state, tgt_in[:, 0])
    log_probs = model.log_probs(outputs)
    assert log_probs.shape == (3, TGT_VOCAB)
    torch.testing.assert_close(log_probs.exp().sum(1), torch.ones(3))
    if attention == "none":
        assert weights is None
    else:
        assert weights.shape == (3, 5)
        assert torch.all(weights[1, 3:] == 0) and torch.all(weights[2, 1:] == 0)


@pytest.mark.parametrize(("cell", "attention"), COMBINATIONS)
def test_padding_does_not_change_a_sentence(cell: str, attention: str) -> None:
    model = tiny_model(cell, attention)
    src, src_lengths = padded_batch([3, 7], SRC_VOCAB)
    tgt_in, _ = padded_batch([5, 5], TGT_VOCAB)
    alone_memory, _ = model.encode(src[:1, :3], src_lengths[:1])
    batch_memory, _ = model.encode(src, src_lengths)
    torch.testing.assert_close(batch_memory.states[0, :3], alone_memory.states[0])
    torch.testing.assert_close(batch_memory.summary[0], alone_memory.summary[0])
    alone = model(src[:1, :3], src_lengths[:1], tgt_in[:1])
    batched = model(src, src_lengths, tgt_in)
    torch.testing.assert_close(batched[0], alone[0])


@pytest.mark.parametrize(("cell", "attention"), COMBINATIONS)
def test_decode_steps_equal_teacher_forcing(cell: str, attention: str) -> None:
    model = tiny_model(cell, attention)
    src, src_lengths = padded_batch([6, 2, 4], SRC_VOCAB)
    tgt_in, _ = padded_batch([5, 5, 5], TGT_VOCAB)
    expected = torch.log_softmax(model(src, src_lengths, tgt_in), dim=-1)  # (B, T, V)
    memory, state = model.encode(src, src_lengths)
    for t in range(tgt_in.size(1)):
        outputs, state, _ = model.decode_step(memory, state, tgt_in[:, t])
        log_probs = model.log_probs(outputs)
        torch.testing.assert_close(log_probs, expected[:, t])


@pytest.mark.parametrize("probe", ["this cpu", "forced unsupported"])
@pytest.mark.parametrize(("cell", "attention"), COMBINATIONS)
def test_bf16_autocast_log_probs_stay_fp32_and_close(
    cell: str, attention: str, probe: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What translate.py --precision bf16 runs: search (in inference mode) under bfloat16
    autocast. The decoder computes in bfloat16, the log-probs come back in float32. With the
    probe forced to "unsupported", LSTM layers run in float32 inside autocast."""
    if probe == "forced unsupported":
        monkeypatch.setattr(precision, "cpu_bf16_lstm_supported", lambda: False)
    elif cell == "lstm" and not precision.cpu_bf16_lstm_supported():
        pytest.skip("this CPU runs no LSTM in bfloat16 (oneDNN needs AVX-512 BF16 or AMX)")
    model = tiny_model(cell, attention)
    src, src_lengths = padded_batch([6, 2, 4], SRC_VOCAB)
    tgt_in, _ = padded_batch([3, 3, 3], TGT_VOCAB)

    @torch.inference_mode()
    def steps(dtype: torch.dtype) -> Tensor:
        memory, state = model.encode(src, src_lengths)
        found = []
        for t in range(tgt_in.size(1)):
            outputs, state, _ = model.decode_step(memory, state, tgt_in[:, t])
            assert outputs.dtype == dtype
            found.append(model.log_probs(outputs))
        return torch.stack(found)  # (T, B, V)

    expected = steps(torch.float32)
    with torch.autocast("cpu", torch.bfloat16):
        found = steps(torch.bfloat16)
    assert found.dtype == torch.float32
    torch.testing.assert_close(found, expected, atol=0.05, rtol=0)


def test_empty_source_is_read_as_one_pad_token() -> None:
    model = tiny_model("gru", "bahdanau")
    empty = torch.zeros(2, 0, dtype=torch.long)
    memory, state = model.encode(empty, torch.tensor([0, 0]))
    outputs, _, weights = model.decode_step(memory, state, torch.tensor([2, 2]))
    log_probs = model.log_probs(outputs)
    assert torch.isfinite(log_probs).all()
    torch.testing.assert_close(weights, torch.ones(2, 1))


@pytest.mark.parametrize(("cell", "attention"), COMBINATIONS)
def test_tiny_model_overfits_a_batch(cell: str, attention: str) -> None:
    """Learn to reverse 8 short sequences: the loss must fall close to zero."""
    model = tiny_model(
        cell, attention, embed_dim=32, hidden_size=32, encoder_layers=1, decoder_layers=1
    ).train()
    src, src_lengths = padded_batch([5, 4, 6, 3, 5, 6, 4, 5], SRC_VOCAB)
    reversed_rows = [src[i, :n].flip(0) for i, n in enumerate(src_lengths.tolist())]
    tgt_out = torch.zeros(8, 7, dtype=torch.long)
    tgt_in = torch.zeros(8, 7, dtype=torch.long)
    for i, row in enumerate(reversed_rows):
        tgt_out[i, : len(row) + 1] = torch.cat([row, torch.tensor([model.eos_id])])
        tgt_in[i, : len(row) + 1] = torch.cat([torch.tensor([model.bos_id]), row])
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(300):
        logits = model(src, src_lengths, tgt_in)
        loss = torch.nn.functional.cross_entropy(
            logits.flatten(0, 1), tgt_out.flatten(), ignore_index=0
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05, f"{cell}/{attention} did not overfit: loss {loss.item():.3f}"


def test_tied_embeddings_share_one_matrix() -> None:
    model = tiny_model("gru", "bahdanau", embed_dim=16, tie_embeddings=True)
    assert model.decoder.output.weight is model.decoder.embed.weight
    with pytest.raises(ValueError, match="embed_dim == hidden_size"):
        tiny_model("gru", "bahdanau", embed_dim=8, tie_embeddings=True)


def test_attention_variants_are_what_they_say() -> None:
    """RNNsearch queries with the previous state and has no input feeding; Luong queries
    with the new state and feeds its attentional vector; default scores per variant."""
    rnnsearch, luong = tiny_model("gru", "bahdanau"), tiny_model("gru", "luong")
    assert rnnsearch.decoder.attention.score == "additive"
    assert luong.decoder.attention.score == "additive"
    src, src_lengths = padded_batch([4, 3], SRC_VOCAB)
    queries: list[Tensor] = []
    for model in (rnnsearch, luong):
        model.decoder.attention.register_forward_pre_hook(lambda _, args: queries.append(args[0]))
    for model, fed in ((rnnsearch, False), (luong, True)):
        memory, state = model.encode(src, src_lengths)
        queries.clear()
        _, new_state, _ = model.decode_step(memory, state, torch.tensor([2, 2]))
        expected = state.hidden[-1] if model is rnnsearch else new_state.hidden[-1]
        torch.testing.assert_close(queries[0], expected)
        assert (new_state.feed is not None) == fed
    assert tiny_model("gru", "luong", attention_score="general").decoder.attention.score == (
        "general"
    )
    with pytest.raises(UserError, match="dot needs the decoder's hidden size"):
        tiny_model("gru", "luong", attention_score="dot")
    with pytest.raises(UserError, match=r"attention_score needs model\.attention"):
        tiny_model("gru", "none", attention_score="general")


def test_build_model_ignores_training_settings() -> None:
    model = build_model({"src_vocab_size": 9, "tgt_vocab_size": 11, "cell": "lstm", "lr": 0.1})
    assert isinstance(model.encoder.rnn, torch.nn.LSTM)
    assert model.decoder.output.out_features == 11


def test_the_defaults_are_the_configs_reference_model() -> None:
    """Seq2Seq() and TranslationModule() build the model of configs/base/multi30k.yaml
    (luong, additive scores, the README's reference), and its hyperparameters name the
    score, so a checkpoint never depends on what None stands for."""
    from pathlib import Path

    import yaml

    from seq2seq.system import TranslationModule

    base = Path(__file__).resolve().parents[1] / "configs" / "base" / "multi30k.yaml"
    reference = yaml.safe_load(base.read_text())["model"]
    module = TranslationModule(src_vocab_size=9, tgt_vocab_size=9)
    assert (module.hparams.attention, module.hparams.attention_score) == (
        reference["attention"],
        reference["attention_score"],
    )
    for model in (module.model, Seq2Seq(9, 9)):
        assert (model.decoder.kind, model.decoder.attention.score) == ("luong", "additive")
        assert model.decoder.rnn.mode == reference["cell"].upper()
    assert TranslationModule(attention="none").hparams.attention_score is None
