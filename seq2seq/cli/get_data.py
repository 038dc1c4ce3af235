"""`scripts/get_data.py`: fetch a public corpus into DEST/NAME/ and check each file's SHA-256.

`--mirror` takes the same file names from a local folder or another base URL
(offline: `--mirror ../shared/data/multi30k`). Files already present with the right
checksum are left untouched, so running it again is cheap.
"""

import argparse
from pathlib import Path

from seq2seq.download import CORPORA, fetch_corpus
from seq2seq.errors import ArgumentParser, UserError, exit_on_user_error


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n", 1)[0].split(":", 1)[1])
    parser.add_argument("corpus", choices=sorted(CORPORA), help="the corpus to fetch")
    parser.add_argument(
        "--dest", default="data", metavar="DIR", help="the corpus goes to DIR/CORPUS/ (data)"
    )
    parser.add_argument(
        "--mirror",
        metavar="DIR_OR_URL",
        help="fetch the same file names from this folder or base URL instead of upstream",
    )
    return parser


def main(args: list[str] | None = None) -> None:
    options = build_parser().parse_args(args)
    folder = Path(options.dest) / options.corpus
    try:
        for path, fetched in fetch_corpus(options.corpus, folder, options.mirror):
            print(f"{path}: {'fetched' if fetched else 'up to date'}")
    except UserError as err:
        exit_on_user_error(err)
    corpus = CORPORA[options.corpus]
    prefixes = ", ".join([str(folder / corpus.prefixes[0]), *corpus.prefixes[1:]])
    print(f"{options.corpus}: {len(corpus.files)} files in {folder} (configs read {prefixes})")
