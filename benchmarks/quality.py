"""Quality at equal training time over seeds: ours against JoeyNMT 2.3.0 on Multi30k de→en,
our model's variants, and more ways to decode the runs (averages, ensembles).

    bash benchmarks/quality_vs_joeynmt.sh 30        # runs: quality.py --minutes 30 --seeds 1 2 3
    python benchmarks/quality.py --no-joeynmt --seeds 1             # ours alone, one run
    python benchmarks/quality.py --minutes 10 --no-joeynmt --variants none bahdanau luong ours
    python benchmarks/quality.py --config configs/multi30k_best.yaml --minutes 45 --no-joeynmt \
        --variants ours ema --side-by-side --average 5 --ensemble
    python benchmarks/quality.py --config configs/demo.yaml --test data/demo/test --minutes 10 \
        --seeds 1 2 3 4 5 --no-joeynmt

Ours: `--config` as it is (default the reference, multi30k_gru_luong_additive), once per
seed (`--seed_everything S --data.seed S`) and `--variants` (`VARIANTS`); with
`--side-by-side` a seed's variants train at once, one thread on a core of its own each,
so that all get the same machine for the same minutes. JoeyNMT: the same architecture,
data and SentencePiece model as its users configure it (`joeynmt_peer.recipe_config`),
with the batch size of its recipes that reaches the best validation BLEU (each trains
once with the first seed, the best then once per other seed), validating at our first
run's cadence in minutes, with the first of `--joeynmt-schedules` (each other once, beside it).
Every run trains for `--minutes` from its first batch, validation included; its best
checkpoint by validation BLEU (JoeyNMT's final weights, validated after it stops, among
them) decodes `--test` with beam 5 in a fresh process (each tool's own length
normalization at alpha 1), `--average K` also each run's K best averaged, `--ensemble`
each variant's seeds as one ensemble; sacrebleu scores the detokenized, cased output.
Runs finished with the same settings are kept in `--work-dir` and reused. Output: the
runs, each kind of decoding's mean ± sd over seeds (paired with the first), validation
BLEU at equal updates, ours - JoeyNMT and each ensemble against its members, one JSON line;
and `--plot`: validation BLEU against training minutes, each side's mean over seeds in a band.
"""

import argparse
import csv
import itertools
import os
import re
import shutil
import statistics
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import sentencepiece as spm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import common
from benchmarks import joeynmt_peer as peer
from seq2seq.batching import TokenBatchSampler, example_cost
from seq2seq.checkpoint import run_checkpoints
from seq2seq.errors import UserError
from seq2seq.plots import save_score_over_time_plot

CONFIG = common.REPO / "configs" / "multi30k_gru_luong_additive.yaml"
BEAM = 5
JOEY_TEST_BATCH = 64  # sentences: its default
TARGET_GAIN = 2.0  # BLEU points of ours over JoeyNMT, in means over seeds
OWN_SCORE = ["--model.attention_score", "null"]  # the attention's own default score
VARIANTS = {  # name -> options over the config
    "ours": [],  # the config as it is
    "none": ["--model.attention", "none", *OWN_SCORE],  # a fixed context (Cho et al., 2014)
    "bahdanau": ["--model.attention", "bahdanau", *OWN_SCORE],  # RNNsearch, additive scores
    "luong": ["--model.attention", "luong", *OWN_SCORE],  # input feeding, general scores
    "ema": ["--model.ema_decay", "0.999"],  # the weights' moving average validated and kept
}
THROUGHPUT = (
    "tgt tok/s: real target tokens (EOS included; updates x the mean per batch over an epoch "
    "of each side's batching) / training wall time, validation included (ours: Lightning's "
    "Timer, both as of the last save of last.ckpt; JoeyNMT: its first epoch to its exit). "
    'log tok/s: the median of JoeyNMT\'s logged "Tokens per Sec" (the same tokens, validation '
    "excluded); ours logs none."
)
SIDE_LABELS = {"ours": "ours", "joeynmt": "JoeyNMT 2.3.0", "joeynmt-toy": "JoeyNMT, toy schedule"}
JOEY_NOTE = "JoeyNMT: verbose= dropped from its ReduceLROnPlateau call in its venv (torch 2.13)"


@dataclass
class Shared:
    """From ours' first run: our hyperparameters, SentencePiece model, training data."""

    hp: dict
    data_hp: dict
    spm_file: Path
    data_dir: Path  # its train.{de,en}[.gz] and val.{de,en}[.gz]
    lengths: np.ndarray  # (N, 2) source and target pieces of the training pairs kept


