"""The Lightning data module: SentencePiece, tokenized Arrow caches, token-batched loaders.

Everything expensive is cached under `cache_dir`, keyed by all it depends on:
`spm-<key>/` holds trained SentencePiece models, `data-<split>-<key>/` one
tokenized split as one Arrow file (`data.arrow`), memory-mapped. Each is built in a
temporary folder and renamed into place with a marker file inside, so a
half-written cache is never read and two processes may build at once. Under
torchrun, SLURM or DDP, SentencePiece is trained by global rank 0 alone; the
other processes wait for its model in the cache (shared by all processes).
"""

import logging
from functools import partial
from pathlib import Path
from typing import Any, Literal

import datasets
import numpy as np
import pyarrow.compute as pc
import torch.distributed
from lightning import LightningDataModule, Trainer
from torch.utils.data import DataLoader

from seq2seq.batching import ResumableLoader, TokenBatchSampler, collate, example_cost
from seq2seq.cache import MARKER, cache_key, global_rank, is_complete, staging, wait_for_file
from seq2seq.corpus import FileCorpus, HFCorpus, tokenize_corpus
from seq2seq.errors import UserError
from seq2seq.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer

log = logging.getLogger(__name__)

SPM_FORMAT = 1  # bump when the layout of the cached SentencePiece models changes
DATA_FORMAT = 2  # bump when the layout of cached datasets changes
DATA_FILE = "data.arrow"  # a cached split: this Arrow file in its folder
SPM_WAIT_SECONDS = 4 * 3600  # how long other ranks wait for rank 0's SentencePiece model
SPLITS = ("train", "val", "test")
HF_SPLITS = {"train": "train", "val": "validation", "test": "test"}
STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ()}
DEFAULT_SEED = 1234  # of the batch order, where neither data.seed nor seed_everything is set


def _no_distributed_sampler(trainer: Trainer) -> None:
    """Trainer(use_distributed_sampler=False) after the fact, for a Trainer made without it
    (scripts/train.py passes it). Lightning has no public setter (its public `strategy`
    and `world_size` tell whether it would inject a sampler, not how to stop it): where
    its private one is gone, Lightning's own error asks for that argument."""
    connector = getattr(trainer, "_accelerator_connector", None)
    if hasattr(connector, "use_distributed_sampler"):
        connector.use_distributed_sampler = False


def _epoch_batch_counts(trainer: Trainer) -> Any:
    """Lightning's counts of the current epoch's training batches (`ready`, `started`,
    `processed`, `completed`), the one place that reaches into its fit loop.

    Resuming mid-epoch needs them, and Lightning has no public API for them: the batches
    trained (`processed`) are not those the loader has served, which run ahead (Lightning
    and the DataLoader's workers fetch in advance); and an epoch that restarts from its
    beginning must have Lightning count from 0 again. pyproject.toml pins lightning to
    the versions tested; tests/test_datamodule.py checks what these counts hold.
    """
    return trainer.fit_loop.epoch_loop.batch_progress.current


def dataset_costs(data: datasets.Dataset, max_src_len: int | None = None) -> np.ndarray:
    """Each example's padded length (see `batching.example_cost`), read from the Arrow
    columns; sources counted as cut to `max_src_len` if given."""
    columns = data.with_format("arrow")
    src_len = pc.list_value_length(columns["src_ids"]).to_numpy()
    tgt_len = pc.list_value_length(columns["tgt_ids"]).to_numpy()
    if max_src_len is not None:
        src_len = np.minimum(src_len, max_src_len)
    return example_cost(src_len, tgt_len)


