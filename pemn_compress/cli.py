"""The ``pemn`` command line: thin glue over the library.

    pemn inspect model.pemn [--json]     what the file holds and what every byte is spent on
    pemn verify model.pemn               container, checksums, masks, regenerated weights, fingerprint

Rules every command follows:

* torch is imported inside the commands that need it, never at module level, so ``pemn --help``
  is instant and ``inspect`` / ``verify`` run without torch (numpy and the torch-free reader only);
* user errors are raised, not printed: a ``PemnError`` (``CommandError`` for a command-line argument
  the command cannot use) or an ``OSError`` on user input reaches ``fail``, the one error path, which
  prints one line ``error: <message>`` on stderr and exits with the status ``errors.EXIT_CODES``
  gives the error's class (2 for bad input, 1 when verification fails); ``--traceback`` prints the
  full traceback too. ``PemnGroup.invoke`` calls it for every command; a command with ``--json``
  calls it itself, to put the error in its JSON document as well;
* results go to a rich console on stdout; errors to stderr;
* every string that comes from a file or a user is untrusted: it goes through ``sanitize`` (one line,
  control characters and ANSI escapes made visible) before it reaches a terminal, and through
  ``safe`` (the same, rich markup escaped) before it reaches rich output.

Adding a command (``compress``, ``eval``, ...): either decorate a function with ``@cli.command()``
in this module, or write it in its own module (torch imported inside the function, nothing heavy at
module level) and add one line to ``LAZY_COMMANDS``: it is imported only when it is run or listed.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import shlex
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

import click
from rich import box
from rich.console import Console, JustifyMethod
from rich.markup import escape
from rich.measure import Measurement
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ._terminal import json_safe, one_line, sanitize
from ._version import __version__
from .errors import ChecksumError, CommandError, PemnError, VerificationError, exit_code

__all__ = ["CommandError", "LAZY_COMMANDS", "PemnGroup", "cli", "error_message", "fail", "main", "rank_prefix", "safe",
           "sanitize"]

# command name -> "module:attribute" of a click command, imported on first use
LAZY_COMMANDS: dict[str, str] = {
    "compress": "pemn_compress.commands:compress",
    "eval": "pemn_compress.commands:eval_command",
}


def safe(value) -> str:
    """``sanitize`` plus rich markup escaping: for strings placed into rich output."""
    return escape(sanitize(value))


# ---------------------------------------------------------------------------------------------
# the one error path


def error_message(error: BaseException) -> str:
    """The text of an error for the command line, not yet sanitized: its ``cli_message`` (flags, not
    arguments) when it has one, ``PATH: reason`` for an OS error on a file, else ``str(error)``."""
    cli_text = getattr(error, "cli_message", None)
    if isinstance(cli_text, str) and cli_text:
        return cli_text
    if isinstance(error, OSError) and error.strerror and error.filename is not None:
        return f"{error.filename}: {error.strerror}"
    return str(error) or type(error).__name__


def _checkpoint(error: BaseException) -> str | None:
    """The checkpoint an interrupted ``compress`` run saved (``interrupt.TrainingInterrupted``), if any."""
    path = getattr(error, "checkpoint", None) if isinstance(error, KeyboardInterrupt) else None
    return str(path) if path else None


def _report(error: BaseException, checkpoint: str | None) -> tuple[str, str, str]:
    """(JSON type, JSON message, stderr text after the ``error:`` label) of ``error``, each one safe line."""
    resume = f"checkpoint saved to {sanitize(checkpoint)}; rerun with --resume" if checkpoint else ""
    if isinstance(error, KeyboardInterrupt):
        text = f"interrupted; {resume or 'no checkpoint was saved'}"
        return "Interrupted", text, text
    message = one_line(error_message(error), limit=None)
    return type(error).__name__, message, message + (f"; {resume}" if resume else "")


def rank_prefix() -> str:
    """``[rank N] `` in a torchrun process other than rank 0, so interleaved lines say whose they are."""
    rank = os.environ.get("RANK", "0")
    return "" if rank in ("", "0") or os.environ.get("WORLD_SIZE", "1") in ("", "1") else f"[rank {rank}] "


def _traceback_requested() -> bool:
    """``pemn --traceback ...``: the group's flag, in the context meta every command shares."""
    ctx = click.get_current_context(silent=True)
    return ctx is not None and bool(ctx.meta.get("pemn.traceback"))


