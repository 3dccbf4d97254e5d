"""The least-privilege identities of the GCP target, rendered from settings.

Three service accounts (the Airflow workers and triggerer, the Dataproc runtime, the Vertex AI
trainer) get custom roles listing exact permissions (``infra/gcp/roles/*.yaml``, the files
``gcloud iam roles create --file`` takes) and bindings on the narrowest resource that works
(``infra/gcp/bindings/*.yaml``): the project only for job APIs that have no narrower resource,
the two runtime service accounts for ``actAs``, the BigQuery dataset, the Pub/Sub topic, and the
buckets with IAM Conditions on object name prefixes. ``render`` fills the ``${NAME}``
placeholders from ``GcpSettings.placeholders()`` plus what the templates need beyond them:

* ``AIRFLOW_SA``: the Airflow service account (default ``flights-airflow@<project>.iam.gserviceaccount.com``);
* ``LAKE_PREFIX`` / ``ARTIFACTS_PREFIX``: the object name prefixes of the lake and the artifacts root,
  which the bucket conditions are written against.

``python -m include.targets.gcp.iam`` prints the rendered templates; with ``--out DIR`` it writes
them, the condition files and ``apply.sh`` (the gcloud and bq commands) into DIR, as
``infra/gcp/README.md`` describes.
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

from include.config import REPO_ROOT
from include.targets.cloud import templates
from include.targets.gcp.settings import GcpSettings

TEMPLATE_DIR = REPO_ROOT / "infra" / "gcp"
ROLES = ("flightsAirflowJobs", "flightsActAs", "flightsBigQueryJobs", "flightsWarehouseTables",
         "flightsObjectReader", "flightsObjectWriter", "flightsObjectEditor", "flightsDataprocWorker")
BINDINGS = ("airflow", "dataproc-runtime", "vertex-training")
TEMPLATES = (*(f"roles/{r}" for r in ROLES), *(f"bindings/{b}" for b in BINDINGS))
DATAPROC_STAGING_PREFIX = "google-cloud-dataproc-metainfo"  # what Dataproc writes in the staging bucket


def default_airflow_sa(gcp: GcpSettings) -> str:
    """The Airflow service account infra/gcp/README.md creates: ``flights-airflow@<project>``."""
    return f"flights-airflow@{gcp.project}.iam.gserviceaccount.com"


def placeholders(gcp: GcpSettings, airflow_sa: str | None = None) -> dict[str, str]:
    """``gcp.placeholders()`` plus ``AIRFLOW_SA``, ``LAKE_PREFIX`` and ``ARTIFACTS_PREFIX``.

    Raises ValueError for a prefix the bucket conditions cannot express safely: empty (it would
    grant the whole bucket), with characters other than letters, digits, ``._-/``, or overlapping
    the landing prefix or the other root in the same bucket (a write grant would reach it).
    """
    shared = gcp.artifacts_bucket == gcp.lake_bucket
    lake, artifacts = templates.grantable_prefixes(gcp.lake_prefix, gcp.artifacts_prefix, env="FLIGHTS_GCP",
                                                   condition="an object name prefix", writer="Dataproc runtime",
                                                   shared_root=f"bucket {gcp.lake_bucket}" if shared else None)
    return {**gcp.placeholders(), "AIRFLOW_SA": airflow_sa or default_airflow_sa(gcp),
            "LAKE_PREFIX": lake, "ARTIFACTS_PREFIX": artifacts}


def render(name: str, gcp: GcpSettings, directory: Path = TEMPLATE_DIR, *, airflow_sa: str | None = None) -> dict:
    """The template ``name`` (``roles/<id>`` or ``bindings/<account>``) with every placeholder filled.

    A binding whose ``id`` starts with ``IfSet`` is kept only when every placeholder it uses has a
    value (the Pub/Sub publisher grant exists only when ``FLIGHTS_GCP_PUBSUB_TOPIC`` is set).

    Raises:
        KeyError: the template uses a placeholder that ``placeholders`` does not fill (named).
    """
    import yaml

    path = directory / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"No template {path}; the templates are {', '.join(TEMPLATES)}.")
    text = path.read_text(encoding="utf-8")
    values = placeholders(gcp, airflow_sa)
    templates.require_known(text, values, source=f"infra/gcp/{name}.yaml",
                            filler="include.targets.gcp.iam.placeholders()")
    return templates.render(yaml.safe_load(text), values, entries="bindings", marker="id")


def role_projects(gcp: GcpSettings, *, airflow_sa: str | None = None) -> dict[str, list[str]]:
    """Each custom role and the projects it must be created in (custom roles are per project)."""
    out: dict[str, set[str]] = {}
    for account in BINDINGS:
        for binding in render(f"bindings/{account}", gcp, airflow_sa=airflow_sa)["bindings"]:
            match = re.fullmatch(r"projects/([^/]+)/roles/([A-Za-z0-9_.]+)", binding["role"])
            if match:
                out.setdefault(match[2], set()).add(match[1])
    return {role: sorted(projects) for role, projects in sorted(out.items())}


def binding_command(member: str, binding: dict, condition_file: Path | None) -> str:
    """The gcloud (or bq) command that adds one binding to its resource's IAM policy."""
    q = shlex.quote
    kind, name, role = binding["resource"]["type"], binding["resource"]["name"], binding["role"]
    grant = f"--member={q(member)} --role={q(role)}"
    if kind == "project":
        return f"gcloud projects add-iam-policy-binding {q(name)} {grant} --condition=None"
    if kind == "serviceAccount":
        return f"gcloud iam service-accounts add-iam-policy-binding {q(name)} {grant}"
    if kind == "bucket":
        cond = f" --condition-from-file={q(str(condition_file))}" if condition_file else ""
        return f"gcloud storage buckets add-iam-policy-binding {q('gs://' + name)} {grant}{cond}"
    if kind == "dataset":
        return f"bq add-iam-policy-binding {grant} {q(name)}"
    if kind == "topic":
        return f"gcloud pubsub topics add-iam-policy-binding {q(name)} {grant}"
    if kind == "secret":
        return f"gcloud secrets add-iam-policy-binding {q(name)} {grant}"
    raise ValueError(f"Binding {binding.get('id')} is on a {kind!r}; known resource types: project, serviceAccount, "
                     "bucket, dataset, topic, secret.")


