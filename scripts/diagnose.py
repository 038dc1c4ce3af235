"""Thin wrapper: see `seq2seq/cli/diagnose.py`."""

from seq2seq.cli.diagnose import main

if __name__ == "__main__":
    main()
