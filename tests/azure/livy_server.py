"""A local Apache Livy server for tests: Livy 0.8's batch REST API on loopback, each batch a real spark-submit.

HDInsight exposes Spark through Livy, which has no emulator; this server answers the batch
endpoints the way Livy does and runs every batch as a ``spark-submit`` child process on this
machine, in its own process group:

* ``POST /batches``: a ``CreateBatchRequest`` (``file``, ``args``, ``pyFiles``, ``jars``, ``files``,
  ``archives``, ``conf``, sizes, ``name``...). An unknown field, a missing ``file`` or a name
  another live batch holds is a 400, as in Livy; so is a POST or DELETE without the
  ``X-Requested-By`` header when CSRF protection is on (HDInsight turns it on).
* ``GET /batches?from=&size=``: ``{"from", "total", "sessions": [...]}``, oldest first.
* ``GET /batches/{id}``, ``/batches/{id}/state``, ``/batches/{id}/log?from=&size=``: the batch,
  its state, its log lines (``stdout:`` then ``stderr:``, as Livy shows a spark-submit process;
  without ``from`` the last ``size`` lines).
* ``DELETE /batches/{id}``: kills the process group and forgets the batch (a later GET is a 404).

States go ``starting`` → ``running`` (the process started) → ``success`` (exit 0), ``dead`` (any
other exit) or ``killed`` (deleted). ``resolve`` maps the request's storage URIs to local paths,
standing for the cluster's access to its storage account (one URI may stand for several files,
e.g. a runtime's Delta jars for this machine's Spark). The child gets this environment without
``PYTHONPATH``, so a job imports the project's code from its ``pyFiles`` only.

    with LivyServer(master="local[1]") as livy:
        requests.post(f"{livy.url}/batches", json={"file": "job.py"}, headers={"X-Requested-By": "me"})

``python -m tests.azure.livy_server`` serves until interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import parse_qs, urlsplit

# Livy 0.8's CreateBatchRequest: any other field is rejected ("Unrecognized field").
REQUEST_FIELDS = ("file", "proxyUser", "className", "args", "jars", "pyFiles", "files", "driverMemory",
                  "driverCores", "executorMemory", "executorCores", "numExecutors", "archives", "queue", "name",
                  "conf", "heartbeatTimeoutInSecond")
ACTIVE_STATES = ("not_started", "starting", "running")
CSRF_HEADER = "X-Requested-By"
LOG_DEFAULT_SIZE = 100  # Livy's default page of log lines

Resolve = Callable[[str], "str | Iterable[str]"]


def default_spark_submit() -> str:
    """The installed pyspark's ``bin/spark-submit``."""
    import pyspark

    return str(Path(pyspark.__file__).parent / "bin" / "spark-submit")


