"""docker-compose.yaml as docker compose would run it, with the ``.env`` that scripts/env_file.py writes.

No container engine runs here, so the configuration is rendered the way compose renders it: the
YAML (anchors and merge keys included) with every value interpolated from the ``.env`` file
(``$$``, ``${VAR}``, ``${VAR:-default}``, ``${VAR:?message}`` and the rest of the compose
specification's forms). Where a compose client is installed, its own ``config`` output is compared
with this rendering. The MLflow service's login is checked by running its command, as rendered,
with the mlflow of the runtime lock.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yaml"
EXAMPLE = REPO / ".env.example"
ENV_FILE = REPO / "scripts" / "env_file.py"
AIRFLOW_SERVICES = {"airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                    "airflow-triggerer"}
OTHER_SERVICES = {"postgres", "warehouse", "state-init", "mlflow"}
# (Airflow setting, the .env name it is taken from) of the secrets every Airflow container must share
SHARED_SECRETS = dict([
    ("AIRFLOW__CORE__FERNET_KEY", "AIRFLOW_FERNET_KEY"),
    ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW_JWT_SECRET"),
    ("AIRFLOW__API__SECRET_KEY", "AIRFLOW_API_SECRET_KEY"),
])
LOOPBACK = {"127.0.0.1", "::1", "[::1]"}


# --- compose's interpolation and .env reading ---------------------------------------------------------


class InterpolationError(ValueError):
    """A ``${VAR:?message}`` whose variable is missing (or empty): compose stops with the message."""


_VARIABLE = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


def interpolate(text: str, env: dict[str, str]) -> str:
    """One string as compose interpolates it from ``env``."""
    def sub(m: re.Match) -> str:
        if m[1]:
            return "$"
        name = m[2] or m[5]
        op, arg = m[3], m[4] if m[4] is not None else ""
        value = env.get(name)
        unset_or_empty = value is None or (value == "" and op and op.startswith(":"))
        if op in ("-", ":-"):
            return arg if unset_or_empty or value is None else value
        if op in ("?", ":?"):
            if unset_or_empty:
                raise InterpolationError(f"required variable {name} is missing a value: {arg}")
            return value
        if op in ("+", ":+"):
            return "" if unset_or_empty else arg
        return value or ""

    return _VARIABLE.sub(sub, text)


def _walk(node, env):
    if isinstance(node, dict):
        return {k: _walk(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [_walk(v, env) for v in node]
    return interpolate(node, env) if isinstance(node, str) else node


def read_dotenv(path: Path) -> dict[str, str]:
    """``NAME=value`` lines (comments and blank lines skipped, surrounding quotes removed)."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[name.strip()] = value
    return out


def raw_compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))  # merge keys (<<) resolved by the loader


def render(env: dict[str, str]) -> dict:
    """docker-compose.yaml interpolated from ``env``, each service's environment as a mapping."""
    config = _walk(raw_compose(), env)
    for service in config["services"].values():
        environment = service.get("environment") or {}
        if isinstance(environment, list):
            environment = dict(item.partition("=")[::2] for item in environment)
        service["environment"] = {k: "" if v is None else str(v) for k, v in environment.items()}
    return config


def secret_names() -> list[str]:
    """The names .env.example leaves empty: the ones env_file.py fills with fresh values."""
    return [m[1] for m in re.finditer(r"(?m)^([A-Z][A-Z0-9_]*)=\s*$", EXAMPLE.read_text(encoding="utf-8"))]


def _env_file(out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ENV_FILE), "--out", str(out), *args], capture_output=True,
                          text=True, timeout=60)


@pytest.fixture()
def dotenv(tmp_path) -> dict[str, str]:
    """A ``.env`` written by scripts/env_file.py into a temporary folder, read back."""
    run = _env_file(tmp_path / ".env")
    assert run.returncode == 0, run.stderr
    return read_dotenv(tmp_path / ".env")


# --- scripts/env_file.py --------------------------------------------------------------------------------


