#!/usr/bin/env bash
# Quality at equal training time over seeds, ours against JoeyNMT 2.3.0 on Multi30k de->en:
#   bash benchmarks/quality_vs_joeynmt.sh [MINUTES] [quality.py options]   (default 30 minutes a run)
# Ours and JoeyNMT (its batch size chosen among three of its recipes' by validation BLEU,
# validating at our cadence, its real-data recipe's schedule) train once per seed (--seeds,
# default 1 2 3), JoeyNMT with its toy recipes' schedule once beside; each run decodes
# test_2016_flickr with beam 5. Prints the runs, mean ± sd per side, the batch sizes tried,
# then one JSON line. At 30 minutes: 3 x 30 for ours, 3 x 4 to time JoeyNMT's batch sizes,
# (3 tried + 2 more seeds + 1 toy) x 30 for JoeyNMT: about 5 hours.
# Details: benchmarks/quality.py.
set -euo pipefail
cd "$(dirname "$0")/.."
python=.venv/bin/python
[ -x "$python" ] || python=python3
exec "$python" benchmarks/quality.py --minutes "${1:-30}" "${@:2}"
