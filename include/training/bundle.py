"""The scoring bundle: an XGBoost model plus the feature spec it was trained with.

The same bundle is used by the trainer, the champion/challenger comparison and the Spark
batch scorer, so a model always sees its features encoded the way it was trained.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from include.features import CATEGORICAL_FEATURES, NUMERIC_FEATURES

MODEL_FILE = "model.json"
SPEC_FILE = "feature_spec.json"


def feature_spec(categories: dict[str, list[str]]) -> dict:
    return {"numeric": list(NUMERIC_FEATURES), "categorical": {c: categories[c] for c in CATEGORICAL_FEATURES}}


def categories_of(pdf) -> dict[str, list[str]]:
    return {c: sorted(str(v) for v in pdf[c].dropna().unique()) for c in CATEGORICAL_FEATURES}


def prepare_frame(pdf, spec: dict):
    """Feature matrix in the spec's column order; categoricals with the spec's categories (unknown -> missing)."""
    import pandas as pd

    out = pd.DataFrame(index=pdf.index)
    for c in spec["numeric"]:
        out[c] = pd.to_numeric(pdf[c], errors="coerce").astype("float64")
    for c, cats in spec["categorical"].items():
        out[c] = pd.Categorical(pdf[c].astype("string"), categories=cats)
    return out


def save_bundle(directory: Path, booster, spec: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(directory / MODEL_FILE))
    (directory / SPEC_FILE).write_text(json.dumps(spec, indent=2), encoding="utf-8")
    return directory


@dataclass
class Bundle:
    booster: object
    spec: dict

    def predict(self, pdf):
        import xgboost as xgb

        matrix = xgb.DMatrix(prepare_frame(pdf, self.spec), enable_categorical=True)
        return self.booster.predict(matrix)


def load_bundle(directory: Path) -> Bundle:
    import xgboost as xgb

    directory = Path(directory)
    if not (directory / MODEL_FILE).exists():
        raise FileNotFoundError(f"No model bundle in {directory}: expected {MODEL_FILE} and {SPEC_FILE}.")
    booster = xgb.Booster()
    booster.load_model(str(directory / MODEL_FILE))
    booster.set_param({"device": "cpu", "nthread": 1})
    return Bundle(booster, json.loads((directory / SPEC_FILE).read_text(encoding="utf-8")))


def bundle_from_bytes(model_bytes: bytes, spec: dict) -> Bundle:
    import xgboost as xgb

    booster = xgb.Booster()
    booster.load_model(bytearray(model_bytes))
    booster.set_param({"device": "cpu", "nthread": 1})
    return Bundle(booster, spec)
