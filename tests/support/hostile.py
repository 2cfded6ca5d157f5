"""Check hostile `.pemn` files: what the package readers, the reference reader, ``pemn.load`` and the CLI do
with each, with code execution watched.

The files come from ``python benchmarks/hostile_files.py --write DIR``: ``DIR/<name>.pemn`` and
``DIR/hostile.json``, the manifest (per file: group, description, the outcome its author declares for the
readers and for ``pemn.load``, a substring of the refusal, the skeleton ``pemn.load`` gets, ``heavy``,
``max_peak``; and the marker file and planted module names the code group's files reference).

``check_hostile(entry, blob, workdir, names)`` runs ``read_pemn`` + ``decode_weights`` + fingerprint, the
reference reader (formats/reference_reader.py), ``pemn.load``, ``pemn inspect`` and ``pemn verify`` on one
file, with ``os.system``/``subprocess``/the loader's ``importlib.import_module`` watched and a module planted
in ``workdir`` that leaves a marker if imported; ``problems(result)`` says what is wrong (empty: harmless).
Used by tests/test_hostile_files.py and, as a command, by benchmarks/reliability.py:

    PYTHONPATH=.:tests python -m support.hostile DIR --json results.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

from conftest import load_script

ESC = "\x1b"
MANIFEST = "hostile.json"


def read_corpus(folder: Path) -> tuple[dict, list[tuple[dict, bytes]]]:
    """(names: the marker file and planted module, [(entry, file bytes)]) of a folder written by
    ``benchmarks/hostile_files.py --write``."""
    manifest = json.loads((Path(folder) / MANIFEST).read_text())
    files = [(entry, (Path(folder) / f"{entry['name']}.pemn").read_bytes()) for entry in manifest["files"]]
    return {"marker": manifest["marker"], "planted_module": manifest["planted_module"]}, files


@contextlib.contextmanager
def watch_execution(workdir: Path, marker: str, planted_module: str):
    """Record any os.system / subprocess / loader import_module call; plant ``planted_module`` in
    ``workdir`` (importable while watched), whose import creates ``workdir / marker``."""
    import pemn_compress.usercode as usercode  # every import of user code goes through usercode

    calls: list = []
    (workdir / f"{planted_module}.py").write_text(
        f"open({str(workdir / marker)!r}, 'w').close()\n\ndef build():\n    return None\n"
    )
    saved = {
        (os, "system"): os.system,
        (subprocess, "Popen"): subprocess.Popen,
        (subprocess, "run"): subprocess.run,
        (usercode.importlib, "import_module"): usercode.importlib.import_module,
    }
    real_import = usercode.importlib.import_module

    def spy(name):
        def record(*args, **kwargs):
            if name == "import_module":  # only the loader's own imports count (torch imports lazily too)
                if sys._getframe(1).f_globals.get("__name__") == "pemn_compress.usercode":
                    calls.append((name, args[:1]))
                return real_import(*args, **kwargs)
            calls.append((name, args[:1]))
            raise RuntimeError(f"{name} called by a hostile file")

        return record

    sys.path.insert(0, str(workdir))
    try:
        for module, attr in saved:
            setattr(module, attr, spy(attr))
        yield calls
    finally:
        for (module, attr), value in saved.items():
            setattr(module, attr, value)
        sys.path.remove(str(workdir))
        sys.modules.pop(planted_module, None)


def _outcome(fn) -> tuple[str, str]:
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - classified
        return type(exc).__name__, str(exc)
    return "accepted", ""


def _read(blob: bytes, max_peak: int | None) -> dict:
    """The package readers on ``blob``: outcome, message, seconds, traced peak (when ``max_peak`` is set)."""
    from pemn_compress.fileformat.reader import decode_weights, read_pemn, verify_fingerprint

    def package():
        pf = read_pemn(blob)
        verify_fingerprint(pf, decode_weights(pf))

    if max_peak is not None:  # what reading allocates, not what the file declares
        tracemalloc.start()
    started = time.perf_counter()
    try:
        read, message = _outcome(package)
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1] if max_peak is not None else None
    finally:
        if max_peak is not None:
            tracemalloc.stop()
    return {"read": read, "message": message, "read_seconds": seconds, "read_peak": peak}


def _cli(path: Path) -> dict:
    """``pemn inspect`` and ``pemn verify`` on ``path``: exit code, raw ESC, traceback, the text shown."""
    from click.testing import CliRunner

    from pemn_compress.cli import cli

    runs = {}
    for command in ("inspect", "verify"):
        result = CliRunner().invoke(cli, [command, str(path)])
        text = result.output  # stdout and stderr, as a terminal would show them
        runs[command] = {"exit": result.exit_code, "raw_esc": ESC in text, "traceback": "Traceback" in text,
                         "text": text}
    return runs


def _pemn_errors() -> set[str]:
    import pemn_compress as pemn
    from pemn_compress.errors import PemnError

    return {name for name in dir(pemn) if isinstance(getattr(pemn, name), type)
            and issubclass(getattr(pemn, name), PemnError)}


def check_hostile(entry: dict, blob: bytes, workdir: Path, names: dict) -> dict:
    """Everything that happens when the readers, the loader and the CLI meet one hostile file (module docstring)."""
    import torch

    import pemn_compress as pemn

    ref = load_script("formats/reference_reader.py", "pemn_reference_reader")
    torch.set_num_threads(1)
    workdir = Path(workdir)
    path = workdir / f"{entry['name']}.pemn"
    path.write_bytes(blob)
    (workdir / names["marker"]).unlink(missing_ok=True)
    with watch_execution(workdir, names["marker"], names["planted_module"]) as calls:
        read = _read(blob, entry["max_peak"])
        reference, ref_msg = _outcome(lambda: ref.read(blob))
        skeleton = entry["skeleton"]
        model = load_script("formats/make_vectors.py", "pemn_make_vectors").SKELETONS[skeleton]() if skeleton else None
        load, load_msg = _outcome(lambda: pemn.load(blob, device="cpu", model=model))
        cli_runs = {} if entry["heavy"] else _cli(path)  # a large file: seconds per read, the CLI is not run
    known = _pemn_errors() | {"accepted"}
    return {
        **{key: entry[key] for key in ("name", "group", "description", "max_peak", "message")},
        "bytes": len(blob),
        **{key: read[key] for key in ("read", "read_seconds", "read_peak")},
        "reference": reference,
        "load": load,
        "messages": {"read": read["message"], "reference": ref_msg, "load": load_msg},
        "expected_read": entry["read"],
        "expected_load": entry["load"],
        "read_is_pemn_error": read["read"] in known,
        "load_is_pemn_error": load in known,
        "reference_agrees": (read["read"] == "accepted") == (reference == "accepted"),
        "calls": [c[0] + (f"({c[1][0]!r})" if c[1] else "") for c in calls],
        "executed": (workdir / names["marker"]).exists(),
        "cli": {k: {kk: vv for kk, vv in v.items() if kk != "text"} for k, v in cli_runs.items()},
        "cli_text": {k: v["text"] for k, v in cli_runs.items()},
    }


def problems(result: dict) -> list[str]:
    """What is wrong with one ``check_hostile`` result (empty: the file was handled as it must be)."""
    out = []
    for what, key in (("readers", "read"), ("load", "load")):
        if result[key] != result[f"expected_{key}"]:
            out.append(f"{what}: expected {result[f'expected_{key}']}, got {result[key]}: "
                       f"{result['messages'][key][:160]}")
    refusal = result["messages"]["read"] if result["read"] != "accepted" else result["messages"]["load"]
    if result["message"] and result["message"] not in refusal:
        out.append(f"message {result['message']!r} not in {refusal[:160]!r}")
    if not (result["read_is_pemn_error"] and result["load_is_pemn_error"]):
        out.append("an error that is not a PemnError")
    if not result["reference_agrees"]:
        out.append(f"reference reader disagrees: {result['reference']}")
    if result.get("max_peak") is not None and result["read_peak"] > result["max_peak"]:
        out.append(f"reading allocated {result['read_peak']:,} bytes (traced), over {result['max_peak']:,}")
    if result["executed"] or any(not c.startswith("import_module") for c in result["calls"]):
        out.append(f"code ran: {result['calls']}, marker {result['executed']}")
    if any(c.startswith("import_module") for c in result["calls"]):
        out.append(f"an import was attempted: {result['calls']}")
    for command, run in result["cli"].items():
        if run["raw_esc"] or run["traceback"] or run["exit"] not in (0, 1, 2):
            out.append(f"pemn {command}: exit {run['exit']}, raw ESC {run['raw_esc']}, traceback {run['traceback']}")
    return out


def main(argv: list[str] | None = None) -> int:
    """Check every file of a corpus folder; write the results (with their problems) as JSON."""
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="written by benchmarks/hostile_files.py --write")
    parser.add_argument("--json", type=Path, required=True, help="write the results here")
    args = parser.parse_args(argv)
    names, files = read_corpus(args.folder)
    results = []
    with tempfile.TemporaryDirectory(prefix="pemn-hostile-") as tmp:
        for entry, blob in files:
            result = check_hostile(entry, blob, Path(tmp), names)
            result.pop("cli_text")
            results.append({**result, "problems": problems(result)})
    args.json.write_text(json.dumps(results, indent=1, default=str))
    return 0 if not any(r["problems"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
