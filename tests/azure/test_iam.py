"""Azure roles and assignments: valid for az, least privilege, each action one the code needs, and refusals hold.

``CALLS`` says, per identity, which call of our code (file and function, or the Azure service
acting for it) needs each action, and where (container and blob path). A new client call needs a
line here and an action in ``infra/azure/roles``; an action no line needs fails the test. Storage
grants are checked by evaluating the rendered ABAC conditions (the exact text ``az role
assignment create --condition`` receives) against the request: action, blob path, listing prefix.
"""

from __future__ import annotations

import json
import re

import pytest

from include.config import REPO_ROOT
from include.targets.azure import iam
from include.targets.azure.settings import AzureSettings

AZ = AzureSettings.example()
AIRFLOW, SPARK, TRAINING = "airflow", "spark", "training"
BLOBS = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs"
READ, WRITE, ADD, DELETE, MOVE = (f"{BLOBS}/read", f"{BLOBS}/write", f"{BLOBS}/add/action", f"{BLOBS}/delete",
                                  f"{BLOBS}/move/action")
ML = "Microsoft.MachineLearningServices/workspaces"
LAKE, ARTIFACTS = AZ.lake_container, AZ.artifacts_container
LP, AP = AZ.lake_prefix, AZ.artifacts_prefix

# (identity, where the call is, [(action, container or "workspace", blob path or listing prefix, is a listing)])
CALLS = [
    (AIRFLOW, "include/targets/azure/adls.py::AdlsLake.exists (list blobs under a landing file or a job output)",
     [(READ, LAKE, "landing/flights/", True), (READ, LAKE, f"{LP}/results/", True)]),
    (AIRFLOW, "include/targets/azure/adls.py::AdlsLake.read_json (gate results) and local_dir (exports)",
     [(READ, LAKE, f"{LP}/results/bronze/x.json", False), (READ, LAKE, f"{LP}/exports/predictions/", True)]),
    (AIRFLOW, "include/targets/azure/artifact.py::upload (the code artefact and the Delta jars, once per hash)",
     [(READ, ARTIFACTS, f"{AP}/code/", True), (WRITE, ARTIFACTS, f"{AP}/code/abc/flights.zip", False),
      (ADD, ARTIFACTS, f"{AP}/code/abc/flights.zip", False), (WRITE, ARTIFACTS, f"{AP}/jars/delta.jar", False)]),
    (AIRFLOW, "include/targets/azure/livy_operators.py::execute (require_code: the code is in the container)",
     [(READ, ARTIFACTS, f"{AP}/code/abc/", True)]),
    (AIRFLOW, "include/targets/azure/azureml.py::download_output (jobs.download of the model output through "
              "the identity-based datastore)",
     [(f"{ML}/jobs/read", "workspace", "", False), (f"{ML}/datastores/read", "workspace", "", False),
      (READ, ARTIFACTS, f"{AP}/training/", True), (READ, ARTIFACTS, f"{AP}/training/job/metrics.json", False)]),
    (AIRFLOW, "include/targets/azure/azureml_registry.py::publish_bundle (the scoring bundle, marker last) "
              "and bundle_dir (download)",
     [(WRITE, LAKE, f"{LP}/models/flights/1/bundle/model.json", False),
      (ADD, LAKE, f"{LP}/models/flights/1/bundle/model.json", False),
      (READ, LAKE, f"{LP}/models/flights/1/bundle/", True)]),
    (AIRFLOW, "include/targets/azure/azureml_operators.py (jobs.get, jobs.create_or_update, jobs.begin_cancel)",
     [(f"{ML}/read", "workspace", "", False), (f"{ML}/jobs/read", "workspace", "", False),
      (f"{ML}/jobs/write", "workspace", "", False), (f"{ML}/jobs/cancel/action", "workspace", "", False),
      (f"{ML}/computes/read", "workspace", "", False)]),
    (AIRFLOW, "include/targets/azure/azureml.py::environment (environments.create_or_update of the job's image)",
     [(f"{ML}/environments/read", "workspace", "", False), (f"{ML}/environments/write", "workspace", "", False)]),
    (AIRFLOW, "include/targets/azure/azureml_registry.py (models.create_or_update, models.list, models.get, "
              "tags moved by models.create_or_update)",
     [(f"{ML}/models/read", "workspace", "", False), (f"{ML}/models/write", "workspace", "", False),
      (f"{ML}/models/versions/read", "workspace", "", False),
      (f"{ML}/models/versions/write", "workspace", "", False)]),
    (AIRFLOW, "include/targets/azure/azureml_registry.py::bundle_dir (models.download from the datastore)",
     [(f"{ML}/datastores/read", "workspace", "", False), (READ, ARTIFACTS, f"{AP}/training/job/model/", True)]),
    (SPARK, "spark_jobs/bronze_landing.py (reads the landed files)",
     [(READ, LAKE, "landing/flights/flights_2013-01-01.csv", False), (READ, LAKE, "landing/flights/", True)]),
    (SPARK, "spark_jobs/*.py (Delta tables: data files, commits by rename, VACUUM, exports, gate results)",
     [(READ, LAKE, f"{LP}/silver/flights/_delta_log/", True),
      (WRITE, LAKE, f"{LP}/silver/flights/part-0.parquet", False),
      (ADD, LAKE, f"{LP}/silver/flights/part-0.parquet", False),
      (MOVE, LAKE, f"{LP}/silver/flights/_delta_log/00000000000000000001.json", False),
      (DELETE, LAKE, f"{LP}/silver/flights/part-old.parquet", False)]),
    (SPARK, "the Livy batch's file, pyFiles and jars; spark_jobs/score_flights.py (the model bundle)",
     [(READ, ARTIFACTS, f"{AP}/code/abc/flights.zip", False), (READ, ARTIFACTS, f"{AP}/jars/delta.jar", False),
      (READ, LAKE, f"{LP}/models/flights/1/bundle/model.json", False)]),
    (TRAINING, "include/targets/azure/azureml_entry.py (the training set input, mounted read-only)",
     [(READ, LAKE, f"{LP}/exports/training/20130101_20130228/train.parquet", False),
      (READ, LAKE, f"{LP}/exports/training/20130101_20130228/", True)]),
    (TRAINING, "the job's code (the code artefact)", [(READ, ARTIFACTS, f"{AP}/code/abc/flights.zip", False)]),
    (TRAINING, "include/targets/azure/azureml_entry.py (model, metrics and checkpoints to the job's output)",
     [(WRITE, ARTIFACTS, f"{AP}/training/job/model/model.json", False),
      (ADD, ARTIFACTS, f"{AP}/training/job/model/model.json", False), (READ, ARTIFACTS, f"{AP}/training/job/", True)]),
]


