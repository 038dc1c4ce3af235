"""JoeyNMT 2.3.0, our measured peer: installed at run time into its own venv (never
vendored), configured for our architecture as its users would write the config
(`recipe_config`), trained for a wall-time budget, and run to translate.
"""

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import sentencepiece as spm
import yaml

from benchmarks.common import (
    REPO,
    child_env,
    corpus_file,
    cpu_snapshot,
    log,
    others_cpu_since,
    read_lines,
    run_measured,
    score,
    write_lines,
    write_test_set,
)
from seq2seq.decoder import DEFAULT_SCORE

JOEY_VENV = REPO / ".cache" / "bench" / "joeynmt-venv"  # shared by the benchmarks
JOEY_SCORES = {"additive": "bahdanau", "general": "luong"}  # ours -> its `attention`
JOEY_PACKAGES = ["torch==2.13.0", "joeynmt==2.3.0", "sentencepiece==0.2.0", "importlib_metadata"]
PLATEAU_VERBOSE = '            "verbose": False,\n'  # in 2.3.0's builders.build_scheduler
RECIPE_BATCHES = ["2000tok", "4096tok", "80sent"]  # batch sizes of its recipes
SCHEDULES = {  # its plateau schedule as its recipes set it: name -> `training` settings
    # iwslt_envi_xnmt.yaml, its real-data RNN recipe with Adam (1.x; 2.x has none): halve
    # the rate after one validation without a better BLEU, stop below 5e-5.
    "recipe": {"patience": 1, "decrease_factor": 0.5, "learning_rate_min": 5e-5},
    # 2.3.0's toy RNN recipes (rnn_reverse.yaml) and its defaults: never fires in 30 minutes.
    "toy": {"patience": 5, "decrease_factor": 0.5},
}
STOPPED_BY_SIGINT, STOPPED_AT_MIN_LR = "Interrupt at epoch", "minimum lr"  # its log's words
STOPPED_AT_UPDATES = "maximum num. of updates"
LOGGING_FREQ = 20  # updates; `validation_freq` must be a multiple of it
CALIBRATION_UPDATES = 200  # updates timed to convert a validation cadence into updates
# `python -m joeynmt` with torch seeded first: 2.3.0 builds its model before it applies
# `random_seed` (1.x seeded first), so its initial weights come from torch's unseeded
# generator, different in every process and never reproduced; seeded, a seed's are its own.
SEEDED_JOEYNMT = (
    "import runpy, sys, torch; torch.manual_seed(int(sys.argv.pop(1))); "
    "runpy.run_module('joeynmt', run_name='__main__', alter_sys=True)"
)


def corpus_lengths(
    src_sp: spm.SentencePieceProcessor, tgt_sp: spm.SentencePieceProcessor, prefix: Path, max_len
) -> np.ndarray:
    """(N, 2) source and target piece counts of the training pairs that both tools keep."""
    src, tgt = (read_lines(corpus_file(prefix, lang)) for lang in ("de", "en"))
    kept = [(s, t) for s, t in zip(src, tgt, strict=True) if s.strip() and t.strip()]
    src, tgt = src_sp.encode([s for s, _ in kept]), tgt_sp.encode([t for _, t in kept])
    lengths = np.array([(len(s), len(t)) for s, t in zip(src, tgt, strict=True)])
    return lengths[(lengths <= max_len).all(axis=1)]


