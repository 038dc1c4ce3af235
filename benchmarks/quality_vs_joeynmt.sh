#!/usr/bin/env bash
# Quality at equal training time over seeds, ours against JoeyNMT 2.3.0 on Multi30k de->en:
#   bash benchmarks/quality_vs_joeynmt.sh [MINUTES] [quality.py options]   (default 30 minutes a run)
# Ours and JoeyNMT (its batch size chosen among three of its recipes' by validation BLEU) train
# once per seed (--seeds, default 1 2 3); each run decodes test_2016_flickr with beam 5. Prints
# the runs, mean ± sd per side, the batch sizes tried, then one JSON line. At 30 minutes:
# (3 tried + 2 more seeds) x 30 for JoeyNMT + 3 x 30 for ours, about 4 hours.
# Details: benchmarks/quality.py.
set -euo pipefail
cd "$(dirname "$0")/.."
python=.venv/bin/python
[ -x "$python" ] || python=python3
exec "$python" benchmarks/quality.py --minutes "${1:-30}" "${@:2}"
