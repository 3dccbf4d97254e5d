# Airflow image for docker-compose.yaml: the locked Python stack, Java for Spark, the Delta jars.
FROM apache/airflow:3.3.2-python3.11

USER root
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless maven \
 && rm -rf /var/lib/apt/lists/*
ENV JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64

USER airflow
# The runtime lock only (test tools live in requirements-dev.txt), every distribution checked against its hash.
COPY --chown=airflow:root requirements.txt /opt/flights/requirements.txt
RUN pip install --no-cache-dir uv==0.13.9 \
 && uv pip install --no-cache --require-hashes --python "$(command -v python)" -r /opt/flights/requirements.txt

COPY --chown=airflow:root scripts/delta-jars.pom.xml /opt/flights/scripts/delta-jars.pom.xml
RUN mvn -q -B -f /opt/flights/scripts/delta-jars.pom.xml dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory=/opt/flights/jars -Dmaven.repo.local=/tmp/m2 \
 && rm -rf /tmp/m2
ENV FLIGHTS_JARS_DIR=/opt/flights/jars
