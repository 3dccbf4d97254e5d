"""GCP roles and bindings: valid for gcloud, least privilege, each permission one the code needs, and refusals hold.

``CALLS`` says, per service account, which call of our code (file and function, or the Google
service acting for it) needs each permission. A new client call needs a line here and a
permission in ``infra/gcp/roles``; a permission no line needs fails the test. The bucket grants
are checked by evaluating their IAM Conditions against object names.
"""

from __future__ import annotations

import re

import pytest
import yaml

from include.config import REPO_ROOT
from include.targets.gcp import iam
from include.targets.gcp.settings import GcpSettings

TOPIC = "projects/flights-example/topics/flights-alerts"
PII_RESOURCE = "projects/flights-example/secrets/flights-pii"
GCP = GcpSettings.example(pubsub_topic=TOPIC, pii_key_secret=f"{PII_RESOURCE}/versions/latest")
AIRFLOW, DATAPROC, VERTEX = "airflow", "dataproc-runtime", "vertex-training"

# (service account, where the call is: "file::function" (+ what it calls), permissions it needs)
CALLS = [
    (AIRFLOW, "include/targets/gcp/operators.py::_submit (DataprocHook.create_batch)",
     {"dataproc.batches.create", "iam.serviceAccounts.actAs"}),
    (AIRFLOW, "include/targets/gcp/operators.py::_refs (list_batches by labels)", {"dataproc.batches.list"}),
    (AIRFLOW, "include/targets/gcp/operators.py::_wait (wait_for_batch) and execute_complete (get_batch)",
     {"dataproc.batches.get"}),
    (AIRFLOW, "include/targets/gcp/operators.py::cancel_batch (get_batch, operations.cancel of the batch)",
     {"dataproc.batches.get", "dataproc.batches.cancel", "dataproc.operations.cancel"}),
    (AIRFLOW, "include/targets/gcp/operators.py::execute (provider DataprocCreateClusterOperator: create_cluster, "
              "get_cluster, wait_for_operation, delete_cluster on error)",
     {"dataproc.clusters.create", "dataproc.clusters.get", "dataproc.clusters.delete", "dataproc.operations.get",
      "iam.serviceAccounts.actAs"}),
    (AIRFLOW, "include/targets/gcp/operators.py::execute (provider DataprocDeleteClusterOperator: delete_cluster)",
     {"dataproc.clusters.delete", "dataproc.clusters.get", "dataproc.operations.get"}),
    (AIRFLOW, "include/targets/gcp/operators.py::execute (DataprocHook.submit_job, cancel_job of stale jobs)",
     {"dataproc.jobs.create", "dataproc.jobs.cancel"}),
    (AIRFLOW, "include/targets/gcp/operators.py::_refs (JobControllerClient.list_jobs)", {"dataproc.jobs.list"}),
    (AIRFLOW, "include/targets/gcp/operators.py::_wait (get_job, cancel_job at the deadline)",
     {"dataproc.jobs.get", "dataproc.jobs.cancel"}),
    (AIRFLOW, "include/targets/gcp/operators.py::gcs_exists (list_blobs of job outputs, code and jars)",
     {"storage.objects.list"}),
    (AIRFLOW, "include/targets/gcp/vertex_operators.py::_create (create_custom_job)",
     {"aiplatform.customJobs.create", "iam.serviceAccounts.actAs"}),
    (AIRFLOW, "include/targets/gcp/vertex_operators.py::_list (list_custom_jobs by label)",
     {"aiplatform.customJobs.list"}),
    (AIRFLOW, "include/targets/gcp/vertex_operators.py::run (trigger polls get_custom_job)",
     {"aiplatform.customJobs.get"}),
    (AIRFLOW, "include/targets/gcp/vertex_operators.py::cancel (cancel_custom_job)", {"aiplatform.customJobs.cancel"}),
    (AIRFLOW, "include/targets/gcp/vertex_operators.py::_exists (GCSHook.exists of metrics.json)",
     {"storage.objects.get"}),
    (AIRFLOW, "include/targets/gcp/vertex_registry.py::register (upload_model, its operation's result)",
     {"aiplatform.models.upload", "aiplatform.operations.get"}),
    (AIRFLOW, "include/targets/gcp/vertex_registry.py::_models (list_model_versions)", {"aiplatform.models.list"}),
    (AIRFLOW, "include/targets/gcp/vertex_registry.py::_get (get_model, also by alias in champion)",
     {"aiplatform.models.get"}),
    (AIRFLOW, "include/targets/gcp/vertex_registry.py::_update (update_model) and _move_champion "
              "(merge_version_aliases)", {"aiplatform.models.update"}),
    (AIRFLOW, "include/targets/gcp/vertex_registry.py::bundle_dir (list_blobs, download) and publish_bundle (exists)",
     {"storage.objects.list", "storage.objects.get"}),
    (AIRFLOW, "include/targets/gcp/vertex.py::collect (list_blobs, download_to_filename of the model folder)",
     {"storage.objects.list", "storage.objects.get"}),
    (AIRFLOW, "include/targets/gcp/gcs.py::exists (list_blobs; check_landing and job outputs)",
     {"storage.objects.list"}),
    (AIRFLOW, "include/targets/gcp/gcs.py::read_json (gate results) and local_dir (list, download)",
     {"storage.objects.get", "storage.objects.list"}),
    (AIRFLOW, "include/targets/gcp/gcs.py::put (upload_from_string if_generation_match=0: the code artefact)",
     {"storage.objects.create"}),
    (AIRFLOW, "include/targets/gcp/bigquery.py::_run_query (query, job.result, job.cancel of its own jobs)",
     {"bigquery.jobs.create", "bigquery.tables.getData", "bigquery.tables.updateData"}),
    (AIRFLOW, "include/targets/gcp/bigquery.py::load_interval (load_table_from_uri: BigQuery reads the export as "
              "the caller; create_table of the staging table; delete_table)",
     {"bigquery.jobs.create", "bigquery.tables.create", "bigquery.tables.updateData", "bigquery.tables.delete",
      "storage.objects.get", "storage.objects.list"}),
    (AIRFLOW, "include/targets/gcp/bigquery.py::ensure_schema (get_dataset, create_table exists_ok, ALTER TABLE)",
     {"bigquery.datasets.get", "bigquery.tables.create", "bigquery.tables.get", "bigquery.tables.update"}),
    (AIRFLOW, "include/targets/gcp/bigquery.py::_ensure_view (get_table, CREATE OR REPLACE VIEW)",
     {"bigquery.tables.get", "bigquery.tables.create", "bigquery.tables.update"}),
    (AIRFLOW, "include/targets/gcp/pubsub.py::send (PubSubHook.publish)", {"pubsub.topics.publish"}),
    (DATAPROC, "spark_jobs/* on Dataproc (Cloud Storage connector: read landing, read and write the lake; "
               "a Delta commit or a Parquet rename deletes temporary objects)",
     {"storage.objects.get", "storage.objects.list", "storage.objects.create", "storage.objects.delete"}),
    (DATAPROC, "include/targets/gcp/pii_key.py::read_secret (versions.access of the PII key, when "
               "FLIGHTS_GCP_PII_KEY_SECRET is set)", {"secretmanager.versions.access"}),
    (DATAPROC, "include/targets/gcp/dataproc.py::batch_request (staging_bucket, config_bucket: driver output and "
               "Spark history under google-cloud-dataproc-metainfo/)",
     {"storage.objects.get", "storage.objects.list", "storage.objects.create", "storage.objects.delete"}),
    (DATAPROC, "include/targets/gcp/dataproc.py::batch_request (Dataproc's daemons on the batch's or cluster's VMs, "
               "what roles/dataproc.worker grants besides storage)",
     {"dataproc.agents.create", "dataproc.agents.get", "dataproc.agents.update", "dataproc.agents.delete",
      "dataproc.tasks.lease", "dataproc.tasks.listInvalidatedLeases", "dataproc.tasks.reportStatus",
      "logging.logEntries.create", "monitoring.metricDescriptors.create", "monitoring.timeSeries.create"}),
    (VERTEX, "include/targets/gcp/vertex.py::custom_job_body (the container reads sourcedir.tar.gz and the "
             "training set through the Cloud Storage FUSE mount)", {"storage.objects.get", "storage.objects.list"}),
    (VERTEX, "include/targets/gcp/vertex_entry.py::main (writes the model folder under AIP_MODEL_DIR; FUSE "
             "replaces an object when a file is written again)",
     {"storage.objects.get", "storage.objects.list", "storage.objects.create", "storage.objects.delete"}),
]
# Called by the code, deliberately not granted: infra/gcp/README.md creates the dataset once (a dataset-level
# grant needs the dataset to exist), so ensure_schema's create_dataset never runs.
SETUP_ONLY = {"bigquery.datasets.create": "include/targets/gcp/bigquery.py::ensure_schema (create_dataset)"}

