"""Thin wrapper: see `seq2seq/train.py`."""

from seq2seq.train import main

if __name__ == "__main__":
    main()
