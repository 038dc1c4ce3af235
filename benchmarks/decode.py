"""Decoding speed on Multi30k test_2016_flickr, greedy and beam search: ours in float32,
int8 and with a vocabulary shortlist, against JoeyNMT 2.3.0.

    python benchmarks/decode.py --compare-joeynmt          # train each side 5 min, decode both ways
    python benchmarks/decode.py --compare-joeynmt --checkpoint OURS_SEED1 \
        --joeynmt-model-dir JOEY_SEED1 --joeynmt-checkpoint best   # quality.py's models
    python benchmarks/decode.py --checkpoint SEED1 SEED2 SEED3 \
        --variants fp32 int8 shortlist int8+shortlist      # CPU speed-ups, BLEU over 3 models
    python benchmarks/decode.py --limit 50 --train-minutes 1       # a quick check of the pipeline

Without `--checkpoint`, configs/multi30k_gru_luong_additive.yaml trains for
`--train-minutes` at a constant learning rate. Each (side, mode) decodes in a fresh
process, `--repeats` times, the sides taking turns (a machine that drifts favours none);
the median repeat counts. Sentences/s count decoding alone (model loading excluded) and
the whole process; peak RSS (`ru_maxrss`), mean output length and sacrebleu BLEU are
shown beside them. `--variants` (ours): fp32, int8 (`--quantize int8`), shortlist
(`--shortlist`, built from the training corpus by scripts/shortlist.py unless given)
and both; speed is measured on the first checkpoint, and each further checkpoint is
decoded once per variant for BLEU, a mean over models. JoeyNMT is installed at run
time into `.cache/bench/joeynmt-venv` and trains the same architecture on the same data
with our SentencePiece model as its users configure it (`joeynmt_peer.recipe_config`)
for the same wall time from its first epoch, unless `--joeynmt-model-dir` gives a
trained one; its decoding batches hold as many sentences as ours on average. Each
side's beam search uses its own length normalization at alpha 1. Ours / JoeyNMT
sentences/s is set against the targets (greedy 2x, beam 3x, at BLEU >= theirs), and
int8+shortlist / fp32 against its own (2x both ways, BLEU within 0.3, RSS no higher).
A table, then one JSON line.
"""

import argparse
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import sacrebleu
import sentencepiece as spm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import common
from benchmarks import joeynmt_peer as peer
from seq2seq.batching import TokenBatchSampler
from seq2seq.translator import BATCH_TOKENS, source_budget

CONFIG = common.REPO / "configs" / "multi30k_gru_luong_additive.yaml"
SHORT_RUN = ["--model.schedule", "constant", "--data.test", "null"]  # a constant rate
TARGETS = {"greedy": 2.0, "beam": 3.0}  # ours / JoeyNMT sentences per second, at BLEU >= theirs
VARIANTS = {  # ours: Translator.from_checkpoints's options (True: the shortlist file)
    "fp32": {},
    "int8": {"quantize": "int8"},
    "shortlist": {"shortlist": True},
    "int8+shortlist": {"quantize": "int8", "shortlist": True},
}
FAST = "int8+shortlist"
FAST_TARGET, BLEU_TOLERANCE = 2.0, 0.3  # FAST / fp32 sentences per second; BLEU difference


def side_name(variant: str) -> str:
    return "ours" if variant == "fp32" else f"ours {variant}"


