"""Thin wrapper: see `seq2seq/evaluate.py`."""

from seq2seq.evaluate import main

if __name__ == "__main__":
    main()
