"""Quality at equal training time, over seeds: ours against JoeyNMT 2.3.0 on Multi30k de→en.

    bash benchmarks/quality_vs_joeynmt.sh 30      # what that script runs:
    python benchmarks/quality.py --minutes 30 --seeds 1 2 3
    python benchmarks/quality.py --no-joeynmt --seeds 1            # ours alone, one run

Ours trains configs/multi30k_gru_luong_additive.yaml as it is (plateau schedule, early
stopping) on `--data-dir`, once per seed (`--seed_everything S --data.seed S`). JoeyNMT
trains the same architecture (embeddings 256, bidirectional GRU encoder 256 per
direction, GRU decoder 256 with Bahdanau attention, input feeding, bridge; dropout 0.3)
on the same data and SentencePiece model, with the same loss (label smoothing 0.1, per
token) and clipping, configured as its users would (`joeynmt_peer.recipe_config`): its
RNN recipes' Adam 1e-3 with the plateau schedule (patience 5, factor 0.5; its `verbose=`
argument, which torch 2.13 removed, is patched out of the benchmark's own venv), their
embedding initialiser N(0, 0.1), its other defaults, validation every 400 updates, and
the batch size of its recipes that reaches the best validation BLEU: each of
`--joeynmt-batch-configs` (2,000 tokens, 4,096 tokens, 80 sentences) first trains once
with the first seed, then the best trains once per other seed (the search's run is the
first seed's). The seed is its top-level `random_seed`, which seeds batch order and
dropout; 2.3.0 builds the model before seeding, so its initial weights are the same
for all. `--joeynmt-matched-batch` also trains, per seed,
the former configuration: batches of as many real target tokens as ours, a constant
rate, embeddings N(0, 1); reported apart.

Every run trains for `--minutes` of wall time from its first batch (data preparation
excluded, validation included); its best checkpoint by validation BLEU decodes
test_2016_flickr with beam 5 and its own length normalization at alpha 1 (ours: log-prob
/ length; JoeyNMT: log-prob / ((5 + length) / 6)); sacrebleu scores the detokenized,
cased output. Output: a table of the runs, a summary per side (mean ± sd over seeds), the
JoeyNMT batch sizes tried, the signatures, ours - JoeyNMT in mean BLEU against the target,
then one JSON line. JoeyNMT is installed at run time into `.cache/bench/joeynmt-venv`.
"""

import argparse
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sentencepiece as spm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import (
    MULTI30K,
    REPO,
    child_env,
    git_state,
    log,
    run_measured,
    saved_or_new,
    score,
    train_ours,
    write_test_set,
)
from benchmarks.joeynmt_peer import (
    RECIPE_BATCHES,
    batch_label,
    batch_setting,
    corpus_lengths,
    decode_joeynmt,
    ensure_joeynmt,
    joey_config,
    logged_tokens_per_sec,
    ours_real_tgt_tokens_per_update,
    patch_plateau,
    prepare_joeynmt,
    real_tgt_tokens_per_update,
    recipe_config,
    train_joeynmt,
    validation_bleu,
    write_joeynmt_data,
)
from benchmarks.quality_report import THROUGHPUT, report
from seq2seq.checkpoint import run_checkpoints

CONFIG = REPO / "configs" / "multi30k_gru_luong_additive.yaml"
BEAM = 5


@dataclass
class Shared:
    """From ours' first run: our hyperparameters, SentencePiece model, training lengths."""

    hp: dict
    data_hp: dict
    spm_file: Path
    lengths: np.ndarray  # (N, 2) source and target pieces of the training pairs kept


@dataclass
class Peer:
    """What every JoeyNMT run shares: its venv's python, the vocabulary, matched batches."""

    python: Path
    voc_file: Path
    batching: dict | None  # with --joeynmt-matched-batch


def train_and_decode_ours(
    work: Path, src: Path, seed: int, args: argparse.Namespace, side: str = "ours", extra=()
) -> dict:
    """Ours trained with `seed` (and the `extra` options, as `side`), its best checkpoint
    decoding `src` with beam 5."""
    run = work / "runs" / f"{side}-seed{seed}"
    train = _train_and_decode_ours
    return saved_or_new(run, args, lambda: train(run, src, seed, args, side, extra))


def _train_and_decode_ours(
    run: Path, src: Path, seed: int, args: argparse.Namespace, side: str, extra
) -> dict:
    data = ["--data.train", args.data_dir / "train", "--data.val", args.data_dir / "val"]
    overrides = [*data, "--data.test", "null", "--seed_everything", seed, "--data.seed", seed]
    trained = train_ours(run, CONFIG, args.minutes, [*overrides, *extra])
    bests = list((run / "checkpoints").glob("best-*.ckpt"))
    best = run_checkpoints(run / "checkpoints", 1, None)[0] if bests else trained["checkpoint"]
    val_bleu = re.search(r"-bleu([\d.]+)\.ckpt$", best.name)
    last = torch.load(trained["checkpoint"], map_location="cpu", weights_only=True)
    cmd = [sys.executable, "scripts/translate.py", "--checkpoint", best, "--input", src]
    cmd += ["--output", run / "test.hyp.en", "--beam-size", BEAM]
    log(f"decoding test with ours ({best.name}), beam {BEAM}")
    run_measured(cmd, run / "translate.log", env=child_env(args.threads, ours=True))
    return {
        "side": side,
        "config": CONFIG.stem,
        "seed": seed,
        "updates": last["global_step"],
        "val_bleu": float(val_bleu[1]) if val_bleu else None,
        "train_s": round(last["callbacks"]["Timer"]["time_elapsed"]["train"], 1),
        "train_peak_rss_mib": round(trained["peak_rss_mib"]),
        "others_cpu_s": trained["others_cpu_s"],
        "checkpoint": str(best),
        "hyp": str(run / "test.hyp.en"),
    }


