"""Analysts' questions as SQL files, rendered for each warehouse's dialect.

Each ``<name>.sql`` beside this module answers one question about the flights of an interval
(its first comment line says which). The files are written once, in the SQL that DuckDB,
PostgreSQL, Redshift and BigQuery share, with the warehouse's own table names
(``analytics.prediction_outcomes``, see ``include.warehouse.DDL``) and three kinds of placeholder:

``:start`` and ``:end``
    The interval's first and last flight date (inclusive). Rendered as ``DATE 'YYYY-MM-DD'``
    literals when the dates are given, otherwise as the dialect's named parameter
    (``$start`` DuckDB, ``%(start)s`` psycopg, ``:start`` Redshift Data API, ``@start`` BigQuery).
``{{ week_start(expr) }}``
    The Monday of ``expr``'s ISO week, as a DATE.
``{{ int_div(a, b) }}``
    Integer division of two non-negative integers (``/`` divides integers exactly only on
    PostgreSQL and Redshift).

Table names stay schema-qualified on DuckDB, PostgreSQL and Redshift (``analytics.x``), and
become ``project.dataset.analytics_x`` on BigQuery, where the warehouse is one dataset and the
schema a prefix of the table name (``include.targets.gcp.bigquery``). A name that is not a
table or view of the warehouse is refused.

    python -m include.warehouse.queries list
    python -m include.warehouse.queries render worst_routes --dialect bigquery \\
        --dataset my-project.flights --start 2013-03-01 --end 2013-03-07
    python -m include.warehouse.queries run carrier_league_table --start 2013-03-01 --end 2013-03-07
"""

from __future__ import annotations

import argparse
import re
from datetime import date
from pathlib import Path

from include.warehouse import DDL

QUERIES_DIR = Path(__file__).resolve().parent
DIALECTS = ("duckdb", "postgres", "redshift", "bigquery")
PARAMETERS = ("start", "end")

_WEEK = "CAST(DATE_TRUNC('week', {0}) AS DATE)"
# macro -> (number of arguments, its SQL per dialect). BigQuery's DATE_TRUNC of a DATE is a DATE already;
# the CAST is for the emulator the tests run on, which returns a DATETIME (and knows no ISOWEEK).
MACROS = {
    "week_start": (1, {"duckdb": _WEEK, "postgres": _WEEK, "redshift": _WEEK,
                       "bigquery": "CAST(DATE_TRUNC({0}, WEEK(MONDAY)) AS DATE)"}),
    "int_div": (2, {"duckdb": "(({0}) // ({1}))", "postgres": "(({0}) / ({1}))", "redshift": "(({0}) / ({1}))",
                    "bigquery": "DIV({0}, {1})"}),
}
NAMED_PARAMETER = {"duckdb": "${0}", "postgres": "%({0})s", "redshift": ":{0}", "bigquery": "@{0}"}

_MACRO = re.compile(r"\{\{\s*([A-Za-z_]\w*)\s*\((.*?)\)\s*\}\}", re.DOTALL)
_PARAMETER = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
_TABLE = re.compile(r"(?<![\w.`\"])(analytics|ops)\.([A-Za-z_]\w*)(?![\w`\"])")
_NAME = re.compile(r"[a-z][a-z0-9_]*")
_BQ_DATASET = re.compile(r"(?:[a-z][a-z0-9-]{4,28}[a-z0-9]\.)?[A-Za-z_][A-Za-z0-9_]{0,1023}")


def warehouse_objects() -> set[str]:
    """Every table and view ``include.warehouse.DDL`` creates, as ``schema.name``."""
    found = set()
    for stmt in DDL:
        m = re.match(r"\s*CREATE (?:TABLE IF NOT EXISTS|OR REPLACE VIEW) (\S+)", stmt)
        if m:
            found.add(m[1])
    return found


def names() -> list[str]:
    """The queries' names (their file names without ``.sql``), sorted."""
    return sorted(p.stem for p in QUERIES_DIR.glob("*.sql"))


def template(name: str) -> str:
    """The SQL file of ``name``, as written.

    Raises:
        KeyError: no such query; the message lists them.
    """
    if not _NAME.fullmatch(name or "") or not (QUERIES_DIR / f"{name}.sql").is_file():
        raise KeyError(f"No query {name!r}; the queries are: {', '.join(names())}.")
    return (QUERIES_DIR / f"{name}.sql").read_text(encoding="utf-8")


def title(name: str) -> str:
    """The question ``name`` answers: its first comment line."""
    return template(name).splitlines()[0].lstrip("-").strip()


def _arguments(text: str) -> list[str]:
    """A macro's arguments: split on the commas outside parentheses."""
    args, depth, current = [], 0, []
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            args.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    args.append("".join(current).strip())
    return [a for a in args if a]


def _day(value, what: str) -> date:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"{what}={value!r} is not a date (YYYY-MM-DD).") from None