# Every Google client method our gcp modules call, and the permissions behind it ("" = no API call).
METHODS = {
    "create_batch": {"dataproc.batches.create"}, "get_batch": {"dataproc.batches.get"},
    "list_batches": {"dataproc.batches.list"}, "wait_for_batch": {"dataproc.batches.get"},
    "cancel_operation": {"dataproc.operations.cancel", "dataproc.batches.cancel"},
    "create_cluster": {"dataproc.clusters.create"}, "delete_cluster": {"dataproc.clusters.delete"},
    "submit_job": {"dataproc.jobs.create"}, "get_job": {"dataproc.jobs.get", "bigquery.jobs.create"},
    "list_jobs": {"dataproc.jobs.list"}, "cancel_job": {"dataproc.jobs.cancel"},
    "create_custom_job": {"aiplatform.customJobs.create"}, "get_custom_job": {"aiplatform.customJobs.get"},
    "list_custom_jobs": {"aiplatform.customJobs.list"}, "cancel_custom_job": {"aiplatform.customJobs.cancel"},
    "upload_model": {"aiplatform.models.upload"}, "get_model": {"aiplatform.models.get"},
    "list_model_versions": {"aiplatform.models.list"}, "update_model": {"aiplatform.models.update"},
    "merge_version_aliases": {"aiplatform.models.update"},
    "query": {"bigquery.jobs.create"}, "load_table_from_uri": {"bigquery.jobs.create"},
    "get_dataset": {"bigquery.datasets.get"}, "create_dataset": {"bigquery.datasets.create"},
    "create_table": {"bigquery.tables.create", "bigquery.tables.get"}, "get_table": {"bigquery.tables.get"},
    "delete_table": {"bigquery.tables.delete"},
    "list_blobs": {"storage.objects.list"}, "download_as_bytes": {"storage.objects.get"},
    "download_to_filename": {"storage.objects.get"}, "exists": {"storage.objects.get"},
    "upload_from_string": {"storage.objects.create"}, "publish": {"pubsub.topics.publish"},
    # clients and hooks, not API calls
    "get_conn": set(), "get_job_client": set(), "get_job_service_client": set(), "get_operations_client": set(),
    "get_sync_hook": set(), "cancel": {"bigquery.jobs.create"},  # a job's own cancel (its creator may)
}
GCP_MODULES = ("gcs", "dataproc", "operators", "vertex", "vertex_operators", "vertex_registry", "bigquery", "pubsub",
               "__init__")
