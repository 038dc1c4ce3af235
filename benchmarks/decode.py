"""Decoding speed on Multi30k test2016, greedy and beam search, optionally against JoeyNMT 2.3.0.

    python benchmarks/decode.py                             # train ours 5 min, decode both ways
    python benchmarks/decode.py --compare-joeynmt           # ... and JoeyNMT, same budget, ratios
    python benchmarks/decode.py --checkpoint runs/x/checkpoints/last.ckpt --limit 50
    python benchmarks/decode.py --compare-joeynmt --precision 32 bf16   # ours also in bf16
    python benchmarks/decode.py --checkpoint CKPT --baseline d09e2a7    # against older code

Each (side, mode) decodes in a fresh process: decoding alone is timed (model
loading excluded), and the process's wall time and peak RSS (`ru_maxrss` from
`os.wait4`) are taken too. `--baseline REV` decodes the same checkpoint with this
repository's code at REV too (extracted with `git archive`), for the ratio of ours to it
and the number of output lines that differ. Roofline: a separate run of ours under
`FlopCounterMode` counts the FLOPs per sentence of each mode; FLOPs/s over the better of
a 2048³ fp32 matmul and the decoding's largest GEMM, timed here, is the fraction of the
GEMM rate reached. JoeyNMT is installed at run time into
`.cache/bench/joeynmt-venv`, never vendored; it trains the same architecture on
the same data with our SentencePiece model, configured as its users would
(`joeynmt_peer.recipe_config`), for the same wall time from its first epoch, unless
`--joeynmt-model-dir` gives a trained one. Output: a table, then one JSON line with every figure.
"""

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sacrebleu
import sentencepiece as spm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import (
    MULTI30K,
    REPO,
    child_env,
    export_baseline,
    git_state,
    log,
    read_lines,
    run_measured,
    train_ours,
    translate_timed,
    write_lines,
)
from benchmarks.decode_report import OURS, compare_baseline, report
from benchmarks.joeynmt_peer import (
    batch_label,
    batch_setting,
    decode_joeynmt,
    ensure_joeynmt,
    patch_plateau,
    recipe_config,
    train_joeynmt,
    write_joeynmt_data,
)
from benchmarks.roofline import SQUARE, counting, gemm_flops
from seq2seq.batching import TokenBatchSampler
from seq2seq.translator import BATCH_TOKENS, source_budget

CONFIG = REPO / "configs" / "multi30k_gru_luong_additive.yaml"
# A constant learning rate over the short budget; no test run (this benchmark decodes it).
SHORT_RUN = ["--model.schedule", "constant", "--data.test", "null"]


# -- ours ------------------------------------------------------------------------------------


def decode_ours_child(
    ckpt: str, src: str, hyp: str, beam: str, batch_tokens: str, precision: str
) -> None:
    """In a fresh process: translate `src` into `hyp`; print the decoding seconds as JSON."""
    options = {"beam_size": int(beam), "batch_tokens": int(batch_tokens), "precision": precision}
    translate_timed([ckpt], src, hyp, **options)


def count_ours_child(ckpt: str, src: str, beam: str, batch_tokens: str) -> None:
    """In a fresh process: translate `src` counting FLOPs; print them and the largest GEMM."""
    from seq2seq.translator import Translator

    translator = Translator.from_checkpoint(ckpt, device="cpu")
    sentences = read_lines(Path(src))
    with counting() as (counter, gemms):
        translator.translate(sentences, beam_size=int(beam), batch_tokens=int(batch_tokens))
    print(json.dumps({"flops": counter.get_total_flops(), "largest_gemm": gemms.shape}))


def decode_ours(
    ckpt: Path,
    src: Path,
    out: Path,
    beam: int,
    precision: str,
    args: argparse.Namespace,
    root: Path = REPO,
) -> dict:
    """Decode in a child running the code of `root` (this checkout, or a --baseline's)."""
    cmd = [sys.executable, root / "benchmarks" / "decode.py", "_decode_ours", ckpt, src]
    cmd += [out / "hyp.en", beam, args.batch_tokens, precision]
    env = child_env(args.threads, ours=True) | {"PYTHONPATH": str(root)}
    measured = run_measured(cmd, out / "stderr.log", stdout=out / "result.json", env=env)
    return json.loads((out / "result.json").read_text()) | measured


def count_ours(ckpt: Path, src: Path, work: Path, beam: int, args: argparse.Namespace) -> dict:
    """FLOPs per decoding of `src` in one mode, and its largest GEMM (m, k, n)."""
    out = work / "count" / f"beam{beam}"
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, __file__, "_count_ours", ckpt, src, beam, args.batch_tokens]
    env = child_env(args.threads, ours=True)
    run_measured(cmd, out / "stderr.log", stdout=out / "result.json", env=env)
    return json.loads((out / "result.json").read_text())


# -- running and reporting -------------------------------------------------------------------


Decode = Callable[[Path, int], dict]  # (output folder, beam size) -> figures of one decoding


