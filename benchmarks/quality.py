"""Quality at equal training time: ours against JoeyNMT 2.3.0 on Multi30k de→en.

    bash benchmarks/quality_vs_joeynmt.sh 30      # what that script runs:
    python benchmarks/quality.py --minutes 30

Both train the GRU + Bahdanau architecture of configs/multi30k_gru_bahdanau.yaml
(embeddings 256, bidirectional GRU encoder 256 per direction, GRU decoder 256,
input feeding, dropout 0.3, label smoothing 0.1, Adam 1e-3, clipping 1.0) on the
same SentencePiece model, with token batches holding as many real target tokens,
for the same wall-clock minutes counted from the first training batch (data
preparation excluded; validation included, once per epoch for both). Ours keeps
its config's plateau schedule and early stopping (patience 4, which can only
shorten its time); JoeyNMT's plateau scheduler fails with torch 2.13, so it gets
a constant rate. Each side's best checkpoint by validation BLEU decodes
test_2016_flickr with beam 5 and its own length normalization at alpha 1 (ours:
log-prob / length; JoeyNMT: log-prob / ((5 + length) / 6)); sacrebleu scores the
detokenized, cased output. JoeyNMT is installed at run time into
`.cache/bench/joeynmt-venv`, never vendored. Output: a table, the signatures,
then one JSON line.
"""

import argparse
import json
import sys
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
    git_state,
    log,
    print_table,
    read_lines,
    run_measured,
    train_ours,
    write_lines,
)
from benchmarks.joeynmt_peer import (
    decode_joeynmt,
    ensure_joeynmt,
    joey_config,
    prepare_joeynmt,
    train_joeynmt,
)

CONFIG = REPO / "configs" / "multi30k_gru_bahdanau.yaml"
BEAM = 5
TARGET_GAIN = 2.0  # BLEU points over JoeyNMT


def train_and_decode_ours(work: Path, src: Path, args: argparse.Namespace) -> dict[str, Any]:
    trained = train_ours(work / "ours", CONFIG, args.minutes, ["--data.test", "null"])
    best = sorted((work / "ours" / "checkpoints").glob("best-*.ckpt"))[-1]
    last = torch.load(trained["checkpoint"], map_location="cpu", weights_only=True)
    out = work / "ours" / "test.hyp.en"
    cmd = [sys.executable, "scripts/translate.py", "--checkpoint", best, "--input", src]
    cmd += ["--output", out, "--beam-size", BEAM]
    log(f"decoding test with ours ({best.name}), beam {BEAM}")
    run_measured(cmd, work / "ours" / "translate.log", env=child_env(args.threads, ours=True))
    return {
        "updates": last["global_step"],
        "checkpoint": str(best),
        "hyp": out,
        "train_peak_rss_mib": round(trained["peak_rss_mib"]),
    }


def train_and_decode_joeynmt(
    work: Path, src: Path, ours_checkpoint: str, args: argparse.Namespace
) -> dict[str, Any]:
    """JoeyNMT on our checkpoint's settings and SentencePiece model."""
    python = ensure_joeynmt()
    checkpoint = torch.load(ours_checkpoint, map_location="cpu", weights_only=True)
    hp, data_hp = checkpoint["hyper_parameters"], checkpoint["datamodule_hyper_parameters"]
    spm_file = work / "spm.model"
    spm_file.write_bytes(checkpoint["tokenizer"]["src"])  # joint: the same model both sides
    sp = spm.SentencePieceProcessor(model_file=str(spm_file))
    voc_file, batching = prepare_joeynmt(args.data_dir, sp, work, data_hp)
    cfg = joey_config(hp, data_hp, work, spm_file, voc_file, batching)
    trained = train_joeynmt(python, cfg, work, args.minutes)
    model_dir = Path(cfg["model_dir"])
    out = work / "joeynmt" / "decode"
    out.mkdir(exist_ok=True)
    batch = batching["val_batch_sentences"]
    log(f"decoding test with JoeyNMT (best.ckpt), beam {BEAM}")
    decode_joeynmt(python, model_dir, src, out, BEAM, batch, args.threads, checkpoint="best")
    return {
        "updates": trained["steps"],
        "checkpoint": str(model_dir / "best.ckpt"),
        "hyp": out / "hyp.en",
        "train_peak_rss_mib": round(trained["peak_rss_mib"]),
        "batching": batching,
    }


def score(hyp_file: Path, refs: list[str]) -> dict[str, Any]:
    hyps = read_lines(hyp_file)
    assert len(hyps) == len(refs), f"{hyp_file}: {len(hyps)} lines for {len(refs)} references"
    bleu, chrf = sacrebleu.BLEU(), sacrebleu.CHRF()
    return {
        "bleu": round(bleu.corpus_score(hyps, [refs]).score, 2),
        "chrf": round(chrf.corpus_score(hyps, [refs]).score, 2),
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
    }


def _row(side: str, result: dict[str, Any], minutes: float) -> list[str]:
    scores = [f"{result['bleu']:.2f}", f"{result['chrf']:.2f}"]
    rss = str(result["train_peak_rss_mib"])
    return [side, f"{minutes:g}", str(result["updates"]), *scores, rss]


def report(results: dict[str, dict], extra: dict) -> None:
    header = ["side", "minutes", "updates", "test BLEU", "chrF", "train RSS MiB"]
    rows = [_row(side, r, extra["minutes"]) for side, r in results.items()]
    print_table(header, rows)
    any_side = next(iter(results.values()))
    print(f"BLEU signature: {any_side['bleu_signature']}")
    print(f"chrF signature: {any_side['chrf_signature']}")
    figures: dict[str, Any] = dict(results) | extra
    if "joeynmt" in results:
        gain = results["ours"]["bleu"] - results["joeynmt"]["bleu"]
        met = gain >= TARGET_GAIN
        print(
            f"ours - JoeyNMT: {gain:+.2f} BLEU (target +{TARGET_GAIN:g}): "
            + ("met" if met else "NOT met")
        )
        figures |= {"bleu_gain": round(gain, 2), "target_met": met}
    print(json.dumps(figures, default=str))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=30.0, help="training time per side")
    p.add_argument("--work-dir", type=Path, default=REPO / ".cache" / "bench" / "quality")
    p.add_argument("--data-dir", type=Path, default=MULTI30K)
    p.add_argument("--no-joeynmt", action="store_true", help="train and score ours only")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    return p.parse_args()


def main() -> None:
    args = parse_args()
    code = git_state()  # the code that runs, before any edit meanwhile
    work = args.work_dir.resolve()
    (work / "data").mkdir(parents=True, exist_ok=True)
    test = args.data_dir / "test_2016_flickr"
    src = work / "data" / "test.de"
    write_lines(src, read_lines(Path(f"{test}.de.gz")))
    refs = read_lines(Path(f"{test}.en.gz"))
    results = {"ours": train_and_decode_ours(work, src, args)}
    if not args.no_joeynmt:
        ours_checkpoint = results["ours"]["checkpoint"]
        results["joeynmt"] = train_and_decode_joeynmt(work, src, ours_checkpoint, args)
    for result in results.values():
        result |= score(result.pop("hyp"), refs)
    report(results, {"minutes": args.minutes, "beam": BEAM, "code": code})


if __name__ == "__main__":
    main()