_METHOD_CALL = re.compile(r"\.((?:create|get|list|cancel|delete|submit|upload|update|merge|publish|query|load|wait"
                          r"|exists|download)(?:_[a-z_]+)?)\(")
PREDEFINED = {"roles/pubsub.publisher": {"pubsub.topics.publish"},  # the only predefined roles granted, each on
              "roles/secretmanager.secretAccessor": {"secretmanager.versions.access"}}  # one resource
PRIMITIVE = {"roles/owner", "roles/editor", "roles/viewer"}
PERMISSION = re.compile(r"^[a-z][a-zA-Z0-9]*\.[a-z][a-zA-Z0-9]*\.[a-z][a-zA-Z0-9]*$")
ROLE_FIELDS = {"title", "description", "stage", "includedPermissions"}
STAGES = {"ALPHA", "BETA", "GA", "DEPRECATED", "DISABLED", "EAP"}


def role_permissions(role: str) -> set[str]:
    if role in PREDEFINED:
        return PREDEFINED[role]
    match = re.fullmatch(r"projects/[^/]+/roles/([A-Za-z0-9_.]+)", role)
    assert match, f"{role} is neither a custom role of ours nor an allowed predefined role"
    return set(iam.render(f"roles/{match[1]}", GCP)["includedPermissions"])


