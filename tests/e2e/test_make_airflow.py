"""`make airflow`: the UI stack comes up on loopback only, asks for a login, and one Ctrl-C stops all of it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.airflow_stack import AirflowStack, free_port, group_pids

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "airflow_ui.py"
READY = "Ctrl-C stops everything."


def _listening(pids: set[int]) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state that one of ``pids`` holds."""
    inodes = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] != "0A" or cols[9] not in inodes:  # 0A: LISTEN
                continue
            address, port = cols[1].split(":")
            if width == 8:
                text = ".".join(str(int(address[i:i + 2], 16)) for i in (6, 4, 2, 0))
            else:
                text = "::1" if address == "0" * 24 + "01000000" else f"ipv6:{address}"
            found.append((text, int(port, 16)))
    return found


def _request(url: str, body: dict | None = None, token: str | None = None) -> tuple[int, dict | str]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            status, raw = response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read().decode()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    home = tmp_path_factory.mktemp("ui")
    stack = AirflowStack(home)  # its environment: the project's settings, a metadata database of its own
    stack.cli("db", "migrate")
    env = {**stack.env, "FLIGHTS_AIRFLOW_PORT": str(free_port()), "FLIGHTS_MLFLOW_PORT": str(free_port())}
    proc = subprocess.Popen([sys.executable, str(SCRIPT)], env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    deadline = time.monotonic() + 300
    while not any(READY in line for line in lines):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("make airflow did not come up:\n" + "".join(lines))
        time.sleep(1)
    pids = json.loads((home / "airflow" / "stack.pids").read_text())
    yield {"proc": proc, "lines": lines, "env": env, "pids": pids, "home": home,
           "airflow": f"http://127.0.0.1:{env['FLIGHTS_AIRFLOW_PORT']}",
           "mlflow": f"http://127.0.0.1:{env['FLIGHTS_MLFLOW_PORT']}"}
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        for pid in pids.values():
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.mark.slow
def test_every_component_answers_and_the_urls_and_login_are_printed(ui):
    status, health = _request(f"{ui['airflow']}/api/v2/monitor/health")
    assert status == 200
    assert {c: health[c]["status"] for c in ("metadatabase", "scheduler", "triggerer", "dag_processor")} == \
        dict.fromkeys(("metadatabase", "scheduler", "triggerer", "dag_processor"), "healthy")
    status, experiments = _request(f"{ui['mlflow']}/api/2.0/mlflow/experiments/search?max_results=10")
    assert status == 200 and "experiments" in experiments
    output = "".join(ui["lines"])
    passwords = ui["home"] / "airflow" / "simple_auth_manager_passwords.json.generated"
    assert f"Airflow UI   {ui['airflow']}" in output and f"MLflow UI    {ui['mlflow']}" in output
    assert str(passwords) in output and passwords.exists()


@pytest.mark.slow
def test_nothing_is_served_without_a_login_and_a_wrong_password_is_refused(ui):
    password = json.loads((ui["home"] / "airflow" / "simple_auth_manager_passwords.json.generated").read_text())
    assert list(password) == ["admin"]
    assert _request(f"{ui['airflow']}/api/v2/dags")[0] == 401
    assert _request(f"{ui['airflow']}/api/v2/dags", token="not-a-token")[0] == 403  # a forged token
    assert _request(f"{ui['airflow']}/auth/token", {"username": "admin", "password": password["admin"] + "x"})[0] \
        == 401
    assert _request(f"{ui['airflow']}/auth/token", {"username": "nobody", "password": password["admin"]})[0] == 401
    status, token = _request(f"{ui['airflow']}/auth/token", {"username": "admin", "password": password["admin"]})
    assert status in (200, 201), token
    status, dags = _request(f"{ui['airflow']}/api/v2/dags", token=token["access_token"])
    assert status == 200
    assert {"flights_daily", "flights_training", "flights_maintenance"} <= {d["dag_id"] for d in dags["dags"]}


@pytest.mark.slow
def test_it_listens_on_loopback_only(ui):
    pids = group_pids(set(ui["pids"].values()))
    listening = _listening(pids)
    ports = {int(ui["env"]["FLIGHTS_AIRFLOW_PORT"]), int(ui["env"]["FLIGHTS_MLFLOW_PORT"])}
    assert ports <= {port for _, port in listening}, listening
    assert all(address in ("127.0.0.1", "::1") for address, _ in listening), listening  # no log server on 0.0.0.0


# --- in a real browser: Playwright driving Debian's chromium (scripts/ensure_chromium.sh) -------------------------

ARTIFACTS = Path(os.environ.get("FLIGHTS_TEST_ARTIFACTS", REPO / "test-artifacts")) / "ui"


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium, launched by Playwright through its executable path (Playwright downloads no browser)."""
    executable = os.environ.get("FLIGHTS_CHROMIUM") or shutil.which("chromium")
    if not executable:
        message = "No chromium: run `bash scripts/ensure_chromium.sh` (or set FLIGHTS_CHROMIUM)."
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):  # CI must not skip it silently
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # as root (containers, CI) chromium refuses to start inside its sandbox
        launched = playwright.chromium.launch(executable_path=executable,
                                              args=["--no-sandbox"] if os.geteuid() == 0 else [])
        yield launched
        launched.close()


def _password(ui) -> str:
    return json.loads((ui["home"] / "airflow" / "simple_auth_manager_passwords.json.generated").read_text())["admin"]


def _shot(page, name: str) -> None:
    """A screenshot of what the user sees at this step, kept under test-artifacts/ui/."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def _sign_in(page, ui, password: str) -> None:
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


@pytest.mark.slow
def test_in_the_browser_the_ui_asks_for_a_login_and_refuses_a_wrong_password(ui, browser):
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    try:
        for path in ("/", "/dags/flights_daily", "/dags/flights_training/runs"):
            page.goto(ui["airflow"] + path)
            try:  # the single-page app sends a visitor without a session to the login page
                page.wait_for_url(lambda url: "/auth/login" in url, timeout=30_000)
            except Exception:
                pytest.fail(f"{path} was served without a login: still on {page.url}")
        _shot(page, "01-login")
        _sign_in(page, ui, _password(ui) + "x")
        expect(page.get_by_text("Invalid credentials")).to_be_visible()
        assert "/auth/login" in page.url
        _shot(page, "02-login-refused")
        _sign_in(page, ui, _password(ui))
        page.wait_for_url(lambda url: "/auth/login" not in url, timeout=30_000)
        page.goto(ui["airflow"] + "/dags", wait_until="networkidle")
        for dag_id in ("flights_daily", "flights_training", "flights_maintenance"):
            expect(page.get_by_text(dag_id, exact=True).first).to_be_visible()
        _shot(page, "03-dags")
    finally:
        context.close()


@pytest.mark.slow
def test_the_trigger_form_refuses_a_malformed_date_with_its_message_then_triggers_the_range(ui, browser):
    """From the DAG's page: Trigger, a ``start_date``/``end_date`` range typed into the form. The DAG stays paused
    (the form's "Unpause on trigger" unticked), so the run is created and waits queued: what is proved here is the
    form's path to the scheduler; a range run itself is ``tests/e2e/test_backfill.py``'s."""
    from playwright.sync_api import expect

    status, token = _request(f"{ui['airflow']}/auth/token", {"username": "admin", "password": _password(ui)})
    assert status in (200, 201), token

    def runs() -> list[dict]:
        status, body = _request(f"{ui['airflow']}/api/v2/dags/flights_daily/dagRuns", token=token["access_token"])
        assert status == 200, body
        return body["dag_runs"]

    before = {r["dag_run_id"] for r in runs()}
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    try:
        page.goto(ui["airflow"] + "/dags/flights_daily", wait_until="networkidle")
        _sign_in(page, ui, _password(ui))
        page.wait_for_url(lambda url: "/auth/login" not in url, timeout=30_000)
        page.goto(ui["airflow"] + "/dags/flights_daily", wait_until="networkidle")
        page.get_by_role("button", name="Trigger").first.click()
        dialog = page.get_by_role("dialog")
        trigger = dialog.get_by_role("button", name="Trigger", exact=True)
        expect(trigger).to_be_enabled()  # every optional param may stay empty: a plain run needs no typing
        dialog.get_by_text("Unpause flights_daily on trigger").click()
        expect(dialog.get_by_label("Unpause flights_daily on trigger")).not_to_be_checked()

        dialog.locator("#element_start_date").fill("2013-3-08")
        dialog.locator("#element_end_date").fill("2013-03-09")
        trigger.click()
        expect(dialog.get_by_text("Invalid input for param start_date: '2013-3-08' does not match")).to_be_visible()
        toast = page.get_by_role("status").filter(has_text="Failed to Trigger Dag")
        expect(toast).to_be_visible()
        _shot(page, "04-trigger-malformed-date-refused")
        assert {r["dag_run_id"] for r in runs()} == before  # refused: no run was created
        page.mouse.move(5, 5)  # off the notification, which covers the button until it fades
        expect(toast).to_be_hidden(timeout=30_000)

        dialog.locator("#element_start_date").fill("2013-03-08")
        _shot(page, "05-trigger-range")
        trigger.click()
        expect(dialog).to_be_hidden(timeout=30_000)
        _shot(page, "06-triggered")
    finally:
        context.close()
    (run,) = [r for r in runs() if r["dag_run_id"] not in before]
    assert run["run_type"] == "manual" and run["state"] == "queued", run  # paused: it waits
    assert (run["conf"]["start_date"], run["conf"]["end_date"]) == ("2013-03-08", "2013-03-09"), run["conf"]
    assert not run["conf"].get("release_quarantined") and not run["conf"].get("accept_dimension_change")


@pytest.mark.slow
def test_one_ctrl_c_stops_every_process_it_started(ui):
    pgids = set(ui["pids"].values())
    assert len(group_pids(pgids)) >= 5
    os.kill(ui["proc"].pid, signal.SIGINT)
    assert ui["proc"].wait(timeout=90) == 0
    assert group_pids(pgids) == set(), "processes outlived Ctrl-C"
    assert "stopped" in "".join(ui["lines"])
