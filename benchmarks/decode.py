"""Decoding speed on Multi30k test2016, greedy and beam search, optionally against JoeyNMT 2.3.0.

    python benchmarks/decode.py                             # train ours 5 min, decode both ways
    python benchmarks/decode.py --compare-joeynmt           # ... and JoeyNMT, same budget, ratios
    python benchmarks/decode.py --checkpoint runs/x/checkpoints/last.ckpt --limit 50

Each (side, mode) decodes in a fresh process: decoding alone is timed (model
loading excluded), and the process's wall time and peak RSS (`ru_maxrss` from
`os.wait4`) are taken too. JoeyNMT is installed at run time into
`<work-dir>/joeynmt-venv`, never vendored; it trains the same architecture on
the same data with our SentencePiece model, for the same wall time from its
first epoch. Output: a table, then one JSON line with every figure.
"""

import argparse
import gzip
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import sacrebleu
import sentencepiece as spm
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from seq2seq.batching import TokenBatchSampler, example_cost  # noqa: E402
from seq2seq.translator import BATCH_TOKENS  # noqa: E402

CONFIG = REPO / "configs" / "multi30k_gru_bahdanau.yaml"
JOEY_PACKAGES = ["torch==2.13.0", "joeynmt==2.3.0", "sentencepiece==0.2.0", "importlib_metadata"]
TARGETS = {"greedy": 2.0, "beam": 3.0}  # ours / JoeyNMT sentences per second, at BLEU >= theirs


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def read_lines(path: Path, limit: int | None = None) -> list[str]:
    """Lines of a plain or gzip UTF-8 file, without newlines; the first `limit` if given."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return f.read().splitlines()[:limit]


def write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def child_env(threads: int, *, ours: bool) -> dict[str, str]:
    """Environment of a child: its thread count; ours imports this checkout's `seq2seq`."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    return {**env, "PYTHONPATH": str(REPO)} if ours else env


