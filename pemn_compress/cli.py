"""The ``pemn`` command line: thin glue over the library.

    pemn inspect model.pemn [--json]     what the file holds and what every byte is spent on
    pemn verify model.pemn               container, checksums, masks, regenerated weights, fingerprint

Rules every command follows (STYLE.md conventions 5-6):

* torch is imported inside the commands that need it, never at module level, so ``pemn --help``
  is instant and ``inspect`` / ``verify`` run without torch (numpy and the torch-free reader only);
* user errors are raised, not printed: a ``PemnError``, an ``OSError`` on user input or a
  ``CommandError`` reaches ``PemnGroup.invoke``, which prints one line ``error: <message>`` on stderr
  and exits with 2 (or the ``CommandError``'s code; 1 when verification fails). ``--traceback``
  shows the full traceback instead;
* results go to a rich console on stdout; errors to stderr;
* every string that comes from a file is untrusted: it goes through ``safe()`` (control characters
  and ANSI escapes made visible, rich markup escaped) before it reaches a terminal.

Adding a command (``compress``, ``eval``, ...): either decorate a function with ``@cli.command()``
in this module, or write it in its own module (torch imported inside the function, nothing heavy at
module level) and add one line to ``LAZY_COMMANDS``: it is imported only when it is run or listed.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import re
import shlex
import sys
import traceback

import click
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ._version import __version__
from .errors import ChecksumError, PemnError

__all__ = ["CommandError", "LAZY_COMMANDS", "PemnGroup", "cli", "main", "safe", "sanitize"]

# command name -> "module:attribute" of a click command, imported on first use
LAZY_COMMANDS: dict[str, str] = {
    "compress": "pemn_compress.commands:compress",
    "eval": "pemn_compress.commands:eval_command",
}

EXIT_FAILED = 1  # the file was read but a check failed (verify)
EXIT_ERROR = 2  # bad input: unreadable file, wrong option, malformed file


class CommandError(Exception):
    """An actionable error a command reports as one line, with its exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR):
        super().__init__(message)
        self.exit_code = exit_code


# ---------------------------------------------------------------------------------------------
# terminal safety

# C0 and C1 controls, DEL, bidi overrides/isolates, zero-width marks, BOM and lone surrogates: all
# made visible as Python escapes. An ANSI sequence "\x1b[31m" becomes the harmless text "\x1b[31m".
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ud800-\udfff]")


def _visible(match: re.Match) -> str:
    char = match.group()
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char) or (
        f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"
    )


def sanitize(value) -> str:
    """``value`` as one line of plain text safe for a terminal (non-strings as compact JSON)."""
    if not isinstance(value, str):
        try:
            value = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
        except (TypeError, ValueError):
            value = repr(value)
    return _UNSAFE.sub(_visible, value)


def safe(value) -> str:
    """``sanitize`` plus rich markup escaping: for strings placed into rich output."""
    return escape(sanitize(value))


# ---------------------------------------------------------------------------------------------
# the group and its one error handler


def _stdout() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 160  # piped or captured: do not squeeze the tables to 80 columns
    return console


def _stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _message(exc: BaseException) -> str:
    """The one-line text of an error for the command line: its ``cli_message`` (flags, not arguments) when it has one."""
    cli_text = getattr(exc, "cli_message", None)
    if isinstance(cli_text, str) and cli_text:
        return cli_text
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc) or type(exc).__name__


def _exit_code(exc: BaseException) -> int:
    return getattr(exc, "exit_code", EXIT_ERROR) if isinstance(exc, CommandError) else EXIT_ERROR


class PemnGroup(click.Group):
    """A click group with lazily imported commands and the CLI's single error handler."""

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
        except BrokenPipeError:  # `pemn inspect f | head`: the reader left, nothing to report
            try:  # keep the interpreter's final flush of stdout from complaining
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except (OSError, ValueError, AttributeError):
                pass
            raise click.exceptions.Exit(EXIT_FAILED) from None
        except (PemnError, OSError, CommandError) as exc:
            if ctx.meta.get("pemn.traceback"):
                traceback.print_exc()
            _stderr().print(f"[bold red]error:[/] {safe(_message(exc))}")
            raise click.exceptions.Exit(_exit_code(exc)) from None


