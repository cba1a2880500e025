"""Tables the way kubectl prints them: a name is never cut.

A row must stay usable by ``awk '{print $1}'`` and by a reader on an 80-column terminal. So the
columns that name things (NAMESPACE, NAME, a run's STEP) keep their full width; when a row is
wider than the terminal, the other columns give way first — free text (a message, an output)
before references (a workflow, an agent) before short facts (a phase, an age); within a rank the
widest shrinks first, each down to its header's width, ending in "…"; if the names alone are wider than the terminal, the row
is printed wider than it, as kubectl's are, rather than cutting a name. Into a pipe the width is
unlimited (see :mod:`kagent.cli.common`), so nothing is cut at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

GAP = 2
"""Spaces between two columns."""
MIN_SHRUNK = 3
"""A column that gives way keeps at least this many cells (two letters and the "…")."""


TEXT, REFERENCE, FACT = 0, 1, 2
"""How readily a column gives way: free text first, then references, then short facts."""


@dataclass(frozen=True)
class Column:
    header: str
    keep: bool = False
    """Never cut (a name): the column is always as wide as its widest cell."""
    rank: int = FACT
    """Columns of a lower rank give way before those of a higher one."""


def fit_widths(natural: Sequence[int], floors: Sequence[int], available: int,
               gap: int = GAP, ranks: Sequence[int] | None = None) -> list[int]:
    """Column widths for a row of ``available`` cells (pure).

    ``natural`` is each column's widest cell, ``floors`` how narrow each may become (a kept
    column's floor is its natural width). Among the columns of the lowest rank still above
    their floor, the widest shrinks, one cell at a time, until the row fits or every column is
    at its floor.
    """
    widths = list(natural)
    order = list(ranks) if ranks is not None else [0] * len(widths)
    excess = sum(widths) + gap * max(len(widths) - 1, 0) - available
    while excess > 0:
        shrinkable = [i for i, w in enumerate(widths) if w > floors[i]]
        if not shrinkable:
            break
        lowest = min(order[i] for i in shrinkable)
        widest = max((i for i in shrinkable if order[i] == lowest), key=lambda i: (widths[i], i))
        widths[widest] -= 1
        excess -= 1
    return widths


def _cell(value: RenderableType | str) -> Text:
    if isinstance(value, Text):
        return value
    return Text.from_markup(str(value)) if isinstance(value, str) else Text(str(value))


def build_table(columns: Sequence[Column], rows: Sequence[Sequence[str | Text]],
                available: int) -> tuple[Table, int]:
    """The table fitted to ``available`` cells, and the width it needs (pure: no printing).

    Cells may hold rich markup (``[green]True[/]``); widths are measured on the visible text.
    """
    cells = [[_cell(value) for value in row] for row in rows]
    natural = [max([len(column.header), *(row[i].cell_len for row in cells)])
               for i, column in enumerate(columns)]
    floors = [n if column.keep else min(n, max(len(column.header), MIN_SHRUNK))
              for n, column in zip(natural, columns, strict=True)]
    widths = fit_widths(natural, floors, available, ranks=[c.rank for c in columns])
    table = Table(box=None, header_style="bold", pad_edge=False, padding=(0, GAP, 0, 0))
    for column, width in zip(columns, widths, strict=True):
        table.add_column(column.header, width=width, no_wrap=True, overflow="ellipsis")
    for row in cells:
        table.add_row(*row)
    return table, sum(widths) + GAP * max(len(widths) - 1, 0)


def print_table(console: Console, columns: Sequence[Column],
                rows: Sequence[Sequence[str | Text]]) -> None:
    """Print a fitted table; a row wider than the console (names alone too wide) is printed
    whole, not cropped. Lines carry no trailing spaces (rich pads every cell to its column)."""
    table, needed = build_table(columns, rows, console.width)
    target = console
    if needed > console.width:
        target = Console(file=console.file, width=needed, force_terminal=console.is_terminal,
                         color_system=console.color_system, no_color=console.no_color,
                         highlight=False, stderr=console.stderr)
    print_stripped(target, table)


def print_stripped(console: Console, renderable: RenderableType) -> None:
    """Print with no trailing spaces on any line (rich pads every cell to its column's width),
    so piped output diffs and greps cleanly."""
    with console.capture() as captured:
        console.print(renderable)
    console.file.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))