# --- a small evaluator of the rendered conditions ------------------------------------------------

_BLOB_CLAUSE = re.compile(r"!\(\((?P<actions>.*)\) AND NOT SubOperationMatches\{'Blob\.List'\}\)")
_LIST_CLAUSE = re.compile(r"!\(ActionMatches\{'(?P<action>[^']*)'\} AND SubOperationMatches\{'Blob\.List'\}\)")
_TERM = re.compile(r"(?P<attr>@Resource\[[^\]]+:path\]|@Request\[[^\]]+:prefix\]) StringStartsWith '(?P<v>[^']*)'")


def condition_allows(expression: str, action: str, path: str, listing: bool) -> bool:
    """Evaluate a condition of the shape ``iam.condition`` writes; any other shape fails the test."""
    for block in expression.split("\nAND\n"):
        blob, lst = _BLOB_CLAUSE.search(block), _LIST_CLAUSE.search(block)
        if blob:
            actions = re.findall(r"ActionMatches\{'([^']*)'\}", blob["actions"])
            applies = action in actions and not listing
        elif lst:
            applies = action == lst["action"] and listing
        else:
            pytest.fail(f"Condition block is not one this test can evaluate:\n{block}")
        terms = list(_TERM.finditer(block))
        assert terms, f"no path terms in\n{block}"
        attribute = "prefix" if listing else "path"
        assert all(t["attr"].endswith(f":{'prefix' if lst else 'path'}]") for t in terms), block
        if applies and not any(path.startswith(t["v"]) for t in terms if t["attr"].endswith(f":{attribute}]")):
            return False
    return True


def role_actions(name: str) -> tuple[set[str], set[str]]:
    r = iam.role(name, AZ)
    return set(r["Actions"]), set(r["DataActions"])


def assignments(identity: str, azure: AzureSettings = AZ) -> list[dict]:
    return iam.assignments(identity, azure)["assignments"]


def allowed(identity: str, action: str, where: str, path: str = "", listing: bool = False,
            azure: AzureSettings = AZ) -> bool:
    for a in assignments(identity, azure):
        if a["role"] not in iam.ROLES:
            continue
        actions, data_actions = role_actions(a["role"])
        if where == "workspace":
            if a["scope"] == {"type": "workspace", "name": azure.ml_workspace} and action in actions:
                return True
            continue
        if a["scope"] != {"type": "container", "name": where} or action not in data_actions:
            continue
        if "condition" not in a or condition_allows(a["condition"], action, path, listing):
            return True
    return False