# -- training ---------------------------------------------------------------------------------


def ours_options(variant: str, seed: int, args: argparse.Namespace) -> list[str]:
    """`scripts/train.py` options of a run of `variant` with `seed`."""
    options = ["--data.test", "null", "--seed_everything", str(seed)]
    options += ["--data.seed", str(seed)]
    if args.average:
        options += ["--checkpoint.save_top_k", str(args.average)]
    return options + VARIANTS[variant]


def train_ours_seed(work: Path, seed: int, args: argparse.Namespace) -> list[dict]:
    """Each of `--variants` trained with `seed`, or kept from a former invocation; with
    `--side-by-side` all at once, one core and one thread each (all again if one is missing)."""
    runs = {v: work / "runs" / f"{args.config.stem}-{v}-seed{seed}" for v in args.variants}
    keys = {v: {"minutes": args.minutes, "config": args.config} for v in runs}
    keys = {v: key | {"options": ours_options(v, seed, args)} for v, key in keys.items()}
    found = {v: common.kept(runs[v], keys[v], args.retrain) for v in runs}
    todo = [v for v in runs if found[v] is None]
    if args.side_by_side and todo:
        todo, cores = list(runs), sorted(os.sched_getaffinity(0))[: len(runs)]
        if len(cores) < len(runs):
            raise SystemExit(f"--side-by-side needs a CPU core for each of the {len(runs)} runs")
        jobs = [
            common.training_job(runs[v], args.config, args.minutes, keys[v]["options"])
            for v in todo
        ]
        pinned = [
            replace(j, env=common.child_env(1), cores={c}) for j, c in zip(jobs, cores, strict=True)
        ]
        measured = common.run_together(pinned)
    else:
        measured = [
            common.train_ours(runs[v], args.config, args.minutes, keys[v]["options"]) for v in todo
        ]
    for v, m in zip(todo, measured, strict=True):
        found[v] = common.save(runs[v], keys[v], described(runs[v], v, seed, m, args))
    return [found[v] for v in runs]


def described(run: Path, variant: str, seed: int, measured: dict, args) -> dict[str, Any]:
    """A finished run of ours: its figures, and its best checkpoint (the last if it never
    validated)."""
    # as of its last save: the time limit stops a run between saves
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    validated = any((run / "checkpoints").glob("best-*.ckpt"))
    best = run_checkpoints(run / "checkpoints", 1, None)[0] if validated else None
    best = best or run / "checkpoints" / "last.ckpt"
    val_bleu = re.search(r"-bleu([\d.]+)\.ckpt$", best.name)
    return {
        "side": variant,
        "config": args.config.stem,
        "seed": seed,
        "updates": logged_updates(run),
        "val_bleu": float(val_bleu[1]) if val_bleu else None,
        # the throughput's: updates and Lightning's Timer as of the save, taken together
        "timed_updates": last["global_step"],
        "train_s": round(last["callbacks"]["Timer"]["time_elapsed"]["train"], 1),
        "train_peak_rss_mib": round(measured["peak_rss_mib"]),
        "others_cpu_s": measured["others_cpu_s"],
        "checkpoint": str(best),
        "code": args.code,
    }


def load_shared(work: Path, checkpoint: str) -> Shared:
    """Our hyperparameters, SentencePiece model(s) and training data from a checkpoint of
    ours (its config's data: multi30k's in data/multi30k/, the demo's in data/demo/)."""
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    processors = []
    for side in ("src", "tgt"):
        (work / f"spm.{side}.model").write_bytes(ckpt["tokenizer"][side])
        processors.append(spm.SentencePieceProcessor(model_file=str(work / f"spm.{side}.model")))
    data_hp = ckpt["datamodule_hyper_parameters"]
    data_dir = (common.REPO / data_hp["train"]).parent  # train and val
    lengths = peer.corpus_lengths(*processors, data_dir / "train", data_hp["max_len"])
    spm_file = work / "spm.src.model"
    return Shared(ckpt["hyper_parameters"], data_hp, spm_file, data_dir, lengths)


