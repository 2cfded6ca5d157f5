"""Grouped ``--help`` for click commands: options listed under section headings.

    @click.command("compress", cls=SectionedCommand, sections={
        "Input": ["model", "arch", "data"],
        "Method": ["strategy", "density"],
    })

``sections`` maps a heading to parameter names (``param.name``, e.g. ``as_json`` for ``--json``, or
one of its flags such as ``"--json"``), in display order. A parameter no section names (an option
added later, or a name mistyped here) is listed under a final "Other options" heading, with
``-h/--help``: nothing disappears from the help. A name that matches no parameter is ignored.

Arguments are listed only when they carry a help text: declare them with ``cls=Argument`` and
``help=...`` (click's own arguments have no help).

Imports click only: ``pemn --help`` stays instant and torch-free.
"""

from __future__ import annotations

import click

__all__ = ["OTHER", "Argument", "SectionedCommand"]

OTHER = "Other options"


class Argument(click.Argument):
    """A click argument with a help text, shown in its section of a ``SectionedCommand``'s help."""

    def __init__(self, param_decls, required=None, help: str | None = None, **attrs):
        super().__init__(param_decls, required=required, **attrs)  # click < 8.5 takes no help here
        self.help = help

    def get_help_record(self, ctx: click.Context) -> tuple[str, str]:
        """``(metavar, help)``; the help is empty for an undocumented argument, which the help leaves out."""
        try:
            metavar = self.make_metavar(ctx)
        except TypeError:  # click < 8.2: make_metavar()
            metavar = self.make_metavar()  # type: ignore[call-arg]
        return metavar, self.help or ""


class SectionedCommand(click.Command):
    """A ``click.Command`` whose help lists its options under the headings of ``sections``."""

    def __init__(self, *args, sections: dict[str, list[str]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.sections = {title: list(names) for title, names in (sections or {}).items()}

    def section_of(self, param: click.Parameter) -> str:
        """The heading ``param`` is listed under: the first section naming it, else ``OTHER``."""
        keys = {param.name, *getattr(param, "opts", ()), *getattr(param, "secondary_opts", ())}
        for title, names in self.sections.items():
            if keys.intersection(names):
                return title
        return OTHER

    def grouped_params(self, ctx: click.Context) -> list[tuple[str, list[click.Parameter]]]:
        """``(heading, parameters)`` in display order; empty sections left out, ``OTHER`` last."""
        groups: dict[str, list[click.Parameter]] = {title: [] for title in self.sections}
        groups[OTHER] = []
        for param in self.get_params(ctx):
            groups.setdefault(self.section_of(param), []).append(param)
        for title, params in groups.items():  # within a section: the order of its names, then the rest
            names = self.sections.get(title, [])
            params.sort(key=lambda p: min((names.index(k) for k in (p.name, *getattr(p, "opts", ())) if k in names),
                                          default=len(names)))
        return [(title, params) for title, params in groups.items() if params]

    def format_arguments(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Documented arguments are listed in their sections (click >= 8.5 adds a section of its own)."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        sections = []
        for title, params in self.grouped_params(ctx):
            documented = [p for p in params if not isinstance(p, click.Argument) or getattr(p, "help", None)]
            rows = [record for record in (p.get_help_record(ctx) for p in documented) if record is not None]
            if rows:
                sections.append((title, rows))
        if not sections:
            return
        # one first-column width for every section (click's write_dl measures each call on its own)
        col_max = 30
        width = min(max(len(term) for _, rows in sections for term, _ in rows), col_max)
        for title, rows in sections:
            with formatter.section(title):
                formatter.write_dl([(term.ljust(width) if help_text else term, help_text) for term, help_text in rows],
                                   col_max=col_max)