def granted(identity: str) -> set[tuple[str, str]]:
    out = set()
    for a in assignments(identity):
        if a["role"] in iam.ROLES:
            actions, data_actions = role_actions(a["role"])
            out |= {(x, a["scope"]["name"]) for x in actions | data_actions}
    return out


# --- (a) every action is needed, every needed action is granted ------------------------------------


@pytest.mark.parametrize("identity", iam.IDENTITIES)
def test_every_granted_action_is_one_the_code_needs(identity):
    needed = {(action, AZ.ml_workspace if where == "workspace" else where)
              for who, _, needs in CALLS if who == identity for action, where, _, _ in needs}
    extra = granted(identity) - needed
    assert not extra, f"{identity} is granted {sorted(extra)}, which no line of CALLS needs"


@pytest.mark.parametrize("who, call, needs", CALLS, ids=[f"{c[0]}:{c[1][:60]}" for c in CALLS])
def test_every_needed_action_is_granted_where_it_is_needed(who, call, needs):
    for action, where, path, listing in needs:
        assert allowed(who, action, where, path, listing), f"{who} cannot {action} on {where}/{path} ({call})"


def test_the_calls_table_names_real_files():
    for _, call, _ in CALLS:
        path = call.split("::")[0].split(" ")[0]
        if path.startswith(("include/", "spark_jobs/")) and "*" not in path:
            assert (REPO_ROOT / path).is_file(), f"CALLS names {path}, which does not exist"


# --- (b) what must be refused ----------------------------------------------------------------------


def test_spark_cannot_write_delete_or_rename_landing():
    for action in (WRITE, ADD, DELETE, MOVE):
        assert not allowed(SPARK, action, LAKE, "landing/flights/flights_2013-01-01.csv")
    assert allowed(SPARK, READ, LAKE, "landing/flights/flights_2013-01-01.csv")


def test_spark_writes_only_under_the_lake_prefix():
    assert allowed(SPARK, WRITE, LAKE, f"{LP}/gold/flight_features/x.parquet")
    for path in ("other/x.parquet", f"{LP}x/gold/y.parquet", "x.parquet"):
        assert not allowed(SPARK, WRITE, LAKE, path), path
    assert not allowed(SPARK, WRITE, ARTIFACTS, f"{AP}/code/abc/flights.zip")  # the code is read-only to Spark


def test_nobody_lists_a_whole_container_or_outside_its_prefixes():
    for identity in iam.IDENTITIES:
        for container in (LAKE, ARTIFACTS):
            assert not allowed(identity, READ, container, "", listing=True), f"{identity} lists all of {container}"
    assert not allowed(TRAINING, READ, LAKE, f"{LP}/silver/", listing=True)
    assert not allowed(AIRFLOW, READ, LAKE, "other/", listing=True)


def test_the_trainer_reads_only_the_training_set_and_the_code():
    assert allowed(TRAINING, READ, LAKE, f"{LP}/exports/training/w/train.parquet")
    for path in (f"{LP}/silver/flights/p.parquet", f"{LP}/exports/predictions/x.parquet", "landing/flights/f.csv"):
        assert not allowed(TRAINING, READ, LAKE, path), path
    assert not allowed(TRAINING, READ, LAKE, f"{LP}/models/f/1/bundle/model.json")
    assert not allowed(TRAINING, WRITE, ARTIFACTS, f"{AP}/code/abc/flights.zip")


def test_airflow_deletes_nothing_and_writes_only_code_jars_and_scoring_bundles():
    for container, path in ((LAKE, f"{LP}/silver/flights/p.parquet"), (LAKE, "landing/flights/f.csv"),
                            (ARTIFACTS, f"{AP}/code/abc/flights.zip"), (ARTIFACTS, f"{AP}/training/j/m.json")):
        for action in (DELETE, MOVE):
            assert not allowed(AIRFLOW, action, container, path), (action, path)
    assert not allowed(AIRFLOW, WRITE, LAKE, f"{LP}/silver/flights/p.parquet")
    assert allowed(AIRFLOW, WRITE, LAKE, f"{LP}/models/m/1/bundle/model.json")  # the published scoring bundle
    assert not allowed(AIRFLOW, WRITE, ARTIFACTS, f"{AP}/training/j/metrics.json")  # only the trainer writes outputs
    assert allowed(AIRFLOW, WRITE, ARTIFACTS, f"{AP}/code/abc/flights.zip")


