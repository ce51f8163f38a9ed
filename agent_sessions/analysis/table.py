"""`Table`: a small, pandas-free table the CLI, logs and notebooks can all show.

Plain columns and rows of JSON-like cells; `to_text()` for a terminal, `to_markdown()` for
reports, `_repr_html_()` for Jupyter, `to_records()` for code, `to_rich()` for the CLI.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["FLOAT_DECIMALS", "Cell", "Table", "format_cell"]

Cell = str | int | float | bool | None


#: Decimals of every float in a table: one format for every number that is not a count.
FLOAT_DECIMALS = 4


def format_cell(value: Cell) -> str:
    """How a cell is written: counts (ints) with thousands separators, every float with
    `FLOAT_DECIMALS` decimals (so a column lines up and 1.0 never reads as the count 1), None as
    an empty cell."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:,.{FLOAT_DECIMALS}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


@dataclass(frozen=True, slots=True)
class Table:
    """A titled table: `columns` and `rows` (each row one cell per column)."""

    columns: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    title: str | None = None

    @classmethod
    def of(cls, columns: Sequence[str], rows: Sequence[Sequence[Cell]], title: str | None = None) -> Table:
        """Build a table, checking every row has one cell per column."""
        cols = tuple(columns)
        checked = []
        for i, row in enumerate(rows):
            if len(row) != len(cols):
                raise ValueError(f"row {i} has {len(row)} cells for {len(cols)} columns")
            checked.append(tuple(row))
        return cls(cols, tuple(checked), title)

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, name: str) -> list[Cell]:
        """The cells of one column, top to bottom."""
        index = self.columns.index(name)
        return [row[index] for row in self.rows]

    def to_records(self) -> list[dict[str, Cell]]:
        """One dict per row, keyed by column name."""
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]

    def to_text(self) -> str:
        """Aligned plain text: numbers right-aligned, text left-aligned, title on top."""
        cells = [[format_cell(c) for c in row] for row in self.rows]
        widths = [len(name) for name in self.columns]
        for row in cells:
            widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
        numeric = [
            all(
                isinstance(row[i], int | float) and not isinstance(row[i], bool)
                for row in self.rows
                if row[i] is not None
            )
            and any(row[i] is not None for row in self.rows)
            for i in range(len(self.columns))
        ]

        def line(values: Sequence[str]) -> str:
            parts = [v.rjust(w) if is_num else v.ljust(w) for v, w, is_num in zip(values, widths, numeric, strict=True)]
            return "  ".join(parts).rstrip()

        out = [self.title] if self.title else []
        out.append(line(self.columns))
        out.append("  ".join("-" * w for w in widths))
        out.extend(line(row) for row in cells)
        return "\n".join(out)

    def to_markdown(self) -> str:
        """A GitHub-flavoured Markdown table (pipes in cells escaped)."""

        def esc(text: str) -> str:
            return text.replace("|", "\\|")

        out = [f"**{esc(self.title)}**", ""] if self.title else []
        out.append("| " + " | ".join(esc(c) for c in self.columns) + " |")
        out.append("|" + "|".join("---" for _ in self.columns) + "|")
        out.extend("| " + " | ".join(esc(format_cell(c)) for c in row) + " |" for row in self.rows)
        return "\n".join(out)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(format_cell(c))}</td>" for c in row) + "</tr>" for row in self.rows
        )
        caption = f"<caption>{html.escape(self.title)}</caption>" if self.title else ""
        return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def to_rich(self) -> Any:
        """A `rich.table.Table` (needs the ``cli`` extra)."""
        try:
            from rich.table import Table as RichTable
        except ImportError as exc:
            raise ImportError("Table.to_rich() needs rich: install agent-sessions[cli]") from exc
        table = RichTable(title=self.title)
        for name in self.columns:
            table.add_column(name)
        for row in self.rows:
            table.add_row(*(format_cell(c) for c in row))
        return table

    def __str__(self) -> str:
        return self.to_text()
