"""Thin wrapper: see `seq2seq/cli/plot_metrics.py`."""

from seq2seq.cli.plot_metrics import main

if __name__ == "__main__":
    main()