def decode_both_modes(sides: dict[str, Decode], work: Path, refs: list[str], args) -> list[dict]:
    """Greedy and beam runs of each side, each `decode(out_dir, beam)` `args.repeats` times,
    the sides taking turns (so that a machine that slows down or speeds up meanwhile
    favours none).

    The fastest repeat is kept (the machine may be shared); all decoding times are listed.
    """
    runs = []
    for mode, beam in (("greedy", 1), ("beam", args.beam_size)):
        outs = {side: work / "decode" / f"{side}-{mode}" for side in sides}
        for out in outs.values():
            out.mkdir(parents=True, exist_ok=True)
        repeats: dict[str, list[dict]] = {side: [] for side in sides}
        names = ", ".join(sides)
        log(f"decoding {len(refs)} sentences with {names}, {mode} (beam {beam}) x{args.repeats}")
        for _ in range(args.repeats):
            for side, decode in sides.items():
                repeats[side].append(decode(outs[side], beam))
        for side, out in outs.items():
            run = {"side": side, "mode": mode, "beam_size": beam}
            run |= min(repeats[side], key=lambda r: r["decode_s"])
            run["decode_s_all"] = [round(r["decode_s"], 2) for r in repeats[side]]
            hyps = read_lines(out / "hyp.en")
            assert len(hyps) == len(refs), f"{out / 'hyp.en'}: {len(hyps)} lines for {len(refs)}"
            run["sentences"] = len(refs)
            run["sent_per_s"] = len(refs) / run["decode_s"]
            run["mean_len_words"] = sum(len(h.split()) for h in hyps) / len(hyps)
            run["bleu"] = sacrebleu.corpus_bleu(hyps, [refs]).score
            runs.append({k: round(v, 2) if isinstance(v, float) else v for k, v in run.items()})
    return runs


def add_roofline(runs: list[dict], ckpt: Path, src: Path, work: Path, args) -> dict[str, Any]:
    """Give our fp32 runs their MFLOP per sentence, GFLOP/s and roofline fraction (from a
    counted run of each mode); -> the GEMM rates they are measured against."""
    square = gemm_flops(args.threads, *SQUARE)
    log(f"fp32 2048³ matmul on {args.threads} threads: {square / 1e9:.1f} GFLOP/s")
    rates: dict[str, Any] = {"matmul_gflop_s": round(square / 1e9, 1)}
    for mode, beam in (("greedy", 1), ("beam", args.beam_size)):
        log(f"counting the FLOPs of ours, {mode}")
        counted = count_ours(ckpt, src, work, beam, args)
        gemm = gemm_flops(args.threads, *counted["largest_gemm"])
        rates[mode] = {"largest_gemm": counted["largest_gemm"], "gflop_s": round(gemm / 1e9, 1)}
        for run in runs:
            if (run["side"], run["mode"]) == ("ours", mode):
                flops = counted["flops"] / run["sentences"]
                run["mflop_per_sentence"] = round(flops / 1e6, 1)
                run["gflop_s"] = round(run["sent_per_s"] * flops / 1e9, 1)
                run["roofline"] = round(run["gflop_s"] * 1e9 / max(square, gemm), 3)
    return rates


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work-dir", type=Path, default=REPO / ".cache" / "bench" / "decode")
    p.add_argument("--data-dir", type=Path, default=MULTI30K)
    p.add_argument("--train-minutes", type=float, default=5.0, help="training budget per side")
    p.add_argument("--checkpoint", type=Path, help="our checkpoint (then ours is not trained)")
    p.add_argument("--joeynmt-model-dir", type=Path, help="a trained JoeyNMT model folder")
    p.add_argument(
        "--joeynmt-checkpoint",
        choices=["latest", "best"],
        default="latest",
        help="which of its checkpoints decodes (best: by validation BLEU)",
    )
    p.add_argument("--compare-joeynmt", action="store_true", help="run JoeyNMT 2.3.0 too")
    p.add_argument(
        "--joeynmt-same-steps",
        action="store_true",
        help="train JoeyNMT for as many updates as ours made, not for the same wall time",
    )
    p.add_argument(
        "--joeynmt-train-batch",
        type=batch_setting,
        default=batch_setting("2000tok"),
        help="its training batch without --joeynmt-model-dir (its recipes' configuration; "
        "2000tok: the best of those quality.py tries)",
    )
    p.add_argument("--beam-size", type=int, default=5)
    p.add_argument(
        "--batch-tokens",
        type=int,
        default=BATCH_TOKENS,
        help="our decoding batch, source tokens times beam size",
    )
    p.add_argument(
        "--joeynmt-batch-size",
        type=int,
        help="its decoding batch, in sentences "
        "(default: as many sentences per batch as ours on average, in each mode)",
    )
    p.add_argument(
        "--precision",
        nargs="+",
        choices=list(OURS),
        default=["32"],
        help="ours decodes in each (translate.py --precision); 32 is the one the targets count",
    )
    p.add_argument(
        "--baseline",
        metavar="REV",
        help="also decode with this repository's code at REV (a commit): ratios, differences",
    )
    p.add_argument("--limit", type=int, help="decode only the first N test sentences")
    p.add_argument("--repeats", type=int, default=3, help="decoding runs each; the fastest counts")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    return p.parse_args()


