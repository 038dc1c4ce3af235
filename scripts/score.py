"""Thin wrapper: see `seq2seq/cli/score.py`."""

from seq2seq.cli.score import main

if __name__ == "__main__":
    main()