def load_shared(work: Path, checkpoint: str, data_dir: Path) -> Shared:
    """Our hyperparameters and SentencePiece model (joint) from a checkpoint of ours."""
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    spm_file = work / "spm.model"
    spm_file.write_bytes(ckpt["tokenizer"]["src"])
    sp = spm.SentencePieceProcessor(model_file=str(spm_file))
    data_hp = ckpt["datamodule_hyper_parameters"]
    lengths = corpus_lengths(sp, data_dir / "train", data_hp["max_len"])
    return Shared(ckpt["hyper_parameters"], data_hp, spm_file, lengths)


def prepare_peer(work: Path, shared: Shared, args: argparse.Namespace) -> tuple[Peer, str]:
    """JoeyNMT installed, its plateau schedule patched, its data written; -> also a note."""
    python = ensure_joeynmt()
    builders = patch_plateau()
    note = f"JoeyNMT: verbose= dropped from its ReduceLROnPlateau call in {builders} (torch 2.13)"
    sp = spm.SentencePieceProcessor(model_file=str(shared.spm_file))
    if args.joeynmt_matched_batch:
        voc_file, batching = prepare_joeynmt(args.data_dir, sp, work, shared.data_hp)
        return Peer(python, voc_file, batching), note
    return Peer(python, write_joeynmt_data(args.data_dir, sp, work), None), note


def train_joeynmt_run(
    peer: Peer, shared: Shared, cfg: dict, run: Path, seed: int, args: argparse.Namespace
) -> dict:
    """`cfg` trained into `run/joeynmt` with `seed` (or saved there); -> its figures, its
    model folder."""
    return saved_or_new(run, args, lambda: _train_joeynmt_run(peer, shared, cfg, run, seed, args))


def _train_joeynmt_run(
    peer: Peer, shared: Shared, cfg: dict, run: Path, seed: int, args: argparse.Namespace
) -> dict:
    shutil.rmtree(run / "joeynmt", ignore_errors=True)
    (run / "joeynmt").mkdir(parents=True)
    cfg = cfg | {"model_dir": str(run / "joeynmt" / "model"), "random_seed": seed}
    trained = train_joeynmt(peer.python, cfg, run, args.minutes)
    training = cfg["training"]
    per_update = real_tgt_tokens_per_update(
        shared.lengths, training["batch_size"], training["batch_type"]
    )
    train_s = trained["minutes"] * 60
    scores = validation_bleu(Path(cfg["model_dir"]))
    log_text = (run / "joeynmt" / "train.log").read_text(errors="replace")
    return {
        "seed": seed,
        "updates": trained["steps"],
        "val_bleu": max(scores, default=None),
        "train_s": round(train_s, 1),
        "train_peak_rss_mib": round(trained["peak_rss_mib"]),
        "others_cpu_s": trained["others_cpu_s"],
        "tgt_tok_s": round(trained["steps"] * per_update / train_s),
        "log_tok_s": logged_tokens_per_sec(log_text),
        "model_dir": cfg["model_dir"],
    }


def decode_joeynmt_run(peer: Peer, result: dict, src: Path, batch: int, threads: int) -> dict:
    """The run's best checkpoint (the latest if it never validated) decoding `src` with
    beam 5, `batch` sentences at a time."""
    model_dir = Path(result["model_dir"])
    out = model_dir.parent / "decode"
    out.mkdir(exist_ok=True)
    best = model_dir / "best.ckpt"
    checkpoint = best if best.exists() else (model_dir / "latest.ckpt").resolve()
    log(f"decoding test with JoeyNMT ({checkpoint}), beam {BEAM}")
    decode_joeynmt(peer.python, model_dir, src, out, BEAM, batch, threads, checkpoint="best")
    return result | {"checkpoint": str(checkpoint), "hyp": out / "hyp.en"}


