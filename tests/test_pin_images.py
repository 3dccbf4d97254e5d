"""``make pin-images`` against a registry on loopback speaking the OCI distribution API (token, then HEAD)."""

from __future__ import annotations

import hashlib
import shutil
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import pin_images  # noqa: E402

INDEX = "application/vnd.oci.image.index.v1+json"


class Registry(BaseHTTPRequestHandler):
    images: dict[str, str] = {}  # "library/postgres:16" -> the build it serves now
    seen: list[str] = []

    def log_message(self, *args):
        pass

    def do_GET(self):  # the token endpoint
        body = b'{"token": "pull-token"}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self):
        repo, _, tag = self.path.removeprefix("/v2/").partition("/manifests/")
        self.seen.append(f"{repo}:{tag}")
        if self.headers.get("Authorization") != "Bearer pull-token":
            self.send_response(401)
            host = f"http://127.0.0.1:{self.server.server_port}"
            self.send_header("WWW-Authenticate", f'Bearer realm="{host}/token",service="test",'
                                                 f'scope="repository:{repo}:pull"')
        elif f"{repo}:{tag}" not in self.images or INDEX not in self.headers.get("Accept", ""):
            self.send_response(404)
        else:
            self.send_response(200)
            build = self.images[f"{repo}:{tag}"]
            self.send_header("Docker-Content-Digest", "sha256:" + hashlib.sha256(build.encode()).hexdigest())
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture()
def registry(monkeypatch):
    Registry.images = {"apache/airflow:3.3.2-python3.11": "airflow-build-1", "library/postgres:16": "pg-build-1"}
    Registry.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("PIN_IMAGES_REGISTRY_URL", f"http://127.0.0.1:{server.server_port}")
    yield Registry
    server.shutdown()


@pytest.fixture()
def tree(tmp_path):
    for name in pin_images.FILES:
        shutil.copy(REPO / name, tmp_path / name)
    return tmp_path


def _digest(build: str) -> str:
    return "sha256:" + hashlib.sha256(build.encode()).hexdigest()


def test_the_shipped_references_are_the_ones_pulled(tree):
    refs = sorted({ref for _, _, ref in pin_images.references(tree)})
    assert [r.split("@")[0] for r in refs] == ["apache/airflow:3.3.2-python3.11", "postgres:16"]


def test_every_pulled_image_is_pinned_and_the_image_built_here_is_left_alone(registry, tree):
    compose_before = yaml.safe_load((tree / "docker-compose.yaml").read_text())
    assert pin_images.main(["--check", "--root", str(tree)]) == 1 or not pin_images.unpinned(tree)

    changes = pin_images.pin(tree)

    airflow, pg = _digest("airflow-build-1"), _digest("pg-build-1")
    assert f"FROM apache/airflow:3.3.2-python3.11@{airflow}\n" in (tree / "Dockerfile").read_text()
    compose = yaml.safe_load((tree / "docker-compose.yaml").read_text())
    assert compose["services"]["postgres"]["image"] == compose["services"]["warehouse"]["image"] == f"postgres:16@{pg}"
    for name, service in compose["services"].items():  # nothing else changed, the built image included
        before = compose_before["services"][name]
        assert {**service, "image": before.get("image")} == before, name
    assert "library/postgres:16" in registry.seen  # Docker Hub's official images live under library/
    assert pin_images.unpinned(tree) == [] and pin_images.main(["--check", "--root", str(tree)]) == 0
    assert len(changes) == 3

    registry.images["library/postgres:16"] = "pg-build-2"  # the tag moved: a rerun moves the pin with it
    assert [c.split(": ", 1)[1] for c in pin_images.pin(tree)] == [f"postgres:16@{pg} -> postgres:16@"
                                                                  f"{_digest('pg-build-2')}"] * 2
    assert pin_images.pin(tree) == []


def test_an_unknown_tag_or_an_unreachable_registry_names_the_image(registry, tree, monkeypatch):
    del registry.images["library/postgres:16"]
    with pytest.raises(pin_images.PinError, match=r"postgres:16: .*404"):
        pin_images.pin(tree)
    monkeypatch.setenv("PIN_IMAGES_REGISTRY_URL", "http://127.0.0.1:9")
    with pytest.raises(pin_images.PinError, match="cannot reach"):
        pin_images.resolve("postgres:16")
