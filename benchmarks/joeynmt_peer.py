"""JoeyNMT 2.3.0, our measured peer: installed at run time into its own venv (never
vendored), configured like one of our models, trained, and run to translate.

Two configurations of our architecture: `recipe_config`, as its users would write one
(its RNN recipes' plateau schedule and initialisers, a batch size of its recipes), and
`joey_config`, whose batches hold as many real target tokens as ours at a constant rate:
its token batches count padding and are not bucketed by length, so
`match_training_batches` picks that batch size.
"""

import argparse
import math
import os
import re
import resource
import signal
import statistics
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
    cpu_snapshot,
    log,
    others_cpu_since,
    read_lines,
    run_measured,
    write_lines,
)
from seq2seq.batching import TokenBatchSampler, example_cost
from seq2seq.decoder import DEFAULT_SCORE

JOEY_VENV = REPO / ".cache" / "bench" / "joeynmt-venv"  # shared by the benchmarks
JOEY_SCORES = {"additive": "bahdanau", "general": "luong"}  # ours -> its `attention`
JOEY_PACKAGES = ["torch==2.13.0", "joeynmt==2.3.0", "sentencepiece==0.2.0", "importlib_metadata"]
PLATEAU_VERBOSE = '            "verbose": False,\n'  # in 2.3.0's builders.build_scheduler
VALIDATION_FREQ = 400  # updates between validations: about 6 in 30 minutes at 2,000 tokens
RECIPE_BATCHES = ["2000tok", "4096tok", "80sent"]  # batch sizes of its recipes


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


