"""A local Hub-compatible HTTP server for tests: the real `huggingface_hub` client talks to it.

Serves dataset and model repos from memory: revision info, the file tree (paginated with
Link headers, recursive or not), and `resolve` with HEAD/GET/Range and the Hub's ETag /
X-Repo-Commit / X-Linked-Etag headers. Writes as the Hub takes them: create, branch, tag,
preupload, the Git LFS batch API with basic PUT transfers (files of LFS_MIN bytes or more),
and NDJSON commits with `parentCommit` checked. Tokens have a user, organisations and a role
(`whoami-v2`); a write needs a write token of the repo's namespace. Faults can be injected
per path (503 answers, a connection dropped mid-file, corrupted bytes, throttled transfers)
and per commit (`fail_commits`). The client must run with HF_HUB_DISABLE_XET (this server
speaks LFS, not Xet). Test infrastructure only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

PAGE = 50
LFS_MIN = 10_000


def git_blob_sha1(data: bytes) -> str:
    """Git's object id of a file: the Hub's `oid`, and the ETag of a file not in LFS."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Faults:
    """Faults for one path; counters go down as they fire."""

    unavailable: int = 0  # answer 503 to this many GETs
    drop_after: int | None = None  # close the connection after this many body bytes (once)
    corrupt: int = 0  # flip a byte in this many full transfers
    corrupt_at: int | None = None  # flip the byte at this offset in every transfer of it
    ignore_range: bool = False  # answer a Range request with the whole file (200)
    bytes_per_s: float | None = None  # throttle


TOKENS = {
    "hf_test_token": {"name": "tester", "orgs": ["team"], "role": "write"},
    "hf_read_token": {"name": "tester", "orgs": ["team"], "role": "read"},
}


@dataclass
class FakeHub:
    """Repos: repo_id -> {commit sha -> {path: bytes}}, plus branch names."""

    repos: dict[str, dict[str, dict[str, bytes]]] = field(default_factory=dict)
    branches: dict[str, dict[str, str]] = field(default_factory=dict)
    faults: dict[str, Faults] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)
    html: bool = False  # answer every API call with an HTML page (a captive portal, a proxy)
    lock: threading.Lock = field(default_factory=threading.Lock)
    tokens: dict[str, dict] = field(default_factory=lambda: dict(TOKENS))
    lfs: dict[str, bytes] = field(default_factory=dict)  # uploaded LFS objects by sha256
    commits: list[tuple[str, str, int]] = field(default_factory=list)  # (repo, sha, operations)
    fail_commits: list[int] = field(default_factory=list)  # fail the commit after N more
    private: set[str] = field(default_factory=set)
    hashes: dict[int, tuple[bytes, str, str]] = field(default_factory=dict)

    def ids(self, data: bytes) -> tuple[str, str]:
        """A file's git blob id and sha256, computed once per stored object."""
        held = self.hashes.get(id(data))
        if held is None or held[0] is not data:  # the object itself is kept: ids stay unique
            held = (data, git_blob_sha1(data), hashlib.sha256(data).hexdigest())
            self.hashes[id(data)] = held
        return held[1], held[2]

    def commit(self, repo: str, files: dict[str, bytes], branch: str = "main") -> str:
        """Add a revision of `repo` with exactly these files; return its sha."""
        listing = sorted((p, hashlib.sha256(b).hexdigest()) for p, b in files.items())
        sha = hashlib.sha1(json.dumps(listing).encode()).hexdigest()
        self.repos.setdefault(repo, {})[sha] = dict(files)
        self.branches.setdefault(repo, {})[branch] = sha
        return sha

    def resolve(self, repo: str, rev: str) -> str | None:
        if repo not in self.repos:
            return None
        if rev in self.repos[repo]:
            return rev
        return self.branches[repo].get(rev)


