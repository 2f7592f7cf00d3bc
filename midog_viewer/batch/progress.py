"""Progress of a cohort run on stderr: a bar for the slides and one for the tiles of the slides under way.

tqdm draws the bars when it is installed; otherwise plain lines (one per finished slide, and the tile
count every tenth of the way). ``quiet`` silences everything here.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO


class Progress:
    """Cohort and tile progress; :meth:`line` prints a message (e.g. a finished slide) above the bars."""

    def __init__(self, slides: int, quiet: bool = False, stream: TextIO | None = None) -> None:
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.tiles_total = 0
        self.tiles_done = 0
        self._next_report = 0.1
        self._bars: tuple[Any, Any] | None = None
        if quiet:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        self._bars = (
            tqdm(total=slides, desc="slides", unit="slide", position=0, file=self.stream, dynamic_ncols=True),
            tqdm(total=0, desc="tiles", unit="tile", position=1, file=self.stream, dynamic_ncols=True),
        )

    def add_tiles(self, n: int) -> None:
        """``n`` more tiles to detect (a slide was planned or resumed)."""
        self.tiles_total += n
        if self._bars is not None:
            self._bars[1].total = self.tiles_total
            self._bars[1].refresh()

    def tiles(self, n: int) -> None:
        """``n`` tiles finished."""
        self.tiles_done += n
        if self._bars is not None:
            self._bars[1].update(n)
        elif not self.quiet and self.tiles_total and self.tiles_done >= self._next_report * self.tiles_total:
            print(f"tiles {self.tiles_done}/{self.tiles_total}", file=self.stream, flush=True)
            self._next_report = (int(10 * self.tiles_done / self.tiles_total) + 1) / 10

    def slide_finished(self, message: str) -> None:
        """A slide is done, skipped or failed: one line, and the cohort bar moves."""
        if self.quiet:
            return
        if self._bars is not None:
            self._bars[0].write(message, file=self.stream)
            self._bars[0].update(1)
        else:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bars is not None:
            for bar in reversed(self._bars):
                bar.close()
            self._bars = None
