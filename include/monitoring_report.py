"""The monitoring picture: how the models did once the outcomes landed, and how far their inputs moved.

Two panels and a heat map, from the warehouse's ``ops`` tables (``make run`` writes it beside its summary):

* realised AUC over the trailing 7 days, per model version, with the retraining floor (the version's
  holdout AUC less ``FLIGHTS_RETRAIN_AUC_DROP``);
* realised ECE over the trailing 7 days, with ``FLIGHTS_RETRAIN_MAX_ECE``;
* the PSI of every feature and of the score per scored interval, against the scoring version's training
  data; watched columns are marked, and a cell above ``FLIGHTS_RETRAIN_MAX_PSI`` is outlined.

Days whose trailing 7 days hold fewer flights than ``FLIGHTS_RETRAIN_MIN_FLIGHTS`` are drawn hollow: they
are measured, but not judged.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from include.config import RetrainingThresholds
from include.monitoring import as_date


def monitoring_data(warehouse) -> dict:
    """{"performance": {version: [(period_end, flights, auc, ece)]}, "drift": {(interval, version): {feature: psi}}}."""
    _, rows = warehouse.query(
        "SELECT model_version, period_end, flights, auc, ece FROM ops.model_performance_latest "
        "WHERE scope = 'trailing_7d' ORDER BY model_version, period_end")
    performance: dict[str, list] = defaultdict(list)
    for version, end, flights, auc, ece in rows:
        performance[str(version)].append((as_date(end), int(flights), None if auc is None else float(auc),
                                          None if ece is None else float(ece)))
    _, rows = warehouse.query(
        "SELECT model_version, interval_start, interval_end, feature, psi, recorded_at FROM ops.feature_drift "
        "ORDER BY recorded_at")
    drift: dict[tuple, dict[str, float]] = defaultdict(dict)
    for version, start, end, feature, psi, _ in rows:  # the latest scoring of an interval wins
        if psi is None:  # the interval had no rows to compare
            continue
        start, end = as_date(start), as_date(end)
        label = str(start) if start == end else f"{start}..{end}"
        drift[(label, str(version))][feature] = float(psi)
    return {"performance": dict(performance), "drift": dict(drift)}


def write_monitoring_report(path: Path, data: dict, holdout_auc: dict[str, float],
                            thresholds: RetrainingThresholds) -> Path | None:
    """The PNG at ``path`` (None when nothing was measured yet)."""
    if not data["performance"] and not data["drift"]:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    features = sorted({f for cells in data["drift"].values() for f in cells})
    columns = sorted(data["drift"])
    fig = plt.figure(figsize=(13, 5 + 0.22 * len(features)))
    grid = fig.add_gridspec(2, 2, width_ratios=[1, 1.2], height_ratios=[1, 1])
    auc_ax, ece_ax, heat = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[1, 0]), fig.add_subplot(grid[:, 1])
    for version, series in sorted(data["performance"].items()):
        days = [d for d, *_ in series]
        judged = [n >= thresholds.min_flights for _, n, _, _ in series]
        for ax, values in ((auc_ax, [a for *_, a, _ in series]), (ece_ax, [e for *_, e in series])):
            line, = ax.plot(days, [np.nan if v is None else v for v in values], label=f"v{version}")
            ax.scatter(days, [np.nan if v is None else v for v in values], s=18, color=line.get_color(),
                       facecolors=[line.get_color() if j else "none" for j in judged])
        if version in holdout_auc:
            auc_ax.axhline(holdout_auc[version] - thresholds.auc_drop, linestyle="--", linewidth=1,
                           color=auc_ax.lines[-1].get_color(), label=f"v{version} retraining floor")
    ece_ax.axhline(thresholds.max_ece, linestyle="--", linewidth=1, color="tab:red", label="retraining threshold")
    auc_ax.set(title="Realised AUC, trailing 7 days (hollow: too few flights to judge)", ylabel="AUC")
    ece_ax.set(title="Realised calibration error (ECE), trailing 7 days", ylabel="ECE")
    for ax in (auc_ax, ece_ax):
        ax.legend(loc="best", fontsize=8)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    if features:
        matrix = np.array([[data["drift"][c].get(f, np.nan) for c in columns] for f in features])
        image = heat.imshow(np.minimum(matrix, 1.0), aspect="auto", cmap="Reds", vmin=0, vmax=1.0)
        heat.set_yticks(range(len(features)),
                        [f"{f} *" if f in thresholds.watched else f for f in features], fontsize=8)
        heat.set_xticks(range(len(columns)), [f"{c} v{v}" for c, v in columns], fontsize=7, rotation=30, ha="right")
        for i in range(len(features)):
            for j in range(len(columns)):
                if features[i] in thresholds.watched and matrix[i, j] > thresholds.max_psi:
                    heat.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", lw=1.5))
        fig.colorbar(image, ax=heat, label="PSI (capped at 1)")
        heat.set_title(f"PSI against the training data (* watched; outlined: above {thresholds.max_psi})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