def _handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        def _json(self, obj, status=200, extra=None) -> None:
            body = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":  # a HEAD answer has headers only
                self.wfile.write(body)

        def _error(self, status: int, code: str, message: str) -> None:
            self._json(
                {"error": message}, status, {"X-Error-Code": code, "X-Error-Message": message}
            )

        def _repo_rev(self, repo: str, rev: str) -> str | None:
            if repo not in hub.repos:
                self._error(404, "RepoNotFound", "Repository not found")
                return None
            sha = hub.resolve(repo, unquote(rev))
            if sha is None:
                self._error(404, "RevisionNotFound", "Revision not found")
            return sha

        def _token(self) -> dict | None:
            auth = self.headers.get("Authorization") or ""
            return hub.tokens.get(auth.removeprefix("Bearer "))

        def _may_write(self, repo: str) -> bool:
            """A write token of the repo's namespace; else the Hub's 401 or 403, and False."""
            who = self._token()
            if who is None:
                self._error(401, "Unauthorized", "Invalid credentials in Authorization header")
                return False
            if who["role"] != "write" or repo.split("/")[0] not in [who["name"], *who["orgs"]]:
                self._error(403, "Forbidden", "You don't have the rights to write to this repo")
                return False
            return True

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                out = b""
                while True:
                    size = int(self.rfile.readline().strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()
                        return out
                    out += self.rfile.read(size)
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def do_PUT(self) -> None:
            """A basic LFS transfer: the object's sha256 is the capability in the URL."""
            url = urlparse(self.path)
            raw = self._body()
            with hub.lock:
                hub.requests.append((self.command, url.path, None))
            oid = url.path.rsplit("/", 1)[-1]
            if not url.path.startswith("/lfs-upload/") or hashlib.sha256(raw).hexdigest() != oid:
                return self._error(400, "BadRequest", "object does not match its oid")
            with hub.lock:
                hub.lfs[oid] = raw
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None

        def do_POST(self) -> None:
            """paths-info, create, preupload, LFS batch, commit, branch, tag, validate-yaml."""
            url = urlparse(self.path)
            parts = [unquote(p) for p in url.path.strip("/").split("/")]
            raw = self._body()
            with hub.lock:
                hub.requests.append((self.command, url.path, None))
                hub.authorizations.append(self.headers.get("Authorization"))
            if parts[:3] == ["api", "repos", "create"]:
                return self._create(json.loads(raw))
            if parts[:2] == ["api", "validate-yaml"]:
                return self._json({"warnings": []})
            if parts[-4:] == ["info", "lfs", "objects", "batch"] and len(parts) >= 6:
                return self._lfs_batch(f"{parts[-6]}/{parts[-5].removesuffix('.git')}", raw)
            writes = parts[:2] in (["api", "models"], ["api", "datasets"]) and len(parts) >= 6
            if writes and parts[4] != "paths-info":
                return self._write(f"{parts[2]}/{parts[3]}", parts[4], parts[5], raw)
            if parts[:2] != ["api", "datasets"] or len(parts) < 6 or parts[4] != "paths-info":
                return self._error(404, "NotFound", f"no route for {url.path}")
            form = parse_qs(raw.decode())
            repo = f"{parts[2]}/{parts[3]}"
            sha = self._repo_rev(repo, parts[5])
            if sha:
                wanted = set(form.get("paths", []))
                self._json([e for e in self._entries(repo, sha, "") if e["path"] in wanted])
            return None

        def _create(self, body: dict) -> None:
            who = self._token()
            repo = f"{body.get('organization') or (who or {}).get('name')}/{body['name']}"
            if not self._may_write(repo):
                return None
            with hub.lock:
                if repo in hub.repos:
                    msg = "You already created this model repo"  # the Hub's 409 also has the url
                    return self._json(
                        {"error": msg, "url": f"http://{self.headers['Host']}/{repo}"},
                        409,
                        {"X-Error-Message": msg},
                    )
                hub.commit(repo, {".gitattributes": b"*.onnx filter=lfs diff=lfs merge=lfs\n"})
                if body.get("visibility") == "private" or body.get("private"):
                    hub.private.add(repo)
            kind = "datasets/" if body.get("type") == "dataset" else ""
            self._json({"url": f"http://{self.headers['Host']}/{kind}{repo}"})
            return None

        def _lfs_batch(self, repo: str, raw: bytes) -> None:
            """Objects already held need no action; others get a PUT URL naming their oid."""
            if not self._may_write(repo):
                return None
            objects = []
            for o in json.loads(raw)["objects"]:
                entry = {"oid": o["oid"], "size": o["size"]}
                if o["oid"] not in hub.lfs:
                    href = f"http://{self.headers['Host']}/lfs-upload/{o['oid']}"
                    entry["actions"] = {"upload": {"href": href}}
                objects.append(entry)
            self._json({"transfer": "basic", "objects": objects})
            return None

        def _write(self, repo: str, op: str, rev: str, raw: bytes) -> None:
            """Repo writes: small files inline ('regular'), files of LFS_MIN bytes via LFS."""
            if repo not in hub.repos:
                return self._error(404, "RepoNotFound", "Repository not found")
            if not self._may_write(repo):
                return None
            if op == "preupload":
                files = json.loads(raw)["files"]
                modes = [
                    {
                        "path": f["path"],
                        "uploadMode": "lfs" if f["size"] >= LFS_MIN else "regular",
                        "shouldIgnore": False,
                    }
                    for f in files
                ]
                self._json({"files": modes})
                return None
            if op == "branch":
                body = json.loads(raw or b"{}")
                with hub.lock:
                    if rev in hub.branches[repo]:
                        return self._error(409, "Conflict", "Reference already exists")
                    start = hub.resolve(repo, body.get("startingPoint") or "main")
                    hub.branches[repo][rev] = start
                self._json({})
                return None
            if op == "commit":
                return self._commit(repo, unquote(rev), raw)
            if op == "tag":
                body = json.loads(raw)
                with hub.lock:
                    sha = hub.resolve(repo, unquote(rev))
                    if sha is None:
                        return self._error(404, "RevisionNotFound", "Revision not found")
                    if body["tag"] in hub.branches[repo]:
                        return self._error(409, "TagExists", "tag already exists")
                    hub.branches[repo][body["tag"]] = sha
                self._json({"name": body["tag"]})
                return None
            return self._error(404, "NotFound", f"no route for {op}")

        def _commit(self, repo: str, rev: str, raw: bytes) -> None:
            lines = [json.loads(x) for x in raw.decode().splitlines() if x.strip()]
            header = next(x["value"] for x in lines if x["key"] == "header")
            with hub.lock:
                if hub.fail_commits:
                    hub.fail_commits[0] -= 1
                    if hub.fail_commits[0] < 0:
                        hub.fail_commits.pop(0)
                        return self._error(500, "InternalError", "the commit failed")
                head = hub.branches[repo].get(rev)
                parent = header.get("parentCommit")
                if parent and parent != head:
                    return self._error(412, "PreconditionFailed", "parent is not the head")
                files = dict(hub.repos[repo].get(head, {})) if head else {}
                for x in lines:
                    v = x["value"]
                    if x["key"] == "file":
                        files[v["path"]] = base64.b64decode(v["content"])
                    elif x["key"] == "lfsFile":
                        if v["oid"] not in hub.lfs:
                            return self._error(400, "BadRequest", f"{v['path']}: no LFS object")
                        files[v["path"]] = hub.lfs[v["oid"]]
                    elif x["key"] == "deletedFile":
                        files.pop(v["path"], None)
                    elif x["key"] == "deletedFolder":
                        prefix = v["path"].rstrip("/") + "/"
                        files = {p: b for p, b in files.items() if not p.startswith(prefix)}
                sha = hub.commit(repo, files, rev)
                hub.commits.append((repo, sha, len(lines) - 1))
            host = f"http://{self.headers['Host']}"
            kind = "" if self.path.startswith("/api/models/") else "datasets/"
            self._json(
                {
                    "commitUrl": f"{host}/{kind}{repo}/commit/{sha}",
                    "commitOid": sha,
                    "pullRequestUrl": None,
                }
            )
            return None

        def do_HEAD(self) -> None:
            self._serve(head=True)

        def do_GET(self) -> None:
            self._serve(head=False)

        def _serve(self, head: bool) -> None:
            url = urlparse(self.path)
            parts = [unquote(p) for p in url.path.strip("/").split("/")]
            with hub.lock:
                hub.requests.append((self.command, url.path, self.headers.get("Range")))
                hub.authorizations.append(self.headers.get("Authorization"))
            if hub.html:
                body = b"<html><body>Please log in to the proxy</body></html>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return None
            if self.headers.get("Authorization") is not None and self._token() is None:
                return self._error(401, "Unauthorized", "Invalid credentials")
            if parts[:2] == ["api", "whoami-v2"]:
                who = self._token()
                if who is None:
                    return self._error(401, "Unauthorized", "Invalid credentials")
                return self._json(
                    {
                        "type": "user",
                        "name": who["name"],
                        "orgs": [{"name": o} for o in who["orgs"]],
                        "auth": {"accessToken": {"displayName": "test", "role": who["role"]}},
                    }
                )
            if parts[:2] in (["api", "models"], ["api", "datasets"]) and len(parts) == 4:
                parts = [*parts, "revision", "main"]  # repo_info at the head
            kinds = ("datasets", "models")
            if parts[:1] == ["api"] and parts[1:2] in (["datasets"], ["models"]):
                parts = ["api", "datasets", *parts[2:]]  # one handler for both repo kinds
            elif len(parts) >= 5 and parts[0] not in kinds and parts[2] == "resolve":
                parts = ["datasets", *parts]  # a model file: /{owner}/{name}/resolve/...
            if parts[:2] == ["api", "datasets"] and len(parts) >= 6 and parts[4] == "revision":
                repo = f"{parts[2]}/{parts[3]}"
                sha = self._repo_rev(repo, parts[5])
                if sha:
                    files = hub.repos[repo][sha]
                    self._json(
                        {
                            "id": repo,
                            "sha": sha,
                            "siblings": [{"rfilename": p} for p in sorted(files)],
                        }
                    )
                return None
            if parts[:2] == ["api", "datasets"] and len(parts) >= 6 and parts[4] == "tree":
                repo = f"{parts[2]}/{parts[3]}"
                sha = self._repo_rev(repo, parts[5])
                if sha:
                    self._tree(repo, sha, "/".join(parts[6:]), parse_qs(url.query))
                return None
            if parts[0] == "datasets" and len(parts) >= 6 and parts[3] == "resolve":
                repo = f"{parts[1]}/{parts[2]}"
                sha = self._repo_rev(repo, parts[4])
                if sha:
                    self._file(repo, sha, "/".join(parts[5:]), head)
                return None
            return self._error(404, "NotFound", f"no route for {url.path}")

        def _tree(self, repo: str, sha: str, prefix: str, query: dict) -> None:
            entries = self._entries(repo, sha, prefix)
            if query.get("recursive", ["false"])[0] != "true":  # direct children only
                depth = prefix.strip("/").count("/") + 1 if prefix.strip("/") else 0
                entries = [e for e in entries if e["path"].count("/") == depth]
            start = int(query.get("cursor", ["0"])[0])
            page = entries[start : start + PAGE]
            extra = {}
            if start + PAGE < len(entries):
                keep = {k: v[0] for k, v in query.items() if k != "cursor"}
                more = "".join(f"&{k}={v}" for k, v in keep.items())
                path = urlparse(self.path).path
                nxt = f"http://{self.headers['Host']}{path}?cursor={start + PAGE}{more}"
                extra["Link"] = f'<{nxt}>; rel="next"'
            self._json(page, extra=extra)

        def _entries(self, repo: str, sha: str, prefix: str) -> list[dict]:
            files = hub.repos[repo][sha]
            entries, dirs = [], set()
            for p in sorted(files):
                if prefix and not p.startswith(prefix.rstrip("/") + "/"):
                    continue
                for i in range(p.count("/")):
                    dirs.add("/".join(p.split("/")[: i + 1]))
                data = files[p]
                blob, sha256 = hub.ids(data)
                entry = {"type": "file", "path": p, "size": len(data), "oid": blob}
                if len(data) >= LFS_MIN:  # big files live in LFS, as on the Hub
                    entry["lfs"] = {
                        "oid": sha256,
                        "size": len(data),
                        "pointerSize": 134,
                    }
                entries.append(entry)
            return entries + [
                {"type": "directory", "path": d, "oid": "0" * 40} for d in sorted(dirs)
            ]

        def _file(self, repo: str, sha: str, path: str, head: bool) -> None:
            data = hub.repos[repo][sha].get(path)
            if data is None:
                return self._error(404, "EntryNotFound", "Entry not found")
            fault = hub.faults.get(path, Faults())
            if not head and fault.unavailable > 0:
                fault.unavailable -= 1
                return self._error(503, "ServiceUnavailable", "try again later")
            blob, sha256 = hub.ids(data)
            etag = sha256 if len(data) >= LFS_MIN else blob
            start, end = 0, len(data) - 1
            rng = None if fault.ignore_range else self.headers.get("Range")
            if rng and rng.startswith("bytes="):
                a, _, b = rng[6:].partition("-")
                if a:
                    start, end = int(a), min(int(b), len(data) - 1) if b else len(data) - 1
                else:  # a suffix: the last b bytes
                    start, end = max(0, len(data) - int(b)), len(data) - 1
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
            body = data[start : end + 1]
            if not head and fault.corrupt > 0 and not rng:
                fault.corrupt -= 1
                body = bytes([body[0] ^ 0xFF]) + body[1:]
            at = None if fault.corrupt_at is None else fault.corrupt_at - start
            if not head and at is not None and 0 <= at < len(body):
                body = body[:at] + bytes([body[at] ^ 0xFF]) + body[at + 1 :]
            self.send_response(206 if rng else 200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", f'"{etag}"')
            self.send_header("X-Linked-Etag", f'"{etag}"')
            self.send_header("X-Linked-Size", str(len(data)))
            self.send_header("X-Repo-Commit", sha)
            if rng:
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            self.end_headers()
            if head:
                return None
            sent, step = 0, 64 * 1024
            while sent < len(body):
                chunk = body[sent : sent + step]
                if fault.drop_after is not None and sent + len(chunk) > fault.drop_after:
                    self.wfile.write(body[sent : fault.drop_after])
                    fault.drop_after = None
                    self.wfile.flush()
                    self.connection.close()
                    self.close_connection = True
                    return None
                self.wfile.write(chunk)
                sent += len(chunk)
                if fault.bytes_per_s:
                    time.sleep(len(chunk) / fault.bytes_per_s)
            return None

    return Handler


class HubServer:
    """Run a FakeHub on 127.0.0.1 in a thread; `endpoint` is the HF_ENDPOINT to use."""

    def __init__(self, hub: FakeHub) -> None:
        self.hub = hub
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
        self.httpd.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> HubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
