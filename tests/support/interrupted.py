"""``pemn compress ARGS`` in a process of its own, interrupted right after optimizer step STEP.

    PYTHONPATH=.:tests python -m support.interrupted STEP [--sigint] -- ARGS...

The command line has no interruption hook (a user presses Ctrl-C at an unknown moment); this driver
runs the real command with ``InterruptAfterSteps(STEP)`` (``support/faults.py``) added to the
``compress()`` call the command makes, so the exit code, the message and the checkpoint are exactly
those of a user's interrupted run, at a step chosen in advance. ``--sigint`` sends this process a real
SIGINT (a first Ctrl-C: the batch finishes, then the run stops); without it ``KeyboardInterrupt`` is
raised from the callback (as a second Ctrl-C would). ``support/workspace.py`` runs it, then ``--resume``.
"""

from __future__ import annotations

import argparse
import functools
import sys


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)  # what follows "--" belongs to pemn compress
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], usage="%(prog)s STEP [--sigint] -- ARGS...")
    parser.add_argument("step", type=int, help="interrupt right after this optimizer step (1 = the first)")
    parser.add_argument("--sigint", action="store_true", help="a real SIGINT instead of KeyboardInterrupt")
    options = parser.parse_args(argv[:split])

    import pemn_compress.pipeline as pipeline
    from pemn_compress.commands import compress as command
    from support.faults import InterruptAfterSteps

    # the command looks compress() up when it runs: hand it one with the interruption added
    hook = InterruptAfterSteps(options.step, signal=options.sigint)
    pipeline.compress = functools.partial(pipeline.compress, callbacks=[hook])
    command.main(args=argv[split + 1 :], prog_name="pemn compress")  # exits with the command's code


if __name__ == "__main__":
    main()
