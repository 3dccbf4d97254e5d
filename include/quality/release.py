"""Release quarantined rows after a fix, then rerun the interval to let them into silver.

    python -m include.quality.release --dataset flights --start 2013-01-05 --end 2013-01-05 \
        --reason "carrier XX added to the reference list" [--by NAME] [--row-id ID ...]

The quarantine keeps every row with its status (``held``, ``released``, ``superseded``),
who changed it, when and why; every change is also appended to ``quarantine.events``, the
row's full history. Releasing does not change silver by itself: rerun the
interval (clear the run in the UI, or ``airflow dags test flights_daily <day>``), or
trigger the run with the ``release_quarantined`` param, which releases and reprocesses
in one go.

A row id is the SHA-256 (64 lowercase hex digits) that ``spark_jobs/bronze_landing.py``
gives each quarantined row; anything else is refused before a job starts.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import re

from include.intervals import Interval, parse_date

ROW_ID = re.compile(r"[0-9a-f]{64}")


def check_row_ids(row_ids: list[str]) -> list[str]:
    """The row ids, each checked to be a quarantine ``_row_id``.

    Raises:
        ValueError: naming the first value that is not a row id.
    """
    for row_id in row_ids:
        if not (isinstance(row_id, str) and ROW_ID.fullmatch(row_id)):
            raise ValueError(f"{row_id!r} is not a row id: a row id is 64 lowercase hex digits, the _row_id "
                             "column of quarantine.<dataset>; copy it from there.")
    return list(row_ids)


def row_id_arg(value: str) -> str:
    """``--row-id``'s argparse type."""
    try:
        return check_row_ids([value])[0]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, choices=["flights", "weather"])
    p.add_argument("--start", required=True)
    p.add_argument("--end", required=True)
    p.add_argument("--reason", required=True, help="why the rows may now pass (recorded with them)")
    p.add_argument("--by", default=getpass.getuser())
    p.add_argument("--row-id", action="append", type=row_id_arg,
                   help="release only these rows (default: every held row)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    interval = Interval(parse_date(a.start, "start"), parse_date(a.end, "end"))
    from include.targets import get_target  # not at the top: the Spark jobs import check_row_ids

    target = get_target()
    args = ["--lake", target.lake.root, "--start", str(interval.start), "--end", str(interval.end),
            "--run-id", f"release_{interval.key}", "--dataset", a.dataset, "--by", a.by, "--reason", a.reason]
    for row_id in a.row_id or []:
        args += ["--row-id", row_id]
    target.spark.submit("quarantine_release", args, name=f"quarantine_release.{a.dataset}.{interval.key}")
    print(f"Released held {a.dataset} rows for {interval}. Rerun that interval to load them into silver.")


if __name__ == "__main__":
    main()
