"""The Python API for translation: `Translator.from_checkpoint(path).translate(sentences)`."""

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple, get_args

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from seq2seq.alignment import word_alignment
from seq2seq.batching import TokenBatchSampler
from seq2seq.checkpoint import load_checkpoint
from seq2seq.ensemble import Ensemble, EnsembleRule
from seq2seq.errors import UserError
from seq2seq.model import Seq2Seq, build_model
from seq2seq.quantize import Quantize, quantize_int8
from seq2seq.restricted import Restricted
from seq2seq.sampling import Sampling, sample_search
from seq2seq.search import Hypothesis, beam_search, greedy_search
from seq2seq.search_rules import (
    MAX_LEN_A,
    MAX_LEN_B,
    CoveragePenalty,
    LengthPenalty,
    at_length_limit,
)
from seq2seq.shortlist import Shortlist
from seq2seq.textfiles import line_numbers
from seq2seq.tokenizer import Tokenizer

log = logging.getLogger(__name__)


class Translation(NamedTuple):
    """One output sentence with its scores and attention."""

    text: str  # detokenized
    score: float  # length-normalized log-probability (+ coverage penalty): ranks n-best lists
    log_prob: float  # sum of token log-probabilities, EOS included if it ended
    tokens: list[int]  # target ids, without BOS and EOS
    attention: np.ndarray | None  # (output tokens incl. EOS if ended, source pieces) or None


EMPTY = Translation("", 0.0, 0.0, [], None)
Precision = Literal["32", "bf16"]

# Source tokens times beam size per batch: 10000 source tokens for greedy search, 2000
# with beam 5; larger batches spill the (rows, vocabulary) scores of each step out of
# the CPU's cache (benchmarks/decode.py measures the effect).
BATCH_TOKENS = 10000


