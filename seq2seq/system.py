"""The Lightning system: trains a `Seq2Seq`, validates with loss and BLEU, tests with beams."""

import atexit
import logging
import math
from functools import cache, partial
from typing import Literal

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule
from lightning.pytorch.plugins.precision import MixedPrecision
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor

from seq2seq.attention import AttentionScore
from seq2seq.decoder import DEFAULT_SCORE, AttentionType
from seq2seq.ema import ExponentialMovingAverage, check_ema_decay
from seq2seq.encoder import Cell
from seq2seq.errors import UserError
from seq2seq.metrics import (
    check_bleu_tokenize,
    score_from_statistics,
    statistics_width,
    sufficient_statistics,
)
from seq2seq.model import build_model
from seq2seq.precision import flush_denormals
from seq2seq.search import beam_search, greedy_search
from seq2seq.search_rules import MAX_LEN_A, MAX_LEN_B, at_length_limit
from seq2seq.tokenizer import Tokenizer

log = logging.getLogger(__name__)

Batch = dict[str, Tensor | list[str]]
EVAL_METRICS = ("bleu", "chrf")  # computed on validation and test sets
COUNTS = 4  # evaluation totals before the metrics' statistics: NLL, tokens, too long, sentences
MAX_CUT_SHARE = 0.01  # of references longer than the decoding length limit, before a warning


