"""The least-privilege identities of the Azure target, rendered from settings.

Three user-assigned managed identities (``flights-airflow`` for the Airflow workers and triggerer,
``flights-spark`` for the HDInsight cluster or Synapse workspace, ``flights-training`` for the
Azure ML compute cluster) get custom roles listing exact actions (``infra/azure/roles/*.json``,
the files ``az role definition create --role-definition`` takes) and role assignments on the
narrowest scope that works (``infra/azure/assignments/*.yaml``): one container of the one storage
account, with an attribute-based condition on the blob path (and on the listing prefix), or the
one Azure ML workspace, or the one Synapse Spark pool. ``render`` fills the ``${NAME}``
placeholders from ``AzureSettings.placeholders()`` plus ``LAKE_PREFIX`` / ``ARTIFACTS_PREFIX``.

An assignment's ``paths`` become its condition (``condition``): every data action of the role is
allowed only on blobs whose path starts with one of them, and a listing only with such a prefix.
``python -m include.targets.azure.iam`` prints the rendered roles and assignments; with
``--out DIR`` it writes them and ``apply.sh`` (the ``az`` commands), as ``infra/azure/README.md``
describes.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from include.config import REPO_ROOT
from include.targets.azure.settings import AzureSettings
from include.targets.cloud import templates

TEMPLATE_DIR = REPO_ROOT / "infra" / "azure"
ROLES = {"flights blob reader": "flights-blob-reader", "flights blob creator": "flights-blob-creator",
         "flights blob editor": "flights-blob-editor", "flights ml jobs": "flights-ml-jobs"}
BUILT_IN = ("Synapse Compute Operator",)  # Synapse RBAC role, granted with `az synapse role assignment create`
PII_KEY_ROLE = "Key Vault Secrets User"  # built-in: reads a secret's value; granted on the one secret only
IDENTITIES = ("airflow", "spark", "training")
BLOB_PATH = "@Resource[Microsoft.Storage/storageAccounts/blobServices/containers/blobs:path]"
LIST_PREFIX = "@Request[Microsoft.Storage/storageAccounts/blobServices/containers/blobs:prefix]"
READ = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read"


def placeholders(azure: AzureSettings) -> dict[str, str]:
    """``azure.placeholders()`` plus ``LAKE_PREFIX`` and ``ARTIFACTS_PREFIX``.

    Raises ValueError for a prefix a path condition cannot express safely: empty (the whole
    container), with characters other than letters, digits, ``._-/``, or overlapping landing or
    the other root in the same container (a write grant would reach it).
    """
    shared = azure.artifacts_container == azure.lake_container
    lake, artifacts = templates.grantable_prefixes(azure.lake_prefix, azure.artifacts_prefix, env="FLIGHTS_AZURE",
                                                   condition="a path condition", writer="Spark identity",
                                                   shared_root=f"container {azure.lake_container}" if shared else None)
    return {**azure.placeholders(), "LAKE_PREFIX": lake, "ARTIFACTS_PREFIX": artifacts}


def _template(relative: str, values: dict) -> str:
    path = TEMPLATE_DIR / relative
    if not path.is_file():
        raise FileNotFoundError(f"No template {path}.")
    text = path.read_text(encoding="utf-8")
    templates.require_known(text, values, source=f"infra/azure/{relative}",
                            filler="include.targets.azure.iam.placeholders()")
    return text


def role(name: str, azure: AzureSettings) -> dict:
    """The custom role definition ``name`` (e.g. ``flights blob reader``), placeholders filled."""
    if name not in ROLES:
        raise KeyError(f"{name!r} is not a custom role of infra/azure/roles; known: {', '.join(ROLES)}.")
    values = placeholders(azure)
    return templates.fill(json.loads(_template(f"roles/{ROLES[name]}.json", values)), values)


def condition(data_actions: list[str], paths: list[str]) -> str:
    """The ABAC condition (version 2.0) allowing ``data_actions`` only under ``paths``.

    Two blocks: every action on a blob (reads excluding listings, writes, deletes, renames) needs
    the blob's path to start with one of ``paths``; a listing (``Blob.List``) needs its prefix to.
    """
    def paths_match(attribute: str) -> str:
        return "\n  OR ".join(f"{attribute} StringStartsWith '{p}'" for p in paths)

    blob_actions = " OR ".join(f"ActionMatches{{'{a}'}}" for a in data_actions)
    blocks = [f"(\n (\n  !(({blob_actions}) AND NOT SubOperationMatches{{'Blob.List'}})\n )\n OR\n (\n  "
              f"{paths_match(BLOB_PATH)}\n )\n)"]
    if READ in data_actions:
        blocks.append(f"(\n (\n  !(ActionMatches{{'{READ}'}} AND SubOperationMatches{{'Blob.List'}})\n )\n OR\n (\n  "
                      f"{paths_match(LIST_PREFIX)}\n )\n)")
    return "\nAND\n".join(blocks)


def scope_id(azure: AzureSettings, scope: dict) -> str:
    """The Azure resource id an assignment's ``scope`` names."""
    kind, name = scope["type"], scope["name"]
    if kind == "container":
        return f"{azure.storage_scope}/blobServices/default/containers/{name}"
    if kind == "workspace":
        return azure.workspace_scope.rsplit("/", 1)[0] + f"/{name}"
    if kind == "synapse-spark-pool":
        workspace, pool = name.split("/", 1)
        return f"workspaces/{workspace}/bigDataPools/{pool}"  # a Synapse RBAC scope, within the workspace
    raise ValueError(f"Assignment scope type {kind!r} is unknown; use container, workspace or synapse-spark-pool.")