class TranslationDataModule(LightningDataModule):
    """Parallel text from files or a Hugging Face dataset, as batches of token ids.

    The tokenizer, and the vocabulary sizes and special ids that come from it,
    are loaded or trained on first use. Training pairs with an empty side or
    more than `max_len` tokens on a side are dropped; validation and test
    pairs are all kept, with their raw text for scoring, sources cut to `max_len`
    tokens as `Translator` cuts them.
    """

    def __init__(
        self,
        train: str | None = None,
        val: str | None = None,
        test: str | None = None,
        src_lang: str = "de",
        tgt_lang: str = "en",
        dataset: str | None = None,
        dataset_config: str | None = None,
        spm_model: str | None = None,
        spm_tgt_model: str | None = None,
        vocab_size: int = 8000,
        spm_type: Literal["unigram", "bpe"] = "unigram",
        joint_vocab: bool = True,
        spm_input_sentence_size: int = 500_000,
        max_len: int = 100,
        max_tokens: int = 4096,
        num_proc: int = 1,
        num_workers: int = 0,
        cache_dir: str = ".cache/seq2seq",
        seed: int | None = None,
    ) -> None:
        """Configure the data; nothing is read until first needed.

        Args:
            train: Path prefix of the training files `PREFIX.{src_lang,tgt_lang}[.gz]`.
            val: Path prefix of the validation files (default: the dataset's "validation").
            test: Path prefix of the test files (default: the dataset's "test").
            src_lang: Source language code: the file suffix or the dataset's translation key.
            tgt_lang: Target language code.
            dataset: A Hugging Face translation dataset (hub name or `save_to_disk` folder),
                instead of `train`; its splits are "train", "validation" and "test".
            dataset_config: The dataset's configuration name, e.g. "de-en".
            spm_model: A SentencePiece model to use instead of training one (joint when
                `spm_tgt_model` is not given).
            spm_tgt_model: The target-side SentencePiece model, for separate vocabularies.
            vocab_size: Vocabulary size of a trained SentencePiece model (per side).
            spm_type: SentencePiece algorithm of a trained model.
            joint_vocab: Train one model for both languages rather than one per side.
            spm_input_sentence_size: Sentences SentencePiece samples for training (0: all;
                its trainer holds about 1.5 KB of memory a sentence).
            max_len: Longest training sentence, in tokens; longer training pairs are dropped.
            max_tokens: Batch size in tokens, padding included; at least max_len + 1.
            num_proc: Processes for tokenizing the corpus.
            num_workers: DataLoader worker processes.
            cache_dir: Folder for the trained tokenizer and the tokenized datasets.
            seed: Seed of the training batch order; None: train.py's `seed_everything`
                (1234 where there is none).
        """
        super().__init__()
        self.save_hyperparameters()  # logged, and stored in checkpoints
        if (train is None) == (dataset is None):
            raise UserError("set exactly one of data.train (a path prefix) and data.dataset")
        if spm_tgt_model is not None and spm_model is None:
            raise UserError("data.spm_tgt_model needs data.spm_model (the source model)")
        if not src_lang or src_lang == tgt_lang:
            raise UserError(f"data.src_lang and tgt_lang must differ: {src_lang!r}, {tgt_lang!r}")
        if vocab_size <= 4:
            raise UserError(f"data.vocab_size must exceed 4 (the special tokens), not {vocab_size}")
        if max_len < 1 or max_tokens < max_len + 1:
            raise UserError(
                f"data.max_tokens ({max_tokens}) must be at least data.max_len + 1 "
                f"({max_len} + 1 for BOS/EOS), and max_len at least 1"
            )
        if num_proc < 1 or num_workers < 0 or spm_input_sentence_size < 0:
            raise UserError("data.num_proc must be >= 1; num_workers, spm_input_sentence_size >= 0")
        self.prefixes = {"train": train, "val": val, "test": test}
        self.src_lang, self.tgt_lang = src_lang, tgt_lang
        self.dataset, self.dataset_config = dataset, dataset_config
        self.spm_model, self.spm_tgt_model = spm_model, spm_tgt_model
        self.vocab_size, self.spm_type, self.joint_vocab = vocab_size, spm_type, joint_vocab
        self.spm_input_sentence_size = spm_input_sentence_size
        self.max_len, self.max_tokens = max_len, max_tokens
        self.num_proc, self.num_workers = num_proc, num_workers
        self.cache_dir = Path(cache_dir)
        self.seed = DEFAULT_SEED if seed is None else seed
        self._tokenizer: Tokenizer | None = None
        self._corpora: dict[str, FileCorpus | HFCorpus] = {}
        self._datasets: dict[str, datasets.Dataset] = {}

    @property
    def tokenizer(self) -> Tokenizer:
        """The SentencePiece models: given, cached or trained now on the training corpus."""
        if self._tokenizer is None:
            self._tokenizer = self._load_or_train_tokenizer()
        return self._tokenizer

    @property
    def src_vocab_size(self) -> int:
        return self.tokenizer.src_vocab_size

    @property
    def tgt_vocab_size(self) -> int:
        return self.tokenizer.tgt_vocab_size

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_id

    @property
    def bos_id(self) -> int:
        return self.tokenizer.bos_id

    @property
    def eos_id(self) -> int:
        return self.tokenizer.eos_id

    @property
    def train_dataset(self) -> datasets.Dataset:
        return self._dataset("train")

    @property
    def val_dataset(self) -> datasets.Dataset:
        return self._dataset("val")

    @property
    def test_dataset(self) -> datasets.Dataset:
        return self._dataset("test")

    def prepare_data(self) -> None:
        """Build the tokenizer and every configured split's cache, unless already cached."""
        for split in SPLITS:
            if self._configured(split):
                path = self._cache_path(split)
                if is_complete(path):
                    log.info("reusing cached %s dataset at %s", split, path)
                else:
                    self._build(split, path)

    def setup(self, stage: str) -> None:
        """Load (building if need be) the configured splits that `stage` uses.

        Also tells the trainer not to wrap the loaders in a `DistributedSampler`:
        the batch sampler shards by rank itself (see `TokenBatchSampler`).
        """
        if self.trainer is not None:
            _no_distributed_sampler(self.trainer)
        for split in STAGE_SPLITS[stage]:
            if self._configured(split):
                self._dataset(split)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def _configured(self, split: str) -> bool:
        return self.prefixes[split] is not None or self.dataset is not None

    def _corpus(self, split: str) -> FileCorpus | HFCorpus:
        """The source of `split`: its path prefix if given, else the dataset's split."""
        if split not in self._corpora:
            prefix = self.prefixes[split]
            if prefix is not None:
                corpus = FileCorpus.from_prefix(prefix, self.src_lang, self.tgt_lang)
            elif self.dataset is not None:
                langs = self.src_lang, self.tgt_lang
                corpus = HFCorpus.load(self.dataset, HF_SPLITS[split], *langs, self.dataset_config)
            else:
                raise UserError(f"no {split} corpus: set data.{split} (a path prefix)")
            self._corpora[split] = corpus
        return self._corpora[split]

    def _load_or_train_tokenizer(self) -> Tokenizer:
        if self.spm_model is not None:
            log.info("loading SentencePiece model %s", self.spm_model)
            return Tokenizer.load(self.spm_model, self.spm_tgt_model)
        corpus = self._corpus("train")
        langs, size = [self.src_lang, self.tgt_lang], self.spm_input_sentence_size
        settings = [self.vocab_size, self.spm_type, self.joint_vocab, langs, size]
        key = cache_key("spm", SPM_FORMAT, corpus.fingerprint, settings)
        path = self.cache_dir / f"spm-{key}"
        if global_rank() > 0:  # rank 0 trains it, the others load what it saves
            wait_for_file(path / MARKER, "SentencePiece model", SPM_WAIT_SECONDS)
        if is_complete(path):
            log.info("reusing cached SentencePiece model at %s", path)
            return Tokenizer.load_dir(path)
        log.info(
            "training SentencePiece (%s, %d pieces) on %s", self.spm_type, self.vocab_size, corpus
        )
        tokenizer = Tokenizer.train(
            (src for src, _ in corpus.pairs()),
            (tgt for _, tgt in corpus.pairs()),
            vocab_size=self.vocab_size,
            model_type=self.spm_type,
            joint=self.joint_vocab,
            input_sentence_size=self.spm_input_sentence_size,
        )
        with staging(path) as tmp:
            tokenizer.save(tmp)
        log.info("saved SentencePiece model to %s", path)
        return tokenizer

    def _cache_path(self, split: str) -> Path:
        max_len = self.max_len if split == "train" else None
        corpus = self._corpus(split)
        fingerprints = corpus.fingerprint, self.tokenizer.fingerprint
        key = cache_key("data", DATA_FORMAT, *fingerprints, max_len)
        return self.cache_dir / f"data-{split}-{key}"

    def _dataset(self, split: str) -> datasets.Dataset:
        """The tokenized split, memory-mapped from its cache (built first if missing)."""
        if split not in self._datasets:
            path = self._cache_path(split)
            if not is_complete(path):
                self._build(split, path)
            self._datasets[split] = datasets.Dataset.from_file(str(path / DATA_FILE))
        return self._datasets[split]

    def _build(self, split: str, path: Path) -> None:
        corpus = self._corpus(split)
        log.info("building %s dataset from %s", split, corpus)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with staging(path) as out:
            max_len = self.max_len if split == "train" else None
            data = tokenize_corpus(corpus, self.tokenizer, out / DATA_FILE, max_len, self.num_proc)
        log.info("saved %s dataset (%d pairs) to %s", split, len(data), path)

    def _replicas(self) -> tuple[int, int]:
        """(world size, rank) from the trainer, else torch.distributed, else (1, 0)."""
        if self.trainer is not None:
            return self.trainer.world_size, self.trainer.global_rank
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_world_size(), torch.distributed.get_rank()
        return 1, 0

    def _batches_trained(self) -> int:
        """Training batches this rank has stepped through in the current epoch."""
        return _epoch_batch_counts(self.trainer).processed

    def _restart_epoch(self) -> None:
        """Make Lightning, resuming, count this epoch's batches from 0 again. (Its restart
        counts the checkpoint's `processed` batches done, whether the checkpoint was saved
        within a batch's end or after validation: each count is lowered by as many.)"""
        counts = _epoch_batch_counts(self.trainer)
        done = counts.processed
        for count in ("ready", "started", "processed", "completed"):
            setattr(counts, count, getattr(counts, count) - done)

    def _loader(self, split: str, *, shuffle: bool) -> DataLoader:
        data = self._dataset(split)
        # Training pairs fit max_len; evaluation sources are cut to it, as Translator cuts them.
        max_src_len = None if shuffle else self.max_len
        costs = dataset_costs(data, max_src_len)
        max_tokens = self.max_tokens
        if not shuffle and costs.max() > max_tokens:  # unfiltered: never drop evaluation pairs
            max_tokens = int(costs.max())
            log.warning("%s has a pair of %d tokens: batches of up to that size", split, max_tokens)
        num_replicas, rank = self._replicas()
        sampler = TokenBatchSampler(
            costs, max_tokens, shuffle=shuffle, seed=self.seed, num_replicas=num_replicas, rank=rank
        )
        options = {
            "batch_sampler": sampler,
            "collate_fn": partial(
                collate, pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID, max_src_len=max_src_len
            ),
            "num_workers": self.num_workers,
            "persistent_workers": self.num_workers > 0,
        }
        if shuffle:
            progress = {"batches_done": self._batches_trained, "restart_epoch": self._restart_epoch}
            return ResumableLoader(data, **progress, **options)
        return DataLoader(data, **options)