def ours_tgt_tok_s(run: dict, shared: Shared) -> int:
    """Real target tokens (EOS included) per second of training: updates x the mean per
    batch over an epoch of our batching / training seconds, both as of last.ckpt's save."""
    costs = example_cost(shared.lengths[:, 0], shared.lengths[:, 1])
    sampler = TokenBatchSampler(costs, shared.data_hp["max_tokens"], seed=run["seed"])
    per_update = (shared.lengths[:, 1] + 1).sum() / len(sampler)
    return round(run["timed_updates"] * per_update / run["train_s"])


def train_joeynmt_runs(
    python: Path, work: Path, shared: Shared, ours: list[dict], args: argparse.Namespace
) -> tuple[list[dict], list[dict], str]:
    """JoeyNMT's runs: with the first of `--joeynmt-schedules` and the batch size chosen,
    one per seed; with each other schedule, one with the first seed (beside them). Each
    validates at the cadence in minutes of our first run (`ours[0]`: the same whichever
    seeds an invocation adds). -> those runs, the runs of the batch search (none when
    one batch size is given), and the batch size chosen."""
    sp = spm.SentencePieceProcessor(model_file=str(shared.spm_file))
    voc = peer.write_joeynmt_data(shared.data_dir, sp, work)
    cadence = minutes_per_validation(ours[0])
    common.log(
        f"ours validated every {cadence:.2f} minutes (seed {ours[0]['seed']}): so will JoeyNMT"
    )

    def trained(batch: tuple[int, str], schedule: str, seed: int, name: str) -> dict:
        label = peer.batch_label(batch)
        freq = peer.validation_freq(calibrated(python, work, shared, voc, batch, args), cadence)
        cfg = peer.recipe_config(
            shared.hp, shared.data_hp, work, shared.spm_file, voc, batch, schedule, freq
        )
        run, key = work / "runs" / name, {"minutes": args.minutes, "batch": label}
        key |= {"schedule": schedule, "validation_freq": freq, "init": "seeded"}
        key |= {"decoded": "the better of best and latest by validation BLEU"}

        def make() -> dict:
            return joeynmt_run(python, cfg, run, seed, shared, args) | {"schedule": schedule}

        return common.kept_or_made(run, key, make, args.retrain)

    batches, first, tried = args.joeynmt_batch_configs, args.seeds[0], []
    schedule, *others = args.joeynmt_schedules
    if len(batches) > 1:
        tried = [
            trained(b, schedule, first, f"search-joeynmt-{peer.batch_label(b)}-{schedule}")
            for b in batches
        ]
    scores = [-1.0 if t["val_bleu"] is None else t["val_bleu"] for t in tried]
    chosen = peer.batch_label(batches[scores.index(max(scores))] if tried else batches[0])
    searched = {first: tried[scores.index(max(scores))]} if tried else {}
    batch = peer.batch_setting(chosen)
    runs = [
        searched.get(seed) or trained(batch, schedule, seed, f"joeynmt-{chosen}-{schedule}-{seed}")
        for seed in args.seeds
    ]
    beside = [trained(batch, s, first, f"joeynmt-{chosen}-{s}-{first}") for s in others]
    return runs + [run | {"side": f"joeynmt-{run['schedule']}"} for run in beside], tried, chosen


def calibrated(python: Path, work: Path, shared: Shared, voc: Path, batch, args) -> float:
    """JoeyNMT's updates per minute with `batch` (`peer.updates_per_minute`), kept."""
    cfg = peer.recipe_config(shared.hp, shared.data_hp, work, shared.spm_file, voc, batch)
    run = work / "runs" / f"calibrate-joeynmt-{peer.batch_label(batch)}"

    def make() -> dict:
        shutil.rmtree(run, ignore_errors=True)
        (run / "joeynmt").mkdir(parents=True)
        rate = peer.updates_per_minute(python, cfg, run)
        common.log(f"JoeyNMT {peer.batch_label(batch)}: {rate:.1f} updates a minute")
        return {"updates_per_minute": rate, "code": args.code}

    key = {"batch": peer.batch_label(batch), "updates": peer.CALIBRATION_UPDATES}
    return common.kept_or_made(run, key, make, args.retrain)["updates_per_minute"]


def minutes_per_validation(run: dict) -> float:
    """A run of ours' median wall minutes between validations: its median gap in updates
    (CSV log) at its mean minutes per update (validation included)."""
    steps = sorted(_validations(Path(run["checkpoint"]).parents[1]))  # logged: updates - 1
    gaps = [b - a for a, b in itertools.pairwise([-1, *steps])]
    return statistics.median(gaps) * run["train_s"] / 60 / run["timed_updates"]


