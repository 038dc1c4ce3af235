"""The command-line entry points: `train`, `translate`, `evaluate`, `average`, `serve`,
`diagnose`, `plot_metrics`, `get_data` (each a `main()`; `scripts/` and the `seq2seq-*` console
scripts call them)."""