def search_batch(
    peer: Peer, shared: Shared, work: Path, args: argparse.Namespace
) -> tuple[tuple[int, str], list[dict]]:
    """The recipe batch with the best validation BLEU, each trained once with the first
    seed; -> (the chosen batch, the figures of those tried; none when only one is given)."""
    batches = args.joeynmt_batch_configs
    if len(batches) == 1:
        return batches[0], []
    tried = []
    for batch in batches:
        cfg = recipe_config(shared.hp, shared.data_hp, work, shared.spm_file, peer.voc_file, batch)
        run = work / "runs" / f"search-joeynmt-{batch_label(batch)}"
        result = train_joeynmt_run(peer, shared, cfg, run, args.seeds[0], args)
        tried.append({"side": "joeynmt", "config": batch_label(batch)} | result)
        log(f"JoeyNMT {batch_label(batch)}: best validation BLEU {result['val_bleu']}")
    scores = [-1.0 if t["val_bleu"] is None else t["val_bleu"] for t in tried]
    return batches[scores.index(max(scores))], tried


def joeynmt_configs(
    peer: Peer, shared: Shared, work: Path, batch: tuple[int, str]
) -> list[tuple[str, str, dict]]:
    """(side, config label, config) of each JoeyNMT configuration to train per seed."""
    paths = (work, shared.spm_file, peer.voc_file)
    recipe = recipe_config(shared.hp, shared.data_hp, *paths, batch)
    configs = [("joeynmt", batch_label(batch), recipe)]
    if peer.batching is not None:
        matched = joey_config(shared.hp, shared.data_hp, *paths, peer.batching)
        configs.append(("joeynmt-matched", "matched", matched))
    return configs


def scored(run: dict, refs: list[str], figures: dict) -> dict:
    """`run` with the BLEU and chrF of its hypotheses; their signatures go to `figures`."""
    scores = score(Path(run.pop("hyp")), refs)
    for key in ("bleu_signature", "chrf_signature"):
        figures[key] = scores.pop(key)
    name = f"{run['side']} {run['config']} seed {run['seed']}"
    log(f"{name}: {run['updates']} updates, test BLEU {scores['bleu']}, chrF {scores['chrf']}")
    return run | scores


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=30.0, help="training time of each run")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="one run per seed")
    p.add_argument("--work-dir", type=Path, default=REPO / ".cache" / "bench" / "quality")
    p.add_argument("--data-dir", type=Path, default=MULTI30K)
    p.add_argument("--no-joeynmt", action="store_true", help="train and score ours only")
    p.add_argument(
        "--joeynmt-batch-configs",
        type=batch_setting,
        nargs="+",
        default=[batch_setting(b) for b in RECIPE_BATCHES],
        metavar="N[tok|sent]",
        help="JoeyNMT batch sizes to try (the best by validation BLEU trains per seed; "
        f"one given: no search); default {' '.join(RECIPE_BATCHES)}",
    )
    p.add_argument(
        "--joeynmt-matched-batch",
        action="store_true",
        help="also train JoeyNMT per seed in the former configuration: batches of as many "
        "real target tokens as ours, a constant rate (reported as joeynmt-matched)",
    )
    p.add_argument(
        "--retrain",
        action="store_true",
        help="train every run anew (by default a run whose result.json is in --work-dir for "
        "as many minutes is reused, whatever code made it: its commit is in the table)",
    )
    p.add_argument(
        "--threads", type=int, default=torch.get_num_threads(), help="threads for decoding"
    )
    return p.parse_args()


def with_ours_throughput(run: dict, shared: Shared) -> dict:
    """`run` of ours with its real target tokens per second of training."""
    max_tokens = shared.data_hp["max_tokens"]
    per_update = ours_real_tgt_tokens_per_update(shared.lengths, max_tokens, run["seed"])
    return run | {"tgt_tok_s": round(run["updates"] * per_update / run["train_s"])}


def main() -> None:
    args = parse_args()
    args.code = git_state()  # the code that runs, before any edit meanwhile
    work = args.work_dir.resolve()
    src, refs = write_test_set(work, args.data_dir)
    figures: dict[str, Any] = {"minutes": args.minutes, "seeds": args.seeds, "beam": BEAM}
    runs = [train_and_decode_ours(work, src, seed, args) for seed in args.seeds]
    shared = load_shared(work, runs[0]["checkpoint"], args.data_dir)
    runs = [scored(with_ours_throughput(run, shared), refs, figures) for run in runs]
    tried = []
    if not args.no_joeynmt:
        peer, figures["joeynmt_note"] = prepare_peer(work, shared, args)
        batch, tried = search_batch(peer, shared, work, args)
        figures["joeynmt_batch"] = batch_label(batch)
        searched = {(t["side"], t["config"], t["seed"]): t for t in tried}
        for side, label, cfg in joeynmt_configs(peer, shared, work, batch):
            batch_sentences = cfg["testing"].get("batch_size", 64)  # its default
            for seed in args.seeds:
                run_dir = work / "runs" / f"{side}-{label}-seed{seed}"
                run = searched.get((side, label, seed))  # the search's run of this seed
                if run is None:
                    run = train_joeynmt_run(peer, shared, cfg, run_dir, seed, args)
                run = decode_joeynmt_run(peer, run, src, batch_sentences, args.threads)
                runs.append(scored({"side": side, "config": label} | run, refs, figures))
    report(runs, tried, figures | {"throughput": THROUGHPUT, "code": args.code})


if __name__ == "__main__":
    main()