def fail(error: BaseException, *, as_json: bool = False, checkpoint: str | None = None) -> NoReturn:
    """Report ``error`` and exit with its status (``errors.exit_code``): the CLI's one error path.

    Prints one line on stderr, ``error: <message>`` (for Ctrl-C: ``interrupted; ...``), naming the
    checkpoint to resume from when one was saved, with ``[rank N] `` in front on a torchrun rank other
    than 0. With ``as_json`` (rank 0 only) stdout gets ``{"error": {"type", "message", "checkpoint"}}``
    too. With ``--traceback`` the full traceback of an error comes first. ``checkpoint``: where a
    ``compress`` run that failed after training started saved its state (``interrupt.TrainingFailed``).
    """
    if _traceback_requested() and not isinstance(error, KeyboardInterrupt):
        traceback.print_exception(type(error), error, error.__traceback__)
    checkpoint = checkpoint or _checkpoint(error)
    kind, message, text = _report(error, checkpoint)
    rank = rank_prefix()
    if as_json and not rank:
        click.echo(json.dumps({"error": {"type": kind, "message": message, "checkpoint": checkpoint}}))
    label = "" if isinstance(error, KeyboardInterrupt) else click.style("error:", fg="red", bold=True) + " "
    click.echo(rank + label + text, err=True)  # click drops the colour when stderr is not a terminal
    raise click.exceptions.Exit(exit_code(error))


# ---------------------------------------------------------------------------------------------
# the group


def _stdout() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 160  # piped or captured: do not squeeze the tables to 80 columns
    return console


class PemnGroup(click.Group):
    """A click group with lazily imported commands; every error of a command goes to ``fail``."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(LAZY_COMMANDS))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in LAZY_COMMANDS and name not in self.commands:
            module_name, _, attr = LAZY_COMMANDS[name].partition(":")
            return getattr(importlib.import_module(module_name), attr)
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except BrokenPipeError as exc:  # `pemn inspect f | head`: the reader left, nothing to report
            _silence_stdout()
            raise click.exceptions.Exit(exit_code(exc)) from None
        except (PemnError, OSError) as exc:
            fail(exc)


def _silence_stdout() -> None:
    """Point stdout at the null device, so the interpreter's final flush does not complain of the closed pipe."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


@click.group("pemn", cls=PemnGroup, invoke_without_command=True,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pemn")
@click.option("--traceback", "show_traceback", is_flag=True, help="Print the full traceback of an error too.")
@click.pass_context
def cli(ctx: click.Context, show_traceback: bool) -> None:
    """PEMN model compression: binary masks over fixed pseudo-random weights, in tiny .pemn files."""
    ctx.meta["pemn.traceback"] = show_traceback
    if ctx.invoked_subcommand is None:  # bare `pemn`: the help, successfully
        click.echo(ctx.get_help())


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``pemn``); exits with the command's code."""
    cli.main(args=argv, prog_name="pemn")


# ---------------------------------------------------------------------------------------------
# formatting helpers