class TranslationModule(LightningModule):
    """Label-smoothed training, validation BLEU on greedy output, test BLEU/chrF on beam output.

    Args:
        src_vocab_size: source vocabulary size (linked from the data module).
        tgt_vocab_size: target vocabulary size (linked from the data module).
        pad_id: padding id (linked from the data module).
        bos_id: begin-of-sentence id (linked from the data module).
        eos_id: end-of-sentence id (linked from the data module).
        cell: recurrent cell of encoder and decoder; "rnn" is the plain tanh RNN.
        attention: "bahdanau" (RNNsearch), "luong" (global attention, input feeding) or
            "none" (fixed context); see seq2seq.decoder.
        attention_score: "additive", "general" or "dot"; None: additive (the
            defaults are the configs' reference model: luong with additive scores).
        embed_dim: embedding size.
        hidden_size: encoder hidden size per direction and decoder hidden size.
        encoder_layers: stacked encoder layers.
        decoder_layers: stacked decoder layers.
        bidirectional: bidirectional encoder.
        dropout: dropout rate.
        tie_embeddings: tie target embedding and output projection.
        label_smoothing: label smoothing of the training loss.
        optimizer: "adam" or "adamw".
        lr: peak learning rate.
        weight_decay: weight decay.
        schedule: "constant" (after warmup), "inverse_sqrt" (after warmup) or "plateau"
            (halve-style decay when validation BLEU stops rising).
        warmup_steps: linear warmup steps for "constant" and "inverse_sqrt".
        plateau_factor: learning-rate factor on a plateau.
        plateau_patience: validations without improvement before the learning rate drops.
        max_len_a: decoding length limit a * source length + b, for validation and test.
        max_len_b: see max_len_a.
        test_beam_size: beam size for the test set.
        bleu_tokenize: sacrebleu's BLEU tokenizer for validation and test (13a, intl, zh,
            char, ...): what checkpoint selection and early stopping see; stored in the
            checkpoint, where `evaluate.py --checkpoint` finds it.
        max_nonfinite_losses: a batch whose loss is not finite (on any rank) is skipped with
            a warning; this many in a row stop training with an error (the checkpoints
            written before are kept).
        ema_decay: 0 (off), or the decay of an exponential moving average of the weights
            that validation, test and the saved `state_dict` use (see seq2seq.ema and
            docs/ema.md); e.g. 0.999.
    """

    def __init__(
        self,
        src_vocab_size: int = 8000,
        tgt_vocab_size: int = 8000,
        pad_id: int = 0,
        bos_id: int = 2,
        eos_id: int = 3,
        cell: Cell = "gru",
        attention: AttentionType = "luong",
        attention_score: AttentionScore | None = None,
        embed_dim: int = 256,
        hidden_size: int = 256,
        encoder_layers: int = 1,
        decoder_layers: int = 1,
        bidirectional: bool = True,
        dropout: float = 0.2,
        tie_embeddings: bool = False,
        label_smoothing: float = 0.1,
        optimizer: Literal["adam", "adamw"] = "adam",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        schedule: Literal["constant", "inverse_sqrt", "plateau"] = "plateau",
        warmup_steps: int = 0,
        plateau_factor: float = 0.5,
        plateau_patience: int = 2,
        max_len_a: float = MAX_LEN_A,
        max_len_b: int = MAX_LEN_B,
        test_beam_size: int = 5,
        bleu_tokenize: str = "13a",
        max_nonfinite_losses: int = 10,
        ema_decay: float = 0.0,
    ) -> None:
        super().__init__()
        check_bleu_tokenize(bleu_tokenize)
        if max_nonfinite_losses < 1:
            raise UserError(
                f"model.max_nonfinite_losses must be at least 1, not {max_nonfinite_losses}"
            )
        check_ema_decay(ema_decay)
        self.save_hyperparameters()
        if attention != "none" and attention_score is None:  # checkpoints name the score used
            self.hparams.attention_score = DEFAULT_SCORE
        self.model = build_model(self.hparams)
        self.tokenizer: Tokenizer | None = None
        self._eval_totals: Tensor | None = None  # see `_evaluation_totals`
        self._seed = 0  # of each batch's random numbers, see `on_train_batch_start`
        self._nonfinite_in_a_row = 0

    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> Tensor:
        return self.model(src, src_lengths, tgt_in)

    def setup(self, stage: str) -> None:
        if self.tokenizer is None:
            self.tokenizer = self.trainer.datamodule.tokenizer
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            destroy_process_group_at_exit()

    def on_fit_start(self) -> None:
        run_dir = self.trainer.log_dir or self.trainer.default_root_dir  # a collective: all ranks
        if self.trainer.is_global_zero:
            self.tokenizer.save(run_dir)
        self._seed = torch.initial_seed()  # seed_everything's, on every rank
        if self.device.type == "cpu":
            flush_denormals()  # on the thread that trains, in every process (seq2seq.precision)

    def on_train_batch_start(self, batch: Batch, batch_idx: int) -> None:
        # Dropout's random numbers depend on (seed, epoch, batch, rank) alone, so that a
        # run resumed from any checkpoint draws what the uninterrupted run drew.
        key = [self._seed, self.current_epoch, batch_idx, self.global_rank]
        torch.manual_seed(int(np.random.SeedSequence(key).generate_state(1)[0]))

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor | None:
        smoothed_sum, _, tokens = self._token_losses(batch)
        # One reduction over the processes: their target tokens, and how many have a
        # non-finite loss (all skip together, or DDP would wait for the others' gradients).
        counts = torch.stack([tokens.to(smoothed_sum), (~smoothed_sum.isfinite()).to(smoothed_sum)])
        if self.trainer.world_size > 1:
            counts = self.trainer.strategy.reduce(counts.detach(), reduce_op="sum")
        all_tokens, nonfinite = counts
        if not self._finite_or_skipped(bool(nonfinite), batch_idx):
            return None  # Lightning skips backward and the optimizer step
        self.log("train_loss", smoothed_sum / tokens, prog_bar=True, batch_size=int(tokens))
        return mean_over_all_tokens(smoothed_sum, all_tokens, self.trainer.world_size)

    def _finite_or_skipped(self, nonfinite: bool, batch_idx: int) -> bool:
        """Whether no process had a non-finite loss; if one had, warn, and raise after too
        many in a row."""
        if not nonfinite:
            self._nonfinite_in_a_row = 0
            return True
        self._nonfinite_in_a_row += 1
        where = f"epoch {self.current_epoch}, batch {batch_idx}, step {self.global_step}"
        log.warning("non-finite training loss at %s: batch skipped", where)
        if self._nonfinite_in_a_row >= self.hparams.max_nonfinite_losses:
            raise UserError(
                f"training stopped: {self._nonfinite_in_a_row} batches in a row had a "
                f"non-finite loss (the last at {where}); the checkpoints written before are "
                "kept; try a lower --model.lr or --trainer.gradient_clip_val"
            )
        return False

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate_batch(batch, beam_size=1)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate_batch(batch, beam_size=self.hparams.test_beam_size)

    def on_validation_epoch_start(self) -> None:
        self._reset_evaluation()

    def on_test_epoch_start(self) -> None:
        self._reset_evaluation()

    def on_validation_epoch_end(self) -> None:
        self._log_evaluation("val")

    def on_test_epoch_end(self) -> None:
        self._log_evaluation("test")

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Lightning writes step s's logs when (s + 1) % log_every_n_steps == 0.
        if (self.global_step + 1) % self.trainer.log_every_n_steps == 0:
            grads = [p.grad for p in self.parameters() if p.grad is not None]
            norm = torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(g) for g in grads])
            )
            self.log("grad_norm", norm)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["tokenizer"] = self.tokenizer.to_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.tokenizer = Tokenizer.from_dict(checkpoint["tokenizer"])

    def configure_callbacks(self) -> list[Callback]:
        """The moving average of the weights, for `fit` with an `ema_decay` above 0."""
        decay, fitting = self.hparams.ema_decay, self.trainer.state.fn == TrainerFn.FITTING
        return [ExponentialMovingAverage(decay)] if decay > 0 and fitting else []

    def configure_optimizers(self) -> dict:
        hp = self.hparams
        optimizer_class = torch.optim.AdamW if hp.optimizer == "adamw" else torch.optim.Adam
        # One fused kernel over all parameters where PyTorch has one (CPU, CUDA), not a
        # loop of small operations per parameter; not under mixed precision, whose
        # gradient clipping Lightning refuses for an optimizer that unscales by itself.
        mixed = isinstance(self.trainer.precision_plugin, MixedPrecision)
        fused = self.device.type in ("cpu", "cuda") and not mixed
        optimizer = optimizer_class(
            self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay, fused=fused
        )
        if hp.schedule == "plateau":
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="max", factor=hp.plateau_factor, patience=hp.plateau_patience
            )
            return {
                "optimizer": optimizer,
                "lr_scheduler": {
                    "scheduler": scheduler,
                    "monitor": "val_bleu",
                    "interval": "epoch",
                    "strict": False,  # an epoch without validation: no step, a warning
                },
            }
        factor = partial(lr_factor, schedule=hp.schedule, warmup_steps=hp.warmup_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def _token_losses(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """The batch's summed label-smoothed loss, summed NLL and count of non-pad target
        tokens (teacher-forced)."""
        outputs = self.model.features(batch["src"], batch["src_lengths"], batch["tgt_in"])
        pad, targets = self.hparams.pad_id, batch["tgt_out"]  # (B, T)
        smoothed, nll = self.model.decoder.losses(
            outputs,
            targets,
            smoothing=self.hparams.label_smoothing,
            pad_id=pad,
            unsmoothed_ids=(pad, self.hparams.bos_id),
        )
        return smoothed, nll, (targets != pad).sum()

    def _evaluate_batch(self, batch: Batch, *, beam_size: int) -> None:
        """Add this batch's NLL, token count, references longer than the length limit,
        sentence count and BLEU/chrF statistics to the epoch's totals."""
        _, nll, tokens = self._token_losses(batch)
        hp = self.hparams
        limits = {"max_len_a": hp.max_len_a, "max_len_b": hp.max_len_b}
        if beam_size == 1:
            hypotheses = greedy_search(self.model, batch["src"], batch["src_lengths"], **limits)
        else:
            nbest_lists = beam_search(
                self.model, batch["src"], batch["src_lengths"], beam_size=beam_size, **limits
            )
            hypotheses = [hyps[0] for hyps in nbest_lists]
        ref_lengths = ((batch["tgt_out"] != hp.pad_id).sum(1) - 1).tolist()  # without EOS
        too_long = sum(at_length_limit(ref_lengths, batch["src_lengths"], **limits))
        texts = self.tokenizer.decode_tgt([h.tokens for h in hypotheses])
        tokenize = hp.bleu_tokenize
        statistics = [
            sufficient_statistics(m, texts, batch["tgt_text"], tokenize=tokenize)
            for m in EVAL_METRICS
        ]
        counts = [nll.item(), tokens.item(), too_long, len(hypotheses)]
        totals = torch.as_tensor(np.concatenate([counts, *statistics]), dtype=torch.float64)
        self._eval_totals = totals if self._eval_totals is None else self._eval_totals + totals

    def _reset_evaluation(self) -> None:
        self._eval_totals = None

    def _log_evaluation(self, stage: str) -> None:
        """Sum the totals over all processes, then score the whole set once.

        BLEU is not a mean over batches or ranks: summing sacrebleu's integer
        statistics (exact in float64) and scoring once gives the single-process score.
        The totals stay on the CPU (some devices, such as Apple's MPS, have no float64)
        and go to the device only for a reduction across processes (NCCL needs CUDA).
        """
        if self._eval_totals is None:  # this rank had no batch: contribute zeros
            width = COUNTS + sum(statistics_width(metric) for metric in EVAL_METRICS)
            self._eval_totals = torch.zeros(width, dtype=torch.float64)
        totals = self._eval_totals
        if self.trainer.world_size > 1:
            totals = self.trainer.strategy.reduce(totals.to(self.device), reduce_op="sum").cpu()
        totals = totals.numpy()
        nll, tokens, too_long, sentences = totals[:COUNTS]
        loss = nll / max(tokens, 1.0)
        self.log(f"{stage}_loss", loss, sync_dist=True)  # equal on all ranks already
        self.log(f"{stage}_ppl", math.exp(min(loss, 50.0)), sync_dist=True)
        self._check_length_limit(stage, too_long / max(sentences, 1.0))
        offset = COUNTS
        for metric in EVAL_METRICS:
            width = statistics_width(metric)
            statistics = totals[offset : offset + width]
            score = score_from_statistics(metric, statistics, tokenize=self.hparams.bleu_tokenize)
            self.log(f"{stage}_{metric}", score, prog_bar=True, sync_dist=True)
            offset += width

    def _check_length_limit(self, stage: str, share: float) -> None:
        """Warn when the decoding length limit is too short for a share of the references:
        search cuts their translations, and BLEU comes out too low."""
        if share > MAX_CUT_SHARE and self.trainer.is_global_zero:
            hp = self.hparams
            log.warning(
                "%.1f%% of the %s references are longer than the decoding length limit "
                "%g * source pieces + %d: raise --model.max_len_a (or max_len_b)",
                100 * share,
                stage,
                hp.max_len_a,
                hp.max_len_b,
            )


def mean_over_all_tokens(loss_sum: Tensor, all_tokens: Tensor, world_size: int) -> Tensor:
    """This process's summed loss over the target tokens of all processes, times their
    number: DDP averages gradients over processes, so the step follows the mean loss per
    token of the whole distributed batch, as fairseq normalizes (a mean per process would
    weigh the tokens of a process with fewer more)."""
    return loss_sum * world_size / all_tokens


@cache
def destroy_process_group_at_exit() -> None:
    """Destroy the process group at exit (registered once per process), while Python is
    still alive: that joins gloo's worker threads, which otherwise may release the last
    collective's tensors while the interpreter finalizes and abort the process
    (pytorch/pytorch#179291; Lightning does this for NCCL alone)."""
    atexit.register(_destroy_process_group)


def _destroy_process_group() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def lr_factor(step: int, *, schedule: str, warmup_steps: int) -> float:
    """Learning-rate multiplier: linear warmup, then constant or 1/sqrt(step) decay."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "inverse_sqrt":
        return math.sqrt(max(warmup_steps, 1) / max(step, 1))
    return 1.0