def render(name: str, dialect: str, *, start=None, end=None, dataset: str | None = None) -> str:
    """The query ``name`` in ``dialect``.

    Args:
        name: one of ``names()``.
        dialect: one of ``DIALECTS``.
        start, end: the interval (dates or YYYY-MM-DD), inlined as DATE literals; both or neither.
            Without them the SQL keeps the dialect's named parameters ``start`` and ``end``.
        dataset: BigQuery only: ``project.dataset`` (or ``dataset``) holding the warehouse; without
            it the warehouse's own names are kept (``BigQueryWarehouse.query`` rewrites them).

    Raises:
        KeyError: an unknown query. ValueError: an unknown dialect, macro, parameter or table,
            a bad date or dataset, or only one of ``start`` and ``end``.
    """
    if dialect not in DIALECTS:
        raise ValueError(f"Unknown dialect {dialect!r}; use one of {', '.join(DIALECTS)}.")
    if (start is None) != (end is None):
        raise ValueError("Give both start and end, or neither.")
    sql = template(name)

    def macro(m: re.Match) -> str:
        if m[1] not in MACROS:
            raise ValueError(f"{name}.sql: unknown macro {m[1]!r}; the macros are {', '.join(MACROS)}.")
        arity, forms = MACROS[m[1]]
        args = _arguments(m[2])
        if len(args) != arity:
            raise ValueError(f"{name}.sql: {m[1]} takes {arity} argument(s), got {args}.")
        return forms[dialect].format(*args)

    sql = _MACRO.sub(macro, sql)
    if "{{" in sql or "}}" in sql:
        raise ValueError(f"{name}.sql: a placeholder {{{{ … }}}} is not a macro call.")

    if start is not None:
        start_day, end_day = _day(start, "start"), _day(end, "end")
        if end_day < start_day:
            raise ValueError(f"The interval ends ({end_day}) before it starts ({start_day}).")
        values = {"start": f"DATE '{start_day.isoformat()}'", "end": f"DATE '{end_day.isoformat()}'"}
    else:
        if dialect == "postgres":  # psycopg reads every % as the start of a placeholder
            sql = sql.replace("%", "%%")
        values = {p: NAMED_PARAMETER[dialect].format(p) for p in PARAMETERS}

    def parameter(m: re.Match) -> str:
        if m[1] not in values:
            raise ValueError(f"{name}.sql: unknown parameter :{m[1]}; the parameters are "
                             f"{', '.join(':' + p for p in PARAMETERS)}.")
        return values[m[1]]

    sql = _PARAMETER.sub(parameter, sql)
    known = warehouse_objects()

    def table(m: re.Match) -> str:
        logical = f"{m[1]}.{m[2]}"
        if logical not in known:
            raise ValueError(f"{name}.sql: {logical} is not a table or view of the warehouse "
                             f"({', '.join(sorted(known))}).")
        if dialect == "bigquery" and dataset:
            return f"`{dataset}.{m[1]}_{m[2]}`"
        return logical

    if dialect == "bigquery" and dataset and not _BQ_DATASET.fullmatch(dataset):
        raise ValueError(f"dataset={dataset!r} is not a BigQuery 'project.dataset' or 'dataset'.")
    return _TABLE.sub(table, sql).rstrip() + "\n"


def run(warehouse, name: str, start, end, dialect: str | None = None) -> tuple[list[str], list[tuple]]:
    """Run the query ``name`` for ``start`` .. ``end`` on ``warehouse`` (its ``query`` method).

    Args:
        warehouse: a warehouse of ``include.warehouse`` or of a cloud target.
        dialect: the warehouse's dialect; by default ``FLIGHTS_WAREHOUSE``.

    Returns:
        The column names and the rows.
    """
    if dialect is None:
        from include.config import settings

        dialect = settings().warehouse
    dataset = None
    if dialect == "bigquery" and getattr(warehouse, "dataset", None):
        dataset = f"{warehouse.project}.{warehouse.dataset}"
    return warehouse.query(render(name, dialect, start=start, end=end, dataset=dataset))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the queries and the question each answers")
    r = sub.add_parser("render", help="print a query in a dialect, ready to paste into a console")
    r.add_argument("name", choices=names())
    r.add_argument("--dialect", choices=DIALECTS, default="duckdb")
    r.add_argument("--start", help="first flight date, YYYY-MM-DD (without it: named parameters)")
    r.add_argument("--end", help="last flight date, YYYY-MM-DD")
    r.add_argument("--dataset", help="BigQuery: project.dataset of the warehouse")
    x = sub.add_parser("run", help="run a query on the warehouse of FLIGHTS_WAREHOUSE and print the result")
    x.add_argument("name", choices=names())
    x.add_argument("--start", required=True)
    x.add_argument("--end", required=True)
    a = p.parse_args(argv)
    if a.command == "list":
        for n in names():
            print(f"{n:32} {title(n)}")
    elif a.command == "render":
        print(render(a.name, a.dialect, start=a.start, end=a.end, dataset=a.dataset), end="")
    else:
        from include.summary import table
        from include.targets import get_target

        columns, rows = run(get_target().warehouse, a.name, a.start, a.end)
        print(table(columns, rows))
