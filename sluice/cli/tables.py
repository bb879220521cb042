"""Tables the commands print (the run summary, `sluice runs`), whole wherever the output goes.

On a terminal rich fits a table to the window, wrapping long cells. When the output is not a terminal (a file, a
pipe, `make demo > demo.log`, a test runner) rich has no window to measure and falls back to 80 columns: the
summary's long lines (the quality estimate, accuracy per tier) wrapped into fragments and `sluice runs` cut its
numbers to "$0.00…". There nothing limits the width, so the table is drawn at its own natural width instead, every
cell on one line and every border as wide as the table.
"""

from __future__ import annotations

from rich.console import Console
from rich.segment import Segments
from rich.table import Table

# wider than any table the commands draw: the measure then gives each column its longest cell
_UNBOUNDED = 100_000


def print_table(console: Console, table: Table) -> None:
    """Print `table` on `console`: fitted to the window on a terminal, at its natural width anywhere else."""
    if console.is_terminal:
        console.print(table)
        return
    width = console.measure(table, options=console.options.update_width(_UNBOUNDED)).maximum
    lines = console.render_lines(table, console.options.update_width(width), pad=False, new_lines=True)
    # pre-rendered segments are written as they are: not wrapped again, nor cropped to the 80-column fallback
    console.print(Segments([segment for line in lines for segment in line]), end="", crop=False, soft_wrap=True)
