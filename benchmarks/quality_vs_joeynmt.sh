#!/usr/bin/env bash
# Quality at equal training time, ours against JoeyNMT 2.3.0 on Multi30k de->en:
#   bash benchmarks/quality_vs_joeynmt.sh [MINUTES]     (default 30 minutes per side)
# Trains both, decodes test_2016_flickr with beam 5, prints a table and one JSON line.
# Details: benchmarks/quality.py.
set -euo pipefail
cd "$(dirname "$0")/.."
python=.venv/bin/python
[ -x "$python" ] || python=python3
exec "$python" benchmarks/quality.py --minutes "${1:-30}" "${@:2}"
