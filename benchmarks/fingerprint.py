"""Slide fingerprint cost on the real SVS: the fingerprint against opening the slide, and linking a moved slide.

Prints one JSON object (medians of ``--repeats`` runs, each on a freshly opened file):

* ``open_s``: :func:`~midog_viewer.io.open_slide` of CMU-1-Small-Region.svs (the baseline: every open pays it);
* ``fingerprint_s``: :func:`~midog_viewer.io.fingerprint.slide_fingerprint` of the open slide, and
  ``fingerprint_over_open`` the ratio;
* ``link_known_s``: ``ReviewStore.link_slide`` of a file the store knows by path, size and mtime (no
  fingerprint read), and ``link_moved_s``: of the same file after a move (fingerprint read, review found).

Target (issue 12, item 6): fingerprint < 0.1 s on the real SVS.

    python benchmarks/fingerprint.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from midog_viewer.io import open_slide
from midog_viewer.io.fingerprint import slide_fingerprint
from midog_viewer.review import ReviewStore

SVS = Path(__file__).resolve().parents[2] / "shared" / "data" / "slides" / "CMU-1-Small-Region.svs"


def _timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    if not SVS.is_file():
        raise SystemExit(f"{SVS} not found (the shared data folder is absent)")
    opens, prints, known, moved = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = folder / "0.svs"
        shutil.copy(SVS, path)
        with ReviewStore(folder / "reviews.sqlite", reviewer="bench") as store:
            store.link_slide(path)
            for i in range(args.repeats):
                start = time.perf_counter()
                slide = open_slide(path)
                opens.append(time.perf_counter() - start)
                prints.append(_timed(lambda: slide_fingerprint(slide)))
                slide.close()
                known.append(_timed(lambda: store.link_slide(path)))
                target = folder / f"{i + 1}.svs"
                path.rename(target)
                path = target
                link = []
                moved.append(_timed(lambda: link.append(store.link_slide(path))))
                assert link[0].how == "moved", link[0]
    median = statistics.median
    print(json.dumps({
        "slide": SVS.name,
        "open_s": round(median(opens), 4),
        "fingerprint_s": round(median(prints), 4),
        "fingerprint_over_open": round(median(prints) / median(opens), 2),
        "link_known_s": round(median(known), 4),
        "link_moved_s": round(median(moved), 4),
        "repeats": args.repeats,
    }))


if __name__ == "__main__":
    main()
