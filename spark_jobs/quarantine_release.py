"""Release held quarantine rows of an interval (all, or selected row ids).

Released rows keep their history (who, when, why; each release is appended to
``quarantine.events``) and flow into silver the next time the interval runs.

    spark-submit spark_jobs/quarantine_release.py --lake LAKE --dataset flights \
        --start 2013-01-05 --end 2013-01-05 --run-id ID --by alice --reason "carrier list fixed"
"""

from __future__ import annotations


from include.quality.release import row_id_arg
from spark_jobs.quarantine_store import release_held
from spark_jobs.session import get_spark, interval_args, run_job


def main(argv: list[str] | None = None) -> None:
    p = interval_args(__doc__)
    p.add_argument("--dataset", required=True, choices=["flights", "weather"])
    p.add_argument("--by", required=True)
    p.add_argument("--reason", required=True)
    p.add_argument("--row-id", action="append", default=None, type=row_id_arg)
    a = p.parse_args(argv)
    spark = get_spark(f"quarantine_release_{a.dataset}_{a.start}_{a.end}")
    n = release_held(spark, a.lake, a.dataset, a.start, a.end, a.by, a.reason, a.row_id, run_id=a.run_id)
    print(f"quarantine.{a.dataset}: released {n} held row(s) for {a.start}..{a.end}")


if __name__ == "__main__":
    run_job(main)
