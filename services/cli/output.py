"""Output that fits where it goes: rich tables on a terminal, plain lines elsewhere.

A rich table is drawn to the console's width: off a terminal that width is a
guess (80 columns, or $COLUMNS), so a CI log or a pipe got rows split in two
and names cut to `lunar_orbit_inserti…`. Here a table is data first
(:class:`Grid`) and is drawn as a rich table only on a terminal wide enough
for it; anywhere else it is written as plain, aligned lines that are never
wrapped or cut (a reader's pager or editor can wrap them if it likes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

__all__ = ["Cell", "Column", "Grid", "say", "show"]

_GAP = "  "  # between plain columns
_UNLIMITED = 1_000_000  # columns: more than any table here needs


@dataclass(frozen=True)
class Column:
    header: str
    right: bool = False  # numbers line up on the right
    min_width: int = 0  # keeps repeated plain blocks aligned with each other


@dataclass(frozen=True)
class Cell:
    """A cell's text and its style on a terminal (plain lines drop the style)."""

    text: str
    style: str = ""


@dataclass(frozen=True)
class Grid:
    """A table as data: columns, rows of cells, an optional title and notes."""

    columns: Sequence[Column]
    rows: Sequence[Sequence[str | Cell]]
    title: str | None = None
    notes: Sequence[str] = field(default_factory=tuple)  # lines printed below it

    def rich(self) -> Table:
        table = Table(title=self.title, expand=False)
        for col in self.columns:
            table.add_column(col.header, justify="right" if col.right else "left",
                             no_wrap=True, min_width=col.min_width or None)
        for row in self.rows:
            table.add_row(*(Text(c.text, style=c.style) if isinstance(c, Cell) else c
                            for c in row))
        return table

    def lines(self, *, header: bool = True) -> list[str]:
        """Aligned plain lines: the title, the header, one line per row."""
        texts = [[c.text if isinstance(c, Cell) else c for c in row] for row in self.rows]
        shown = [[col.header for col in self.columns]] if header else []
        widths = [max([col.min_width, *(len(r[i]) for r in [*shown, *texts])])
                  for i, col in enumerate(self.columns)]
        out = [self.title] if self.title else []
        for row in [*shown, *texts]:
            cells = (cell.rjust(w) if col.right else cell.ljust(w)
                     for cell, w, col in zip(row, widths, self.columns, strict=True))
            out.append(_GAP.join(cells).rstrip())
        return out


def say(console: Console, line: str, style: str | None = None) -> None:
    """One line as it is: no markup, no highlighting, never wrapped or cut."""
    console.print(line, style=style, soft_wrap=True, markup=False, highlight=False)


def fits(console: Console, grid: Grid) -> bool:
    """Whether the rich table is wanted and fits: a terminal as wide as the table."""
    if not console.is_terminal:
        return False
    # Measured against unlimited room: rich clamps a measurement to the width offered.
    unlimited = console.options.update_width(_UNLIMITED)
    return Measurement.get(console, unlimited, grid.rich()).maximum <= console.width


def show(console: Console, grid: Grid) -> None:
    """The grid as a rich table where it fits, else as plain lines."""
    if fits(console, grid):
        console.print(grid.rich())
    else:
        for line in grid.lines():
            say(console, line)
    for note in grid.notes:
        say(console, note)
