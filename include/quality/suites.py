"""Load Great Expectations suites from their JSON files and summarise validation results.

Suites live in ``expectations/<layer>/<table>.json`` in GX 1.x's own suite format, so they
can be edited by hand or with GX tooling. They ship with the code: next to ``include/`` in
a checkout, and inside the code artefact's zip on a cluster (``include.targets.aws.artifact``),
where they are read from the archive ``include`` was imported from. ``FLIGHTS_SUITES_DIR``
points at another folder. This module imports great_expectations lazily.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

from include.config import REPO_ROOT

SUITES_DIR = REPO_ROOT / "expectations"


def suites_root():
    """The folder of the suites: ``FLIGHTS_SUITES_DIR``, the checkout's, or the code zip's ``expectations/``."""
    override = os.environ.get("FLIGHTS_SUITES_DIR", "").strip()
    if override:
        return Path(override)
    if SUITES_DIR.is_dir():
        return SUITES_DIR
    import include

    archive = getattr(getattr(include, "__loader__", None), "archive", None)  # imported from a zip (zipimport)
    if archive and zipfile.is_zipfile(archive):
        return zipfile.Path(archive, "expectations/")
    raise FileNotFoundError(f"No expectation suites at {SUITES_DIR} and include/ was not imported from a zip "
                            "holding expectations/: ship the suites with the code (artifact.build_artifact does) "
                            "or set FLIGHTS_SUITES_DIR.")


def _known(root) -> list[str]:
    return sorted(f"{layer.name}/{f.name[:-5]}" for layer in root.iterdir() if layer.is_dir()
                  for f in layer.iterdir() if f.name.endswith(".json"))


def suite_path(suite: str):
    root = suites_root()
    path = root.joinpath(*f"{suite}.json".split("/"))
    if not path.exists():
        known = _known(root) if root.exists() else []
        raise FileNotFoundError(f"No expectation suite {suite!r} at {path}; known suites: {', '.join(known)}")
    return path


def load_suite_dict(suite: str) -> dict[str, Any]:
    return json.loads(suite_path(suite).read_text(encoding="utf-8"))


def build_suite(suite_dict: dict[str, Any]):
    """A GX ExpectationSuite object from the stored JSON."""
    import great_expectations as gx
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    suite = gx.ExpectationSuite(name=suite_dict["name"], meta=suite_dict.get("meta") or {})
    for exp in suite_dict["expectations"]:
        cfg = ExpectationConfiguration(type=exp["type"], kwargs=exp["kwargs"], meta=exp.get("meta") or {})
        suite.add_expectation_configuration(cfg)
    return suite


def _observed(result: dict[str, Any]) -> Any:
    if "observed_value" in result:
        return result["observed_value"]
    keys = ("unexpected_count", "unexpected_percent", "partial_unexpected_list")
    return {k: result[k] for k in keys if k in result}


def summarise(validation_result: Any, suite: str, row_count: int) -> dict[str, Any]:
    """A JSON-able summary: success, counts, and each failed expectation with its observed value."""
    failed = []
    for r in validation_result.results:
        if not r.success:
            cfg = r.expectation_config
            failed.append(
                {
                    "expectation": cfg.type,
                    "reason": (cfg.meta or {}).get("reason"),
                    "kwargs": {k: v for k, v in cfg.kwargs.items() if k != "batch_id"},
                    "observed": _observed(r.result or {}),
                    "exception": (r.exception_info or {}).get("exception_message"),
                }
            )
    return {
        "suite": suite,
        "success": bool(validation_result.success),
        "evaluated": len(validation_result.results),
        "failed_count": len(failed),
        "failed": failed,
        "row_count": row_count,
    }


def describe_failures(summary: dict[str, Any]) -> str:
    lines = [
        f"Quality gate {summary['suite']} failed {summary['failed_count']} of {summary['evaluated']} expectations "
        f"on {summary['row_count']} rows for {summary.get('interval', '?')}:"
    ]
    for f in summary["failed"]:
        target = f["kwargs"].get("column") or f["kwargs"].get("file") or f["kwargs"].get("column_A")
        where = f" on {target!r}" if target else ""
        reason = f" [{f['reason']}]" if f.get("reason") else ""
        lines.append(f"  - {f['expectation']}{where}{reason}: observed {json.dumps(f['observed'], default=str)[:400]}")
    if summary.get("quarantine_reasons"):
        lines.append(f"  quarantined rows by reason: {summary['quarantine_reasons']}")
    if summary.get("docs_page"):
        lines.append(f"  Data Docs: {summary['docs_page']}")
    return "\n".join(lines)
