"""Thin wrapper: see `seq2seq/cli/shortlist.py`."""

from seq2seq.cli.shortlist import main

if __name__ == "__main__":
    main()