def cpu_snapshot() -> tuple[float, float]:
    """CPU seconds so far of the whole machine (all cores) and of this process's reaped children."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    machine = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return machine, children.ru_utime + children.ru_stime


def others_cpu_since(snapshot: tuple[float, float]) -> float:
    """CPU seconds taken since `snapshot` by processes other than our children: 0 when idle."""
    machine, children = cpu_snapshot()
    return round(max(machine - snapshot[0] - (children - snapshot[1]), 0.0), 1)


def run_measured(
    cmd: list, log_file: Path, *, stdin: Path | None = None, stdout: Path | None = None, env=None
) -> dict[str, float]:
    """Run `cmd` to completion; -> its wall seconds and peak RSS (MiB), that process alone.

    Also `others_cpu_s`: CPU seconds that other processes took meanwhile (0 on an idle
    machine). Its stderr goes to `log_file`, and its stdout too unless `stdout` is given.
    """
    cmd, start, snapshot = [str(arg) for arg in cmd], time.perf_counter(), cpu_snapshot()
    with open(stdin or os.devnull, "rb") as fin, open(log_file, "wb") as ferr:
        fout = open(stdout, "wb") if stdout else ferr  # noqa: SIM115
        proc = subprocess.Popen(cmd, stdin=fin, stdout=fout, stderr=ferr, env=env, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)  # reaps it: rusage of this child alone
        fout.close()
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        tail = log_file.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed:\n{tail}")
    rss = usage.ru_maxrss / 1024  # KiB on Linux
    return {"wall_s": wall, "peak_rss_mib": rss, "others_cpu_s": others_cpu_since(snapshot)}


# -- ours ------------------------------------------------------------------------------------


def train_ours(work: Path, minutes: float) -> dict[str, Any]:
    """Train our GRU + Bahdanau config for `minutes` of wall time; -> its last checkpoint."""
    out = work / "ours"
    seconds = round(minutes * 60)
    max_time = f"00:{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    cmd = [sys.executable, "scripts/train.py", "--config", str(CONFIG)]
    cmd += ["--trainer.max_time", max_time, "--model.schedule", "constant", "--data.test", "null"]
    cmd += ["--trainer.enable_progress_bar", "false", "--checkpoint.dirpath", out / "checkpoints"]
    cmd += ["--trainer.default_root_dir", out, "--trainer.logger.init_args.save_dir", out]
    log(f"training ours for {max_time} (log: {out}/train.log)")
    subprocess.run(["rm", "-rf", str(out)], check=True)
    out.mkdir(parents=True)
    measured = run_measured(cmd, out / "train.log", env={**os.environ, "PYTHONPATH": str(REPO)})
    return {
        "checkpoint": out / "checkpoints" / "last.ckpt",
        "others_cpu_s": measured["others_cpu_s"],
    }


def decode_ours_child(ckpt: str, src: str, hyp: str, beam: str, batch_tokens: str) -> None:
    """In a fresh process: translate `src` into `hyp`; print the decoding seconds as JSON."""
    from seq2seq.translator import Translator

    translator = Translator.from_checkpoint(ckpt, device="cpu")
    sentences = read_lines(Path(src))
    start = time.perf_counter()
    hyps = translator.translate(sentences, beam_size=int(beam), batch_tokens=int(batch_tokens))
    seconds = time.perf_counter() - start
    write_lines(Path(hyp), hyps)
    print(json.dumps({"decode_s": seconds}))


def decode_ours(ckpt: Path, src: Path, out: Path, beam: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "_decode_ours", ckpt, src, out / "hyp.en", beam]
    cmd += [args.batch_tokens]
    env = child_env(args.threads, ours=True)
    measured = run_measured(cmd, out / "stderr.log", stdout=out / "result.json", env=env)
    return json.loads((out / "result.json").read_text()) | measured


# -- batch sizes -----------------------------------------------------------------------------


def corpus_lengths(sp: spm.SentencePieceProcessor, prefix: Path, max_len: int) -> np.ndarray:
    """(N, 2) source and target piece counts of the training pairs that both tools keep."""
    src, tgt = (read_lines(Path(f"{prefix}.{lang}.gz")) for lang in ("de", "en"))
    kept = [(s, t) for s, t in zip(src, tgt, strict=True) if s.strip() and t.strip()]
    src, tgt = sp.encode([s for s, _ in kept]), sp.encode([t for _, t in kept])
    lengths = np.array([(len(s), len(t)) for s, t in zip(src, tgt, strict=True)])
    return lengths[(lengths <= max_len).all(axis=1)]


def joey_batches(lengths: np.ndarray, batch_size: int, seed: int = 42) -> list[np.ndarray]:
    """JoeyNMT's token batches: shuffled, unbucketed, closed at n * max(src+1, tgt+1) >= size."""
    order = np.random.default_rng(seed).permutation(len(lengths))
    cost = np.maximum(lengths[:, 0], lengths[:, 1]) + 1
    batches, start, longest = [], 0, 0
    for i, index in enumerate(order):
        longest = max(longest, cost[index])
        if longest * (i + 1 - start) >= batch_size:
            batches.append(order[start : i + 1])
            start, longest = i + 1, 0
    return batches + ([order[start:]] if start < len(order) else [])


def match_training_batches(lengths: np.ndarray, max_tokens: int, seed: int) -> dict[str, Any]:
    """JoeyNMT's token `batch_size` whose batches hold as many real target tokens as ours.

    Real target tokens: non-pad target tokens, EOS included (what both tools train on).
    Ours: `max_tokens` counts padding of max(src, tgt+1) per row, over length buckets.
    Padded tokens are reported as each tool counts them.
    """
    costs = example_cost(lengths[:, 0], lengths[:, 1])
    ours = [np.array(b) for b in TokenBatchSampler(costs, max_tokens, shuffle=True, seed=seed)]
    low, high = 64, 16 * max_tokens
    while high - low > 8:  # fewer, larger batches as the batch size grows
        middle = (low + high) // 2
        too_small = len(joey_batches(lengths, middle)) > len(ours)
        low, high = (middle, high) if too_small else (low, middle)
    joey, joey_costs = joey_batches(lengths, high), np.maximum(lengths[:, 0], lengths[:, 1]) + 1
    real = int((lengths[:, 1] + 1).sum())
    return {
        "ours_max_tokens": max_tokens,
        "joeynmt_batch_size": high,
        "ours_batches_per_epoch": len(ours),
        "joeynmt_batches_per_epoch": len(joey),
        "ours_mean_real_tgt_tokens": round(real / len(ours)),
        "joeynmt_mean_real_tgt_tokens": round(real / len(joey)),
        "ours_mean_padded_tokens": round(np.mean([len(b) * costs[b].max() for b in ours])),
        "joeynmt_mean_padded_tokens": round(np.mean([len(b) * joey_costs[b].max() for b in joey])),
    }