@click.group("pemn", cls=PemnGroup, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
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
    value, unit = float(n), "B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024:
            break
    return f"{n:,} B ({value:,.1f} {unit})"


def _x(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:,.2f}x"


def _pct(fraction: float | None) -> str:
    return "n/a" if fraction is None else f"{100 * fraction:+.1f}%"


def _shape(shape) -> str:
    return "x".join(str(d) for d in shape)


def _architecture(arch: dict, file: str) -> str:
    kind = arch.get("kind")
    if kind == "registry":
        kwargs = arch.get("kwargs") or {}
        args = ", ".join(f"{sanitize(k)}={sanitize(v)}" for k, v in kwargs.items()) if isinstance(kwargs, dict) else sanitize(kwargs)
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


def _json_safe(value):
    """Non-finite floats (possible in a provenance) as None: stdout stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


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
        click.echo(json.dumps(_json_safe(summary), ensure_ascii=True, allow_nan=False))
        return
    _render_inspect(_stdout(), file, summary)


def _render_inspect(out: Console, file: str, s: dict) -> None:
    cfg, t = s["config"], s["totals"]
    producer = s["producer"] if isinstance(s["producer"], dict) else {}
    info = Table.grid(padding=(0, 2))
    info.add_column(style="bold")
    info.add_column()
    info.add_row("format", f"pemn v{s['format_version']}, written by {safe(producer.get('name'))} {safe(producer.get('version'))}")
    info.add_row("strategy", _strategy(cfg))
    info.add_row("density", f"{safe(cfg.get('density'))} [dim]({100 * t['density_kept']:.2f}% of all masked weights kept)[/]")
    info.add_row("values", f"{safe(cfg.get('distribution'))}, rescale {'on' if cfg.get('rescale') else 'off (paper)'}")
    info.add_row("generator", f"{safe(s['generator'].get('name'))}, seed {safe(s['generator'].get('seed'))}")
    info.add_row("architecture", _architecture(s["architecture"], file))
    dense = s["dense"]
    folded = f", BatchNorm folded in {len(dense['folded_batchnorm'])} layer(s)" if dense["folded_batchnorm"] else ""
    info.add_row("dense leftovers", f"{dense['tensors']} tensors, {dense['parameters']:,} values, {safe(dense['dtype'])}{folded}")
    for label, text in _provenance(s["provenance"]):
        info.add_row(label, text)
    out.print(Panel(info, title=f"[bold]{safe(file)}[/]", title_align="left", expand=False))

    for table in _layer_tables(out, s["layers"]):
        out.print(table)
    out.print(_size_table(out, t))


def _fits(out: Console, table: Table) -> bool:
    """Whether ``table`` prints on ``out`` without folding a cell."""
    return Measurement.get(out, out.options.update_width(10_000), table).maximum <= out.width


def _layer_tables(out: Console, rows: list[dict]) -> list[Table]:
    """The masked layers: one table when it fits the width, else two narrower ones (what each layer is;
    its mask) that show the same numbers, the kept fraction as a percentage."""
    wide = Table(title="masked layers", title_justify="left", show_lines=False)
    for name, justify in (("layer", "left"), ("type", "left"), ("shape", "left"), ("weights", "right"),
                          ("values", "left"), ("codec", "left"), ("bits/weight", "right"),
                          ("mask bytes", "right"), ("kept", "right")):
        wide.add_column(name, justify=justify, overflow="fold")
    for layer in rows:
        wide.add_row(
            safe(layer["name"]), safe(layer["type"]), _shape(layer["shape"]), f"{layer['weights']:,}",
            safe(layer["value_source"]), _codec(layer), f"{layer['mask_bits_per_weight']:.3f}", f"{layer['mask_bytes']:,}",
            f"{layer['kept']:,}/{layer['weights']:,} ({layer['density_kept']:.3f})",
        )
    if _fits(out, wide):
        return [wide]
    what = Table(title="masked layers", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False)
    masks = Table(title="masks of the masked layers", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False)
    for name, justify in (("layer", "left"), ("type", "left"), ("shape", "left"), ("values", "left")):
        what.add_column(name, justify=justify, overflow="fold")
    for name, justify in (("layer", "left"), ("weights", "right"), ("codec", "left"), ("bits/w", "right"),
                          ("mask B", "right"), ("kept", "right"), ("kept %", "right")):
        masks.add_column(name, justify=justify, overflow="fold")
    for layer in rows:
        name = safe(layer["name"])
        what.add_row(name, safe(layer["type"]), _shape(layer["shape"]), safe(layer["value_source"]))
        masks.add_row(name, f"{layer['weights']:,}", _codec(layer), f"{layer['mask_bits_per_weight']:.3f}",
                      f"{layer['mask_bytes']:,}", f"{layer['kept']:,}", f"{100 * layer['density_kept']:.1f}%")
    return [what, masks]


def _codec(layer: dict) -> str:
    return safe(layer["codec"]) + (f" k={layer['rice_k']}" if layer.get("rice_k") is not None else "")


def _size_table(out: Console, t: dict) -> Table:
    """Where the bytes go: label, size, explanation; on a narrow console the explanation goes under the size."""
    rows = [
        ("file on disk", _human(t["file_bytes"]), ""),
        ("  masks", _human(t["mask_bytes"]), f"{t['mask_bits_per_weight']:.3f} bits per masked weight"),
        ("  dense leftovers", _human(t["dense_bytes"]), "BatchNorm/LayerNorm, biases, unmasked parameters"),
        ("  stored values", _human(t["values_bytes"]), "explicit value vectors (rp, learned values)"),
        ("  header", _human(t["header_bytes"]), "safetensors + PEMN header, checksums included"),
        ("dense fp32 safetensors", _human(t["dense_fp32_bytes"]), "same model, every weight in fp32"),
        ("on-disk ratio", _x(t["disk_ratio"]), "dense fp32 file / this file, everything counted"),
        ("paper formula (BN not counted)", _x(t["paper_ratio"]),
         f"32 x {t['masked_weights']:,} / ({t['masked_weights']:,} + 32 x {t['unique_values']:,}) bits"),
        ("unique values", f"{t['unique_values']:,}", f"over {t['masked_weights']:,} masked weights"),
        ("mask information bound", _human(t["mask_information_bytes"]),
         f"sum of n*H(kept/n); masks are {_pct(t['mask_overhead_fraction'])} above it"),
        ("file overhead", _human(t["file_overhead_bytes"]),
         f"{_pct(t['file_overhead_fraction'])} above mask bound + dense leftovers + stored values"),
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
        ok("weights", f"regenerated in numpy ({safe(pf.header['generator']['name'])}, seed {pf.plan.seed}, "
                      f"{pf.plan.unique_values:,} unique values)")
        reader.verify_fingerprint(pf, weights)
        ok("fingerprint", f"SHA-256 of the regenerated weights matches ({safe(pf.header['fingerprint']['value'][:16])}...)")

    try:
        run()
    except (PemnError, OSError) as exc:
        failed = steps[len(done)]
        report.add_row("[red]FAILED[/]", failed, "")
        for step in steps[len(done) + 1 :]:
            report.add_row("[dim]skipped[/]", f"[dim]{step}[/]", "")
        out.print(report)
        if isinstance(exc, ChecksumError):
            raise CommandError(f"verification failed at {failed}: {_message(exc)}", exit_code=EXIT_FAILED) from exc
        raise
    out.print(report)
    out.print(f"[bold green]verified[/]: {safe(file)}")


if __name__ == "__main__":
    main()