def test_env_file_fills_every_name_with_a_fresh_private_value(tmp_path):
    from cryptography.fernet import Fernet

    names = secret_names()
    assert len(names) >= 8
    first, second = tmp_path / "a" / ".env", tmp_path / "b" / ".env"
    for path in (first, second):
        path.parent.mkdir()
        run = _env_file(path)
        assert run.returncode == 0, run.stderr
        assert stat.S_IMODE(path.stat().st_mode) == 0o600  # readable by its owner only
        assert not any(v in run.stdout + run.stderr for v in read_dotenv(path).values() if v)  # names, no values
    a, b = read_dotenv(first), read_dotenv(second)
    assert set(names) <= set(a)
    for name in names:
        assert re.fullmatch(r"[A-Za-z0-9_=-]{32,}", a[name]), f"{name}: not a long URL-safe value"
        assert a[name] != b[name], f"{name}: the same value twice"
    assert len({a[n] for n in names}) == len(names)  # no value reused for two names
    key = Fernet(a["AIRFLOW_FERNET_KEY"].encode())  # a valid Fernet key: it round-trips a secret
    assert key.decrypt(key.encrypt(b"connection password")) == b"connection password"


def test_env_file_never_replaces_an_existing_file_unless_forced(tmp_path):
    out = tmp_path / ".env"
    out.write_text("AIRFLOW_DB_PASSWORD=kept\n")
    run = _env_file(out)
    assert run.returncode == 2 and "--force" in run.stderr
    assert out.read_text() == "AIRFLOW_DB_PASSWORD=kept\n"  # untouched
    run = _env_file(out, "--force")
    assert run.returncode == 0, run.stderr
    assert read_dotenv(out)["AIRFLOW_DB_PASSWORD"] not in ("", "kept")


def test_env_file_refuses_a_file_git_would_commit(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    out = tmp_path / ".env"
    run = _env_file(out)
    assert run.returncode == 2 and ".gitignore" in run.stderr
    assert not out.exists()
    (tmp_path / ".gitignore").write_text("/.env\n")
    run = _env_file(out)
    assert run.returncode == 0, run.stderr


def test_the_repository_ignores_dotenv():
    ignored = subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", "--no-index", ".env"])
    assert ignored.returncode == 0, "add '/.env' to .gitignore: it holds the stack's secrets"
    tracked = subprocess.run(["git", "-C", str(REPO), "ls-files", "--error-unmatch", ".env"], capture_output=True)
    assert tracked.returncode != 0, ".env is tracked by git"


# --- the rendered configuration ---------------------------------------------------------------------------


def test_airflow_services_share_the_same_secrets_from_dotenv(dotenv):
    services = render(dotenv)["services"]
    assert set(services) == AIRFLOW_SERVICES | OTHER_SERVICES  # a new service must be classified here
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        for setting, source in SHARED_SECRETS.items():
            assert env.get(setting) == dotenv[source], f"{name}: {setting} is not the .env's {source}"
        db = urlsplit(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
        assert (db.hostname, db.username, db.password) == ("postgres", "airflow", dotenv["AIRFLOW_DB_PASSWORD"])
        warehouse = urlsplit(env["AIRFLOW_CONN_FLIGHTS_WAREHOUSE"])
        assert (warehouse.hostname, warehouse.password) == ("warehouse", dotenv["WAREHOUSE_DB_PASSWORD"])
    for setting in [*SHARED_SECRETS, "AIRFLOW__API_AUTH__JWT_ISSUER", "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
                    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]:
        values = {services[n]["environment"].get(setting) for n in AIRFLOW_SERVICES}
        assert len(values) == 1 and None not in values, f"{setting} differs between Airflow containers: {values}"
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == dotenv["AIRFLOW_DB_PASSWORD"]
    assert services["warehouse"]["environment"]["POSTGRES_PASSWORD"] == dotenv["WAREHOUSE_DB_PASSWORD"]
    # the UI password reaches only the container that writes the passwords file
    holders = {n for n, s in services.items() if dotenv["AIRFLOW_ADMIN_PASSWORD"] in s["environment"].values()}
    assert holders == {"airflow-init"}


def test_a_missing_or_empty_secret_stops_compose_naming_it(dotenv):
    render(dotenv)  # complete: renders
    text = COMPOSE.read_text(encoding="utf-8")
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text))
    assert set(secret_names()) <= used, f"generated but unused: {set(secret_names()) - used}"
    for name in secret_names():
        for env in ({k: v for k, v in dotenv.items() if k != name}, {**dotenv, name: ""}):
            with pytest.raises(InterpolationError, match=name):
                render(env)
        # every use is required: no default could stand in for it
        forms = re.findall(rf"\$\{{{name}(\W*)", text)
        assert forms and all(f.startswith(":?") for f in forms), f"{name} is used as {forms}"
    with pytest.raises(InterpolationError):  # .env.example copied as it is: the stack refuses to start
        render(read_dotenv(EXAMPLE))