def bindings(account: str, gcp: GcpSettings = GCP) -> list[dict]:
    return iam.render(f"bindings/{account}", gcp)["bindings"]


def granted(account: str, gcp: GcpSettings = GCP) -> set[str]:
    return set().union(*(role_permissions(b["role"]) for b in bindings(account, gcp)))


# --- a small evaluator of the bucket conditions ---------------------------------------------------

_LIST_ATTR = 'api.getAttribute("storage.googleapis.com/objectListPrefix", "")'
_TERMS = [
    (re.compile(r'resource\.name == "([^"]*)"'), lambda v, name, prefix: name == v),
    (re.compile(r'resource\.name\.startsWith\("([^"]*)"\)'), lambda v, name, prefix: name.startswith(v)),
    (re.compile(re.escape(_LIST_ATTR) + r' == "([^"]*)"'), lambda v, name, prefix: prefix == v),
    (re.compile(re.escape(_LIST_ATTR) + r'\.startsWith\("([^"]*)"\)'), lambda v, name, prefix: prefix.startswith(v)),
]


def condition_allows(expression: str, resource_name: str, list_prefix: str) -> bool:
    """Evaluate a condition written as ``term || term ...`` of the four forms above; anything else fails the test."""
    result = False
    for term in expression.split(" || "):
        for pattern, test in _TERMS:
            match = pattern.fullmatch(term.strip())
            if match:
                result |= test(match[1], resource_name, list_prefix)
                break
        else:
            pytest.fail(f"Condition term {term!r} is not one this test can evaluate: {expression}")
    return result


def allowed(account: str, permission: str, bucket: str, *, obj: str | None = None, list_prefix: str | None = None,
            gcp: GcpSettings = GCP) -> bool:
    """Whether ``account`` holds ``permission`` on an object (``obj``) or a listing (``list_prefix``) of ``bucket``."""
    for b in bindings(account, gcp):
        if permission not in role_permissions(b["role"]):
            continue
        if b["resource"]["type"] == "project" and permission.startswith("storage."):
            return True  # a project-wide storage grant reaches every bucket
        if b["resource"] != {"type": "bucket", "name": bucket}:
            continue
        if "condition" not in b:
            return True
        name = f"projects/_/buckets/{bucket}" + (f"/objects/{obj}" if obj is not None else "")
        if condition_allows(b["condition"]["expression"], name, list_prefix or ""):
            return True
    return False


LAKE, ARTIFACTS = GCP.lake_bucket, GCP.artifacts_bucket
LANDING_FILE = "landing/flights/flights_2013-01-01.csv"


# --- (a) every permission is needed, every needed permission is granted ---------------------------


@pytest.mark.parametrize("account", iam.BINDINGS)
def test_every_granted_permission_is_one_the_code_needs(account):
    needed = set().union(*(perms for who, _, perms in CALLS if who == account))
    extra = granted(account) - needed
    assert not extra, f"{account} is granted {sorted(extra)}, which no line of CALLS needs"


@pytest.mark.parametrize("account", iam.BINDINGS)
def test_every_needed_permission_is_granted(account):
    needed = set().union(*(perms for who, _, perms in CALLS if who == account))
    missing = needed - granted(account)
    assert not missing, f"{account} needs {sorted(missing)} (see CALLS) but no binding grants them"


def test_the_calls_table_names_real_functions():
    for _, where, _ in CALLS:
        path, _, rest = where.partition("::")
        if "*" in path:
            continue
        function = rest.split(" ")[0]
        source = (REPO_ROOT / path).read_text(encoding="utf-8")
        assert re.search(rf"\bdef {re.escape(function)}\(", source), f"{path} has no function {function} ({where})"


