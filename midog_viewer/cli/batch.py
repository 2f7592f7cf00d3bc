"""``midog-viewer batch``: detect mitoses in a cohort of slides on dask workers, into a review store and a report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "batch",
        help="detect mitotic figures in many slides on a dask cluster, resumable, with a report per slide",
        description="Detect mitotic figures in every slide (tissue tiles only) on dask workers: a LocalCluster, or "
        "the cluster at --scheduler. Results are stored as detection runs in DB, ready to review; a run stopped "
        "at any moment continues where it stopped, and finished slides are skipped. REPORT.csv gets a row per slide.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="slides, or folders of slides")
    parser.add_argument("--db", required=True, metavar="DB", help="review database (created if missing)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS", help="address of a running dask scheduler (tcp://host:8786)")
    where.add_argument("--workers", type=int, metavar="N",
                       help="local workers (default: one per GPU, else one per 2 CPU cores)")
    parser.add_argument("--model", metavar="CKPT", help="our .safetensors checkpoint or an mmdet .pth (default: the built-in real-tissue model)")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="device of the workers (default: cuda if any)")
    parser.add_argument("--resources", metavar="NAME=N[,...]",
                        help="dask resources each detection task needs, e.g. GPU=1 for workers started with "
                        "'dask worker --resources GPU=1' (default with --device cuda: GPU=1)")
    parser.add_argument("--score-thr", type=float, metavar="T", help="operating threshold (default: the model's)")
    parser.add_argument("--report", required=True, metavar="REPORT.csv", help="per-slide report (written atomically)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-slide lines")
    parser.set_defaults(func=handle_batch)


def _check_arguments(args: argparse.Namespace) -> None:
    """Refuse bad arguments before any cluster starts (MidogError: one line, exit 2)."""
    from midog_viewer.errors import MidogError, ModelError

    report = Path(args.report)
    if report.suffix.lower() != ".csv":
        raise MidogError(f"--report must end in .csv, not {report.name!r}.")
    if report.is_dir() or not report.parent.is_dir():
        raise MidogError(f"--report {report} is not a file in an existing folder.")
    if args.workers is not None and args.workers < 1:
        raise MidogError(f"--workers must be at least 1, not {args.workers}.")
    if args.score_thr is not None and not 0.0 <= args.score_thr <= 1.0:
        raise ModelError(f"the score threshold must lie between 0 and 1, not {args.score_thr}.")
    from midog_viewer.batch.cluster import parse_resources

    args.resources = parse_resources(args.resources)
    if args.model is not None:
        from midog_viewer.detect.checkpoint import load_model

        load_model(args.model)  # a bad checkpoint is refused here, not on every worker
    if args.scheduler is None and args.device is not None:
        from midog_viewer.detect.engine import choose_device

        choose_device(args.device)


def handle_batch(args: argparse.Namespace) -> int:
    from midog_viewer.batch.cluster import quiet_dask_logs, start, stop
    from midog_viewer.batch.plan import find_slides
    from midog_viewer.batch.progress import Progress
    from midog_viewer.batch.report import write_report
    from midog_viewer.batch.run import CohortRun, needs_workers, run_key
    from midog_viewer.review.store import ReviewStore

    _check_arguments(args)
    slides = find_slides(args.paths)
    quiet_dask_logs()
    model_label = str(Path(args.model).name) if args.model else "built-in model"
    db = Path(args.db)
    existed = db.exists()
    key = run_key(args.model, args.score_thr)
    with ReviewStore(db) as store:  # a bad database is refused before any cluster starts
        try:
            client, cluster = None, None
            if needs_workers(store, slides, key):  # no cluster at all when every slide is finished already
                client, cluster = start(args.scheduler, args.workers, args.device, args.model, args.score_thr,
                                        resources=args.resources)
        except BaseException:
            store.close()
            if not existed:  # leave nothing behind
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{db}{suffix}").unlink(missing_ok=True)
            raise
        try:
            run = CohortRun(client, store, slides, key, model_label, Progress(len(slides), quiet=args.quiet))
            result = run.run()
        finally:
            if client is not None:
                stop(client, cluster)
    try:
        write_report(args.report, result.rows)
    except OSError as exc:
        from midog_viewer.errors import MidogError

        raise MidogError(f"cannot write the report {args.report}: {exc.strerror or exc}; the results are in {db}.") from exc
    counts = {status: sum(row.status == status for row in result.rows) for status in ("done", "skipped", "failed")}
    for row in result.failed:
        print(f"midog-viewer: failed: {row.slide}: {row.error}", file=sys.stderr)
    print(f"{len(result.rows)} slides: {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed "
          f"({result.tiles_detected} tiles detected); report: {args.report}")
    return 1 if result.failed else 0