def assignments(identity: str, azure: AzureSettings) -> dict:
    """The identity's assignments (``infra/azure/assignments/<identity>.yaml``), rendered.

    Each assignment gets ``scope_id`` and, when it has ``paths``, its ABAC ``condition``. An
    assignment whose ``id`` starts with ``IfSet`` is kept only when its placeholders have values
    (the Synapse grant exists only with a Synapse workspace and pool configured).
    """
    import yaml

    if identity not in IDENTITIES:
        raise KeyError(f"{identity!r} is not an identity of infra/azure/assignments; known: {', '.join(IDENTITIES)}.")
    values = placeholders(azure)
    if azure.spark_service != "synapse":
        values = {**values, "SYNAPSE_WORKSPACE": "", "SYNAPSE_SPARK_POOL": ""}
    doc = templates.render(yaml.safe_load(_template(f"assignments/{identity}.yaml", values)), values,
                           entries="assignments", marker="id")
    for a in doc["assignments"]:
        a["scope_id"] = scope_id(azure, a["scope"])
        if a.get("paths"):
            a["condition"] = condition(role(a["role"], azure)["DataActions"], a["paths"])
    return doc


def write(out: Path, azure: AzureSettings) -> Path:
    """Write the rendered roles and ``apply.sh`` into ``out``; returns apply.sh."""
    out = Path(out)
    (out / "roles").mkdir(parents=True, exist_ok=True)
    q = shlex.quote
    rg = q(azure.resource_group)
    lines = ["#!/usr/bin/env bash", "# Rendered by python -m include.targets.azure.iam; see infra/azure/README.md.",
             "set -euo pipefail", "", "# Custom roles (az role definition update for an existing one)"]
    for name, file in ROLES.items():
        path = out / "roles" / f"{file}.json"
        path.write_text(json.dumps(role(name, azure), indent=2) + "\n")
        lines.append(f"az role definition create --role-definition {q(str(path))}")
    for identity in IDENTITIES:
        doc = assignments(identity, azure)
        name = doc["identity"]
        var = f"{identity.upper()}_PRINCIPAL"
        lines += ["", f"# {identity}: the user-assigned managed identity {name}",
                  f"az identity create -g {rg} -n {q(name)} -l {q(azure.location)} >/dev/null",
                  f"{var}=$(az identity show -g {rg} -n {q(name)} --query principalId -o tsv)"]
        for a in doc["assignments"]:
            if a["scope"]["type"] == "synapse-spark-pool":
                workspace, pool = a["scope"]["name"].split("/", 1)
                lines.append(f"az synapse role assignment create --workspace-name {q(workspace)} "
                             f"--role {q(a['role'])} --assignee-object-id \"${var}\" "
                             f"--assignee-principal-type ServicePrincipal --scope {q(a['scope_id'])}")
                continue
            cond = (f" --condition {q(a['condition'])} --condition-version 2.0" if a.get("condition") else "")
            lines.append(f"az role assignment create --assignee-object-id \"${var}\" "
                         f"--assignee-principal-type ServicePrincipal --role {q(a['role'])} "
                         f"--scope {q(a['scope_id'])}{cond}")
    if azure.pii_key_secret_uri:  # the vault may be in another resource group: its id is looked up by name
        vault, name = pii_key_secret_parts(azure.pii_key_secret_uri)
        lines += ["", "# spark: read the PII key (FLIGHTS_AZURE_PII_KEY_SECRET_URI), that one secret only",
                  f"VAULT_ID=$(az keyvault show -n {q(vault)} --query id -o tsv)",
                  f"az role assignment create --assignee-object-id \"$SPARK_PRINCIPAL\" "
                  f"--assignee-principal-type ServicePrincipal --role {q(PII_KEY_ROLE)} "
                  f"--scope \"$VAULT_ID\"/secrets/{q(name)}"]
    return templates.write_script(out / "apply.sh", lines)


def pii_key_secret_parts(url: str) -> tuple[str, str]:
    """(vault, secret) of a Key Vault secret URL, ``https://<vault>.vault.azure.net/secrets/<name>[/<version>]``."""
    host, _, path = url.split("#")[0].removeprefix("https://").partition("/")
    return host.split(".", 1)[0], path.split("/")[1]


def main(argv: list[str] | None = None) -> None:
    """Print every rendered role and assignment (``python -m include.targets.azure.iam``), or write them."""
    import yaml

    from include.targets.azure.settings import load_azure_settings

    parser = argparse.ArgumentParser(prog="python -m include.targets.azure.iam", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="write the roles and apply.sh here instead of printing")
    args = parser.parse_args(argv)
    azure = load_azure_settings()
    if args.out:
        print(write(args.out, azure))
        return
    for name in ROLES:
        print(f"# role {name}\n{json.dumps(role(name, azure), indent=2)}")
    for identity in IDENTITIES:
        rendered = yaml.safe_dump(assignments(identity, azure), sort_keys=False, width=100000)
        print(f"# assignments/{identity}\n{rendered}")


if __name__ == "__main__":
    main()