def test_synapse_grant_only_with_synapse():
    assert not [a for a in assignments(AIRFLOW) if a["scope"]["type"] == "synapse-spark-pool"]
    synapse = AzureSettings.example(spark_service="synapse")
    pool = [a for a in assignments(AIRFLOW, synapse) if a["scope"]["type"] == "synapse-spark-pool"]
    assert [(a["role"], a["scope_id"]) for a in pool] == [
        ("Synapse Compute Operator", "workspaces/flights-synapse/bigDataPools/flightspool")]


def test_prefixes_that_would_reach_landing_or_the_whole_container_are_refused():
    for prefix in ("landing", "landing/lake", "", "a b", "../x"):
        with pytest.raises(ValueError, match="FLIGHTS_AZURE_LAKE_PREFIX"):
            iam.placeholders(AzureSettings.example(lake_prefix=prefix))
    with pytest.raises(ValueError, match="overlaps"):
        iam.placeholders(AzureSettings.example(artifacts_container="lake", artifacts_prefix="lake/artifacts"))


# --- (c) the files are what az takes ----------------------------------------------------------------


def test_role_files_are_valid_for_az():
    for name, file in iam.ROLES.items():
        raw = json.loads((iam.TEMPLATE_DIR / "roles" / f"{file}.json").read_text())
        assert set(raw) == {"Name", "IsCustom", "Description", "Actions", "NotActions", "DataActions",
                            "NotDataActions", "AssignableScopes"}
        assert raw["Name"] == name and raw["IsCustom"] is True
        rendered = iam.role(name, AZ)
        scope = f"/subscriptions/{AZ.subscription_id}/resourceGroups/{AZ.resource_group}"
        assert rendered["AssignableScopes"] == [scope]
        for action in rendered["Actions"] + rendered["DataActions"]:
            assert "*" not in action, f"{name} grants a wildcard {action}"


def test_scopes_are_the_one_account_and_the_one_workspace():
    for identity in iam.IDENTITIES:
        for a in assignments(identity):
            if a["scope"]["type"] == "container":
                assert a["scope_id"] == f"{AZ.storage_scope}/blobServices/default/containers/{a['scope']['name']}"
                assert a["condition"], f"{identity}/{a['id']} has no path condition"
            elif a["scope"]["type"] == "workspace":
                assert a["scope_id"] == AZ.workspace_scope


def test_write_produces_the_commands(tmp_path):
    script = iam.write(tmp_path, AZ).read_text()
    assert script.count("az role definition create") == len(iam.ROLES)
    assert script.count("az identity create") == 3
    assignments_total = sum(len(assignments(i)) for i in iam.IDENTITIES)
    assert script.count("az role assignment create") == assignments_total
    assert script.count("--condition-version 2.0") == sum(1 for i in iam.IDENTITIES for a in assignments(i)
                                                          if a.get("condition"))
    for file in iam.ROLES.values():
        assert json.loads((tmp_path / "roles" / f"{file}.json").read_text())["IsCustom"] is True


def test_the_spark_identity_reads_the_pii_key_secret_only_when_set(tmp_path):
    assert iam.PII_KEY_ROLE not in iam.write(tmp_path / "unset", AZ).read_text()
    url = ("https://flights-kv.vault.azure.net/secrets/flights-pii/0123456789abcdef0123456789abcdef"
           "#client_id=0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b")
    script = iam.write(tmp_path / "set", AzureSettings.example(pii_key_secret_uri=url)).read_text()
    [grant] = [line for line in script.splitlines() if iam.PII_KEY_ROLE in line]
    assert grant.startswith('az role assignment create --assignee-object-id "$SPARK_PRINCIPAL" ')
    assert grant.endswith('--scope "$VAULT_ID"/secrets/flights-pii')  # the secret, every version; not the vault
    assert "VAULT_ID=$(az keyvault show -n flights-kv --query id -o tsv)" in script
    assert script.index("SPARK_PRINCIPAL=") < script.index(grant)


def test_unknown_placeholder_is_named(tmp_path, monkeypatch):
    (tmp_path / "roles").mkdir()
    (tmp_path / "roles" / "flights-blob-reader.json").write_text('{"Name": "${NOPE}"}')
    monkeypatch.setattr(iam, "TEMPLATE_DIR", tmp_path)
    with pytest.raises(KeyError, match="NOPE"):
        iam.role("flights blob reader", AZ)
