"""Train XGBoost and a logistic-regression baseline on an exported training set.

The same entry point runs in the Airflow task (local target) or inside a managed
training job (SageMaker, Vertex AI, Azure ML), reading the exported Parquet folder:

    python -m include.training.train --data DIR --output DIR [--params JSON]

Outputs: ``bundle/`` (XGBoost model + feature spec, with the training reference for drift), ``baseline/model.joblib``,
``metrics.json`` (holdout metrics of both models) and ``report.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
from pathlib import Path
from typing import Any

from include.features import CATEGORICAL_FEATURES, LABEL, NUMERIC_FEATURES
from include.training.outputs import TrainingOutputs
from include.training.bundle import categories_of, feature_spec, prepare_frame, save_bundle
from include.training.metrics import evaluate

log = logging.getLogger(__name__)

DEFAULT_PARAMS: dict[str, Any] = {
    "n_estimators": 400,
    "max_depth": 6,
    "learning_rate": 0.08,
    "subsample": 0.9,
    "colsample_bytree": 0.8,
    "min_child_weight": 5,
    "early_stopping_rounds": 30,
    "device": "auto",
    "seed": 13,
}


def gpu_visible() -> bool:
    if not shutil.which("nvidia-smi"):
        return False
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def pick_device(requested: str = "auto") -> str:
    """``cuda`` when asked for or when a GPU is visible to a CUDA-enabled XGBoost, else ``cpu``."""
    import xgboost as xgb

    cuda_build = bool(xgb.build_info().get("USE_CUDA"))
    if requested == "cpu":
        return "cpu"
    if requested == "cuda":
        if not (cuda_build and gpu_visible()):
            raise RuntimeError(
                "device='cuda' was requested but no GPU is usable: install the CUDA build of xgboost "
                "(`pip install xgboost`, not xgboost-cpu) on a host where `nvidia-smi -L` lists a GPU, or use 'auto'."
            )
        return "cuda"
    return "cuda" if cuda_build and gpu_visible() else "cpu"


def load_dataset(data_dir: Path):
    import pandas as pd

    files = sorted(Path(data_dir).glob("**/*.parquet"))
    if not files:
        raise FileNotFoundError(f"No Parquet files in {data_dir}: export the training set first.")
    df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    df = df[df[LABEL].notna()].copy()
    df[LABEL] = df[LABEL].astype(int)
    parts = {s: df[df["split"] == s] for s in ("train", "validation", "holdout")}
    empty = [s for s, p in parts.items() if p.empty]
    if empty:
        raise ValueError(f"The training set in {data_dir} has no labelled rows for split(s) {empty}.")
    return parts


def baseline_pipeline():
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    pre = ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), NUMERIC_FEATURES),
            ("cat", OneHotEncoder(handle_unknown="ignore", min_frequency=20), CATEGORICAL_FEATURES),
        ]
    )
    return Pipeline([("features", pre), ("model", LogisticRegression(max_iter=2000, C=1.0))])


def _baseline_frame(pdf):
    out = pdf[NUMERIC_FEATURES + CATEGORICAL_FEATURES].copy()
    for c in NUMERIC_FEATURES:
        out[c] = out[c].astype("float64")
    for c in CATEGORICAL_FEATURES:
        out[c] = out[c].astype(str)
    return out


def train_and_evaluate(data_dir: Path, output_dir: Path, params: dict[str, Any] | None = None) -> TrainingOutputs:
    import joblib
    import xgboost as xgb

    p = {**DEFAULT_PARAMS, **(params or {})}
    device = pick_device(str(p["device"]))
    parts = load_dataset(Path(data_dir))
    train, val, hold = parts["train"], parts["validation"], parts["holdout"]
    spec = feature_spec(categories_of(train))
    log.info("Training on %d rows (validation %d, holdout %d) on %s", len(train), len(val), len(hold), device)

    model = xgb.XGBClassifier(
        n_estimators=int(p["n_estimators"]),
        max_depth=int(p["max_depth"]),
        learning_rate=float(p["learning_rate"]),
        subsample=float(p["subsample"]),
        colsample_bytree=float(p["colsample_bytree"]),
        min_child_weight=float(p["min_child_weight"]),
        early_stopping_rounds=int(p["early_stopping_rounds"]),
        tree_method="hist",
        device=device,
        enable_categorical=True,
        max_cat_to_onehot=1,
        eval_metric="logloss",
        random_state=int(p["seed"]),
        n_jobs=2,
    )
    model.fit(prepare_frame(train, spec), train[LABEL], eval_set=[(prepare_frame(val, spec), val[LABEL])],
              verbose=False)
    xgb_hold = model.predict_proba(prepare_frame(hold, spec))[:, 1]

    baseline = baseline_pipeline().fit(_baseline_frame(train), train[LABEL])
    base_hold = baseline.predict_proba(_baseline_frame(hold))[:, 1]

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    # The holdout metrics come from predict_proba, which stops at the best iteration; the bundle must
    # score exactly the same trees, so the trees after it are cut off before saving.
    booster = model.get_booster()[: int(model.best_iteration) + 1]
    from include.drift import reference  # the training distributions travel with the version (drift)

    spec = {**spec, "reference": reference(train, spec, model.predict_proba(prepare_frame(train, spec))[:, 1])}
    save_bundle(output_dir / "bundle", booster, spec)
    (output_dir / "baseline").mkdir(exist_ok=True)
    joblib.dump(baseline, output_dir / "baseline" / "model.joblib")

    metrics = {"xgboost": evaluate(hold[LABEL], xgb_hold), "baseline": evaluate(hold[LABEL], base_hold)}
    metrics["xgboost"]["best_iteration"] = float(model.best_iteration)
    used = {**p, "device": device}
    from include.training.report import write_report

    write_report(output_dir / "report.png", hold[LABEL].to_numpy(), {"xgboost": xgb_hold, "baseline": base_hold},
                 booster.get_score(importance_type="gain"))
    # last: a folder with metrics.json holds complete outputs (include.training.outputs)
    (output_dir / "metrics.json").write_text(json.dumps({"metrics": metrics, "params": used}, indent=2))
    return TrainingOutputs(output_dir=output_dir, metrics=metrics, params=used, device=device)


def main(argv: list[str] | None = None) -> None:
    a = argparse.ArgumentParser(description=__doc__)
    a.add_argument("--data", required=True)
    a.add_argument("--output", required=True)
    a.add_argument("--params", default="{}")
    args = a.parse_args(argv)
    out = train_and_evaluate(Path(args.data), Path(args.output), json.loads(args.params))
    print(json.dumps(out.metrics, indent=2))


if __name__ == "__main__":
    main()
