"""The explain plan: every step printed, with the cost arithmetic of the price table."""

from __future__ import annotations

import json

import pytest

from include import plan
from include.targets.aws.settings import AwsSettings

DAILY = ["ingest_bronze", "build_features", "score_flights"]  # the suite gates run inside the first two
TRAINING = ["export_training_set", "train_models", "register_model", "promote_champion"]


def test_aws_plan_prints_every_step_with_operator_and_spec(capsys, monkeypatch):
    monkeypatch.delenv("FLIGHTS_AWS_REGION", raising=False)
    monkeypatch.delenv("FLIGHTS_WAREHOUSE", raising=False)  # aws's default warehouse: Redshift
    assert plan.main(["--target", "aws"]) == 0
    out = capsys.readouterr().out
    for task in DAILY + ["export_training_set"]:
        assert f"- {task}: ReattachingEmrServerlessStartJobOperator" in out
    assert "- train_models: ReattachingSageMakerTrainingOperator" in out
    assert out.count(": RedshiftIntervalLoadOperator") == 2
    assert "ml.g5.xlarge" in out and "MaxRuntimeInSeconds" in out and "COPY stage_flight_outcomes" in out
    assert "placeholder settings" in out and "as of 2026-11-23" in out


def test_costs_follow_the_price_table():
    pricing = plan.load_pricing("aws")
    p, est = pricing["prices"], pricing["estimates"]
    steps = {s.task_id: s for s in plan.aws_plan(AwsSettings.example(), pricing)}
    e = est["ingest_bronze"]
    expected = e["vcpu"] * e["minutes"] / 60 * p["emr_serverless"]["vcpu_hour"] + \
        e["memory_gb"] * e["minutes"] / 60 * p["emr_serverless"]["gb_hour"]
    assert steps["ingest_bronze"].cost == pytest.approx(expected)
    assert steps["ingest_bronze"].cost == pytest.approx(8 * 8 / 60 * 0.052624 + 32 * 8 / 60 * 0.0057785)
    assert steps["train_models"].cost == pytest.approx(1.408 * 20 / 60)
    redshift = steps["load_flight_outcomes"].cost
    assert redshift == pytest.approx(8 * 0.375 * 60 / 3600)  # billed for the 60 s minimum, not 30 s
    spot = {s.task_id: s for s in plan.aws_plan(AwsSettings.example(training_spot=True), pricing)}
    assert spot["train_models"].cost == pytest.approx(1.408 * 20 / 60 * (1 - 0.6))


def test_total_is_the_sum_of_the_steps(tmp_path):
    pricing = plan.load_pricing("aws")
    steps = plan.aws_plan(AwsSettings.example(), pricing)
    text = plan.render(steps, "h", pricing)
    daily = sum(s.cost for s in steps if s.run == "daily")
    assert f"Estimated cost per daily run: ${daily:.4f}" in text


def test_ec2_mode_bills_the_cluster_once(tmp_path):
    pricing = plan.load_pricing("aws")
    aws = AwsSettings.example(spark_mode="ec2")
    steps = [s for s in plan.aws_plan(aws, pricing) if s.run == "daily"]
    creates = [s for s in steps if s.operator == "ReattachingEmrCreateJobFlowOperator"]
    assert len(creates) == 1 and [s.operator for s in steps].count("ReattachingEmrStepOperator") == len(DAILY)
    assert steps[len(DAILY) + 1].operator == "EmrTerminateJobFlowOperator"
    minutes = sum(pricing["estimates"][t]["minutes"] for t in DAILY) + 8
    assert creates[0].cost == pytest.approx((0.192 + 0.048 + 2 * (0.384 + 0.096)) * minutes / 60)


def test_local_plan_shows_spark_submit_lines_at_no_cost(capsys):
    assert plan.main(["--target", "local"]) == 0
    out = capsys.readouterr().out
    for task in DAILY + TRAINING:
        assert f"- {task}:" in out
    assert "spark_jobs/bronze_landing.py" in out and "--landing" in out
    assert "Estimated cost per daily run: $0.0000" in out and "MlflowRegistry" in out


def test_price_table_must_say_when_and_that_it_is_illustrative(tmp_path):
    data = json.loads(plan.PRICING_FILE.read_text())
    assert data["aws"]["as_of"] and "illustrative" in data["aws"]["note"].lower()
    del data["aws"]["as_of"]
    bad = tmp_path / "p.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="as_of"):
        plan.load_pricing("aws", bad)