def write(out: Path, gcp: GcpSettings, *, airflow_sa: str | None = None) -> Path:
    """Write the rendered roles, the condition files and ``apply.sh`` into ``out``; returns apply.sh."""
    import yaml

    out = Path(out)
    (out / "roles").mkdir(parents=True, exist_ok=True)
    (out / "conditions").mkdir(parents=True, exist_ok=True)
    q = shlex.quote
    lines = ["#!/usr/bin/env bash", "# Rendered by python -m include.targets.gcp.iam; see infra/gcp/README.md.",
             "set -euo pipefail", "", "# Custom roles (gcloud iam roles update ... --file for an existing one)"]
    for role, projects in role_projects(gcp, airflow_sa=airflow_sa).items():
        path = out / "roles" / f"{role}.yaml"
        path.write_text(yaml.safe_dump(render(f"roles/{role}", gcp, airflow_sa=airflow_sa), sort_keys=False))
        lines += [f"gcloud iam roles create {role} --project={q(p)} --file={q(str(path))}" for p in projects]
    for account in BINDINGS:
        doc = render(f"bindings/{account}", gcp, airflow_sa=airflow_sa)
        lines += ["", f"# {account}: {doc['member']}"]
        for binding in doc["bindings"]:
            cond_file = None
            if binding.get("condition"):
                cond_file = out / "conditions" / f"{account}-{binding['id']}.yaml"
                cond_file.write_text(yaml.safe_dump(binding["condition"], sort_keys=False, width=100000))
            lines.append(binding_command(doc["member"], binding, cond_file))
    return templates.write_script(out / "apply.sh", lines)


def main(argv: list[str] | None = None) -> None:
    """Print every rendered template (``python -m include.targets.gcp.iam``), or write them with ``--out``."""
    import yaml

    from include.targets.gcp.settings import load_gcp_settings

    parser = argparse.ArgumentParser(prog="python -m include.targets.gcp.iam", description=__doc__.split("\n")[0])
    parser.add_argument("--airflow-service-account", default=None,
                        help="the service account Airflow runs as (default flights-airflow@<project>)")
    parser.add_argument("--out", type=Path, default=None,
                        help="write the roles, condition files and apply.sh here instead of printing")
    args = parser.parse_args(argv)
    gcp = load_gcp_settings()
    if args.out:
        print(write(args.out, gcp, airflow_sa=args.airflow_service_account))
        return
    for name in TEMPLATES:
        doc = render(name, gcp, airflow_sa=args.airflow_service_account)
        print(f"# {name}\n{yaml.safe_dump(doc, sort_keys=False, width=100000)}")


if __name__ == "__main__":
    main()
