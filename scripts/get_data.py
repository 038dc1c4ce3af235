"""Thin wrapper: see `seq2seq/cli/get_data.py`."""

from seq2seq.cli.get_data import main

if __name__ == "__main__":
    main()
