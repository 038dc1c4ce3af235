"""Thin wrapper: see `seq2seq/cli/train.py`."""

from seq2seq.cli.train import main

if __name__ == "__main__":
    main()