def _human(n: float) -> str:
    """``12,345 B (12.1 KiB)``."""
    n = int(round(n))
    if n < 1024:
        return f"{n:,} B"
    value, unit = n / 1024, "KiB"
    for bigger in ("MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{n:,} B ({value:,.1f} {unit})"


def _x(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:,.2f}x"


def _share(fraction: float | None) -> str:
    return "n/a" if fraction is None else f"{100 * fraction:.1f}%"


def _pct(fraction: float | None) -> str:
    return "n/a" if fraction is None else f"{100 * fraction:+.1f}%"


def _shape(shape) -> str:
    return "x".join(str(d) for d in shape)


def _architecture(arch: dict, file: str) -> str:
    kind = arch.get("kind")
    if kind == "registry":
        kwargs = arch.get("kwargs") or {}
        if isinstance(kwargs, dict):
            args = ", ".join(f"{sanitize(k)}={sanitize(v)}" for k, v in kwargs.items())
        else:
            args = sanitize(kwargs)
        return escape(f"zoo model {sanitize(arch.get('name'))}({args})")
    shown = shlex.quote(file)
    if kind == "import":
        return (f"import {safe(arch.get('target'))} [dim](runs code; load with: pemn eval {safe(shown)} --trust-code, "
                f"or pemn.load({safe(repr(file))}, trust_code=True))[/]")
    return (f"none [dim](load with: pemn eval {safe(shown)} --arch module:Class, "
            f"or pemn.load({safe(repr(file))}, model=<your nn.Module>))[/]")


def _strategy(config: dict) -> str:
    strategy = config.get("strategy")
    parts = [safe(strategy)]
    if strategy == "rp":
        parts.append(f"ratio {safe(config.get('ratio'))}, mode {safe(config.get('rp_mode'))}")
    if config.get("learn_values"):
        parts.append("learned values")
    return ", ".join(parts)


def _header_note(t: dict) -> str:
    """What the header row says: its share of the bound and, version 2, the JSON it was deflated from."""
    note = f"safetensors + PEMN: {_share(t['header_fraction'])} of the bound"
    deflated = t.get("header_deflated_bytes")
    if deflated is not None:
        note += f"; PEMN header {t['header_text_bytes']:,} B of JSON deflated to {deflated:,} B"
    return note


def _provenance(prov) -> list[tuple[str, str]]:
    if not isinstance(prov, dict) or not prov:
        return [("provenance", "[dim]none recorded[/]")]
    rows = []
    for key, label in (("dataset", "dataset"), ("accuracy", "recorded accuracy"), ("recipe", "recipe")):
        if key in prov:
            value = prov[key]
            if key == "accuracy" and isinstance(value, float) and math.isfinite(value):
                text = f"{value:.4f}" + (f" ({100 * value:.2f}%)" if 0 <= value <= 1 else "")
            else:
                text = safe(value)
            rows.append((label, text))
    others = {k: v for k, v in prov.items() if k not in ("dataset", "accuracy", "recipe")}
    if others:
        rows.append(("provenance", safe(others)))
    return rows


def _check_file(path: str) -> None:
    """A one-line error for a path that is not a readable file (click's own checks print usage)."""
    if os.path.isdir(path):
        raise CommandError(f"{path}: is a directory; expected a .pemn file")
    if not os.path.exists(path):
        raise CommandError(f"{path}: no such file")


def _read(path: str):
    from .fileformat.reader import read_pemn  # numpy only

    _check_file(path)
    return read_pemn(path)


# ---------------------------------------------------------------------------------------------
# pemn inspect


@cli.command()
@click.argument("file", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print every number as one JSON document instead.")
def inspect(file: str, as_json: bool) -> None:
    """Show what FILE holds and where its bytes go, beside the dense fp32 file of the same model.

    Needs no torch. Counts come from the validated header; `pemn verify` also decodes the masks.
    """
    from .fileformat.summary import summarize

    pf = _read(file)
    summary = summarize(pf, file)
    if as_json:
        click.echo(json.dumps(json_safe(summary), ensure_ascii=True, allow_nan=False))
        return
    _render_inspect(_stdout(), file, summary)


def _render_inspect(out: Console, file: str, s: dict) -> None:
    cfg, t = s["config"], s["totals"]
    producer = s["producer"] if isinstance(s["producer"], dict) else {}
    info = Table.grid(padding=(0, 2))
    info.add_column(style="bold")
    info.add_column()
    writer = f"{safe(producer.get('name'))} {safe(producer.get('version'))}"
    info.add_row("format", f"pemn v{s['format_version']}, written by {writer}")
    info.add_row("strategy", _strategy(cfg))
    kept = f"[dim]({100 * t['density_kept']:.2f}% of all masked weights kept)[/]"
    info.add_row("density", f"{safe(cfg.get('density'))} {kept}")
    info.add_row("values", f"{safe(cfg.get('distribution'))}, rescale {'on' if cfg.get('rescale') else 'off (paper)'}")
    info.add_row("generator", f"{safe(s['generator'].get('name'))}, seed {safe(s['generator'].get('seed'))}")
    info.add_row("architecture", _architecture(s["architecture"], file))
    dense = s["dense"]
    folded = f", BatchNorm folded in {len(dense['folded_batchnorm'])} layer(s)" if dense["folded_batchnorm"] else ""
    outliers = f" ({dense['outliers']:,} far off their grid kept float16)" if dense["dtype"] == "int8" else ""
    leftovers = f"{dense['tensors']} tensors, {dense['parameters']:,} values, {safe(dense['dtype'])}{outliers}{folded}"
    info.add_row("dense leftovers", leftovers)
    for label, text in _provenance(s["provenance"]):
        info.add_row(label, text)
    out.print(Panel(info, title=f"[bold]{safe(file)}[/]", title_align="left", expand=False))

    for table in _layer_tables(out, s["layers"]):
        out.print(table)
    out.print(_size_table(out, t, cfg.get("strategy"), dense["dtype"]))


def _fits(out: Console, table: Table) -> bool:
    """Whether ``table`` prints on ``out`` without folding a cell."""
    return Measurement.get(out, out.options.update_width(10_000), table).maximum <= out.width


def _layer_tables(out: Console, rows: list[dict]) -> list[Table]:
    """The masked layers: one table when it fits the width, else two narrower ones (what each layer is;
    its mask) that show the same numbers, the kept fraction as a percentage."""
    wide = Table(title="masked layers", title_justify="left", show_lines=False)
    _add_columns(wide, (("layer", "left"), ("type", "left"), ("shape", "left"), ("weights", "right"),
                        ("values", "left"), ("codec", "left"), ("bits/weight", "right"),
                        ("mask bytes", "right"), ("kept", "right")))
    for layer in rows:
        wide.add_row(
            safe(layer["name"]), safe(layer["type"]), _shape(layer["shape"]), f"{layer['weights']:,}",
            safe(layer["value_source"]), _codec(layer), f"{layer['mask_bits_per_weight']:.3f}",
            f"{layer['mask_bytes']:,}",
            f"{layer['kept']:,}/{layer['weights']:,} ({layer['density_kept']:.3f})",
        )
    if _fits(out, wide):
        return [wide]
    what = Table(title="masked layers", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False)
    masks = Table(title="masks of the masked layers", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False)
    _add_columns(what, (("layer", "left"), ("type", "left"), ("shape", "left"), ("values", "left")))
    _add_columns(masks, (("layer", "left"), ("weights", "right"), ("codec", "left"), ("bits/w", "right"),
                         ("mask B", "right"), ("kept", "right"), ("kept %", "right")))
    for layer in rows:
        name = safe(layer["name"])
        what.add_row(name, safe(layer["type"]), _shape(layer["shape"]), safe(layer["value_source"]))
        masks.add_row(name, f"{layer['weights']:,}", _codec(layer), f"{layer['mask_bits_per_weight']:.3f}",
                      f"{layer['mask_bytes']:,}", f"{layer['kept']:,}", f"{100 * layer['density_kept']:.1f}%")
    return [what, masks]


def _add_columns(table: Table, columns: Sequence[tuple[str, JustifyMethod]]) -> None:
    """Columns by (heading, justification); a cell too wide for the console folds rather than being cut."""
    for name, justify in columns:
        table.add_column(name, justify=justify, overflow="fold")


def _codec(layer: dict) -> str:
    return safe(layer["codec"]) + (f" k={layer['rice_k']}" if layer.get("rice_k") is not None else "")


PAPER_GAP = 2.0  # the paper formula's ratio gets a reason when it is below 1x or this far from the on-disk ratio


def _paper_note(t: dict, strategy: object) -> str:
    """Why the paper formula's ratio is below 1x or far from the on-disk ratio, in one clause ("" when it is not)."""
    paper, disk, unique = t["paper_ratio"], t["disk_ratio"], t["unique_values"]
    if disk is None:
        return ""
    regenerated = t["values_bytes"] < 4 * unique  # the 32 bits per value it counts are not in the file
    if regenerated and (paper < 1 or paper * PAPER_GAP < disk):
        regenerates = "this file stores none, the seed regenerates them"
        if unique >= t["masked_weights"]:
            return (f"counts 32 bits per value and every weight has its own value with strategy {safe(strategy)}; "
                    f"{regenerates}")
        return f"counts 32 bits for each of {unique:,} values; {regenerates}"
    if paper > PAPER_GAP * disk:
        return "leaves out the dense leftovers and the header, which this file stores"
    return ""


def _size_table(out: Console, t: dict, strategy: object = None, dense_dtype: str = "float16") -> Table:
    """Where the bytes go: label, size, explanation; on a narrow console the explanation goes under the size.
    The leftovers' bound counts a byte per value in an int8 file, two otherwise (``summary.dense_bound_bytes``)."""
    paper_note = _paper_note(t, strategy)
    bound_dtype = "int8" if dense_dtype == "int8" else "fp16"
    rows = [
        ("file on disk", _human(t["file_bytes"]), ""),
        ("  masks", _human(t["mask_bytes"]),
         f"{t['mask_bits_per_weight']:.3f} bits/weight; bound {t['mask_information_bytes']:,.0f} B: "
         f"{_pct(t['mask_overhead_fraction'])}"),
        ("  dense leftovers", _human(t["dense_bytes"]),
         f"bound ({bound_dtype}, BN folded) {t['dense_bound_bytes']:,} B: {_pct(t['dense_overhead_fraction'])}"),
        ("  stored values", _human(t["values_bytes"]), "rp / learned vectors; bound: as stored"),
        ("  header", _human(t["header_bytes"]), _header_note(t)),
        ("dense fp32 safetensors", _human(t["dense_fp32_bytes"]), "same model, every weight in fp32"),
        ("on-disk ratio", _x(t["disk_ratio"]), "dense fp32 file / this file, everything counted"),
        ("paper formula (BN not counted)", _x(t["paper_ratio"]),
         f"32 x {t['masked_weights']:,} / ({t['masked_weights']:,} + 32 x {t['unique_values']:,}) bits"
         + (f"; it {paper_note}" if paper_note else "")),
        ("unique values", f"{t['unique_values']:,}", f"over {t['masked_weights']:,} masked weights"),
        ("information bound", _human(t["bound_bytes"]), "sum of the parts' bounds"),
        ("file overhead", _human(t["file_overhead_bytes"]),
         f"the file is {_pct(t['file_overhead_fraction'])} above it"),
    ]
    sizes = Table(title="size", title_justify="left", show_header=False)
    sizes.add_column("", style="bold")
    sizes.add_column("", justify="right")
    sizes.add_column("")
    for row in rows:
        sizes.add_row(*row)
    if _fits(out, sizes):
        return sizes
    sizes = Table(title="size", title_justify="left", show_header=False, box=None, pad_edge=False)
    sizes.add_column("", style="bold", no_wrap=True)
    sizes.add_column("")
    width = max(len(value) for _, value, _ in rows)
    for label, value, note in rows:
        cell = Text(value.rjust(width), justify="left")
        if note:
            cell.append("\n" + note, style="dim")
        sizes.add_row(label, cell)
    return sizes


# ---------------------------------------------------------------------------------------------
# pemn verify


@cli.command()
@click.argument("file", type=click.Path())
def verify(file: str) -> None:
    """Check FILE end to end and regenerate its weights in numpy (no torch).

    Exit status: 0 when every check passes, 1 when a checksum or the weight fingerprint fails,
    2 when the file cannot be read at all.
    """
    from pathlib import Path

    from .fileformat import reader
    from .fileformat.container import decode_container

    out = _stdout()
    report = Table.grid(padding=(0, 2))
    report.add_column()
    report.add_column(style="bold")
    report.add_column()
    steps = ("read", "container", "header and checksums", "masks", "weights", "fingerprint")
    done: list[str] = []

    def ok(step: str, detail: str) -> None:
        report.add_row("[green]ok[/]", step, detail)
        done.append(step)

    def run():
        _check_file(file)
        blob = Path(file).read_bytes()
        ok("read", f"{len(blob):,} bytes")
        tensors, _ = decode_container(blob, name=file)
        ok("container", f"safetensors layout valid, {len(tensors)} tensors")
        pf = reader.read_pemn(blob, name=file)
        ok("header and checksums", f"pemn v{safe(pf.metadata.get('pemn.version'))}: header SHA-256, header fields "
                                   "and data SHA-256 valid")
        masks = reader.decode_masks(pf)
        kept = sum(int(m.sum()) for m in masks.values())
        ok("masks", f"{len(masks)} layers decoded, {kept:,} of {pf.plan.masked_weights:,} weights kept")
        weights = reader.decode_weights(pf, masks)
        ok("weights", f"regenerated in numpy ({safe(pf.file_header.generator.name)}, seed {pf.plan.seed}, "
                      f"{pf.plan.unique_values:,} unique values)")
        reader.verify_fingerprint(pf, weights)
        prefix = safe(pf.header["fingerprint"]["value"][:16])
        ok("fingerprint", f"SHA-256 of the regenerated weights matches ({prefix}...)")

    try:
        run()
    except (PemnError, OSError) as exc:
        failed = steps[len(done)]
        report.add_row("[red]FAILED[/]", failed, "")
        for step in steps[len(done) + 1 :]:
            report.add_row("[dim]skipped[/]", f"[dim]{step}[/]", "")
        out.print(report)
        if isinstance(exc, ChecksumError):
            raise VerificationError(f"verification failed at {failed}: {error_message(exc)}") from exc
        raise
    out.print(report)
    out.print(f"[bold green]verified[/]: {safe(file)}")


if __name__ == "__main__":
    main()
