"""What the loop produced, for people: rows per layer, gates, models, warehouse, one query."""

from __future__ import annotations

from include.config import Settings
from include.lake import TABLES, table_uri

ANALYST_QUERY = """
SELECT carrier,
       count(*)                                  AS flights,
       -- round(double, n) is not PostgreSQL's: round(x * 10^n) / 10^n is every warehouse's
       round(avg(delay_probability) * 1000) / 1000.0 AS predicted_delay_rate,
       round(avg(actual_is_delayed) * 1000) / 1000.0 AS actual_delay_rate
FROM analytics.prediction_outcomes
WHERE flight_date BETWEEN DATE '2013-03-01' AND DATE '2013-03-07'
GROUP BY carrier
ORDER BY predicted_delay_rate DESC
""".strip()


def lake_counts(lake_root: str) -> dict[str, int | None]:
    """Row count of every lake table (None when it does not exist yet), read from the Delta logs."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    counts: dict[str, int | None] = {}
    for name in TABLES:
        try:
            counts[name] = DeltaTable(table_uri(lake_root, name)).to_pyarrow_dataset().count_rows()
        except TableNotFoundError:
            counts[name] = None
    return counts


def table(columns: list[str], rows: list[tuple]) -> str:
    cells = [[str(c) for c in columns]] + [["" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join("    " + line for line in lines)


def monitoring_picture(cfg: Settings, target, champion):
    """``$FLIGHTS_HOME/reports/monitoring.png`` from the ops tables (``include.monitoring_report``), or None."""
    from include.config import retraining_thresholds
    from include.monitoring_report import monitoring_data, write_monitoring_report

    holdout = {champion.version: champion.metrics["auc"]} if champion and "auc" in champion.metrics else {}
    return write_monitoring_report(cfg.home / "reports" / "monitoring.png", monitoring_data(target.warehouse),
                                   holdout, retraining_thresholds())


def render(cfg: Settings, target) -> str:
    out = ["", "=" * 72, "Summary", "=" * 72, "", "Lake (rows per table):"]
    counts = lake_counts(str(cfg.lake_root))
    out.append(table(["table", "rows"], [(k, v if v is not None else "-") for k, v in counts.items()]))

    wh = target.warehouse
    out += ["", "Quality gates (latest run per suite):"]
    cols, rows = wh.query("""
        SELECT suite, interval_start, interval_end, success, evaluated, failed, row_count AS rows_kept,
               coalesce(quarantined, 0) AS quarantined
        FROM (SELECT *, row_number() OVER (PARTITION BY suite, interval_start ORDER BY recorded_at DESC) AS rn
              FROM ops.quality_gates) q
        WHERE rn = 1 ORDER BY interval_start, suite""")
    out.append(table(cols, rows))

    out.append(f"    Data Docs: {cfg.lake_root / '_docs' / 'validations'}")
    failed = wh.query("SELECT count(*) FROM ops.quality_gates WHERE NOT success")[1][0][0]
    out.append(f"    failed gate runs so far: {failed}")

    champion = target.registry.champion()
    out += ["", "Models (holdout metrics):"]
    cols, rows = wh.query("""
        SELECT challenger_version AS version, promoted,
               round(challenger_auc * 10000) / 10000.0 AS xgboost_auc,
               round(baseline_auc * 10000) / 10000.0 AS baseline_auc,
               round(champion_auc * 10000) / 10000.0 AS champion_auc_then, reason
        FROM ops.model_decisions WHERE action IS DISTINCT FROM 'retraining_requested' ORDER BY recorded_at""")
    out.append(table(cols, rows))
    _, requests = wh.query("""
        SELECT champion_version, run_id, reason FROM ops.model_decisions
        WHERE action = 'retraining_requested' ORDER BY recorded_at""")
    for version, run_id, why in requests:
        out.append(f"    retraining requested for v{version} by {run_id}: {why[:300]}{'…' if len(why) > 300 else ''}")
    if champion:
        m = champion.metrics
        out.append(f"    champion: {champion.name} v{champion.version}  AUC {m.get('auc', float('nan')):.4f}  "
                   f"log loss {m.get('log_loss', float('nan')):.4f}  Brier {m.get('brier', float('nan')):.4f}  "
                   f"ECE {m.get('ece', float('nan')):.4f}")
        out.append(f"    MLflow run: {champion.url}")
    else:
        out.append("    no champion yet")
    picture = monitoring_picture(cfg, target, champion)
    if picture is not None:
        out.append(f"    realised AUC and ECE over time, and PSI per feature: {picture}")

    out += ["", "Warehouse (rows per table):"]
    rows = []
    for t in ("analytics.flight_delay_predictions", "analytics.flight_outcomes", "ops.dag_runs", "ops.task_runs"):
        rows.append((t, wh.query(f"SELECT count(*) FROM {t}")[1][0][0]))
    out.append(table(["table", "rows"], rows))

    out += ["", "Analyst query (predicted vs actual delay rate by carrier, 2013-03-01..07):", ""]
    out += ["    " + line for line in ANALYST_QUERY.splitlines()]
    out.append("")
    cols, rows = wh.query(ANALYST_QUERY)
    out.append(table(cols, rows))
    out.append("")
    return "\n".join(out)