def test_every_client_call_in_the_gcp_modules_is_mapped_and_granted():
    airflow = granted(AIRFLOW)
    seen = set()
    for module in GCP_MODULES:
        source = (REPO_ROOT / "include" / "targets" / "gcp" / f"{module}.py").read_text(encoding="utf-8")
        for method in _METHOD_CALL.findall(source):
            if method in ("get", "update") or (method == "exists" and module not in ("gcs", "vertex_registry")):
                continue  # dict.get, dict.update, Path.exists; blob.exists is called in gcs and vertex_registry
            assert method in METHODS, f"include/targets/gcp/{module}.py calls .{method}(): add it to METHODS and CALLS"
            seen.add(method)
            for permission in METHODS[method]:
                assert permission in airflow or permission in SETUP_ONLY, (
                    f".{method}() in {module}.py needs {permission}, which the Airflow service account lacks")
    assert {"create_batch", "list_custom_jobs", "merge_version_aliases", "publish", "load_table_from_uri"} <= seen


def test_the_dataset_is_created_by_the_setup_not_by_the_code():
    readme = (iam.TEMPLATE_DIR / "README.md").read_text(encoding="utf-8")
    assert "bq mk" in readme and "bigquery.datasets.create" not in granted(AIRFLOW)
    assert "create_dataset" in (REPO_ROOT / "include/targets/gcp/bigquery.py").read_text()  # SETUP_ONLY is current


# --- (b) what must be refused is refused ----------------------------------------------------------


def test_the_dataproc_runtime_cannot_delete_or_write_landing():
    assert allowed(DATAPROC, "storage.objects.get", LAKE, obj=LANDING_FILE)  # it reads landing
    assert allowed(DATAPROC, "storage.objects.list", LAKE, list_prefix="landing/flights/")
    for name in (LANDING_FILE, "landing", "landing/dimensions/airports.csv"):
        assert not allowed(DATAPROC, "storage.objects.delete", LAKE, obj=name), name
        assert not allowed(DATAPROC, "storage.objects.create", LAKE, obj=name), name


def test_the_dataproc_runtime_writes_only_under_the_lake_prefix_and_staging():
    assert allowed(DATAPROC, "storage.objects.delete", LAKE, obj="lake/silver/flights/part-0.parquet")
    assert allowed(DATAPROC, "storage.objects.create", ARTIFACTS, obj="google-cloud-dataproc-metainfo/x/driveroutput")
    for bucket, name in ((LAKE, "lakehouse/x"), (LAKE, "lake_old/x"), (LAKE, "other/lake/x"),
                         (ARTIFACTS, "artifacts/code/abc/flights.zip"), (ARTIFACTS, "artifacts/jars/delta.jar")):
        assert not allowed(DATAPROC, "storage.objects.create", bucket, obj=name), (bucket, name)
        assert not allowed(DATAPROC, "storage.objects.delete", bucket, obj=name), (bucket, name)
    assert allowed(DATAPROC, "storage.objects.get", ARTIFACTS, obj="artifacts/code/abc/flights.zip")


def test_nobody_lists_a_whole_bucket_or_reads_outside_its_prefixes():
    for account in iam.BINDINGS:
        for bucket in (LAKE, ARTIFACTS):
            assert not allowed(account, "storage.objects.list", bucket, list_prefix=""), (account, bucket)
            assert not allowed(account, "storage.objects.get", bucket, obj="secrets.txt"), (account, bucket)


def test_the_trainer_reads_only_the_training_set_and_the_code():
    assert allowed(VERTEX, "storage.objects.get", LAKE, obj="lake/exports/training/2013-01/run/data/part-0.parquet")
    assert allowed(VERTEX, "storage.objects.get", ARTIFACTS, obj="artifacts/code/abc/sourcedir.tar.gz")
    assert allowed(VERTEX, "storage.objects.create", ARTIFACTS, obj="artifacts/training/job/model/metrics.json")
    assert not allowed(VERTEX, "storage.objects.get", LAKE, obj=LANDING_FILE)
    assert not allowed(VERTEX, "storage.objects.get", LAKE, obj="lake/silver/flights/part-0.parquet")
    assert not allowed(VERTEX, "storage.objects.create", ARTIFACTS, obj="artifacts/code/abc/sourcedir.tar.gz")


