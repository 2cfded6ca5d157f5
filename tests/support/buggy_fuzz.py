"""Run benchmarks/fuzz_loader.py as ``python benchmarks/fuzz_loader.py ARGS`` runs it, several times in one
interpreter, the later runs against a package reader with a bug in it: does the fuzzer catch and report what
it is for?

    PYTHONPATH=. python tests/support/buggy_fuzz.py SEEDS [--clean-runs N] -- ARGS... [-- ARGS...]

Each ``-- ARGS`` is one run of the script, in order. The first ``--clean-runs`` runs (default 0) use the
package as it is (one of them may write ``--write-seeds SEEDS``); then the bug goes into
``pemn_compress.fileformat.reader.decode_masks``. It leaves alone every file as large as one in ``SEEDS``
(the fuzzer's seed files: the golden vectors do not trigger it). Any other file gets, by its size modulo 3:
0, a ``KeyError`` (a crash: an unexpected outcome); 1, a ``ChecksumError`` (a refusal of what the reference
reader may accept: a disagreement); 2, its real masks, the first two such files after a 0.3 s pause (slow
cases, for ``--slow`` below that). Prints the runs' exit codes on stderr.
"""

from __future__ import annotations

import argparse
import runpy
import sys
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "fuzz_loader.py"
PAUSES = 2
PAUSE_SECONDS = 0.3


def buggy(real, seed_sizes: set[int]):
    from pemn_compress.errors import ChecksumError

    paused = []

    def decode_masks(pf, *args, **kwargs):
        size = pf.file_size
        if size not in seed_sizes:
            if size % 3 == 0:
                raise KeyError("bug")
            if size % 3 == 1:
                raise ChecksumError("bug")
            if len(paused) < PAUSES:
                paused.append(size)
                time.sleep(PAUSE_SECONDS)
        return real(pf, *args, **kwargs)

    return decode_masks


def main(argv: list[str]) -> int:
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("seeds", type=Path, help="the fuzzer's seed files (--write-seeds)")
    parser.add_argument("--clean-runs", type=int, default=0, help="runs before the bug goes in")
    options = parser.parse_args(argv[:split])
    runs: list[list[str]] = []
    for token in argv[split:]:
        if token == "--":
            runs.append([])
        else:
            runs[-1].append(token)
    codes = []
    for index, run in enumerate(runs):
        if index == options.clean_runs:
            import pemn_compress.fileformat.reader as reader

            sizes = {p.stat().st_size for p in options.seeds.rglob("*.pemn")}
            reader.decode_masks = buggy(reader.decode_masks, sizes)
        sys.argv = [str(SCRIPT), *run]
        try:
            runpy.run_path(str(SCRIPT), run_name="__main__")
        except SystemExit as done:
            codes.append(done.code)
    print("exit codes:", codes, file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