def joeynmt_run(python: Path, cfg: dict, run: Path, seed: int, shared: Shared, args) -> dict:
    """`cfg` trained into `run/joeynmt` with `seed`, its final weights weighed against its
    best (`peer.better_final_weights`); -> its figures."""
    shutil.rmtree(run, ignore_errors=True)
    (run / "joeynmt").mkdir(parents=True)
    cfg = cfg | {"model_dir": str(run / "joeynmt" / "model"), "random_seed": seed}
    trained = peer.train_joeynmt(python, cfg, run, args.minutes)
    model_dir = Path(cfg["model_dir"])
    final = peer.better_final_weights(
        python, model_dir, shared.data_dir / "val", run / "final", args.threads
    )
    training = cfg["training"]
    batch, freq = (training["batch_size"], training["batch_type"]), training["validation_freq"]
    per_update = peer.real_tgt_tokens_per_update(shared.lengths, *batch)
    train_s = trained["minutes"] * 60
    rates = peer.logged_rates((run / "joeynmt" / "train.log").read_text(errors="replace"))
    return {
        "side": "joeynmt",
        "config": f"{peer.batch_label(batch)} val/{freq} {final['decode_from']}",
        "batch": peer.batch_label(batch),
        "seed": seed,
        "updates": trained["steps"],
        "val_bleu": max(v for k, v in final.items() if k.startswith("val_bleu")),
        "train_s": round(train_s, 1),
        "train_peak_rss_mib": round(trained["peak_rss_mib"]),
        "others_cpu_s": trained["others_cpu_s"],
        "tgt_tok_s": round(trained["steps"] * per_update / train_s),
        "log_tok_s": statistics.median(rates) if rates else None,
        "model_dir": cfg["model_dir"],
        "validations": len(peer.validation_bleu(model_dir)),
        **final,
        "code": args.code,
    }


# -- decoding ---------------------------------------------------------------------------------


def decode_all(runs: list[dict], work: Path, args, python: Path | None, figures: dict) -> list:
    """Every decoding of the test set: each run's best checkpoint (and its K best averaged),
    then each variant's over seeds as one ensemble; the signatures go to `figures`."""
    src, refs = common.write_test_set(work, args.test)
    decodings, members = [], {}

    def scored(decoding: dict, hyp: Path) -> None:
        scores = common.score(hyp, refs)
        figures["bleu_signature"] = scores.pop("bleu_signature")
        figures["chrf_signature"] = scores.pop("chrf_signature")
        decodings.append(decoding | scores)
        common.log(f"{decoding['side']} {decoding['kind']} seed {decoding['seed']}: {scores}")

    for run in runs:
        side, seed = run["side"], run["seed"]
        if side.startswith("joeynmt"):
            out, model_dir = work / "decode" / f"{side}-seed{seed}", Path(run["model_dir"])
            threads, batch, ckpt = args.threads, JOEY_TEST_BATCH, run["decode_from"]
            found = peer.decode_joeynmt(python, model_dir, src, out, BEAM, batch, threads, ckpt)
            scored({"side": side, "kind": "best", "seed": seed, **found}, out / "hyp.en")
            continue
        models = {"best": Path(run["checkpoint"])}
        if args.average:
            models[f"average{args.average}"] = averaged(Path(run["checkpoint"]).parent, args)
        for kind, checkpoint in models.items():
            out = work / "decode" / f"{args.config.stem}-{side}-{kind}-seed{seed}"
            found = common.translated([checkpoint], src, out, args.threads, beam_size=BEAM)
            scored({"side": side, "kind": kind, "seed": seed, **found}, out / "hyp.en")
            members.setdefault((side, kind), []).append(checkpoint)
    for (side, kind), checkpoints in members.items() if args.ensemble else []:
        if len(checkpoints) > 1:
            ensemble = "ensemble" + ("" if kind == "best" else f"-{kind}")
            out = work / "decode" / f"{args.config.stem}-{side}-{ensemble}"
            found = common.translated(checkpoints, src, out, args.threads, beam_size=BEAM)
            decoding = {"side": side, "kind": ensemble, "seed": None, "members": f"{side} {kind}"}
            scored(decoding | found, out / "hyp.en")
    return decodings