# -- JoeyNMT ---------------------------------------------------------------------------------


def ensure_joeynmt(work: Path) -> Path:
    """The JoeyNMT venv's python; the venv is (re)made only when missing or broken."""
    python = work / "joeynmt-venv" / "bin" / "python"
    check = "import importlib.metadata as m, joeynmt, importlib_metadata; "
    check += "assert (m.version('joeynmt'), m.version('sentencepiece')) == ('2.3.0', '0.2.0')"
    if python.exists() and subprocess.run([python, "-c", check], capture_output=True).returncode:
        log(f"{python.parents[1]} is broken: installing again")
    elif python.exists():
        return python
    log(f"installing {' '.join(JOEY_PACKAGES)} into {python.parents[1]} (a few minutes)")
    subprocess.run([sys.executable, "-m", "venv", "--clear", python.parents[1]], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", *JOEY_PACKAGES], check=True)
    return python


def prepare_joeynmt(
    args: argparse.Namespace, sp: spm.SentencePieceProcessor, work: Path, data_hp: dict
) -> tuple[Path, dict]:
    """Plain-text train and val (it reads no gzip), the shared vocabulary, matched batches."""
    for split in ("train", "val"):
        for lang in ("de", "en"):
            write_lines(
                work / "data" / f"{split}.{lang}", read_lines(args.data_dir / f"{split}.{lang}.gz")
            )
    voc_file = work / "joeynmt" / "vocab.txt"
    voc_file.parent.mkdir(exist_ok=True)
    write_lines(voc_file, [sp.id_to_piece(i) for i in range(4, sp.get_piece_size())])  # no specials
    log("matching JoeyNMT's token batches to ours on the training data")
    lengths = corpus_lengths(sp, args.data_dir / "train", data_hp["max_len"])
    batching = match_training_batches(lengths, data_hp["max_tokens"], data_hp["seed"])
    val = [sp.encode(read_lines(args.data_dir / f"val.{lang}.gz")) for lang in ("de", "en")]
    val_costs = example_cost(*(np.array([len(ids) for ids in side]) for side in val))
    val_batches = len(TokenBatchSampler(val_costs, data_hp["max_tokens"], shuffle=False))
    batching["val_batch_sentences"] = -(-len(val_costs) // val_batches)  # as many as ours
    return voc_file, batching


def joey_config(hp: dict, data_hp: dict, work: Path, spm_file: Path, voc: Path, batching: dict):
    """A JoeyNMT training config for the architecture and optimizer in our hyperparameters."""
    side = {"level": "bpe", "tokenizer_type": "sentencepiece", "voc_file": str(voc)}
    side |= {"tokenizer_cfg": {"model_file": str(spm_file)}, "max_length": data_hp["max_len"]}
    rnn = {"type": "recurrent", "rnn_type": hp["cell"], "hidden_size": hp["hidden_size"]}
    rnn |= {"embeddings": {"embedding_dim": hp["embed_dim"]}, "dropout": hp["dropout"]}
    data = {"train": str(work / "data" / "train"), "dev": str(work / "data" / "val")}
    data |= {"dataset_type": "plain", "src": {"lang": "de", **side}, "trg": {"lang": "en", **side}}
    training = {"optimizer": "adam", "learning_rate": hp["lr"], "clip_grad_norm": 1.0}
    # A constant rate: 2.3.0 rejects a config without `scheduling` (though documented as
    # constant), and `plateau` fails with torch 2.13. Exponential decay by 1.0 is constant.
    training |= {"scheduling": "exponential", "decrease_factor": 1.0}
    training |= {"label_smoothing": hp["label_smoothing"], "normalization": "tokens"}
    training |= {"batch_size": batching["joeynmt_batch_size"], "batch_type": "token"}
    # Validate as often as ours (once per epoch), keep the best by BLEU, never stop by itself.
    every = max(10, round(batching["ours_batches_per_epoch"] / 10) * 10)
    training |= {"validation_freq": every, "logging_freq": 10, "early_stopping_metric": "bleu"}
    training |= {"epochs": 1000, "keep_best_ckpts": 1, "overwrite": True, "print_valid_sents": [0]}
    # Embeddings start as ours do, N(0, 1) (PyTorch's default): with JoeyNMT's default
    # (Xavier, ~0.016 std) it learned ~4x slower per update here (60 updates: accuracy
    # 0.11 against 0.20). Other weights keep JoeyNMT's defaults.
    model = {"embed_initializer": "normal", "embed_init_weight": 1.0}
    encoder = {**rnn, "num_layers": hp["encoder_layers"], "bidirectional": hp["bidirectional"]}
    decoder = {**rnn, "num_layers": hp["decoder_layers"], "hidden_dropout": hp["dropout"]}
    decoder |= {"attention": hp["attention"], "input_feeding": True, "init_hidden": "bridge"}
    testing = {"eval_metrics": ["bleu"], "beam_size": 1, "batch_type": "sentence"}
    return {
        "name": "bench",
        "model_dir": str(work / "joeynmt" / "model"),
        "use_cuda": False,
        "data": data,
        "training": training,
        "testing": {**testing, "batch_size": batching["val_batch_sentences"]},
        "model": {**model, "encoder": encoder, "decoder": decoder},
    }


def train_joeynmt(python: Path, cfg: dict, work: Path, minutes: float | None) -> dict:
    """Train for `minutes` of wall time from its first epoch, then SIGINT (it saves and exits);
    with `minutes` None, until its `training.updates` limit. -> checkpoint, steps, minutes."""
    path, out = work / "joeynmt" / "train.yaml", work / "joeynmt" / "train.log"
    path.write_text(yaml.safe_dump(cfg))
    budget = f"{minutes:g} min" if minutes else f"{cfg['training']['updates']} updates"
    log(f"training JoeyNMT for {budget} (log: {out})")
    snapshot = cpu_snapshot()
    with open(out, "wb") as f:
        cmd = [python, "-m", "joeynmt", "train", path, "--skip-test"]
        # SIGINT must raise KeyboardInterrupt in it, even if we were started with SIGINT ignored
        # (as `cmd &` in a script does): Python keeps an inherited SIG_IGN.
        default_sigint = partial(signal.signal, signal.SIGINT, signal.SIG_DFL)
        proc = subprocess.Popen(
            cmd, stdout=f, stderr=subprocess.STDOUT, cwd=work, preexec_fn=default_sigint
        )
    while "EPOCH 1" not in out.read_text(errors="replace"):  # data and vocabulary loaded
        if proc.poll() is not None:
            raise RuntimeError(f"JoeyNMT training failed:\n{out.read_text()[-3000:]}")
        time.sleep(0.2)
    start = time.monotonic()
    while proc.poll() is None and (minutes is None or time.monotonic() - start < minutes * 60):
        time.sleep(0.2)
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=600)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise RuntimeError(f"JoeyNMT ignored SIGINT for 10 minutes; killed (log: {out})") from None
    spent = (time.monotonic() - start) / 60
    latest = Path(cfg["model_dir"]) / "latest.ckpt"  # a link to <steps>.ckpt
    stopped = "Interrupt at epoch" if minutes else "maximum num. of updates"
    if proc.returncode != 0 or not latest.exists() or stopped not in out.read_text():
        raise RuntimeError(f"JoeyNMT did not stop as expected:\n{out.read_text()[-3000:]}")
    steps, others = int(latest.resolve().stem), others_cpu_since(snapshot)
    result = {"checkpoint": str(latest.resolve()), "steps": steps, "minutes": round(spent, 2)}
    return result | {"others_cpu_s": others}


def decode_joeynmt(
    python: Path, model_dir: Path, src: Path, out: Path, beam: int, batch: int, threads: int
) -> dict:
    """`joeynmt translate`, sources on stdin (its `-o` crashes), hypotheses from stdout."""
    cfg = yaml.safe_load((model_dir / "config.yaml").read_text())
    cfg["model_dir"] = str(model_dir)
    for side in ("src", "trg"):  # the copies in its model folder
        side_cfg = cfg["data"][side]
        side_cfg["voc_file"] = str(model_dir / f"{side}_vocab.txt")
        model_file = Path(side_cfg["tokenizer_cfg"]["model_file"]).name
        side_cfg["tokenizer_cfg"]["model_file"] = str(model_dir / model_file)
    ckpt = model_dir / "latest.ckpt"
    cfg["testing"] |= {"load_model": str(ckpt if ckpt.exists() else model_dir / "best.ckpt")}
    cfg["testing"] |= {"beam_size": beam, "beam_alpha": 1.0 if beam > 1 else -1}
    cfg["testing"] |= {"batch_size": batch, "batch_type": "sentence"}
    (out / "translate.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [python, "-m", "joeynmt", "translate", out / "translate.yaml"]
    env = child_env(threads, ours=False)
    measured = run_measured(cmd, out / "stderr.log", stdin=src, stdout=out / "hyp.en", env=env)
    took = re.findall(r"Generation took ([\d.]+)\[sec\]", (out / "stderr.log").read_text())
    return {"decode_s": float(took[-1])} | measured


# -- running and reporting -------------------------------------------------------------------


def decode_both_modes(
    side: str, decode: Callable[[Path, int], dict], work: Path, refs: list[str], args
) -> list[dict]:
    """Greedy and beam runs of one side, each `decode(out_dir, beam)` `args.repeats` times.

    The fastest repeat is kept (the machine may be shared); all decoding times are listed.
    """
    runs = []
    for mode, beam in (("greedy", 1), ("beam", args.beam_size)):
        out = work / "decode" / f"{side}-{mode}"
        out.mkdir(parents=True, exist_ok=True)
        log(f"decoding {len(refs)} sentences with {side}, {mode} (beam {beam}) x{args.repeats}")
        repeats = [decode(out, beam) for _ in range(args.repeats)]
        run = {"side": side, "mode": mode, "beam_size": beam}
        run |= min(repeats, key=lambda r: r["decode_s"])
        run["decode_s_all"] = [round(r["decode_s"], 2) for r in repeats]
        hyps = read_lines(out / "hyp.en")
        assert len(hyps) == len(refs), f"{out / 'hyp.en'}: {len(hyps)} lines for {len(refs)}"
        run["sent_per_s"] = len(refs) / run["decode_s"]
        run["mean_len_words"] = sum(len(h.split()) for h in hyps) / len(hyps)
        run["bleu"] = sacrebleu.corpus_bleu(hyps, [refs]).score
        runs.append({k: round(v, 2) if isinstance(v, float) else v for k, v in run.items()})
    return runs


def report(runs: list[dict], extra: dict) -> None:
    """The table, the ratios against JoeyNMT, the settings, and last one JSON line."""
    header = ["side", "mode", "sent/s", "decode s", "wall s", "peak RSS MiB", "mean len", "BLEU"]
    keys = ["sent_per_s", "decode_s", "wall_s", "peak_rss_mib", "mean_len_words", "bleu"]
    rows = [[r["side"], r["mode"], *(f"{r[k]:.2f}" for k in keys)] for r in runs]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
    by = {(r["side"], r["mode"]): r for r in runs}
    ratios, met, comparable = {}, {}, {}
    for mode, target in TARGETS.items():
        if ("joeynmt", mode) in by:
            ours, joey = by["ours", mode], by["joeynmt", mode]
            ratios[mode] = round(ours["sent_per_s"] / joey["sent_per_s"], 2)
            met[mode] = ratios[mode] >= target and ours["bleu"] >= joey["bleu"]
            # Speed follows output length: a ratio means little when the lengths differ.
            gap = abs(ours["mean_len_words"] - joey["mean_len_words"])
            comparable[mode] = gap <= 0.2 * extra["reference_mean_len_words"]
            print(
                f"{mode}: ours/JoeyNMT {ratios[mode]:.2f}x sentences/s (target {target:g}x), "
                f"BLEU {ours['bleu']:.2f} vs {joey['bleu']:.2f}: "
                + ("met" if met[mode] else "NOT met")
                + ("" if comparable[mode] else " (output lengths differ by over 20%: no verdict)")
            )
    for key, value in extra.items():
        print(f"{key}: {json.dumps(value)}")
    figures = {"runs": runs, "ratios": ratios, "targets_met": met, "lengths_comparable": comparable}
    print(json.dumps(figures | extra))


def git_state() -> str:
    """This checkout's commit, with "+dirty" when `seq2seq/` differs from it."""
    git = ["git", "-C", str(REPO)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run([*git, "diff", "--quiet", "HEAD", "--", "seq2seq"], capture_output=True)
    return head.stdout.strip() + ("+dirty" if dirty.returncode else "")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work-dir", type=Path, default=REPO / ".cache" / "bench" / "decode")
    p.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "multi30k")
    p.add_argument("--train-minutes", type=float, default=5.0, help="training budget per side")
    p.add_argument("--checkpoint", type=Path, help="our checkpoint (then ours is not trained)")
    p.add_argument("--joeynmt-model-dir", type=Path, help="a trained JoeyNMT model folder")
    p.add_argument("--compare-joeynmt", action="store_true", help="run JoeyNMT 2.3.0 too")
    p.add_argument(
        "--joeynmt-same-steps",
        action="store_true",
        help="train JoeyNMT for as many updates as ours made, not for the same wall time",
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
    p.add_argument("--limit", type=int, help="decode only the first N test sentences")
    p.add_argument("--repeats", type=int, default=3, help="decoding runs each; the fastest counts")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    return p.parse_args()


def main() -> None:
    args = parse_args()
    work = args.work_dir.resolve()
    (work / "data").mkdir(parents=True, exist_ok=True)
    test = args.data_dir / "test_2016_flickr"
    sources = read_lines(Path(f"{test}.de.gz"), args.limit)
    refs = read_lines(Path(f"{test}.en.gz"), args.limit)
    src_file = work / "data" / "test.de"
    write_lines(src_file, sources)

    training: dict[str, Any] = {}
    if args.checkpoint is None:
        trained = train_ours(work, args.train_minutes)
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
        beam: len(TokenBatchSampler(lengths, args.batch_tokens // beam, shuffle=False))
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
    extra: dict[str, Any] = {"sentences": len(sources), "code": git_state()}
    extra["reference_mean_len_words"] = round(sum(len(r.split()) for r in refs) / len(refs), 2)
    extra |= {"training": training, "decoding": decoding}
    del checkpoint

    def ours(out: Path, beam: int) -> dict:
        return decode_ours(ckpt, src_file, out, beam, args)

    runs = decode_both_modes("ours", ours, work, refs, args)
    if args.compare_joeynmt:
        python = ensure_joeynmt(work)
        model_dir = args.joeynmt_model_dir
        if model_dir is None:
            voc_file, batching = prepare_joeynmt(args, sp, work, data_hp)
            cfg = joey_config(hp, data_hp, work, spm_file, voc_file, batching)
            minutes = args.train_minutes
            if args.joeynmt_same_steps:
                cfg["training"]["updates"], minutes = training["ours_steps"], None
            trained = train_joeynmt(python, cfg, work, minutes)
            model_dir = Path(trained["checkpoint"]).parent
            training |= {f"joeynmt_{key}": value for key, value in trained.items()}
            training |= {"joeynmt_schedule": "constant (exponential, factor 1.0)"}
            training |= {"batching": batching}
        model_dir = model_dir.resolve()

        def joey(out: Path, beam: int) -> dict:
            batch = joey_batch[beam]
            return decode_joeynmt(python, model_dir, src_file, out, beam, batch, args.threads)

        runs += decode_both_modes("joeynmt", joey, work, refs, args)
    report(runs, extra)


if __name__ == "__main__":
    if sys.argv[1:2] == ["_decode_ours"]:
        decode_ours_child(*sys.argv[2:])
    else:
        main()
