"""The command-line entry points: `train`, `translate`, `evaluate`, `average`, `serve`,
`diagnose`, `plot_metrics` (each a `main()`; `scripts/` and the `seq2seq-*` console
scripts call them)."""