def main() -> None:
    args = parse_args()
    code = git_state()  # the code that runs, before any edit meanwhile
    work = args.work_dir.resolve()
    (work / "data").mkdir(parents=True, exist_ok=True)
    test = args.data_dir / "test_2016_flickr"
    sources = read_lines(Path(f"{test}.de.gz"), args.limit)
    refs = read_lines(Path(f"{test}.en.gz"), args.limit)
    src_file = work / "data" / "test.de"
    write_lines(src_file, sources)

    training: dict[str, Any] = {}
    if args.checkpoint is None:
        trained = train_ours(work / "ours", CONFIG, args.train_minutes, SHORT_RUN)
        training |= {
            "ours_minutes": args.train_minutes,
            "ours_others_cpu_s": trained["others_cpu_s"],
        }
    ckpt = (args.checkpoint or trained["checkpoint"]).resolve()
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    hp, data_hp = checkpoint["hyper_parameters"], checkpoint["datamodule_hyper_parameters"]
    if checkpoint["tokenizer"]["src"] != checkpoint["tokenizer"]["tgt"]:
        raise SystemExit(f"{ckpt}: JoeyNMT is given our joint SentencePiece model; this has two")
    spm_file = work / "spm.model"
    spm_file.write_bytes(checkpoint["tokenizer"]["src"])
    sp = spm.SentencePieceProcessor(model_file=str(spm_file))
    lengths = [max(len(ids), 1) for ids in sp.encode(sources)]  # as Translator batches them
    ours_batches = {  # as Translator batches them: batch_tokens // beam size source tokens
        beam: len(TokenBatchSampler(lengths, source_budget(args.batch_tokens, beam, lengths)))
        for beam in (1, args.beam_size)
    }
    joey_batch = {  # as many sentences per batch as ours, on average
        beam: args.joeynmt_batch_size or -(-len(sources) // batches)
        for beam, batches in ours_batches.items()
    }
    training |= {"ours_checkpoint": str(ckpt), "ours_steps": checkpoint["global_step"]}
    training |= {"ours_schedule": hp["schedule"]}
    decoding = {"ours_batch_tokens": args.batch_tokens, "ours_batches": ours_batches}
    decoding |= {"joeynmt_batch_sentences": joey_batch, "threads": args.threads}
    extra: dict[str, Any] = {"sentences": len(sources), "code": code}
    extra["reference_mean_len_words"] = round(sum(len(r.split()) for r in refs) / len(refs), 2)
    extra |= {"training": training, "decoding": decoding}
    del checkpoint

    sides: dict[str, Decode] = {}
    for precision in dict.fromkeys(args.precision):

        def ours(out: Path, beam: int, precision: str = precision) -> dict:
            return decode_ours(ckpt, src_file, out, beam, precision, args)

        sides[OURS[precision]] = ours
    if args.baseline:
        commit, root = export_baseline(args.baseline, work)

        def baseline(out: Path, beam: int) -> dict:
            return decode_ours(ckpt, src_file, out, beam, "32", args, root)

        sides["baseline"] = baseline
        extra["baseline_code"] = commit
    runs = decode_both_modes(sides, work, refs, args)
    if args.compare_joeynmt:
        python = ensure_joeynmt()
        model_dir = args.joeynmt_model_dir
        if model_dir is None:
            patch_plateau()
            voc_file = write_joeynmt_data(args.data_dir, sp, work)
            cfg = recipe_config(hp, data_hp, work, spm_file, voc_file, args.joeynmt_train_batch)
            minutes = args.train_minutes
            if args.joeynmt_same_steps:
                cfg["training"]["updates"], minutes = training["ours_steps"], None
            trained = train_joeynmt(python, cfg, work, minutes)
            model_dir = Path(trained["checkpoint"]).parent
            training |= {f"joeynmt_{key}": value for key, value in trained.items()}
            training |= {"joeynmt_batch": batch_label(args.joeynmt_train_batch)}
        model_dir = model_dir.resolve()

        def joey(out: Path, beam: int) -> dict:
            batch = joey_batch[beam]
            return decode_joeynmt(
                python, model_dir, src_file, out, beam, batch, args.threads, args.joeynmt_checkpoint
            )

        runs += decode_both_modes({"joeynmt": joey}, work, refs, args)
    if "32" in args.precision:
        extra["gemm_rates"] = add_roofline(runs, ckpt, src_file, work, args)
    if args.baseline:
        extra["against_baseline"] = compare_baseline(runs, work)
    report(runs, extra)


if __name__ == "__main__":
    if sys.argv[1:2] == ["_decode_ours"]:
        decode_ours_child(*sys.argv[2:])
    elif sys.argv[1:2] == ["_count_ours"]:
        count_ours_child(*sys.argv[2:])
    else:
        main()