def real_tgt_tokens_per_update(lengths: np.ndarray, size: int, batch_type: str) -> float:
    """Mean real target tokens (EOS included) of JoeyNMT's batches of `size` tokens or
    sentences (`batch_type` "token" or "sentence") over an epoch of `lengths`."""
    if batch_type == "sentence":
        batches = -(-len(lengths) // size)
    else:
        batches = len(joey_batches(lengths, size))
    return float((lengths[:, 1] + 1).sum() / batches)


def ours_real_tgt_tokens_per_update(lengths: np.ndarray, max_tokens: int, seed: int) -> float:
    """Mean real target tokens (EOS included) of our token batches over an epoch of `lengths`."""
    sampler = TokenBatchSampler(example_cost(lengths[:, 0], lengths[:, 1]), max_tokens, seed=seed)
    return float((lengths[:, 1] + 1).sum() / len(sampler))


def ensure_joeynmt(venv: Path = JOEY_VENV) -> Path:
    """The JoeyNMT venv's python; the venv is (re)made only when missing or broken."""
    python = venv / "bin" / "python"
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


def patch_plateau(venv: Path = JOEY_VENV) -> Path:
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
    return builders


def write_joeynmt_data(data_dir: Path, sp: spm.SentencePieceProcessor, work: Path) -> Path:
    """Plain-text train and val in `work/data` (it reads no gzip); -> the shared vocabulary."""
    (work / "data").mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        for lang in ("de", "en"):
            write_lines(
                work / "data" / f"{split}.{lang}", read_lines(data_dir / f"{split}.{lang}.gz")
            )
    voc_file = work / "joeynmt" / "vocab.txt"
    voc_file.parent.mkdir(exist_ok=True)
    write_lines(voc_file, [sp.id_to_piece(i) for i in range(4, sp.get_piece_size())])  # no specials
    return voc_file


def prepare_joeynmt(
    data_dir: Path, sp: spm.SentencePieceProcessor, work: Path, data_hp: dict
) -> tuple[Path, dict]:
    """Plain-text train and val, the shared vocabulary, matched batches."""
    voc_file = write_joeynmt_data(data_dir, sp, work)
    log("matching JoeyNMT's token batches to ours on the training data")
    lengths = corpus_lengths(sp, data_dir / "train", data_hp["max_len"])
    batching = match_training_batches(lengths, data_hp["max_tokens"], data_hp["seed"])
    val = [sp.encode(read_lines(data_dir / f"val.{lang}.gz")) for lang in ("de", "en")]
    val_costs = example_cost(*(np.array([len(ids) for ids in side]) for side in val))
    val_batches = len(TokenBatchSampler(val_costs, data_hp["max_tokens"], shuffle=False))
    batching["val_batch_sentences"] = -(-len(val_costs) // val_batches)  # as many as ours
    return voc_file, batching


def joey_config(hp: dict, data_hp: dict, work: Path, spm_file: Path, voc: Path, batching: dict):
    """A JoeyNMT training config for the architecture and optimizer in our hyperparameters,
    with batches of as many real target tokens as ours (`batching`) at a constant rate."""
    training = {"optimizer": "adam", "learning_rate": hp["lr"], "clip_grad_norm": 1.0}
    # A constant rate: 2.3.0 rejects a config without `scheduling` (though documented as
    # constant), and its `plateau` needs `patch_plateau` with torch 2.13. Exponential decay
    # by 1.0 is constant.
    training |= {"scheduling": "exponential", "decrease_factor": 1.0}
    training |= {"label_smoothing": hp["label_smoothing"], "normalization": "tokens"}
    training |= {"batch_size": batching["joeynmt_batch_size"], "batch_type": "token"}
    # Validate as often as ours (once per epoch), keep the best by BLEU, never stop by itself.
    every = max(10, round(batching["ours_batches_per_epoch"] / 10) * 10)
    training |= {"validation_freq": every, "logging_freq": 10, "early_stopping_metric": "bleu"}
    training |= {"epochs": 1000, "keep_best_ckpts": 1, "overwrite": True, "print_valid_sents": [0]}
    testing = {"eval_metrics": ["bleu"], "beam_size": 1, "batch_type": "sentence"}
    testing |= {"batch_size": batching["val_batch_sentences"]}
    # Embeddings start as ours do, N(0, 1) (PyTorch's default): with JoeyNMT's default
    # (Xavier, ~0.016 std) it learned ~4x slower per update here (60 updates: accuracy
    # 0.11 against 0.20). Other weights keep JoeyNMT's defaults.
    initialisers = {"embed_initializer": "normal", "embed_init_weight": 1.0}
    return _config(
        hp, data_hp, work, spm_file, voc, training=training, testing=testing, init=initialisers
    )


def batch_setting(text: str) -> tuple[int, str]:
    """`2000` or `2000tok`: batches of 2,000 tokens; `80sent`: of 80 sentences."""
    match = re.fullmatch(r"(\d+)(tok|sent)?", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r}: expected N, Ntok or Nsent")
    return int(match[1]), "sentence" if match[2] == "sent" else "token"


def batch_label(batch: tuple[int, str]) -> str:
    return f"{batch[0]}{'sent' if batch[1] == 'sentence' else 'tok'}"


def recipe_config(
    hp: dict, data_hp: dict, work: Path, spm_file: Path, voc: Path, batch: tuple[int, str]
) -> dict:
    """A JoeyNMT training config for our architecture as its users would write one:
    `batch` (size, "token" or "sentence"), its RNN recipes' Adam 1e-3 with the plateau
    schedule (patience 5, factor 0.5; needs `patch_plateau`), and its defaults elsewhere."""
    training = {"optimizer": "adam", "learning_rate": hp["lr"], "clip_grad_norm": 1.0}
    training |= {"scheduling": "plateau", "patience": 5, "decrease_factor": 0.5}
    # The same loss as ours (its defaults: 0 and "batch"; its Transformer recipes set these).
    training |= {"label_smoothing": hp["label_smoothing"], "normalization": "tokens"}
    training |= {"batch_size": batch[0], "batch_type": batch[1]}
    # The best checkpoint by BLEU; the wall clock stops it (its default: 3 epochs).
    training |= {"validation_freq": VALIDATION_FREQ, "early_stopping_metric": "bleu"}
    training |= {"epochs": 1000, "overwrite": True}
    # Its RNN recipes (rnn_small.yaml, rnn_reverse.yaml) start embeddings at N(0, 0.1); their
    # other initialisers (Xavier-uniform weights, zero biases) are its defaults.
    initialisers = {"embed_initializer": "normal", "embed_init_weight": 0.1}
    testing = {"eval_metrics": ["bleu"]}  # greedy validation, 64 sentences a batch: defaults
    return _config(
        hp, data_hp, work, spm_file, voc, training=training, testing=testing, init=initialisers
    )


def _config(
    hp: dict,
    data_hp: dict,
    work: Path,
    spm_file: Path,
    voc: Path,
    *,
    training: dict,
    testing: dict,
    init: dict,
) -> dict:
    """The whole config: our architecture with initialisers `init`, trained on `work/data`
    tokenized by our SentencePiece model `spm_file` with vocabulary `voc`."""
    side = {"level": "bpe", "tokenizer_type": "sentencepiece", "voc_file": str(voc)}
    side |= {"tokenizer_cfg": {"model_file": str(spm_file)}, "max_length": data_hp["max_len"]}
    data = {"train": str(work / "data" / "train"), "dev": str(work / "data" / "val")}
    data |= {"dataset_type": "plain", "src": {"lang": "de", **side}, "trg": {"lang": "en", **side}}
    rnn = {"type": "recurrent", "rnn_type": hp["cell"], "hidden_size": hp["hidden_size"]}
    rnn |= {"embeddings": {"embedding_dim": hp["embed_dim"]}, "dropout": hp["dropout"]}
    encoder = {**rnn, "num_layers": hp["encoder_layers"], "bidirectional": hp["bidirectional"]}
    decoder = {**rnn, "num_layers": hp["decoder_layers"], "hidden_dropout": hp["dropout"]}
    decoder |= {"attention": joey_attention(hp), "input_feeding": True, "init_hidden": "bridge"}
    return {
        "name": "bench",
        "model_dir": str(work / "joeynmt" / "model"),
        "use_cuda": False,
        "data": data,
        "training": training,
        "testing": testing,
        "model": {**init, "encoder": encoder, "decoder": decoder},
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


def train_joeynmt(
    python: Path, cfg: dict, work: Path, minutes: float | None, env: dict | None = None
) -> dict:
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
            cmd, stdout=f, stderr=subprocess.STDOUT, cwd=work, env=env, preexec_fn=default_sigint
        )
    usage = None  # its resource usage, once it has exited
    while "EPOCH 1" not in out.read_text(errors="replace"):  # data and vocabulary loaded
        if (usage := _reap(proc)) is not None:
            raise RuntimeError(f"JoeyNMT training failed:\n{out.read_text()[-3000:]}")
        time.sleep(0.2)
    start = time.monotonic()
    usage = _wait(proc, math.inf if minutes is None else minutes * 60)
    if usage is None:
        proc.send_signal(signal.SIGINT)
        usage = _wait(proc, 600)
    if usage is None:
        proc.kill()
        raise RuntimeError(f"JoeyNMT ignored SIGINT for 10 minutes; killed (log: {out})")
    spent = (time.monotonic() - start) / 60
    latest = Path(cfg["model_dir"]) / "latest.ckpt"  # a link to <steps>.ckpt
    stopped = "Interrupt at epoch" if minutes else "maximum num. of updates"
    if proc.returncode != 0 or not latest.exists() or stopped not in out.read_text():
        raise RuntimeError(f"JoeyNMT did not stop as expected:\n{out.read_text()[-3000:]}")
    steps, others = int(latest.resolve().stem), others_cpu_since(snapshot)
    result = {"checkpoint": str(latest.resolve()), "steps": steps, "minutes": round(spent, 2)}
    return result | {"others_cpu_s": others, "peak_rss_mib": usage.ru_maxrss / 1024}


def _wait(proc: subprocess.Popen, seconds: float) -> resource.struct_rusage | None:
    """Wait up to `seconds` for the child to exit; -> its resource usage, or None."""
    deadline = time.monotonic() + seconds
    while (usage := _reap(proc)) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    return usage


def _reap(proc: subprocess.Popen) -> resource.struct_rusage | None:
    """The child's resource usage if it has exited (then reaped, its return code set), else
    None. `os.wait4` keeps the usage that `Popen.poll` would discard."""
    pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
    if pid == 0:
        return None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage


def validation_bleu(model_dir: Path) -> list[float]:
    """The validation BLEU scores (greedy) in its model folder's `validations.txt`, in order."""
    path = model_dir / "validations.txt"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    return [float(score) for score in re.findall(r"\tbleu: ([\d.]+)", text)]


def logged_rates(log_text: str) -> list[float]:
    """The "Tokens per Sec" of a training log, in order: non-pad target tokens (EOS
    included) per second of each logging interval, validation excluded."""
    return [float(rate) for rate in re.findall(r"Tokens per Sec:\s+([\d.]+)", log_text)]


def logged_tokens_per_sec(log_text: str) -> float | None:
    """The median of `logged_rates`; None if it logged none."""
    rates = logged_rates(log_text)
    return statistics.median(rates) if rates else None


def decode_joeynmt(
    python: Path,
    model_dir: Path,
    src: Path,
    out: Path,
    beam: int,
    batch: int,
    threads: int,
    checkpoint: str = "latest",
) -> dict:
    """`joeynmt translate` with `model_dir/<checkpoint>.ckpt` ("latest" or "best"; the other
    if it is missing), sources on stdin (its `-o` crashes), hypotheses from stdout."""
    cfg = yaml.safe_load((model_dir / "config.yaml").read_text())
    cfg["model_dir"] = str(model_dir)
    for side in ("src", "trg"):  # the copies in its model folder
        side_cfg = cfg["data"][side]
        side_cfg["voc_file"] = str(model_dir / f"{side}_vocab.txt")
        model_file = Path(side_cfg["tokenizer_cfg"]["model_file"]).name
        side_cfg["tokenizer_cfg"]["model_file"] = str(model_dir / model_file)
    ckpt = model_dir / f"{checkpoint}.ckpt"
    if not ckpt.exists():
        ckpt = model_dir / ("best.ckpt" if checkpoint == "latest" else "latest.ckpt")
    cfg["testing"] |= {"load_model": str(ckpt)}
    cfg["testing"] |= {"beam_size": beam, "beam_alpha": 1.0 if beam > 1 else -1}
    cfg["testing"] |= {"batch_size": batch, "batch_type": "sentence"}
    (out / "translate.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [python, "-m", "joeynmt", "translate", out / "translate.yaml"]
    env = child_env(threads, ours=False)
    measured = run_measured(cmd, out / "stderr.log", stdin=src, stdout=out / "hyp.en", env=env)
    took = re.findall(r"Generation took ([\d.]+)\[sec\]", (out / "stderr.log").read_text())
    return {"decode_s": float(took[-1])} | measured