def _published(port) -> tuple[str | None, str]:
    """(host address, text) of one ``ports`` entry; the address is None when all interfaces."""
    if isinstance(port, dict):
        return port.get("host_ip"), json.dumps(port)
    text = str(port)
    m = re.fullmatch(r"(?:(\[[^\]]+\]|[0-9.]+):)?(?:(\d+(?:-\d+)?):)?\d+(?:-\d+)?(?:/\w+)?", text)
    assert m, f"unreadable port {text!r}"
    return (m[1] if m[2] else None), text


def test_no_port_is_published_beyond_loopback(dotenv):
    services = render(dotenv)["services"]
    published = []
    for name, service in services.items():
        assert service.get("network_mode") != "host", f"{name} shares the host's network"
        for port in service.get("ports") or []:
            host, text = _published(port)
            assert host in LOOPBACK, f"{name} publishes {text} on every interface"
            published.append(name)
    assert set(published) == {"airflow-apiserver", "warehouse", "mlflow"}


_SECRETISH = re.compile(r"PASSWORD|SECRET|FERNET|TOKEN|_KEY$|CREDENTIAL", re.IGNORECASE)
_REQUIRED = re.compile(r"\$\{[A-Z][A-Z0-9_]*:\?[^}]+\}")


def _strings(node, path=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _strings(v, f"{path}[{i}]")
    elif isinstance(node, str):
        yield path, node


def test_no_credential_is_committed():
    names = secret_names()
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():  # names only, no value
        if re.match(r"^[A-Z][A-Z0-9_]*=", line):
            assert line.split("=", 1)[0] in names, f".env.example gives a value: {line.split('=')[0]}"
    for path, value in _strings(raw_compose()):
        key = path.rsplit(".", 1)[-1]
        if ".environment." in path and _SECRETISH.search(key) and not key.endswith("_FILE"):
            assert _REQUIRED.fullmatch(value), f"{path} is not a required .env value: {value!r}"
        for url in re.findall(r"[a-z][a-z0-9+.-]*://[^\s'\"]+", value):
            userinfo = urlsplit(url).netloc.rpartition("@")[0]
            if ":" in userinfo:
                assert _REQUIRED.fullmatch(userinfo.split(":", 1)[1]), f"{path}: a password in {url}"
        assert not re.search(r"(?i)(password|secret|token)[\"']?\s*[:=]\s*[\"']?\w", value.split("${")[0]), \
            f"{path}: a credential in {value!r}"
    detect = shutil.which("detect-secrets", path=str(Path(sys.executable).parent))
    assert detect, "detect-secrets is in requirements-dev.txt"
    found = subprocess.run([detect, "scan", "docker-compose.yaml", ".env.example"], cwd=REPO,
                           capture_output=True, text=True, timeout=120)
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["results"] == {}


def test_mlflow_gets_only_its_own_settings_and_a_login(dotenv):
    services = render(dotenv)["services"]
    mlflow = services["mlflow"]
    env = mlflow["environment"]
    assert all(k.startswith("MLFLOW_") for k in env), sorted(env)
    assert "env_file" not in mlflow
    airflow_values = {dotenv[n] for n in secret_names() if not n.startswith("MLFLOW_")}
    airflow_values |= {v for n in AIRFLOW_SERVICES for k, v in services[n]["environment"].items()
                       if _SECRETISH.search(k) or k.startswith("AIRFLOW_CONN_") or k.endswith("_CONN")}
    leaked = [k for k, v in env.items() if any(s in v for s in airflow_values)]
    assert not leaked, f"MLflow gets Airflow's values in {leaked}"
    command = " ".join(mlflow["command"]) if isinstance(mlflow["command"], list) else mlflow["command"]
    assert "--app-name basic-auth" in command
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == dotenv["MLFLOW_ADMIN_PASSWORD"]
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"] == dotenv["MLFLOW_FLASK_SECRET_KEY"]
    for name in AIRFLOW_SERVICES:  # and the Airflow containers get none of MLflow's
        values = services[name]["environment"].values()
        assert not {dotenv["MLFLOW_ADMIN_PASSWORD"], dotenv["MLFLOW_FLASK_SECRET_KEY"]} & set(values), name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, user: str | None = None, password: str | None = None) -> int:
    request = urllib.request.Request(url)
    if user is not None:
        request.add_header("Authorization", "Basic " + b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except urllib.error.URLError:  # not listening yet
        return 0


@pytest.mark.slow  # an MLflow server start: about a minute on two busy cores
def test_mlflow_service_command_starts_a_server_that_requires_its_login(dotenv, tmp_path):
    """The service's command and environment, as rendered, with the runtime lock's mlflow, on loopback."""
    mlflow = render(dotenv)["services"]["mlflow"]
    state, port = tmp_path / "state", _free_port()
    script = mlflow["command"][-1].replace("/opt/flights/state", str(state))
    script = script.replace("--host 0.0.0.0 --port 5000", f"--host 127.0.0.1 --port {port} --workers 1")
    assert str(port) in script and "/opt/flights" not in script
    env = {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "HOME": str(tmp_path),
           **{k: v.replace("/opt/flights/state", str(state)) for k, v in mlflow["environment"].items()}}
    log = (tmp_path / "mlflow.log").open("w")
    proc = subprocess.Popen([mlflow["entrypoint"], "-c", script], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=1"
    try:
        deadline = time.monotonic() + 120
        while _get(url) not in (200, 401):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start:\n{(tmp_path / 'mlflow.log').read_text()[-3000:]}")
            time.sleep(0.5)
        assert _get(url) == 401  # no login, no data
        assert _get(url, "admin", dotenv["MLFLOW_ADMIN_PASSWORD"] + "x") == 401
        assert _get(url, "admin", dotenv["MLFLOW_ADMIN_PASSWORD"]) == 200
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
        log.close()


def test_mlflow_login_is_in_the_image():
    """The basic-auth app needs Flask-WTF (mlflow's ``auth`` extra); the image installs requirements.txt only."""
    lock = re.sub(r"\\\n", " ", (REPO / "requirements.txt").read_text(encoding="utf-8"))
    assert re.search(r"(?im)^flask-wtf==", lock), "requirements.in needs mlflow[auth] (Flask-WTF), then make lock"


# --- a compose client, where one is installed ---------------------------------------------------------------


def _compose_client() -> list[str] | None:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_a_compose_client_renders_the_same_configuration(dotenv, tmp_path):
    client = _compose_client()
    if client is None:
        pytest.skip("no compose client here (docker compose, docker-compose); the rendering above stands alone")
    shutil.copy(COMPOSE, tmp_path / "docker-compose.yaml")
    clean = {k: v for k, v in os.environ.items() if k not in dotenv and not k.startswith(("FLIGHTS_", "COMPOSE_"))}
    out = subprocess.run([*client, "config"], cwd=tmp_path, env=clean, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    theirs = yaml.safe_load(out.stdout)["services"]
    ours = render(dotenv)["services"]
    assert set(theirs) == set(ours)
    for name in ours:
        assert {k: str(v) for k, v in (theirs[name].get("environment") or {}).items()} == ours[name]["environment"]
        ports = [p if isinstance(p, str) else f"{p.get('host_ip')}:{p.get('published')}:{p.get('target')}"
                 for p in theirs[name].get("ports") or []]
        assert [p.split("/")[0] for p in ports] == [str(p) for p in ours[name].get("ports") or []], name
    (tmp_path / ".env").write_text("\n".join(f"{k}={v}" for k, v in dotenv.items() if k != "AIRFLOW_JWT_SECRET"))
    out = subprocess.run([*client, "config"], cwd=tmp_path, env=clean, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "AIRFLOW_JWT_SECRET" in out.stderr  # compose itself refuses, naming it
