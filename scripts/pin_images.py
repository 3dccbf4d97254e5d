"""Pin every container image the repository pulls to its digest: ``name:tag@sha256:…``.

A tag can be moved to another image at any time; a digest cannot. This resolves each
pulled image's tag (``FROM`` lines of the Dockerfile, ``image:`` lines of
docker-compose.yaml) to the digest its registry serves now, through the registry's own
HTTP API (OCI distribution: an anonymous bearer token, then ``HEAD /v2/<repo>/manifests/<tag>``),
and writes ``name:tag@sha256:…`` in place. The tag stays beside the digest, so readers
still see the version, and rerunning it moves a pin forward to the tag's current image.
Images built here (the compose file's ``build:`` services) are left alone.

    make pin-images                  # rewrite Dockerfile and docker-compose.yaml in place
    python scripts/pin_images.py --check   # exit 1 and name every image pulled without a digest

``PIN_IMAGES_REGISTRY_URL`` sends every request to one registry base URL instead (a mirror,
or a registry on loopback in the tests).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FILES = ("Dockerfile", "docker-compose.yaml")
DOCKER_HUB = "registry-1.docker.io"
# the manifest kinds a multi-architecture image is served as; the digest of the index is what `docker pull` pins
ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])
REF_LINE = re.compile(r"^(?P<lead>\s*(?:FROM\s+(?:--platform=\S+\s+)?|image:\s*))(?P<ref>[^\s#]+)(?P<tail>.*)$",
                      re.IGNORECASE)
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
TIMEOUT_S = 30


class PinError(RuntimeError):
    """An image could not be resolved: the message names it and the registry's answer."""


def split_ref(ref: str) -> tuple[str, str, str, str | None]:
    """``registry``, ``repository``, ``tag`` and ``digest`` (or None) of an image reference."""
    name, _, digest = ref.partition("@")
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, rest
    else:
        registry, path = DOCKER_HUB, name
    path, colon, tag = path.rpartition(":") if ":" in path.rsplit("/", 1)[-1] else (path, "", "latest")
    if registry == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    return registry, path, tag, digest or None


def built_here(compose: str) -> set[str]:
    """Images the compose file builds itself (the ``image`` of a service with ``build:``)."""
    import yaml

    services = (yaml.safe_load(compose) or {}).get("services") or {}
    return {s["image"] for s in services.values() if isinstance(s, dict) and "build" in s and "image" in s}


def references(root: Path = REPO) -> list[tuple[Path, int, str]]:
    """(file, line number, image reference) of every image pulled from a registry."""
    out = []
    for name in FILES:
        path = root / name
        text = path.read_text(encoding="utf-8")
        local = built_here(text) if name.endswith(".yaml") else set()
        for n, line in enumerate(text.splitlines()):
            m = REF_LINE.match(line)
            if m and m.group("ref") not in local and not m.group("ref").startswith("$"):
                out.append((path, n, m.group("ref")))
    return out


def _request(url: str, method: str = "GET", headers: dict | None = None):
    req = urllib.request.Request(url, method=method, headers=headers or {})
    return urllib.request.urlopen(req, timeout=TIMEOUT_S)  # noqa: S310 - registry URLs only


def _token(challenge: str, repository: str) -> str:
    """An anonymous pull token from the realm a registry's 401 names (``Bearer realm=…,service=…``)."""
    params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
    if "realm" not in params:
        raise PinError(f"the registry asked for authentication it does not describe: {challenge!r}")
    query = {"scope": params.get("scope", f"repository:{repository}:pull")}
    if "service" in params:
        query["service"] = params["service"]
    with _request(f"{params['realm']}?{urllib.parse.urlencode(query)}") as resp:
        body = json.loads(resp.read())
    return body.get("token") or body.get("access_token") or ""


def resolve(ref: str) -> str:
    """The digest the registry serves now for ``ref``'s tag."""
    registry, repository, tag, _ = split_ref(ref)
    base = os.environ.get("PIN_IMAGES_REGISTRY_URL", "").rstrip("/") or f"https://{registry}"
    url = f"{base}/v2/{repository}/manifests/{tag}"
    headers = {"Accept": ACCEPT}
    for _ in range(2):
        try:
            with _request(url, "HEAD", headers) as resp:
                digest = resp.headers.get("Docker-Content-Digest", "")
            break
        except urllib.error.HTTPError as exc:
            if exc.code == 401 and "Authorization" not in headers:
                headers["Authorization"] = f"Bearer {_token(exc.headers.get('WWW-Authenticate', ''), repository)}"
                continue
            raise PinError(f"{ref}: {url} answered {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            raise PinError(f"{ref}: cannot reach {base} ({exc.reason}); run this where the registry is reachable, "
                           f"or set PIN_IMAGES_REGISTRY_URL to a mirror") from None
    if not DIGEST.match(digest):
        raise PinError(f"{ref}: {url} gave no sha256 digest (Docker-Content-Digest: {digest!r})")
    return digest


def pin(root: Path = REPO) -> list[str]:
    """Rewrite every pulled image as ``name:tag@<current digest>``; the changes made."""
    changes, texts = [], {}
    for path, n, ref in references(root):
        lines = texts.setdefault(path, path.read_text(encoding="utf-8").splitlines(keepends=True))
        name = ref.split("@")[0]
        pinned = f"{name}@{resolve(ref)}"
        if pinned != ref:
            m = REF_LINE.match(lines[n].rstrip("\r\n"))
            ending = lines[n][len(lines[n].rstrip("\r\n")):]
            lines[n] = f"{m.group('lead')}{pinned}{m.group('tail')}{ending}"
            changes.append(f"{path.name}:{n + 1}: {ref} -> {pinned}")
    for path, lines in texts.items():
        path.write_text("".join(lines), encoding="utf-8")
    return changes


def unpinned(root: Path = REPO) -> list[str]:
    return [f"{path.name}:{n + 1}: {ref}" for path, n, ref in references(root) if not split_ref(ref)[3]]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="only report images pulled without a digest")
    p.add_argument("--root", type=Path, default=REPO)
    a = p.parse_args(argv)
    if a.check:
        missing = unpinned(a.root)
        for line in missing:
            print(f"not pinned by digest: {line}")
        if missing:
            print("Run `make pin-images` where the registries are reachable, and commit the result.")
        return 1 if missing else 0
    try:
        changes = pin(a.root)
    except PinError as exc:
        print(f"pin-images: {exc}", file=sys.stderr)
        return 1
    print("\n".join(changes) or "every image is pinned to its tag's current digest")
    return 0


if __name__ == "__main__":
    sys.exit(main())