def test_airflow_deletes_nothing_and_writes_only_the_code():
    assert "storage.objects.delete" not in granted(AIRFLOW)
    assert allowed(AIRFLOW, "storage.objects.create", ARTIFACTS, obj="artifacts/code/abc/flights.zip")
    assert not allowed(AIRFLOW, "storage.objects.create", LAKE, obj="lake/silver/flights/x.parquet")
    assert not allowed(AIRFLOW, "storage.objects.create", LAKE, obj=LANDING_FILE)


def test_airflow_acts_only_as_the_two_runtime_service_accounts():
    acting = [b for b in bindings(AIRFLOW) if "iam.serviceAccounts.actAs" in role_permissions(b["role"])]
    assert sorted(b["resource"]["name"] for b in acting) == sorted(
        [GCP.dataproc_service_account, GCP.vertex_service_account])
    assert all(b["resource"]["type"] == "serviceAccount" for b in acting)
    assert role_permissions(acting[0]["role"]) == {"iam.serviceAccounts.actAs"}
    for account in (DATAPROC, VERTEX):
        assert not any(p.startswith("iam.") for p in granted(account)), f"{account} must not act as anyone"


def test_no_broad_grants():
    for account in iam.BINDINGS:
        for b in bindings(account):
            assert b["role"] not in PRIMITIVE, f"{account} {b['id']}: primitive role {b['role']}"
            assert not b["role"].startswith("roles/") or b["role"] in PREDEFINED, f"{account}: {b['role']}"
            perms = role_permissions(b["role"])
            assert not any("*" in p for p in perms), f"{account} {b['id']}: wildcard in {perms}"
            assert not any(p.startswith(("storage.buckets.", "resourcemanager.")) or p.endswith("setIamPolicy")
                           for p in perms), f"{account} {b['id']}: administers resources: {perms}"
            if b["resource"]["type"] == "project":
                storage = [p for p in perms if p.startswith(("storage.", "pubsub.", "iam."))]
                assert not storage, f"{account} {b['id']}: project-wide {storage}"
            if b["resource"]["type"] == "bucket":
                assert b.get("condition"), f"{account} {b['id']}: a bucket grant without a prefix condition"


def test_publishing_only_on_the_alert_topic_and_only_when_set():
    publishing = [b for a in iam.BINDINGS for b in bindings(a)
                  if "pubsub.topics.publish" in role_permissions(b["role"])]
    assert [(b["resource"]["type"], b["resource"]["name"]) for b in publishing] == [("topic", TOPIC)]
    assert "pubsub.topics.publish" not in granted(AIRFLOW, GcpSettings.example())  # no topic, no grant


def test_only_the_dataproc_runtime_reads_a_secret_and_only_the_pii_key_and_only_when_set():
    reading = [(a, b) for a in iam.BINDINGS for b in bindings(a)
               if "secretmanager.versions.access" in role_permissions(b["role"])]
    assert [(a, b["resource"]["type"], b["resource"]["name"]) for a, b in reading] == [
        (DATAPROC, "secret", PII_RESOURCE)]  # the secret, so every version; never the project's secrets
    assert "secretmanager.versions.access" not in granted(DATAPROC, GcpSettings.example())  # unset: no grant


def test_prefixes_that_would_reach_landing_or_the_whole_bucket_are_refused():
    for overrides in ({"lake_prefix": "landing"}, {"lake_prefix": "landing/lake"}, {"lake_prefix": ""},
                      {"lake_prefix": 'lake" || true || "'}, {"artifacts_bucket": GCP.lake_bucket,
                                                             "artifacts_prefix": "lake/artifacts"}):
        with pytest.raises(ValueError, match="PREFIX"):
            iam.render("bindings/dataproc-runtime", GcpSettings.example(**overrides))