def group_alive(pgid: int) -> list[int]:
    """Pids of the live (not zombie) processes of process group ``pgid`` (Linux ``/proc``)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2:].split()  # after "pid (comm) ": state ppid pgrp ...
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            alive.append(int(stat.parent.name))
    return alive


def _paths(uris, resolve: Resolve) -> list[str]:
    out: list[str] = []
    for uri in uris or []:
        found = resolve(str(uri))
        out += [found] if isinstance(found, str) else list(found)
    return out


def spark_submit_command(request: dict, *, spark_submit: str, master: str, resolve: Resolve) -> list[str]:
    """The spark-submit line Livy builds for a batch request (client deploy mode on ``master``)."""
    cmd = [spark_submit, "--master", master, "--deploy-mode", "client"]
    if request.get("name"):
        cmd += ["--name", str(request["name"])]
    if request.get("className"):
        cmd += ["--class", str(request["className"])]
    conf = {str(k): str(v) for k, v in (request.get("conf") or {}).items()}
    for key, option in (("driverMemory", "--driver-memory"), ("driverCores", "--driver-cores"),
                        ("executorMemory", "--executor-memory"), ("executorCores", "--executor-cores"),
                        ("numExecutors", "--num-executors"), ("proxyUser", "--proxy-user")):
        if request.get(key) not in (None, ""):
            cmd += [option, str(request[key])]
    if request.get("queue"):
        conf["spark.yarn.queue"] = str(request["queue"])
    for key, value in sorted(conf.items()):
        cmd += ["--conf", f"{key}={value}"]
    for key, option in (("jars", "--jars"), ("pyFiles", "--py-files"), ("files", "--files"),
                        ("archives", "--archives")):
        paths = _paths(request.get(key), resolve)
        if paths:
            cmd += [option, ",".join(paths)]
    return [*cmd, *_paths([request["file"]], resolve), *[str(a) for a in request.get("args") or []]]


@dataclass
class Batch:
    id: int
    name: str | None
    request: dict
    command: list[str]
    state: str = "starting"
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    returncode: int | None = None
    killed: bool = False
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def pgid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def log(self) -> list[str]:
        return ["stdout: ", *self.stdout, "\nstderr: ", *self.stderr]

    def view(self) -> dict:
        """The batch as Livy 0.8 shows it."""
        return {"id": self.id, "name": self.name, "owner": None, "proxyUser": self.request.get("proxyUser"),
                "state": self.state, "appId": None, "appInfo": {"driverLogUrl": None, "sparkUiUrl": None},
                "log": self.log()[-10:]}


class LivyServer:
    """Livy's batch API on 127.0.0.1 (a free port), backed by spark-submit processes.

    Args:
        spark_submit: the spark-submit to run (default: the installed pyspark's).
        master: the Spark master of every batch (``local[1]`` keeps a shared machine responsive).
        resolve: storage URI → local path(s) the cluster reads it from (default: URIs as given).
        env: extra environment for the batches.
        csrf: require ``X-Requested-By`` on POST and DELETE, as HDInsight's Livy does.
    """

    def __init__(self, *, spark_submit: str | None = None, master: str = "local[1]", resolve: Resolve | None = None,
                 env: dict[str, str] | None = None, csrf: bool = True):
        self.spark_submit = spark_submit or default_spark_submit()
        self.master = master
        self.resolve: Resolve = resolve or (lambda uri: uri[len("file://"):] if uri.startswith("file://") else uri)
        self.env = env or {}
        self.csrf = csrf
        self.batches: dict[int, Batch] = {}  # live batches, as GET /batches lists them
        self.deleted: dict[int, Batch] = {}  # batches DELETE removed (for the tests to inspect)
        self.posted: list[dict] = []  # every accepted POST body
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request
        self._next_id = 0
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._httpd is not None, "the server is not started"
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "LivyServer":
        server = self

        class Handler(_Handler):
            livy = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="livy-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        for batch in list(self.batches.values()):
            self._kill(batch)
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "LivyServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- what the tests wait for ---------------------------------------------------------------

    def batch(self, batch_id: int) -> Batch:
        """A batch by id, live or deleted."""
        return self.batches.get(batch_id) or self.deleted[batch_id]

    def wait_for_log(self, batch_id: int, text: str, timeout: float = 120) -> None:
        """Until a log line of the batch contains ``text``; fails when the batch ends first or time runs out."""
        deadline = time.monotonic() + timeout
        batch = self.batch(batch_id)
        while time.monotonic() < deadline:
            if any(text in line for line in batch.log()):
                return
            if batch.done.is_set():
                raise AssertionError(f"batch {batch_id} ended {batch.state} before printing {text!r}:\n"
                                     + "\n".join(batch.log()[-30:]))
            time.sleep(0.2)
        raise AssertionError(f"batch {batch_id} printed no {text!r} in {timeout}s:\n" + "\n".join(batch.log()[-30:]))

    def wait_done(self, batch_id: int, timeout: float = 300) -> Batch:
        batch = self.batch(batch_id)
        if not batch.done.wait(timeout):
            raise AssertionError(f"batch {batch_id} still {batch.state} after {timeout}s")
        return batch

    # --- batches -------------------------------------------------------------------------------

    def create(self, request: dict) -> Batch:
        with self._lock:
            name = request.get("name")
            if name is not None and any(b.name == name for b in self.batches.values()):
                raise ValueError(f"Duplicate session name: Some({name})")
            command = spark_submit_command(request, spark_submit=self.spark_submit, master=self.master,
                                           resolve=self.resolve)
            batch = Batch(self._next_id, name, request, command)
            self._next_id += 1
            self.batches[batch.id] = batch
            self.posted.append(request)
        threading.Thread(target=self._run, args=(batch,), name=f"livy-batch-{batch.id}", daemon=True).start()
        return batch

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "PYSPARK_SUBMIT_ARGS", "FLIGHTS_JARS_DIR", "SPARK_CONF_DIR")}
        env.setdefault("PYSPARK_PYTHON", sys.executable)
        env.setdefault("PYSPARK_DRIVER_PYTHON", env["PYSPARK_PYTHON"])
        env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        return {**env, **self.env}

    def _run(self, batch: Batch) -> None:
        try:
            with self._lock:
                if batch.killed:
                    return
                batch.proc = subprocess.Popen(batch.command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                              text=True, errors="replace", env=self._environment(),
                                              start_new_session=True)
                batch.state = "running"
            readers = [threading.Thread(target=_read, args=(stream, lines), daemon=True)
                       for stream, lines in ((batch.proc.stdout, batch.stdout), (batch.proc.stderr, batch.stderr))]
            for reader in readers:
                reader.start()
            batch.returncode = batch.proc.wait()
            for reader in readers:
                reader.join(timeout=10)
            _kill_group(batch.proc.pid)  # what the driver left behind (python workers) ends with it
            with self._lock:
                batch.state = "killed" if batch.killed else "success" if batch.returncode == 0 else "dead"
        except Exception as exc:  # a spark-submit that cannot start is a dead batch, as in Livy
            batch.stderr.append(f"{type(exc).__name__}: {exc}")
            batch.state = "killed" if batch.killed else "dead"
        finally:
            batch.done.set()

    def _kill(self, batch: Batch) -> None:
        with self._lock:
            batch.killed = True
            proc = batch.proc
        if proc is not None and proc.poll() is None:
            _kill_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            _kill_group(proc.pid)
        batch.done.wait(15)
        batch.state = "killed"

    def delete(self, batch_id: int) -> Batch:
        with self._lock:
            batch = self.batches.pop(batch_id)
            self.deleted[batch_id] = batch
        self._kill(batch)
        return batch


def _read(stream, lines: list[str]) -> None:
    for line in stream:
        lines.append(line.rstrip("\n"))


def _kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _page(params: dict, default_size: int) -> tuple[int | None, int]:
    def number(key):
        values = params.get(key)
        return int(values[0]) if values else None

    return number("from"), default_size if number("size") is None else number("size")


class _Handler(BaseHTTPRequestHandler):
    livy: LivyServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args) -> None:  # one line per request otherwise
        return

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self) -> tuple[list[str], dict]:
        parts = urlsplit(self.path)
        self.livy.requests.append((self.command, parts.path))
        return [p for p in parts.path.split("/") if p], parse_qs(parts.query)

    def _body_params(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}") if length else {}

    def _batch(self, batch_id: str) -> Batch | None:
        try:
            batch = self.livy.batches.get(int(batch_id))
        except ValueError:
            batch = None
        if batch is None:
            self._send(404, {"msg": f"Session '{batch_id}' not found."})
        return batch

    def _csrf_ok(self) -> bool:
        if self.livy.csrf and not self.headers.get(CSRF_HEADER):
            self._send(400, {"msg": "Missing Required Header for CSRF protection."})
            return False
        return True

    def do_GET(self) -> None:
        path, params = self._route()
        if path == ["batches"]:
            start, size = _page(params, LOG_DEFAULT_SIZE)
            sessions = sorted(self.livy.batches.values(), key=lambda b: b.id)
            start = start or 0
            return self._send(200, {"from": start, "total": len(sessions),
                                    "sessions": [b.view() for b in sessions[start:start + size]]})
        if len(path) == 2 and path[0] == "batches":
            batch = self._batch(path[1])
            return batch and self._send(200, batch.view())
        if len(path) == 3 and path[0] == "batches" and path[2] == "state":
            batch = self._batch(path[1])
            return batch and self._send(200, {"id": batch.id, "state": batch.state})
        if len(path) == 3 and path[0] == "batches" and path[2] == "log":
            batch = self._batch(path[1])
            if batch is None:
                return None
            lines = batch.log()
            start, size = _page(params, LOG_DEFAULT_SIZE)
            if size < 0:
                start, size = 0, len(lines)
            elif start is None or start < 0:
                start = max(0, len(lines) - size)
            return self._send(200, {"id": batch.id, "from": start, "total": len(lines),
                                    "log": lines[start:start + size]})
        return self._send(404, {"msg": f"Not found: {self.path}"})

    def do_POST(self) -> None:
        path, _ = self._route()
        if path != ["batches"]:
            return self._send(404, {"msg": f"Not found: {self.path}"})
        if not self._csrf_ok():
            return None
        try:
            request = self._body_params()
        except json.JSONDecodeError as exc:
            return self._send(400, {"msg": f"Malformed JSON: {exc}"})
        unknown = sorted(set(request) - set(REQUEST_FIELDS))
        if unknown:
            return self._send(400, {"msg": f'Unrecognized field "{unknown[0]}" (class '
                                           'org.apache.livy.server.batch.CreateBatchRequest), not marked as ignorable'})
        if not request.get("file"):
            return self._send(400, {"msg": "requirement failed: File is required."})
        try:
            batch = self.livy.create(request)
        except ValueError as exc:
            return self._send(400, {"msg": str(exc)})
        return self._send(201, batch.view())

    def do_DELETE(self) -> None:
        path, _ = self._route()
        if len(path) != 2 or path[0] != "batches":
            return self._send(404, {"msg": f"Not found: {self.path}"})
        if not self._csrf_ok() or self._batch(path[1]) is None:
            return None
        self.livy.delete(int(path[1]))
        return self._send(200, {"msg": "deleted"})


if __name__ == "__main__":
    with LivyServer(master=os.environ.get("LIVY_SPARK_MASTER", "local[2]")) as livy:
        print(f"Livy on {livy.url}; Ctrl-C stops it", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
