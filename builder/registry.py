"""OCI distribution API client: push a layout (blobs first, manifests last), pull a pinned base.

A push never leaves a manifest pointing at missing blobs: every blob is
confirmed (present, mounted or uploaded) before the first manifest is sent, and
the manifests of an index's children go before the index. Requests are retried
with exponential backoff on 5xx/429 answers and dropped connections.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlencode, urljoin, urlsplit

import requests

from builder.errors import BuildError
from builder.layers import write_file_atomic
from builder.wheels import cache_root
from builder.oci import (
    INDEX_MEDIA_TYPE,
    INDEX_TYPES,
    MANIFEST_MEDIA_TYPE,
    MANIFEST_TYPES,
    REF_NAME_ANNOTATION,
    LayoutWriter,
    Platform,
    blob_path,
    bytes_digest,
    read_index,
)

Progress = Callable[[str], None]

ACCEPT_MANIFESTS = ", ".join([MANIFEST_MEDIA_TYPE, INDEX_MEDIA_TYPE, *MANIFEST_TYPES[1:], *INDEX_TYPES[1:]])
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_REPO_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
_CHALLENGE_RE = re.compile(r'(\w+)="([^"]*)"')
_RETRY_STATUSES = {429, 500, 502, 503, 504}


@dataclasses.dataclass(frozen=True)
class Reference:
    """`registry/repository[:tag][@digest]`."""

    registry: str
    repository: str
    tag: str = ""
    digest: str = ""

    def __str__(self) -> str:
        out = f"{self.registry}/{self.repository}"
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


def parse_reference(text: str) -> Reference:
    """Parse `host[:port]/repo/path[:tag][@sha256:…]`; the registry host must be explicit."""
    rest, _, digest = text.strip().partition("@")
    if digest and not _DIGEST_RE.match(digest):
        raise BuildError(f"{text}: digest must be sha256:<64 hex digits>")
    host, slash, path = rest.partition("/")
    if not slash or not path or not ("." in host or ":" in host or host == "localhost"):
        raise BuildError(f"{text}: expected host[:port]/repository[:tag][@sha256:…] (name the registry host)")
    tag = ""
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        path, tag = path.rsplit(":", 1)
        if not _TAG_RE.match(tag):
            raise BuildError(f"{text}: invalid tag {tag!r}")
    if not _REPO_RE.match(path):
        raise BuildError(f"{text}: invalid repository name {path!r} (lowercase letters, digits, . _ - /)")
    return Reference(host, path, tag, digest)


@dataclasses.dataclass(frozen=True)
class Credentials:
    username: str = ""
    password: str = ""
    token: str = ""  # a bearer token used as is
    identity_token: str = ""  # an OAuth2 refresh token, exchanged at the registry's token service

    def __repr__(self) -> str:  # never print a secret
        return (
            f"Credentials(username={self.username!r}, password=***, token={'***' if self.token else ''!r}, "
            f"identity_token={'***' if self.identity_token else ''!r})"
        )


DOCKER_HUB_KEY = "https://index.docker.io/v1/"  # docker's key for Docker Hub in config.json and helpers
_DOCKER_HUB_HOSTS = {"docker.io", "index.docker.io", "registry-1.docker.io"}
_HELPER_TIMEOUT = 120.0  # seconds; a helper may unlock a keychain
_HELPER_NOT_FOUND = "credentials not found in native keychain"  # docker-credential-helpers' own wording
_IDENTITY_TOKEN_USER = "<token>"  # a helper's username for "the secret is an identity token"


def docker_config_path() -> Path:
    """`$DOCKER_CONFIG/config.json`, or `~/.docker/config.json`."""
    directory = os.environ.get("DOCKER_CONFIG") or str(Path.home() / ".docker")
    return Path(directory) / "config.json"


def docker_config_credentials(registry: str, config_path: Path | None = None) -> Credentials | None:
    """Credentials for `registry` as `docker push` would find them in `~/.docker/config.json`.

    A credential helper comes first: `credHelpers[<host>]`, else `credsStore`,
    run as `docker-credential-<name> get`. When it has nothing for the host (or
    none is configured), `auths.<host>` is read: `identitytoken`,
    `registrytoken`, `auth` (base64 `user:password`) or `username`/`password`.
    `$DOCKER_CONFIG` is honoured.
    """
    config_path = Path(config_path) if config_path is not None else docker_config_path()
    try:
        data = json.loads(config_path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise BuildError(f"{config_path}: unreadable docker config: {err}") from None
    if not isinstance(data, dict):
        raise BuildError(f"{config_path}: unreadable docker config: not a JSON object")
    server = DOCKER_HUB_KEY if registry in _DOCKER_HUB_HOSTS else registry
    helpers = data.get("credHelpers")
    helper, setting = "", ""
    if isinstance(helpers, dict) and helpers.get(server):
        helper, setting = helpers[server], f"credHelpers.{server}"
    elif data.get("credsStore"):
        helper, setting = data["credsStore"], "credsStore"
    if helper:
        found = credential_helper_get(str(helper), server, where=f"{config_path} {setting}")
        if found:
            return found
    return _auths_entry(data.get("auths") or {}, registry, server, config_path)


def credential_helper_get(helper: str, server: str, *, where: str = "") -> Credentials | None:
    """Run `docker-credential-<helper> get` for `server` (the docker credential-helper protocol).

    The server (a registry host, or Docker Hub's URL) goes to the helper's
    stdin; it prints `{"ServerURL", "Username", "Secret"}`. A username of
    `<token>` marks the secret as an identity token. None when the helper has
    nothing stored for the server. Errors name the helper and the server, never
    what the helper printed on success.
    """
    program = f"docker-credential-{helper}"
    context = f"{program} (from {where})" if where else program
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", helper):
        raise BuildError(f"{context}: not a credential helper name")
    try:
        result = subprocess.run(
            [program, "get"], input=server.encode(), capture_output=True, timeout=_HELPER_TIMEOUT, check=False
        )
    except FileNotFoundError:
        raise BuildError(
            f"{context}: not found on PATH, so there are no credentials for {server}; install the helper, "
            "or remove it from the docker config, or pass --username with --password-stdin"
        ) from None
    except subprocess.TimeoutExpired:
        raise BuildError(f"{context}: no answer for {server} within {_HELPER_TIMEOUT:.0f}s") from None
    except OSError as err:
        raise BuildError(f"{context}: cannot run it for {server}: {err.strerror or err}") from None
    stdout = result.stdout.decode(errors="replace").strip()
    stderr = result.stderr.decode(errors="replace").strip()
    if result.returncode != 0:
        if _HELPER_NOT_FOUND in (stdout, stderr):
            return None
        # On failure helpers print an error message, not credentials; still, never echo JSON.
        said = stderr or ("" if stdout.startswith("{") else stdout)
        said = f": {_short(said.splitlines()[0])}" if said else ""
        raise BuildError(f"{context}: `get` for {server} failed (exit {result.returncode}){said}")
    try:
        answer = json.loads(stdout)
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or not isinstance(answer.get("Secret", ""), str):
        raise BuildError(f"{context}: `get` for {server} did not print credentials JSON (ServerURL, Username, Secret)")
    username, secret = str(answer.get("Username") or ""), answer.get("Secret") or ""
    if not secret:
        return None
    if username == _IDENTITY_TOKEN_USER:
        return Credentials(identity_token=secret)
    return Credentials(username, secret)


def _auths_entry(auths: Mapping, registry: str, server: str, config_path: Path) -> Credentials | None:
    keys = (server, registry, f"https://{registry}", f"http://{registry}", f"https://{registry}/v1/", f"https://{registry}/v2/")
    for key in dict.fromkeys(keys):
        entry = auths.get(key)
        if not isinstance(entry, dict):
            continue
        if entry.get("identitytoken"):
            return Credentials(identity_token=entry["identitytoken"])
        if entry.get("registrytoken"):
            return Credentials(token=entry["registrytoken"])
        if entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise BuildError(f"{config_path}: auths.{key}.auth is not base64 of user:password") from None
            return Credentials(user, password)
        if entry.get("username"):
            return Credentials(entry["username"], entry.get("password", ""))
    return None


def is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]")
    return name == "localhost" or name == "::1" or name.startswith("127.")


class RegistryClient:
    """One registry; keeps its auth tokens per scope and retries transient failures."""

    def __init__(
        self,
        registry: str,
        *,
        credentials: Credentials | None = None,
        insecure: bool = False,
        retries: int = 5,
        backoff: float = 0.5,
        timeout: float = 60.0,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        find_credentials: Callable[[], Credentials | None] | None = None,
    ) -> None:
        """`find_credentials` runs when the registry first asks for credentials and
        `credentials` is None: a registry that asks for none never starts a helper."""
        self.registry = registry
        self.scheme = "http" if insecure or is_loopback(registry) else "https"
        self.base_url = f"{self.scheme}://{registry}"
        self.credentials = credentials
        self._find_credentials = find_credentials
        self.retries = max(1, retries)
        self.backoff = backoff
        self.timeout = timeout
        self.session = session or requests.Session()
        self.session.trust_env = False  # a proxy in the environment must not see registry credentials
        self._sleep = sleep
        self._auth: dict[str, str] = {}  # scope → Authorization header value
        self._basic_only = False

    # -- transport ---------------------------------------------------------

    def request(
        self,
        method: str,
        url: str,
        *,
        scope: str,
        headers: Mapping[str, str] | None = None,
        body: Callable[[], object] | None = None,
        ok: Iterable[int] = (200,),
        retry: bool = True,
        stream: bool = False,
    ) -> requests.Response:
        """Send with auth; retry 5xx/429/connection errors with backoff; raise unless the status is in `ok`."""
        url = urljoin(self.base_url + "/", url)
        # Credentials go to the registry's own origin only, as docker and crane do: an upload
        # `Location` may name any host, and that host must not receive them.
        on_registry = _origin(url) == _origin(self.base_url)
        ok = set(ok)
        attempts = self.retries if retry else 1
        challenged = False
        last_problem = ""
        attempt = 0
        while attempt < attempts:
            send_headers = dict(headers or {})
            auth = (self._auth.get(scope) or self._auth.get("*")) if on_registry else None
            if auth:
                send_headers["Authorization"] = auth
            try:
                response = self.session.request(
                    method, url, headers=send_headers, data=body() if body else None,
                    timeout=self.timeout, stream=stream, allow_redirects=method in ("GET", "HEAD"),
                )  # fmt: skip
            except (requests.ConnectionError, requests.Timeout) as err:
                last_problem = f"connection failed ({type(err).__name__}: {_short(err)})"
                attempt += 1
                self._pause(attempt, attempts)
                continue
            if response.status_code == 401 and _origin(response.url or url) != _origin(self.base_url):
                # Redirected or sent elsewhere (requests already dropped Authorization on the way):
                # answering this challenge would hand the credentials to that host or its realm.
                response.close()
                raise BuildError(
                    f"{self.registry}: {method} {_path(url)} went to {_origin_text(response.url or url)}, which is not "
                    f"the registry, and it asks for credentials (401); they are sent only to {self.registry} and "
                    "the token service it names"
                )
            if response.status_code == 401 and not challenged:
                challenged = True
                self._authenticate(response, scope)
                continue
            if response.status_code == 401:
                raise BuildError(
                    f"{self.registry}: refused the credentials for {scope} (401); check --username and "
                    "--password-stdin, or what ~/.docker/config.json (or its credential helper) holds for it"
                )
            if response.status_code in _RETRY_STATUSES:
                last_problem = f"HTTP {response.status_code}"
                response.close()
                attempt += 1
                self._pause(attempt, attempts)
                continue
            if response.status_code not in ok:
                raise _HTTPError(
                    f"{self.registry}: {method} {_path(url)} → HTTP {response.status_code}: {_error_text(response)}",
                    response.status_code,
                )
            return response
        raise _HTTPError(f"{self.registry}: {method} {_path(url)} failed after {attempts} attempt(s): {last_problem}", 0)

    def _pause(self, attempt: int, attempts: int) -> None:
        if attempt < attempts:
            self._sleep(self.backoff * (2 ** (attempt - 1)))

    def _credentials(self) -> Credentials | None:
        if self.credentials is None and self._find_credentials is not None:
            find, self._find_credentials = self._find_credentials, None
            self.credentials = find()
        return self.credentials

    def _authenticate(self, response: requests.Response, scope: str) -> None:
        challenge = response.headers.get("WWW-Authenticate", "")
        response.close()
        kind = challenge.split(" ", 1)[0].lower()
        credentials = self._credentials()
        if kind == "basic":
            if not credentials or not (credentials.username or credentials.token or credentials.identity_token):
                raise BuildError(
                    f"{self.registry}: requires credentials (basic auth); pass --username with --password-stdin, "
                    f"or `docker login {self.registry}` so ~/.docker/config.json (or its credential helper) has them"
                )
            if credentials.identity_token and not credentials.username:
                raise BuildError(
                    f"{self.registry}: asks for basic auth, but its docker credentials are an identity token, which "
                    "only a token service accepts; pass --username with --password-stdin"
                )
            if credentials.token:
                self._auth["*"] = f"Bearer {credentials.token}"
            else:
                pair = f"{credentials.username}:{credentials.password}".encode()
                self._auth["*"] = "Basic " + base64.b64encode(pair).decode()
            return
        if kind != "bearer":
            raise BuildError(f"{self.registry}: unsupported authentication challenge {challenge!r}")
        params = dict(_CHALLENGE_RE.findall(challenge))
        realm = params.get("realm")
        if not realm:
            raise BuildError(f"{self.registry}: bearer challenge without a realm: {challenge!r}")
        scopes = [s for s in scope.split(" ") if s and s != "*"]
        if params.get("scope"):
            scopes += [s for s in params["scope"].split(" ") if s not in scopes]
        if credentials and credentials.token and not credentials.username:
            self._auth[scope] = f"Bearer {credentials.token}"
            return
        try:
            if credentials and credentials.identity_token:
                # OAuth2 refresh-token grant, as docker does with an identity token.
                form = {"grant_type": "refresh_token", "refresh_token": credentials.identity_token,
                        "client_id": "pipedreamer", "scope": " ".join(scopes)}  # fmt: skip
                if params.get("service"):
                    form["service"] = params["service"]
                token_response = self.session.post(realm, data=form, timeout=self.timeout)
            else:
                query = {"service": params["service"]} if params.get("service") else {}
                token_url = realm + ("&" if "?" in realm else "?") + urlencode([*query.items(), *[("scope", s) for s in scopes]])
                auth = (credentials.username, credentials.password) if credentials and credentials.username else None
                token_response = self.session.get(token_url, auth=auth, timeout=self.timeout)
        except (requests.ConnectionError, requests.Timeout) as err:
            raise BuildError(f"{self.registry}: token endpoint {realm} unreachable: {_short(err)}") from None
        if token_response.status_code in (401, 403):
            raise BuildError(f"{self.registry}: token endpoint {realm} refused the credentials ({token_response.status_code})")
        if token_response.status_code != 200:
            raise BuildError(f"{self.registry}: token endpoint {realm} → HTTP {token_response.status_code}")
        try:
            payload = token_response.json()
            token = payload.get("token") or payload.get("access_token")
        except ValueError:
            token = None
        if not token:
            raise BuildError(f"{self.registry}: token endpoint {realm} returned no token")
        self._auth[scope] = f"Bearer {token}"

    # -- API ---------------------------------------------------------------

    def blob_exists(self, repo: str, digest: str) -> bool:
        response = self.request("HEAD", f"/v2/{repo}/blobs/{digest}", scope=_scope(repo, "pull"), ok=(200, 404))
        return response.status_code == 200

    def mount_blob(self, repo: str, digest: str, from_repo: str) -> bool:
        """Cross-repository mount; False when the registry would rather have an upload."""
        query = urlencode({"mount": digest, "from": from_repo})
        scope = f"{_scope(repo, 'pull,push')} {_scope(from_repo, 'pull')}"
        response = self.request("POST", f"/v2/{repo}/blobs/uploads/?{query}", scope=scope, ok=(201, 202))
        if response.status_code == 202:  # the registry opened an upload instead: drop it
            location = response.headers.get("Location")
            if location:
                try:
                    self.request("DELETE", location, scope=_scope(repo, "pull,push"), ok=(200, 202, 204, 404), retry=False)
                except BuildError:
                    pass
            return False
        return True

    def upload_blob(self, repo: str, digest: str, size: int, path: Path) -> None:
        """Monolithic upload (POST, then PUT with the bytes); the pair is redone if the PUT fails."""
        scope = _scope(repo, "pull,push")
        last: _HTTPError | None = None
        for attempt in range(1, self.retries + 1):
            start = self.request("POST", f"/v2/{repo}/blobs/uploads/", scope=scope, ok=(202,))
            location = start.headers.get("Location")
            if not location:
                raise BuildError(f"{self.registry}: upload of {digest} started without a Location header")
            url = urljoin(self.base_url + "/", location)
            url += ("&" if "?" in url else "?") + urlencode({"digest": digest})
            try:
                with open(path, "rb") as blob:
                    self.request(
                        "PUT", url, scope=scope, ok=(201,), retry=False,
                        headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                        body=lambda: _rewound(blob),
                    )  # fmt: skip
                return
            except _HTTPError as err:
                # A dropped connection or 5xx (status 0 after the retries) or a lost
                # upload session (404) starts over; other refusals are final.
                if err.status not in (0, 404):
                    raise
                last = err
                self._pause(attempt, self.retries)
        raise BuildError(f"{self.registry}: upload of {digest} to {repo} failed after {self.retries} attempts: {last}")

    def put_manifest(self, repo: str, reference: str, body: bytes, media_type: str) -> str:
        digest = bytes_digest(body)
        response = self.request(
            "PUT", f"/v2/{repo}/manifests/{reference}", scope=_scope(repo, "pull,push"), ok=(200, 201),
            headers={"Content-Type": media_type}, body=lambda: body,
        )  # fmt: skip
        echoed = response.headers.get("Docker-Content-Digest")
        if echoed and echoed != digest:
            raise BuildError(f"{self.registry}: stored manifest {repo}:{reference} as {echoed}, expected {digest}")
        return digest

    def get_manifest(self, repo: str, reference: str) -> tuple[bytes, str, str]:
        """(body, media type, digest of body)."""
        response = self.request(
            "GET", f"/v2/{repo}/manifests/{reference}", scope=_scope(repo, "pull"), ok=(200, 404),
            headers={"Accept": ACCEPT_MANIFESTS},
        )  # fmt: skip
        if response.status_code == 404:
            raise BuildError(f"{self.registry}: {repo}@{reference}: manifest not found")
        body = response.content
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        try:
            media_type = json.loads(body).get("mediaType") or media_type
        except ValueError:
            raise BuildError(f"{self.registry}: {repo}@{reference}: manifest is not JSON") from None
        return body, media_type, bytes_digest(body)

    def download_blob(self, repo: str, digest: str, dest: Path) -> None:
        """Stream a blob to `dest`, verifying its digest (temp file + rename)."""
        for attempt in range(1, self.retries + 1):
            response = self.request("GET", f"/v2/{repo}/blobs/{digest}", scope=_scope(repo, "pull"), stream=True)
            h = hashlib.sha256()
            tmp = dest.with_name(f".{dest.name}.part")
            try:
                with open(tmp, "wb") as f:
                    for chunk in response.iter_content(1 << 20):
                        h.update(chunk)
                        f.write(chunk)
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as err:
                tmp.unlink(missing_ok=True)
                if attempt == self.retries:
                    raise BuildError(f"{self.registry}: download of {digest} failed: {_short(err)}") from None
                self._pause(attempt, self.retries)
                continue
            if "sha256:" + h.hexdigest() != digest:
                tmp.unlink(missing_ok=True)
                raise BuildError(f"{self.registry}: blob {repo}@{digest} arrived with a different digest")
            os.replace(tmp, dest)
            return


class _HTTPError(BuildError):
    """A request that failed; `status` is 0 when retries ran out on transient failures."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _rewound(f: BinaryIO) -> BinaryIO:
    """The same file from its start: a request re-sent after a 401 sends all of it again."""
    f.seek(0)
    return f


def _origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of a URL, the port filled in from the scheme: what the same origin means."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = -1  # an unparsable port matches nothing
    return scheme, (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(scheme)


def _origin_text(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def _scope(repo: str, actions: str) -> str:
    return f"repository:{repo}:{actions}"


def _path(url: str) -> str:
    return re.sub(r"^https?://[^/]+", "", url).split("?")[0]


def _short(err: BaseException) -> str:
    text = str(err)
    return text if len(text) < 160 else text[:157] + "..."


def _error_text(response: requests.Response) -> str:
    try:
        errors = response.json().get("errors") or []
        return "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors) or response.text[:200]
    except ValueError:
        return response.text[:200] or response.reason


# ---------------------------------------------------------------------------
# Which repository already holds a blob (for cross-repository mounts)


class KnownBlobs:
    """digest → repository per registry, remembered in the cache between pushes and pulls."""

    def __init__(self, cache_dir: Path | None, registry: str) -> None:
        self.path = Path(cache_dir) / "registry" / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', registry)}.json" if cache_dir else None
        self.blobs: dict[str, str] = {}
        if self.path and self.path.exists():
            try:
                self.blobs = dict(json.loads(self.path.read_text()))
            except (OSError, ValueError):
                self.blobs = {}

    def record(self, repo: str, digests: Iterable[str]) -> None:
        for digest in digests:
            self.blobs[digest] = repo
        if self.path:
            write_file_atomic(self.path, json.dumps(self.blobs, sort_keys=True).encode())


# ---------------------------------------------------------------------------
# Push


@dataclasses.dataclass(frozen=True)
class PushResult:
    reference: str  # registry/repo:tag
    digest: str
    uploaded: int
    skipped: int
    mounted: int


def push_image(
    layout: str | Path,
    reference: str,
    *,
    credentials: Credentials | None = None,
    insecure: bool = False,
    mount_from: Mapping[str, str] | None = None,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
    retries: int = 5,
    backoff: float = 0.5,
) -> PushResult:
    """Push the image that the layout's index.json points to as `reference` (registry/repo[:tag]).

    Without a tag, the layout's `org.opencontainers.image.ref.name` is used.
    `mount_from` maps blob digests to repositories of the same registry that
    hold them; the cache remembers earlier pushes and pulls for the same use.
    Without `credentials`, the docker config's (`docker_config_credentials`)
    are used if the registry asks for any.
    """
    say = progress or (lambda _m: None)
    layout = Path(layout)
    ref = parse_reference(reference)
    index = read_index(layout)
    if len(index["manifests"]) != 1:
        raise BuildError(f"{layout}: index.json should point to exactly one image, it has {len(index['manifests'])}")
    top = index["manifests"][0]
    tag = ref.tag or (top.get("annotations") or {}).get(REF_NAME_ANNOTATION, "")
    if not tag or not _TAG_RE.match(tag):
        raise BuildError(f"{reference}: give a tag (registry/repo:tag); the layout names none")
    client = RegistryClient(
        ref.registry, credentials=credentials, insecure=insecure, retries=retries, backoff=backoff,
        find_credentials=lambda: docker_config_credentials(ref.registry),
    )  # fmt: skip
    known = KnownBlobs(cache_dir or cache_root(), ref.registry)

    # Children before parents: blobs, then each image manifest, then the index.
    manifests: list[tuple[dict, bytes]] = []
    blobs: dict[str, int] = {}
    _collect(layout, top, manifests, blobs)

    uploaded = skipped = mounted = 0
    for n, (digest, size) in enumerate(sorted(blobs.items()), 1):
        where = f"[{n}/{len(blobs)}] {digest[:19]}"
        if client.blob_exists(ref.repository, digest):
            skipped += 1
            say(f"{where} already in {ref.repository}")
            continue
        source_repo = (mount_from or {}).get(digest) or known.blobs.get(digest)
        if source_repo and source_repo != ref.repository and client.mount_blob(ref.repository, digest, source_repo):
            mounted += 1
            say(f"{where} mounted from {source_repo}")
            continue
        say(f"{where} uploading {size} bytes")
        client.upload_blob(ref.repository, digest, size, blob_path(layout, digest))
        uploaded += 1
    for desc, body in manifests[:-1]:
        client.put_manifest(ref.repository, desc["digest"], body, desc["mediaType"])
    top_desc, top_body = manifests[-1]
    digest = client.put_manifest(ref.repository, tag, top_body, top_desc["mediaType"])
    known.record(ref.repository, blobs)
    target = f"{ref.registry}/{ref.repository}:{tag}"
    say(f"pushed {target}@{digest} ({uploaded} uploaded, {mounted} mounted, {skipped} already there)")
    return PushResult(target, digest, uploaded, skipped, mounted)


def _collect(layout: Path, desc: Mapping, manifests: list[tuple[dict, bytes]], blobs: dict[str, int]) -> None:
    """Post-order walk: an index's children are appended before the index itself."""
    path = blob_path(layout, desc["digest"])
    try:
        body = path.read_bytes()
    except OSError:
        raise BuildError(f"{layout}: blob {desc['digest']} is missing") from None
    if bytes_digest(body) != desc["digest"]:
        raise BuildError(f"{layout}: blob {desc['digest']} is corrupt")
    document = json.loads(body)
    media_type = desc.get("mediaType") or document.get("mediaType")
    if media_type in INDEX_TYPES:
        for child in document.get("manifests", []):
            _collect(layout, child, manifests, blobs)
    elif media_type in MANIFEST_TYPES:
        for blob in [document["config"], *document.get("layers", [])]:
            if not blob_path(layout, blob["digest"]).is_file():
                raise BuildError(f"{layout}: blob {blob['digest']} is missing")
            blobs[blob["digest"]] = blob["size"]
    else:
        raise BuildError(f"{layout}: unsupported media type {media_type!r}")
    manifests.append(({"mediaType": media_type, "digest": desc["digest"]}, body))


# ---------------------------------------------------------------------------
# Pull (bases pinned by digest)


def pull_base(
    reference: str,
    cache_dir: Path,
    *,
    platforms: Sequence[Platform] = (),
    credentials: Credentials | None = None,
    insecure: bool = False,
    progress: Progress | None = None,
    retries: int = 5,
    backoff: float = 0.5,
    known_blobs_dir: Path | None = None,
) -> Path:
    """Pull `host/repo@sha256:…` into `cache_dir/<digest>` as an OCI layout (once) and return it.

    Only the platforms asked for are fetched from a multi-platform index.
    Without `credentials`, the docker config's are used if the registry asks.
    """
    say = progress or (lambda _m: None)
    ref = parse_reference(reference)
    if not ref.digest:
        raise BuildError(
            f"--base {reference}: pin the base by digest (host/repo@sha256:…); a tag can move, "
            "and the same inputs must give the same image"
        )
    dest = Path(cache_dir) / ref.digest.split(":", 1)[1]
    wanted = sorted({str(p) for p in platforms})
    marker = dest / "pipedreamer-platforms.json"
    if marker.exists() and set(json.loads(marker.read_text())) >= set(wanted):
        # Pulled before, perhaps from another registry: this one serves the same
        # digest, so later pushes here may mount its blobs (a mount it cannot
        # honour falls back to an upload).
        cached = [f"sha256:{blob.name}" for blob in (dest / "blobs" / "sha256").iterdir()]
        KnownBlobs(known_blobs_dir or cache_root(), ref.registry).record(ref.repository, sorted(cached))
        return dest
    client = RegistryClient(
        ref.registry, credentials=credentials, insecure=insecure, retries=retries, backoff=backoff,
        find_credentials=lambda: docker_config_credentials(ref.registry),
    )  # fmt: skip
    body, media_type, digest = client.get_manifest(ref.repository, ref.digest)
    if digest != ref.digest:
        raise BuildError(f"--base {reference}: the registry sent a manifest with digest {digest}")
    say(f"pulling {reference}")
    fetched: list[str] = []
    dest.parent.mkdir(parents=True, exist_ok=True)
    with LayoutWriter(dest) as writer:
        writer.add_bytes(body)
        document = json.loads(body)
        if media_type in INDEX_TYPES:
            for child in document.get("manifests", []):
                p = child.get("platform") or {}
                platform = Platform(p.get("os", ""), p.get("architecture", ""), p.get("variant", ""))
                if platforms and not any(platform.matches(w) for w in platforms):
                    continue
                child_body, child_type, child_digest = client.get_manifest(ref.repository, child["digest"])
                if child_digest != child["digest"]:
                    raise BuildError(f"--base {reference}: child manifest {child['digest']} arrived with digest {child_digest}")
                writer.add_bytes(child_body)
                fetched += _pull_image_blobs(client, ref.repository, json.loads(child_body), writer, say)
        elif media_type in MANIFEST_TYPES:
            fetched += _pull_image_blobs(client, ref.repository, document, writer, say)
        else:
            raise BuildError(f"--base {reference}: unsupported manifest media type {media_type!r}")
        writer.commit([{"mediaType": media_type, "digest": digest, "size": len(body)}])
    write_file_atomic(marker, json.dumps(wanted).encode())
    KnownBlobs(known_blobs_dir or cache_root(), ref.registry).record(ref.repository, fetched)
    return dest


def _pull_image_blobs(client: RegistryClient, repo: str, manifest: Mapping, writer: LayoutWriter, say: Progress) -> list[str]:
    digests = []
    for blob in [manifest["config"], *manifest.get("layers", [])]:
        target = blob_path(writer.tmp, blob["digest"])
        if not target.exists():
            say(f"  {blob['digest'][:19]} {blob.get('size', '?')} bytes")
            client.download_blob(repo, blob["digest"], target)
        digests.append(blob["digest"])
    return digests