def test_the_bindings_follow_the_settings():
    gcp = GcpSettings.example(lake_bucket="acme-lake", lake_prefix="tables/v2", bigquery_project="acme-bq")
    [lake] = [b for b in bindings(DATAPROC, gcp) if b["id"] == "WriteTheLake"]
    assert lake["resource"]["name"] == "acme-lake"
    assert allowed(DATAPROC, "storage.objects.delete", "acme-lake", obj="tables/v2/silver/x", gcp=gcp)
    assert not allowed(DATAPROC, "storage.objects.delete", "acme-lake", obj="lake/silver/x", gcp=gcp)
    [dataset] = [b for b in bindings(AIRFLOW, gcp) if b["resource"]["type"] == "dataset"]
    assert dataset["resource"]["name"] == "acme-bq:flights" and dataset["role"].startswith("projects/acme-bq/")
    assert iam.role_projects(gcp)["flightsBigQueryJobs"] == ["acme-bq"]


# --- (c) the files are what gcloud takes ----------------------------------------------------------


def test_role_files_are_valid_for_gcloud():
    on_disk = sorted(p.stem for p in (iam.TEMPLATE_DIR / "roles").glob("*.yaml"))
    assert on_disk == sorted(iam.ROLES), "iam.ROLES must list exactly the files in infra/gcp/roles"
    for role in iam.ROLES:
        doc = yaml.safe_load((iam.TEMPLATE_DIR / "roles" / f"{role}.yaml").read_text())
        assert set(doc) <= ROLE_FIELDS and {"title", "stage", "includedPermissions"} <= set(doc), role
        assert doc["title"] and len(doc["title"]) <= 100 and doc["stage"] in STAGES, role
        perms = doc["includedPermissions"]
        assert perms and len(perms) == len(set(perms)), f"{role}: empty or repeated permissions"
        bad = [p for p in perms if not PERMISSION.match(p)]
        assert not bad, f"{role}: not service.resource.verb: {bad}"
        assert re.fullmatch(r"[a-zA-Z0-9_.]{3,64}", role), role


def test_binding_files_are_complete():
    used = set()
    for account in iam.BINDINGS:
        doc = iam.render(f"bindings/{account}", GCP)
        assert doc["member"].startswith("serviceAccount:") and "${" not in yaml.safe_dump(doc)
        ids = [b["id"] for b in doc["bindings"]]
        assert len(ids) == len(set(ids)), f"{account}: repeated binding ids"
        for b in doc["bindings"]:
            assert b["resource"]["type"] in ("project", "serviceAccount", "bucket", "dataset", "topic", "secret"), b
            assert iam.binding_command(doc["member"], b, None)
            if "condition" in b:
                assert b["condition"]["title"] and len(b["condition"]["title"]) <= 100
                condition_allows(b["condition"]["expression"], "projects/_/buckets/x", "")  # parses
            match = re.fullmatch(r"projects/[^/]+/roles/(.+)", b["role"])
            used.add(match[1] if match else b["role"])
    assert set(iam.ROLES) <= used, f"roles no binding grants: {set(iam.ROLES) - used}"


def test_write_produces_the_commands_and_files(tmp_path):
    script = iam.write(tmp_path, GCP).read_text()
    assert script.count("gcloud iam roles create") == len(iam.ROLES)
    assert "gcloud storage buckets add-iam-policy-binding gs://flights-lake-example" in script
    assert f"gcloud pubsub topics add-iam-policy-binding {TOPIC}" in script
    member = f"serviceAccount:{GCP.dataproc_service_account}"
    assert f"gcloud secrets add-iam-policy-binding {PII_RESOURCE} --member={member}" \
           " --role=roles/secretmanager.secretAccessor" in script
    conditions = list((tmp_path / "conditions").glob("*.yaml"))
    assert conditions and all({"title", "expression"} <= set(yaml.safe_load(c.read_text())) for c in conditions)


# --- (d) unknown placeholders ---------------------------------------------------------------------


def test_unknown_placeholder_is_named(tmp_path):
    (tmp_path / "bindings").mkdir()
    (tmp_path / "bindings" / "x.yaml").write_text("member: serviceAccount:${AIRFLOW_SA}\nbindings:\n"
                                                  "- id: A\n  resource: {type: bucket, name: '${NOPE}'}\n")
    with pytest.raises(KeyError, match="NOPE"):
        iam.render("bindings/x", GCP, tmp_path)