def decode_both_modes(sides: dict, work: Path, refs: list[str], args) -> list[dict]:
    """Greedy and beam runs of each side (`decode(out_dir, beam)`), `--repeats` times, the
    sides taking turns; the median repeat is kept and every decoding time listed."""
    runs = []
    for mode, beam in (("greedy", 1), ("beam", args.beam_size)):
        repeats: dict[str, list[dict]] = {side: [] for side in sides}
        common.log(f"decoding {len(refs)} sentences, {mode} (beam {beam}) x{args.repeats}")
        for _ in range(args.repeats):
            for side, decode in sides.items():
                repeats[side].append(decode(_out_dir(work, side, mode), beam))
        for side, found in repeats.items():
            hyps = common.read_lines(_out_dir(work, side, mode) / "hyp.en")
            run = {"side": side, "mode": mode, "beam_size": beam}
            run |= sorted(found, key=lambda r: r["decode_s"])[len(found) // 2]
            run["decode_s_all"] = [round(r["decode_s"], 2) for r in found]
            run["sent_per_s"] = len(refs) / run["decode_s"]
            run["sent_per_s_wall"] = len(refs) / run["wall_s"]
            run["mean_len_words"] = sum(len(h.split()) for h in hyps) / len(hyps)
            run["bleu"] = sacrebleu.corpus_bleu(hyps, [refs]).score
            runs.append({k: round(v, 2) if isinstance(v, float) else v for k, v in run.items()})
    return runs


def _out_dir(work: Path, side: str, mode: str) -> Path:
    return work / "decode" / f"{side}-{mode}".replace(" ", "-")


def add_bleu_of_more_models(runs: list[dict], more: dict[str, dict], work: Path, refs, args):
    """Each of our runs' BLEU over every checkpoint: `more[variant](checkpoint, out, beam)`
    decodes once with each further checkpoint; `bleu_models`, its mean and sd join the run."""
    for run in runs:
        variant = next((v for v in more if side_name(v) == run["side"]), None)
        if variant is None:
            continue
        scores = [run["bleu"]]
        for i, checkpoint in enumerate(args.checkpoint[1:], start=2):
            out = _out_dir(work, f"model{i} {run['side']}", run["mode"])
            more[variant](checkpoint, out, run["beam_size"])
            hyps = common.read_lines(out / "hyp.en")
            scores.append(round(sacrebleu.corpus_bleu(hyps, [refs]).score, 2))
        run["bleu_models"] = scores
        run["bleu_mean"], run["bleu_sd"] = common.mean_sd(scores)


def report(runs: list[dict], figures: dict) -> None:
    """The table, the ratios against JoeyNMT and fp32 and the targets, then one JSON line."""
    header = ["side", "mode", "sent/s", "sent/s wall", "decode s", "peak RSS MiB", "mean len"]
    keys = ["sent_per_s", "sent_per_s_wall", "decode_s", "peak_rss_mib", "mean_len_words"]
    rows = [[r["side"], r["mode"], *(f"{r[k]:.2f}" for k in keys), _bleu_text(r)] for r in runs]
    common.print_table([*header, "BLEU"], rows)
    by = {(r["side"], r["mode"]): r for r in runs}
    figures |= against_joeynmt(by, figures)
    figures |= against_fp32(by)
    common.print_json({"runs": runs} | figures)


def _bleu_text(run: dict) -> str:
    if "bleu_models" not in run or len(run["bleu_models"]) < 2:
        return f"{run['bleu']:.2f}"
    return f"{common.mean_sd_text(run['bleu_mean'], run['bleu_sd'])} ({len(run['bleu_models'])})"


def against_joeynmt(by: dict, figures: dict) -> dict:
    """Ours (fp32) / JoeyNMT per mode against `TARGETS`, printed; -> the figures."""
    ratios, met, comparable = {}, {}, {}
    for mode, target in TARGETS.items():
        if ("joeynmt", mode) not in by or ("ours", mode) not in by:
            continue
        ours, joey = by["ours", mode], by["joeynmt", mode]
        ratios[mode] = round(ours["sent_per_s"] / joey["sent_per_s"], 2)
        met[mode] = ratios[mode] >= target and ours["bleu"] >= joey["bleu"]
        # Speed follows output length: a ratio means little when the lengths differ.
        gap = abs(ours["mean_len_words"] - joey["mean_len_words"])
        comparable[mode] = gap <= 0.2 * figures["reference_mean_len_words"]
        print(
            f"{mode}: ours/JoeyNMT {ratios[mode]:.2f}x sentences/s (target {target:g}x), BLEU "
            f"{ours['bleu']:.2f} vs {joey['bleu']:.2f}: {common.verdict(met[mode])}"
            + ("" if comparable[mode] else " (output lengths differ by over 20%: no verdict)")
        )
    return {"ratios": ratios, "targets_met": met, "lengths_comparable": comparable}


def against_fp32(by: dict) -> dict:
    """Each variant / fp32 per mode, printed, FAST against its targets; -> the figures."""
    ratios, met = {}, {}
    for (side, mode), run in by.items():
        if not side.startswith("ours ") or ("ours", mode) not in by:
            continue
        base, variant = by["ours", mode], side.removeprefix("ours ")
        ratio = round(run["sent_per_s"] / base["sent_per_s"], 2)
        bleu, base_bleu = run.get("bleu_mean", run["bleu"]), base.get("bleu_mean", base["bleu"])
        ratios[f"{variant} {mode}"] = ratio
        line = (
            f"{variant} {mode}: {ratio:.2f}x fp32's sentences/s, BLEU {bleu:.2f} vs "
            f"{base_bleu:.2f} ({bleu - base_bleu:+.2f}), peak RSS {run['peak_rss_mib']:.0f} vs "
            f"{base['peak_rss_mib']:.0f} MiB"
        )
        if variant == FAST:
            met[mode] = (
                ratio >= FAST_TARGET
                and abs(bleu - base_bleu) <= BLEU_TOLERANCE
                and run["peak_rss_mib"] <= base["peak_rss_mib"]
            )
            line += (
                f" (targets {FAST_TARGET:g}x, BLEU within {BLEU_TOLERANCE}, RSS no higher): "
                f"{common.verdict(met[mode])}"
            )
        print(line)
    return {"fp32_ratios": ratios, "fast_targets_met": met}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work-dir", type=Path, default=common.REPO / ".cache" / "bench" / "decode")
    p.add_argument("--data-dir", type=Path, default=common.MULTI30K)
    p.add_argument("--train-minutes", type=float, default=5.0, help="training budget per side")
    p.add_argument(
        "--checkpoint",
        type=Path,
        nargs="+",
        help="our checkpoint(s): speed on the first, BLEU over all (then ours is not trained)",
    )
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["fp32"])
    p.add_argument("--shortlist", type=Path, help="the variants' shortlist (default: built)")
    p.add_argument("--compare-joeynmt", action="store_true", help="run JoeyNMT 2.3.0 too")
    p.add_argument("--joeynmt-model-dir", type=Path, help="a trained JoeyNMT model folder")
    p.add_argument("--joeynmt-checkpoint", choices=["latest", "best"], default="latest")
    batch = peer.batch_setting("2000tok")  # the best of its recipes' in quality.py's search
    p.add_argument("--joeynmt-train-batch", type=peer.batch_setting, default=batch)
    p.add_argument("--beam-size", type=int, default=5)
    p.add_argument("--batch-tokens", type=int, default=BATCH_TOKENS, help="ours: tokens x beam")
    p.add_argument("--limit", type=int, help="decode only the first N test sentences")
    p.add_argument("--repeats", type=int, default=3, help="decoding runs each; the median counts")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    return p.parse_args()