def averaged(checkpoints: Path, args: argparse.Namespace) -> Path:
    """The mean weights of the `--average` best checkpoints in `checkpoints`, beside them."""
    output = checkpoints.parent / f"average{args.average}.ckpt"
    cmd = [sys.executable, "scripts/average_checkpoints.py", "--run-dir", checkpoints]
    cmd += ["--best", args.average, "--output", output]
    common.run_measured(cmd, checkpoints.parent / "average.log", env=common.child_env(args.threads))
    return output


# -- report -----------------------------------------------------------------------------------


def summarize(decodings: list[dict]) -> dict[str, dict]:
    """Per kind of decoding ("side kind"): their count, BLEU and chrF mean and sd, mean
    decoding seconds, and the BLEU difference with the first kind's decodings of the same
    seeds (paired; mean and sd); an ensemble's BLEU over its members' mean and its
    decoding time over theirs."""
    groups: dict[str, list[dict]] = {}
    for d in decodings:
        groups.setdefault(f"{d['side']} {d['kind']}", []).append(d)
    first = {d["seed"]: d["bleu"] for d in next(iter(groups.values()))}
    summary: dict[str, dict] = {}
    for name, mine in groups.items():
        s: dict[str, Any] = {"n": len(mine)}
        s["decode_s_mean"] = round(statistics.mean(d["decode_s"] for d in mine), 2)
        for key in ("bleu", "chrf"):
            s[f"{key}_mean"], s[f"{key}_sd"] = common.mean_sd([d[key] for d in mine])
        paired = [d["bleu"] - first[d["seed"]] for d in mine if d["seed"] in first]
        if summary and paired:
            s["minus_first_mean"], s["minus_first_sd"] = common.mean_sd(paired)
        if "members" in mine[0]:
            members = summary[mine[0]["members"]]
            s["gain_over_members"] = round(mine[0]["bleu"] - members["bleu_mean"], 2)
            s["slowdown"] = round(mine[0]["decode_s"] / members["decode_s_mean"], 2)
        summary[name] = s
    return summary


def validation_at(trained: list[dict]) -> dict[str, Any]:
    """Each run's validation BLEU at the earliest of the runs' last validations (its last
    validation at or before it, from its CSV log), and per side their count, mean and sd;
    a run that had not validated by then counts in none."""
    logs = {id(t): _validations(Path(t["checkpoint"]).parents[1]) for t in trained}
    updates = min((max(steps) for steps in logs.values() if steps), default=0)
    by_side: dict[str, list[float]] = {}
    for t in trained:
        before = [bleu for step, bleu in logs[id(t)].items() if step <= updates]
        t["val_bleu_at_equal_updates"] = round(before[-1], 2) if before else None
        by_side.setdefault(t["side"], []).extend(before[-1:])
    found: dict[str, Any] = {"updates": updates}
    for side, scores in by_side.items():
        if scores:
            found[side] = dict(zip(("mean", "sd"), common.mean_sd(scores), strict=True))
            found[side]["n"] = len(scores)
    return found


def logged_updates(run: Path) -> int:
    """The updates a run of ours made, from its CSV log (last.ckpt holds those of its last
    save; a validation that improves nothing saves none). The run validates at the batch
    it stops on (time limit, early stopping, last epoch), which Lightning logs at `step`
    = the updates before that batch."""
    logs = sorted(run.glob("lightning_logs/version_*/metrics.csv"))
    with open(logs[-1]) as f:
        return max(int(row["step"]) for row in csv.DictReader(f)) + 1


def _validations(run: Path) -> dict[int, float]:
    """update -> validation BLEU, in order, from the run's CSV log."""
    logs = sorted(run.glob("lightning_logs/version_*/metrics.csv"))
    if not logs:
        return {}
    with open(logs[-1]) as f:
        return {int(r["step"]): float(r["val_bleu"]) for r in csv.DictReader(f) if r["val_bleu"]}


def validation_curve(run: dict) -> tuple[np.ndarray, np.ndarray]:
    """A run's validation BLEU against its training minutes: each validation at its updates
    x the run's mean minutes per update (validation included), JoeyNMT's final weights
    (validated after it stops) at its last update. -> (minutes, BLEU)."""
    if run["side"].startswith("joeynmt"):
        bleu = peer.validation_bleu(Path(run["model_dir"])) | {
            run["updates"]: run["val_bleu_latest"]
        }
        minutes_per_update = run["train_s"] / 60 / run["updates"]
    else:
        logged = _validations(Path(run["checkpoint"]).parents[1])  # at updates - 1
        bleu = {step + 1: score for step, score in logged.items()}
        minutes_per_update = run["train_s"] / 60 / run["timed_updates"]
    updates = np.array(sorted(bleu))
    return updates * minutes_per_update, np.array([bleu[u] for u in updates])