def real_tgt_tokens_per_update(lengths: np.ndarray, size: int, batch_type: str) -> float:
    """Mean real target tokens (EOS included) of JoeyNMT's batches of `size` tokens or
    sentences (`batch_type` "token" or "sentence") over an epoch of `lengths`. Its token
    batches are shuffled, not bucketed, and closed at n * max(src+1, tgt+1) >= size."""
    if batch_type == "sentence":
        batches = -(-len(lengths) // size)
    else:
        cost = np.maximum(lengths[:, 0], lengths[:, 1]) + 1
        batches, rows, longest = 0, 0, 0
        for index in np.random.default_rng(42).permutation(len(lengths)):
            rows, longest = rows + 1, max(longest, cost[index])
            if longest * rows >= size:
                batches, rows, longest = batches + 1, 0, 0
        batches += rows > 0
    return float((lengths[:, 1] + 1).sum() / batches)


def ensure_joeynmt(venv: Path = JOEY_VENV) -> Path:
    """The JoeyNMT venv's python, its plateau schedule patched (`patch_plateau`); the venv
    is (re)made only when missing or broken."""
    python = venv / "bin" / "python"
    check = "import importlib.metadata as m, joeynmt, importlib_metadata; "
    check += "assert (m.version('joeynmt'), m.version('sentencepiece')) == ('2.3.0', '0.2.0')"
    checked = python.exists() and subprocess.run([python, "-c", check], capture_output=True)
    if not checked or checked.returncode != 0:
        log(f"installing {' '.join(JOEY_PACKAGES)} into {venv} (a few minutes)")
        subprocess.run([sys.executable, "-m", "venv", "--clear", venv], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", *JOEY_PACKAGES], check=True)
    patch_plateau(venv)
    return python


def patch_plateau(venv: Path) -> Path:
    """Drop `verbose=False` from the `ReduceLROnPlateau` arguments of the venv's JoeyNMT
    (torch 2.13 removed the argument) so that `scheduling: plateau` runs; idempotent.
    -> the patched file."""
    builders = next(venv.glob("lib/python*/site-packages/joeynmt/builders.py"))
    text = builders.read_text(encoding="utf-8")
    patched = text.replace(PLATEAU_VERBOSE, "")
    if '"verbose"' in patched:
        raise RuntimeError(f"{builders}: `verbose` is not where JoeyNMT 2.3.0 has it")
    if patched != text:
        builders.write_text(patched, encoding="utf-8")
        log(f"JoeyNMT: verbose= dropped from its ReduceLROnPlateau call in {builders}")
    return builders


def write_joeynmt_data(data_dir: Path, sp: spm.SentencePieceProcessor, work: Path) -> Path:
    """Plain-text train and val in `work/data` (it reads no gzip); -> the shared vocabulary."""
    (work / "data").mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        for lang in ("de", "en"):
            lines = read_lines(corpus_file(data_dir / split, lang))
            write_lines(work / "data" / f"{split}.{lang}", lines)
    voc_file = work / "joeynmt" / "vocab.txt"
    voc_file.parent.mkdir(exist_ok=True)
    write_lines(voc_file, [sp.id_to_piece(i) for i in range(4, sp.get_piece_size())])  # no specials
    return voc_file


def batch_setting(text: str) -> tuple[int, str]:
    """`2000` or `2000tok`: batches of 2,000 tokens; `80sent`: of 80 sentences."""
    match = re.fullmatch(r"(\d+)(tok|sent)?", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r}: expected N, Ntok or Nsent")
    return int(match[1]), "sentence" if match[2] == "sent" else "token"


def batch_label(batch: tuple[int, str]) -> str:
    return f"{batch[0]}{'sent' if batch[1] == 'sentence' else 'tok'}"


def recipe_config(
    hp: dict,
    data_hp: dict,
    work: Path,
    spm_file: Path,
    voc: Path,
    batch: tuple[int, str],
    schedule: str = "recipe",
    validation_freq: int = 400,
) -> dict:
    """A JoeyNMT training config for our architecture (hyperparameters `hp`, `data_hp`) as
    its users would write one: `batch` (size, "token" or "sentence"), its RNN recipes'
    Adam 1e-3 with the plateau schedule `schedule` (`SCHEDULES`; needs `patch_plateau`),
    validation every `validation_freq` updates (a multiple of `LOGGING_FREQ`) and
    embeddings N(0, 0.1), its defaults elsewhere; on `work/data`, tokenized by our
    SentencePiece model `spm_file` with the vocabulary `voc`."""
    training = {"optimizer": "adam", "learning_rate": hp["lr"], "clip_grad_norm": 1.0}
    training |= {"scheduling": "plateau", **SCHEDULES[schedule]}
    # The same loss as ours (its defaults: 0 and "batch"; its Transformer recipes set these).
    training |= {"label_smoothing": hp["label_smoothing"], "normalization": "tokens"}
    training |= {"batch_size": batch[0], "batch_type": batch[1]}
    # The best checkpoint by BLEU; the wall clock stops it (its default: 3 epochs).
    training |= {"validation_freq": validation_freq, "logging_freq": LOGGING_FREQ}
    training |= {"early_stopping_metric": "bleu", "epochs": 1000, "overwrite": True}
    side = {"level": "bpe", "tokenizer_type": "sentencepiece", "voc_file": str(voc)}
    side |= {"tokenizer_cfg": {"model_file": str(spm_file)}, "max_length": data_hp["max_len"]}
    data = {"train": str(work / "data" / "train"), "dev": str(work / "data" / "val")}
    data |= {"dataset_type": "plain", "src": {"lang": "de", **side}, "trg": {"lang": "en", **side}}
    rnn = {"type": "recurrent", "rnn_type": hp["cell"], "hidden_size": hp["hidden_size"]}
    rnn |= {"embeddings": {"embedding_dim": hp["embed_dim"]}, "dropout": hp["dropout"]}
    encoder = {**rnn, "num_layers": hp["encoder_layers"], "bidirectional": hp["bidirectional"]}
    decoder = {**rnn, "num_layers": hp["decoder_layers"], "hidden_dropout": hp["dropout"]}
    decoder |= {"attention": joey_attention(hp), "input_feeding": True, "init_hidden": "bridge"}
    # Its RNN recipes (rnn_small.yaml, rnn_reverse.yaml) start embeddings at N(0, 0.1); their
    # other initialisers (Xavier-uniform weights, zero biases) are its defaults.
    model = {"embed_initializer": "normal", "embed_init_weight": 0.1}
    return {
        "name": "bench",
        "model_dir": str(work / "joeynmt" / "model"),
        "use_cuda": False,
        "data": data,
        "training": training,
        "testing": {"eval_metrics": ["bleu"]},  # greedy, 64 sentences a batch: its defaults
        "model": model | {"encoder": encoder, "decoder": decoder},
    }


def joey_attention(hp: dict) -> str:
    """JoeyNMT's name for our attention. Its recurrent decoder is Luong et al.'s (the new
    state queries, input feeding), ours `luong`; its `bahdanau` scores it additively, its
    `luong` bilinearly (our `general`). It has neither RNNsearch nor a fixed context."""
    score = hp.get("attention_score") or DEFAULT_SCORE.get(hp["attention"])
    if hp["attention"] != "luong" or score not in JOEY_SCORES:
        raise SystemExit(
            f"JoeyNMT has no equivalent of --model.attention {hp['attention']} with "
            f"{score} scores (only luong with additive or general)"
        )
    return JOEY_SCORES[score]


def train_joeynmt(python: Path, cfg: dict, work: Path, minutes: float | None, threads=None):
    """Train for `minutes` of wall time from its first epoch, then SIGINT (it saves and
    exits), or until its schedule's minimum learning rate; with `minutes` None, until its
    `training.updates` limit. Its weights start from torch seeded with `random_seed`
    (`SEEDED_JOEYNMT`). -> its latest checkpoint, updates, minutes, peak RSS and the CPU
    others took meanwhile."""
    path, out = work / "joeynmt" / "train.yaml", work / "joeynmt" / "train.log"
    path.write_text(yaml.safe_dump(cfg))
    budget = f"{minutes:g} min" if minutes else f"{cfg['training']['updates']} updates"
    seed = cfg.get("random_seed", 42)
    log(f"training JoeyNMT for {budget}, seed {seed} (log: {out})")
    snapshot = cpu_snapshot()
    with open(out, "wb") as f:
        # SIGINT must raise KeyboardInterrupt in it, even if we were started with SIGINT
        # ignored (as `cmd &` in a script does): Python keeps an inherited SIG_IGN.
        proc = subprocess.Popen(
            [python, "-c", SEEDED_JOEYNMT, str(seed), "train", path, "--skip-test"],
            stdout=f,
            stderr=subprocess.STDOUT,
            cwd=work,
            env=child_env(threads, ours=False),
            preexec_fn=partial(signal.signal, signal.SIGINT, signal.SIG_DFL),
        )
    while "EPOCH 1" not in out.read_text(errors="replace"):  # data and vocabulary loaded
        if _reaped(proc, 0.2) is not None:
            raise RuntimeError(f"JoeyNMT training failed:\n{out.read_text()[-3000:]}")
    start = time.monotonic()
    usage = _reaped(proc, float("inf") if minutes is None else minutes * 60)
    if usage is None:
        proc.send_signal(signal.SIGINT)
        usage = _reaped(proc, 600)
    if usage is None:
        proc.kill()
        raise RuntimeError(f"JoeyNMT ignored SIGINT for 10 minutes; killed (log: {out})")
    spent = (time.monotonic() - start) / 60
    latest = Path(cfg["model_dir"]) / "latest.ckpt"  # a link to <updates>.ckpt
    ends = (STOPPED_BY_SIGINT, STOPPED_AT_MIN_LR) if minutes else (STOPPED_AT_UPDATES,)
    text = out.read_text(errors="replace")
    if proc.returncode != 0 or not latest.exists() or not any(e in text for e in ends):
        raise RuntimeError(f"JoeyNMT did not stop as expected:\n{text[-3000:]}")
    result = {"checkpoint": str(latest.resolve()), "steps": int(latest.resolve().stem)}
    result |= {"minutes": round(spent, 2), "peak_rss_mib": usage.ru_maxrss / 1024}
    return result | {"others_cpu_s": others_cpu_since(snapshot)}


def updates_per_minute(python: Path, cfg: dict, work: Path) -> float:
    """Its training updates per minute under `cfg`, validation excluded: the wall time of
    `CALIBRATION_UPDATES` updates from its first epoch, in `work`."""
    training = cfg["training"] | {"updates": CALIBRATION_UPDATES}
    training["validation_freq"] = CALIBRATION_UPDATES + LOGGING_FREQ  # none while timed
    cfg = cfg | {"training": training, "model_dir": str(work / "joeynmt" / "model")}
    trained = train_joeynmt(python, cfg, work, None)
    return trained["steps"] / trained["minutes"]


def validation_freq(updates_per_minute: float, minutes: float) -> int:
    """The multiple of `LOGGING_FREQ` nearest to a validation every `minutes` (at least one)."""
    return LOGGING_FREQ * max(1, round(updates_per_minute * minutes / LOGGING_FREQ))


def better_final_weights(
    python: Path, model_dir: Path, val: Path, out: Path, threads
) -> dict[str, Any]:
    """Its `best` and `latest` checkpoints (`latest`: the weights it stopped with, never
    validated) decoding the validation set `val` (PREFIX.de, PREFIX.en[.gz]) as its
    validation does (greedy, 64 sentences a batch, sacrebleu BLEU of the detokenized
    output); -> the name of the better ("best" on a tie) and each one's BLEU."""
    src, refs = write_test_set(out, val)
    bleu = {}
    for ckpt in ("best", "latest"):
        if (model_dir / f"{ckpt}.ckpt").exists():
            decode_joeynmt(python, model_dir, src, out / ckpt, 1, 64, threads, ckpt)
            bleu[ckpt] = score(out / ckpt / "hyp.en", refs)["bleu"]
    return {"decode_from": max(bleu, key=bleu.get), **{f"val_bleu_{k}": v for k, v in bleu.items()}}


def _reaped(proc: subprocess.Popen, seconds: float):
    """The child's resource usage once it has exited within `seconds` (then reaped, its
    return code set), else None. `os.wait4` keeps the usage that `Popen.poll` drops."""
    deadline = time.monotonic() + seconds
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return usage
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.2)


def validation_bleu(model_dir: Path) -> dict[int, float]:
    """update -> validation BLEU (greedy), in order, from its model folder's `validations.txt`."""
    path = model_dir / "validations.txt"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    found = re.findall(r"^Steps: (\d+)\t.*\tbleu: ([\d.]+)", text, flags=re.MULTILINE)
    return {int(step): float(score) for step, score in found}


def logged_rates(log_text: str) -> list[float]:
    """The "Tokens per Sec" of a training log, in order: non-pad target tokens (EOS
    included) per second of each logging interval, validation excluded."""
    return [float(rate) for rate in re.findall(r"Tokens per Sec:\s+([\d.]+)", log_text)]


def decode_joeynmt(
    python: Path, model_dir: Path, src: Path, out: Path, beam: int, batch: int, threads, ckpt
) -> dict[str, Any]:
    """`joeynmt translate` of `src` into `out/hyp.en` with `model_dir/<ckpt>.ckpt` ("latest"
    or "best"; the other if it is missing), `batch` sentences at a time, beam search at
    alpha 1 (greedy at `beam` 1), sources on stdin (its `-o` crashes); -> its decoding
    seconds (from its log), wall seconds, peak RSS."""
    cfg = yaml.safe_load((model_dir / "config.yaml").read_text())
    cfg["model_dir"] = str(model_dir)
    for side in ("src", "trg"):  # the copies in its model folder
        side_cfg = cfg["data"][side]
        side_cfg["voc_file"] = str(model_dir / f"{side}_vocab.txt")
        model_file = Path(side_cfg["tokenizer_cfg"]["model_file"]).name
        side_cfg["tokenizer_cfg"]["model_file"] = str(model_dir / model_file)
    path = model_dir / f"{ckpt}.ckpt"
    if not path.exists():
        path = model_dir / ("best.ckpt" if ckpt == "latest" else "latest.ckpt")
    cfg["testing"] |= {"load_model": str(path), "batch_size": batch, "batch_type": "sentence"}
    cfg["testing"] |= {"beam_size": beam, "beam_alpha": 1.0 if beam > 1 else -1}
    out.mkdir(parents=True, exist_ok=True)
    (out / "translate.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [python, "-m", "joeynmt", "translate", out / "translate.yaml"]
    env = child_env(threads, ours=False)
    measured = run_measured(cmd, out / "stderr.log", stdin=src, stdout=out / "hyp.en", env=env)
    took = re.findall(r"Generation took ([\d.]+)\[sec\]", (out / "stderr.log").read_text())
    return {"decode_s": float(took[-1]), "checkpoint": str(path)} | measured