def source_budget(batch_tokens: int, beam_size: int, lengths: list[int]) -> int:
    """Source tokens per batch: `batch_tokens` // beam size, at least the longest sentence."""
    return max([batch_tokens // beam_size, *lengths])


class Translator:
    """A trained model with its SentencePiece models, translating batches of raw sentences.

    Args:
        model: the encoder-decoder, or an ensemble of them.
        tokenizer: its SentencePiece models.
        device: where to run.
        max_src_len: longer sources are truncated to this many pieces (with a warning);
            None: no limit. From a checkpoint: the `max_len` it was trained with.
        max_len_a: default output length limit a * source pieces + b. From a checkpoint:
            the limit its validation used (`--model.max_len_a`, `--model.max_len_b`).
        max_len_b: see max_len_a.
        shortlist: decode each sentence over its own candidate target pieces
            (seq2seq.restricted); None: over the whole vocabulary.
    """

    def __init__(
        self,
        model: Seq2Seq | Ensemble,
        tokenizer: Tokenizer,
        device: torch.device,
        max_src_len: int | None = None,
        max_len_a: float = MAX_LEN_A,
        max_len_b: int = MAX_LEN_B,
        shortlist: Shortlist | None = None,
    ) -> None:
        self.model = model.to(device).eval()
        self.searched = self.model if shortlist is None else Restricted(self.model, shortlist)
        self.tokenizer = tokenizer
        self.device = device
        self.max_src_len = max_src_len
        self.max_len_a, self.max_len_b = max_len_a, max_len_b

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str = "auto", **options: Any
    ) -> "Translator":
        """Load a checkpoint written by `scripts/train.py`: it holds everything needed.
        Takes the `quantize` and `shortlist` options of `from_all_loaded`."""
        return cls.from_loaded(load_checkpoint(path, mmap=True), path, device, **options)

    @classmethod
    def from_checkpoints(
        cls,
        paths: Sequence[str | Path],
        device: str = "auto",
        rule: EnsembleRule = "logprob",
        **options: Any,
    ) -> "Translator":
        """One checkpoint, or several decoded as an ensemble (see seq2seq.ensemble; `rule`
        combines their log-probabilities). Their SentencePiece models must be the same;
        the first checkpoint's output length limit applies, and the shortest `max_len`.
        Takes the `quantize` and `shortlist` options of `from_all_loaded`."""
        loaded = [(load_checkpoint(p, mmap=True), p) for p in paths]
        return cls.from_all_loaded(loaded, device, rule, **options)

    @classmethod
    def from_loaded(
        cls, checkpoint: dict[str, Any], path: str | Path, device: str, **options: Any
    ) -> "Translator":
        """From a checkpoint read by `load_checkpoint(path)`."""
        return cls.from_all_loaded([(checkpoint, path)], device, **options)

    @classmethod
    def from_all_loaded(
        cls,
        loaded: Sequence[tuple[dict[str, Any], str | Path]],
        device: str,
        rule: EnsembleRule = "logprob",
        *,
        quantize: Quantize = "none",
        shortlist: str | Path | None = None,
    ) -> "Translator":
        """From (checkpoint, its path) pairs read by `load_checkpoint`: one model, or their
        ensemble. `quantize="int8"` runs each model's per-step layers in int8 on CPU
        (seq2seq.quantize); `shortlist`, a file of scripts/shortlist.py built for these
        SentencePiece models, restricts each sentence's output pieces (seq2seq.restricted)."""
        if quantize not in get_args(Quantize):
            raise UserError(f"quantize must be one of {get_args(Quantize)}, got {quantize!r}")
        models, tokenizers = zip(*(_model_and_tokenizer(c, p) for c, p in loaded), strict=True)
        (first, first_path), fingerprint = loaded[0], tokenizers[0].fingerprint
        for (_, path), tokenizer in zip(loaded[1:], tokenizers[1:], strict=True):
            if tokenizer.fingerprint != fingerprint:
                raise UserError(
                    f"{path} and {first_path} have different SentencePiece models "
                    f"({tokenizer.fingerprint}, {fingerprint}): an ensemble needs one vocabulary"
                )
        max_lens = [(c.get("datamodule_hyper_parameters") or {}).get("max_len") for c, _ in loaded]
        known = [n for n in max_lens if n is not None]
        hparams, where = first["hyper_parameters"], resolve_device(device)
        if quantize == "int8":
            models = tuple(quantize_int8(m, where) for m in models)
        restriction = None
        if shortlist is not None:
            restriction = Shortlist.load(shortlist)
            restriction.check_matches(fingerprint, tokenizers[0].tgt_vocab_size, str(shortlist))
        return cls(
            models[0] if len(models) == 1 else Ensemble(models, rule),
            tokenizers[0],
            where,
            max_src_len=min(known) if known else None,
            max_len_a=hparams.get("max_len_a", MAX_LEN_A),
            max_len_b=hparams.get("max_len_b", MAX_LEN_B),
            shortlist=restriction,
        )

    def translate(self, sentences: list[str], **options: Any) -> list[str]:
        """Translate raw sentences; the best output of each, in input order.

        Takes the options of `translate_nbest`; `beam_size=1` is greedy search.
        """
        return [ranked[0].text for ranked in self.translate_nbest(sentences, **options)]

    @torch.inference_mode()
    def translate_nbest(
        self,
        sentences: list[str],
        *,
        nbest: int = 1,
        beam_size: int = 5,
        sampling: Sampling | None = None,
        length_penalty: LengthPenalty = "average",
        alpha: float = 1.0,
        coverage_penalty: CoveragePenalty = "none",
        beta: float = 0.0,
        max_len_a: float | None = None,
        max_len_b: int | None = None,
        min_len: int = 0,
        no_repeat_ngram: int = 0,
        batch_tokens: int = BATCH_TOKENS,
        attention: bool = False,
        precision: Precision = "32",
        progress: bool = False,
        first_line: int = 1,
    ) -> list[list[Translation]]:
        """The `nbest` best translations of each sentence, best first, in input order.

        Sentences are batched in length order, `batch_tokens` source tokens times the
        beam size at most (the decoder's rows: a beam search's step over K rows per
        sentence works through K times the memory of a greedy one). An empty or blank
        sentence is not decoded: it gets `nbest` empty translations. `attention=True`
        keeps each output token's attention weights (models with attention only).
        `max_len_a`, `max_len_b`: None takes the translator's (from a checkpoint: its
        training's); outputs stopped at that limit are warned about.
        `precision="bf16"` runs the model under bfloat16 autocast: faster on CPUs that
        multiply bfloat16 in hardware (AVX512-BF16, AMX), slower on others; a few
        outputs may change. (On CUDA, autocast runs cuDNN's GRU/LSTM in float16.)
        Warnings number the sentences from `first_line`.
        `coverage_penalty="wu"` with `beta` ranks search outputs by the attention each
        source token received (seq2seq.search.beam_search; models with attention only).
        `sampling`: draw `nbest` random translations of each sentence instead, in draw
        order (seq2seq.sampling; `beam_size` is ignored, batches hold `batch_tokens` / nbest
        source tokens). Sentence i's draws depend only on `sampling` and its id
        `first_line` + i: not on batching, nor on how the input is split into calls.
        """
        if sampling is not None and nbest < 1:
            raise UserError(f"need nbest >= 1 samples, got {nbest}")
        if sampling is None and (beam_size < 1 or not 1 <= nbest <= beam_size):
            raise UserError(f"need 1 <= nbest <= beam size, got nbest {nbest}, beam {beam_size}")
        if precision not in get_args(Precision):
            raise UserError(f"precision must be one of {get_args(Precision)}, got {precision!r}")
        self._check_coverage(coverage_penalty, beta, sampling)
        coverage_options = {"coverage_penalty": coverage_penalty, "beta": beta}
        options = {
            "length_penalty": length_penalty,
            "alpha": alpha,
            "max_len_a": self.max_len_a if max_len_a is None else max_len_a,
            "max_len_b": self.max_len_b if max_len_b is None else max_len_b,
            "min_len": min_len,
            "no_repeat_ngram": no_repeat_ngram,
            "return_attention": attention,
        }
        source_ids = self.encode_sources(sentences, first_line)
        todo = [i for i, ids in enumerate(source_ids) if ids]
        results = [[EMPTY] * nbest for _ in sentences]
        lengths = [len(source_ids[i]) for i in todo]
        budget = source_budget(batch_tokens, beam_size if sampling is None else nbest, lengths)
        bf16 = torch.autocast(self.device.type, torch.bfloat16, enabled=precision == "bf16")
        with bf16, tqdm(total=len(sentences), unit="sent", disable=not progress) as bar:
            bar.update(len(sentences) - len(todo))
            for batch in TokenBatchSampler(lengths, budget, shuffle=False):
                rows = [todo[i] for i in batch]
                sources = [source_ids[i] for i in rows]
                if sampling is None:
                    found = self._search(sources, beam_size, nbest, options | coverage_options)
                else:
                    ids = [first_line + i for i in rows]
                    found = self._sample(sources, ids, nbest, sampling, options)
                for row, ranked in zip(rows, found, strict=True):
                    results[row] = ranked
                bar.update(len(rows))
        lines = [first_line + i for i in todo]
        self._warn_cut_outputs([results[i][0] for i in todo], lengths, lines, options)
        return results

    def _warn_cut_outputs(
        self, best: list[Translation], lengths: list[int], lines: list[int], options: dict
    ) -> None:
        """One warning naming the lines whose best output stopped at the length limit."""
        a, b = options["max_len_a"], options["max_len_b"]
        output_lengths = [len(t.tokens) for t in best]
        flags = at_length_limit(output_lengths, torch.tensor(lengths), a, b)
        cut = [line for line, flag in zip(lines, flags, strict=True) if flag]
        if cut:
            log.warning(
                "%d output(s) stopped at the length limit %g * source pieces + %d without "
                "ending, line(s) %s: raise --max-len-a",
                len(cut),
                a,
                b,
                line_numbers(cut),
            )

    @property
    def attending_model(self) -> Seq2Seq:
        """The model whose attention search reports: the model, or an ensemble's first."""
        return self.model.models[0] if isinstance(self.model, Ensemble) else self.model

    @property
    def has_attention(self) -> bool:
        """Whether search reports attention weights (`attending_model` has attention)."""
        return self.attending_model.decoder.attention is not None

    def alignment(self, sentence: str, translation: Translation) -> list[tuple[int, int]]:
        """(source word, output word) pairs of a translation of `sentence` made with
        `attention=True`: each output word to the source word it attended most
        (seq2seq.alignment; `pharaoh` formats them)."""
        if translation.attention is None:
            if translation.tokens:
                raise UserError("alignments need attention: translate with attention=True")
            return []
        return self.align_words(sentence, translation.tokens, translation.attention)

    def align_words(
        self, sentence: str, tokens: list[int], attention: np.ndarray
    ) -> list[tuple[int, int]]:
        """(source word, output word) pairs from the (T(+1), S) attention of output `tokens`
        over the source pieces of `sentence` as decoding reads them."""
        src = self.tokenizer.src_pieces(sentence.strip())[: self.max_src_len]
        return word_alignment(attention, src, self.tokenizer.tgt_pieces(tokens))

    def pieces(self, sentence: str, translation: Translation) -> tuple[list[str], list[str]]:
        """Source and output pieces labelling the rows and columns of `translation.attention`."""
        src = self.tokenizer.src_pieces(sentence.strip())[: self.max_src_len]
        tgt = self.tokenizer.tgt_pieces(translation.tokens)
        if translation.attention is not None and len(translation.attention) > len(tgt):
            tgt.append("</s>")
        return src, tgt

    def _check_coverage(
        self, coverage_penalty: CoveragePenalty, beta: float, sampling: Sampling | None
    ) -> None:
        """UserError for a coverage penalty that cannot apply."""
        if coverage_penalty not in get_args(CoveragePenalty):
            choices = get_args(CoveragePenalty)
            raise UserError(f"coverage_penalty must be one of {choices}, got {coverage_penalty!r}")
        if beta < 0:
            raise UserError(f"beta must be at least 0 (a penalty, not a bonus), got {beta}")
        if coverage_penalty != "none" and sampling is not None:
            raise UserError("the coverage penalty ranks search outputs; sampling ranks none")
        if coverage_penalty != "none" and beta > 0 and not self.has_attention:
            raise UserError("the coverage penalty needs a model with attention")

    def _search(
        self, rows: list[list[int]], beam_size: int, nbest: int, options: dict[str, Any]
    ) -> list[list[Translation]]:
        """Decode one batch of source id lists."""
        src, src_lengths = self.pad(rows)
        if beam_size == 1:
            found = [[h] for h in greedy_search(self.searched, src, src_lengths, **options)]
        else:
            found = beam_search(
                self.searched, src, src_lengths, beam_size=beam_size, nbest=nbest, **options
            )
        return self._translations(found, src, src_lengths)

    def _sample(
        self,
        rows: list[list[int]],
        sentence_ids: list[int],
        nbest: int,
        sampling: Sampling,
        options: dict[str, Any],
    ) -> list[list[Translation]]:
        """Draw `nbest` translations of each of one batch of source id lists."""
        src, src_lengths = self.pad(rows)
        found = sample_search(
            self.searched,
            src,
            src_lengths,
            seeds=sampling.seeds(sentence_ids),
            num_samples=nbest,
            topk=sampling.topk,
            topp=sampling.topp,
            temperature=sampling.temperature,
            **options,
        )
        return self._translations(found, src, src_lengths)

    def _translations(
        self, found: list[list[Hypothesis]], src: Tensor, src_lengths: Tensor
    ) -> list[list[Translation]]:
        """Search's hypotheses of the (B, S) sources as translations; under a shortlist,
        their tokens mapped from the batch's vocabulary to target ids (seq2seq.restricted)."""
        ids = None
        if isinstance(self.searched, Restricted):
            ids = self.searched.vocabulary(src, src_lengths).tolist()
        return [[self._as_translation(h, ids) for h in ranked] for ranked in found]

    def _as_translation(self, hypothesis: Hypothesis, ids: list[int] | None) -> Translation:
        """`ids`: the target id of each of search's tokens, or None where they are."""
        tokens = hypothesis.tokens if ids is None else [ids[t] for t in hypothesis.tokens]
        (text,) = self.tokenizer.decode_tgt([tokens])
        attention = hypothesis.attention
        weights = None if attention is None else attention.float().cpu().numpy()
        return Translation(text, hypothesis.score, hypothesis.log_prob, tokens, weights)

    def encode_sources(self, sentences: list[str], first_line: int) -> list[list[int]]:
        """Source ids per sentence, as decoding reads them: stripped, over-long ones
        truncated to `max_src_len` with one warning numbering the lines from `first_line`."""
        source_ids = self.tokenizer.encode_src([s.strip() for s in sentences])
        if self.max_src_len is None:
            return source_ids
        numbered = enumerate(source_ids, start=first_line)
        too_long = [n for n, ids in numbered if len(ids) > self.max_src_len]
        if too_long:
            log.warning(
                "%d line(s) longer than %d source pieces, truncated: line(s) %s",
                len(too_long),
                self.max_src_len,
                line_numbers(too_long),
            )
        return [ids[: self.max_src_len] for ids in source_ids]

    def pad(self, sequences: list[list[int]]) -> tuple[Tensor, Tensor]:
        """(B, L) id lists right-padded with the model's pad id, and their (B,) lengths, on
        the model's device: a batch of sources, or of target inputs or outputs."""
        lengths = torch.tensor([len(s) for s in sequences])
        padded = torch.full((len(sequences), int(lengths.max())), self.model.pad_id)  # (B, L)
        for row, ids in enumerate(sequences):
            padded[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return padded.to(self.device), lengths.to(self.device)


def _model_and_tokenizer(checkpoint: dict[str, Any], path: str | Path) -> tuple[Seq2Seq, Tokenizer]:
    """The model and SentencePiece models of a checkpoint read by `load_checkpoint(path)`."""
    model = build_model(checkpoint["hyper_parameters"])
    state = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise UserError(f"{path}: weights do not fit the model it describes ({err})") from err
    try:
        return model, Tokenizer.from_dict(checkpoint["tokenizer"])
    except UserError as err:
        raise UserError(f"{path}: {err}") from err


def resolve_device(device: str) -> torch.device:
    """ "auto" picks CUDA when available; "cuda" without a GPU is a user error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but no CUDA device is available")
    try:
        return torch.device(device)
    except RuntimeError:
        raise UserError(f"--device must be cpu, cuda, cuda:N or auto, got {device!r}") from None