def main() -> None:
    args = parse_args()
    work = args.work_dir.resolve()
    src, refs = common.write_test_set(work, args.data_dir / "test_2016_flickr", args.limit)
    figures: dict[str, Any] = {"code": common.git_state(), "sentences": len(refs)}
    figures["reference_mean_len_words"] = round(sum(len(r.split()) for r in refs) / len(refs), 2)
    if args.checkpoint is None:
        trained = common.train_ours(work / "ours", CONFIG, args.train_minutes, SHORT_RUN)
        figures |= {"ours_minutes": args.train_minutes, "ours_trained": trained}
    args.checkpoint = [c.resolve() for c in args.checkpoint or [trained["checkpoint"]]]
    ckpt = args.checkpoint[0]
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    hp, data_hp = checkpoint["hyper_parameters"], checkpoint["datamodule_hyper_parameters"]
    spm_file = work / "spm.model"
    spm_file.write_bytes(checkpoint["tokenizer"]["src"])
    sp = spm.SentencePieceProcessor(model_file=str(spm_file))
    lengths = [max(len(ids), 1) for ids in sp.encode(common.read_lines(src))]
    batches = {  # as Translator batches them: batch_tokens // beam size source tokens
        beam: len(TokenBatchSampler(lengths, source_budget(args.batch_tokens, beam, lengths)))
        for beam in (1, args.beam_size)
    }
    joey_batch = {beam: -(-len(lengths) // n) for beam, n in batches.items()}  # as many a batch
    figures |= {"ours_checkpoint": str(ckpt), "ours_steps": checkpoint["global_step"]}
    figures |= {"ours_batches": batches, "joeynmt_batch_sentences": joey_batch}
    figures |= {"batch_tokens": args.batch_tokens, "threads": args.threads}

    shortlist = None
    if any(VARIANTS[v].get("shortlist") for v in args.variants):
        shortlist = args.shortlist or build_shortlist(ckpt, args.data_dir, work)
        figures["shortlist"] = str(shortlist)

    def ours(variant: str, checkpoint: Path, out: Path, beam: int) -> dict:
        options = {"beam_size": beam, "batch_tokens": args.batch_tokens} | VARIANTS[variant]
        if options.get("shortlist"):
            options["shortlist"] = str(shortlist)
        return common.translated([checkpoint], src, out, args.threads, **options)

    more = {variant: partial(ours, variant) for variant in args.variants}
    sides = {side_name(v): partial(ours, v, ckpt) for v in args.variants}
    if args.compare_joeynmt:
        if checkpoint["tokenizer"]["src"] != checkpoint["tokenizer"]["tgt"]:
            raise SystemExit(
                f"{ckpt}: JoeyNMT is given our joint SentencePiece model; this has two"
            )
        python, model_dir = peer.ensure_joeynmt(), args.joeynmt_model_dir
        if model_dir is None:
            voc_file = peer.write_joeynmt_data(args.data_dir, sp, work)
            batch = args.joeynmt_train_batch
            cfg = peer.recipe_config(hp, data_hp, work, spm_file, voc_file, batch)
            trained = peer.train_joeynmt(python, cfg, work, args.train_minutes)
            model_dir = Path(trained["checkpoint"]).parent
            figures |= {f"joeynmt_{key}": value for key, value in trained.items()}

        def joey(out: Path, beam: int) -> dict:
            batch, which = joey_batch[beam], args.joeynmt_checkpoint
            return peer.decode_joeynmt(
                python, model_dir, src, out, beam, batch, args.threads, which
            )

        model_dir, sides["joeynmt"] = model_dir.resolve(), joey
    runs = decode_both_modes(sides, work, refs, args)
    add_bleu_of_more_models(runs, more, work, refs, args)
    report(runs, figures)


def build_shortlist(checkpoint: Path, data_dir: Path, work: Path) -> Path:
    """scripts/shortlist.py over the training corpus, with its defaults: -> the file."""
    out = work / "shortlist.pt"
    corpus = ["--src", data_dir / "train.de.gz", "--tgt", data_dir / "train.en.gz"]
    script = common.REPO / "scripts" / "shortlist.py"
    cmd = [sys.executable, script, "--checkpoint", checkpoint, *corpus, "--output", out]
    subprocess.run([str(part) for part in cmd], check=True)
    return out


if __name__ == "__main__":
    main()