def write_bleu_over_time(runs: list[dict], path: Path) -> None:
    """Validation BLEU against training minutes, one colour per side (its runs' mean and
    ± sd band: `plots.save_score_over_time_plot`), to the PNG file `path`."""
    sides: dict[str, list] = {}
    for run in runs:
        label = SIDE_LABELS.get(run["side"], run["side"])
        sides.setdefault(label, []).append(validation_curve(run))
    xlabel = "training minutes (validation included), 2 CPU cores"
    save_score_over_time_plot(sides, path, "validation BLEU (greedy)", xlabel)
    common.log(f"validation BLEU over time: {path}")


def _cell(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _run_row(run: dict, scores: dict) -> list[str]:
    head = [run["side"], run["config"], str(run["seed"]), str(run["updates"])]
    figures = [_cell(run["val_bleu"]), _cell(scores["bleu"]), _cell(scores["chrf"])]
    figures += [str(run["train_peak_rss_mib"]), str(run["tgt_tok_s"])]
    figures += [_cell(run.get("log_tok_s"), 0), _cell(run["others_cpu_s"], 0)]
    return [*head, *figures, run["code"], _cell(run.get("val_bleu_at_equal_updates"))]


def _summary_row(name: str, s: dict) -> list[str]:
    scores = [common.mean_sd_text(s[f"{k}_mean"], s[f"{k}_sd"]) for k in ("bleu", "chrf")]
    paired = common.mean_sd_text(s.get("minus_first_mean"), s.get("minus_first_sd"), signed=True)
    training = [str(s.get("tgt_tok_s_mean", "-")), str(s.get("train_peak_rss_mib_mean", "-"))]
    return [name, str(s["n"]), *scores, _cell(s["decode_s_mean"], 1), paired, *training]


def report(runs: list[dict], decodings: list[dict], tried: list[dict], figures: dict) -> None:
    """The tables and the verdicts; then one JSON line."""
    at_equal = validation_at([r for r in runs if not r["side"].startswith("joeynmt")])
    best = {(d["side"], d["seed"]): d for d in decodings if d["kind"] == "best"}
    header = ["side", "config", "seed", "updates", "val BLEU", "test BLEU", "chrF"]
    header += ["train RSS MiB", "tgt tok/s", "log tok/s", "others CPU s", "code"]
    header += [f"val BLEU at {at_equal['updates']} updates"]
    common.print_table(header, [_run_row(r, best[r["side"], r["seed"]]) for r in runs])
    print(THROUGHPUT)
    summary = summarize(decodings)
    for side in dict.fromkeys(r["side"] for r in runs):
        mine = [r for r in runs if r["side"] == side]
        for key in ("tgt_tok_s", "train_peak_rss_mib"):
            summary[f"{side} best"][f"{key}_mean"] = round(statistics.mean(r[key] for r in mine))
    header = ["decoding", "n", "test BLEU", "chrF", "decode s", "BLEU - first (paired)"]
    rows = [_summary_row(name, s) for name, s in summary.items()]
    common.print_table([*header, "tgt tok/s", "train RSS MiB"], rows)
    for side, f in at_equal.items():
        if side != "updates":
            equal = f"{common.mean_sd_text(f['mean'], f['sd'])} ({f['n']} runs)"
            print(f"{side}: validation BLEU at {at_equal['updates']} updates {equal}")
    for t in tried:
        chosen = " (chosen)" * (t["batch"] == figures["joeynmt_batch"])
        print(f"JoeyNMT {t['config']} tried, seed {t['seed']}: val BLEU {t['val_bleu']}{chosen}")
    print(f"BLEU signature: {figures['bleu_signature']}")
    print(f"chrF signature: {figures['chrf_signature']}")
    figures |= {"runs": runs, "decodings": decodings, "summary": summary}
    figures |= {"at_equal_updates": at_equal, "joeynmt_batch_search": tried}
    if "joeynmt best" in summary:
        ours, joey = summary[f"{runs[0]['side']} best"], summary["joeynmt best"]
        gain = round(ours["bleu_mean"] - joey["bleu_mean"], 2)
        rss = [ours["train_peak_rss_mib_mean"], joey["train_peak_rss_mib_mean"]]
        figures |= {"bleu_gain": gain, "target_met": gain >= TARGET_GAIN}
        figures["rss_target_met"] = rss[0] <= rss[1]
        print(JOEY_NOTE)
        met = common.verdict(figures["target_met"])
        print(f"ours - JoeyNMT: {gain:+.2f} BLEU in means (target +{TARGET_GAIN:g}): {met}")
        met = common.verdict(figures["rss_target_met"])
        print(f"peak training RSS, means: ours {rss[0]} vs JoeyNMT {rss[1]} MiB: {met}")
    for d in (d for d in decodings if "members" in d):
        s = summary[f"{d['side']} {d['kind']}"]
        gain, slowdown = s["gain_over_members"], s["slowdown"]
        print(f"{d['side']} {d['kind']}: {gain:+.2f} BLEU over its members' mean, x{slowdown} time")
    common.print_json(figures)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=30.0, help="training time of each run")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="one run per seed")
    p.add_argument("--config", type=Path, default=CONFIG, help="ours (default the reference)")
    p.add_argument(
        "--variants",
        nargs="+",
        choices=list(VARIANTS),
        default=["ours"],
        help="ours: the config as it is; the others: see VARIANTS (default ours)",
    )
    p.add_argument("--side-by-side", action="store_true", help="a seed's variants at once")
    p.add_argument("--average", type=int, default=0, metavar="K", help="decode K best averaged")
    p.add_argument("--ensemble", action="store_true", help="decode each variant's seeds together")
    test = common.MULTI30K / "test_2016_flickr"
    p.add_argument("--test", type=Path, default=test, help="its PREFIX.de and PREFIX.en[.gz]")
    p.add_argument("--work-dir", type=Path, default=common.REPO / ".cache" / "bench" / "quality")
    p.add_argument("--no-joeynmt", action="store_true", help="train and score ours only")
    p.add_argument(
        "--joeynmt-batch-configs",
        type=peer.batch_setting,
        nargs="+",
        default=[peer.batch_setting(b) for b in peer.RECIPE_BATCHES],
        metavar="N[tok|sent]",
        help=f"JoeyNMT's batch sizes to try (one: no search); default {peer.RECIPE_BATCHES}",
    )
    p.add_argument(
        "--joeynmt-schedules",
        nargs="+",
        choices=list(peer.SCHEDULES),
        default=list(peer.SCHEDULES),
        help="JoeyNMT's plateau schedules (peer.SCHEDULES): the first for the comparison, "
        "each other with the first seed beside it (default recipe toy)",
    )
    p.add_argument(
        "--plot",
        type=Path,
        help="PNG of validation BLEU over training minutes (default WORK_DIR/bleu_over_time.png)",
    )
    p.add_argument("--retrain", action="store_true", help="train anew, not reusing kept runs")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="for decoding")
    args = p.parse_args()
    if args.side_by_side and len(args.variants) < 2:
        p.error("--side-by-side trains several --variants at once")
    return args


