"""Thin wrapper: see `seq2seq/translate.py`."""

from seq2seq.translate import main

if __name__ == "__main__":
    main()