def main() -> None:
    args = parse_args()
    args.code = common.git_state()  # the code that runs, before any edit meanwhile
    args.config, args.test = args.config.resolve(), args.test.resolve()
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    runs = [run for seed in args.seeds for run in train_ours_seed(work, seed, args)]
    shared = load_shared(work, runs[0]["checkpoint"])
    runs = [run | {"tgt_tok_s": ours_tgt_tok_s(run, shared)} for run in runs]
    figures: dict[str, Any] = {"minutes": args.minutes, "seeds": args.seeds, "beam": BEAM}
    figures |= {"config": args.config.stem, "variants": args.variants, "code": args.code}
    figures |= {"average": args.average, "side_by_side": args.side_by_side}
    python, tried = None, []
    if not args.no_joeynmt:
        python = peer.ensure_joeynmt()
        joey, tried, figures["joeynmt_batch"] = train_joeynmt_runs(python, work, shared, runs, args)
        runs += joey
    try:
        write_bleu_over_time(runs, args.plot or work / "bleu_over_time.png")
    except UserError as err:  # no matplotlib
        common.log(f"no plot of validation BLEU over time: {err}")
    decodings = decode_all(runs, work, args, python, figures)
    report(runs, decodings, tried, figures | {"throughput": THROUGHPUT})


if __name__ == "__main__":
    main()
