"""A local Hub-compatible HTTP server for tests: the real `huggingface_hub` client talks to it.

Serves dataset and model repos from memory (model repos also take create, commit and tag,
with every file sent inline): revision info, the file tree (paginated with Link
headers), and `resolve` with HEAD/GET/Range and the Hub's ETag / X-Repo-Commit /
X-Linked-Etag headers. Faults can be injected per path: 503 answers, a connection dropped
mid-file, corrupted bytes, throttled transfers. Test infrastructure only.
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

        def do_POST(self) -> None:
            """paths-info, and for model repos: create, preupload, commit, tag."""
            url = urlparse(self.path)
            parts = [unquote(p) for p in url.path.strip("/").split("/")]
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            with hub.lock:
                hub.requests.append((self.command, url.path, None))
                hub.authorizations.append(self.headers.get("Authorization"))
            if parts[:3] == ["api", "repos", "create"]:
                return self._create(json.loads(raw))
            if parts[:2] == ["api", "models"] and len(parts) >= 6:
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
            repo = f"{body.get('organization')}/{body['name']}"
            with hub.lock:
                if repo in hub.repos:
                    msg = "You already created this model repo"  # the Hub's 409 also has the url
                    return self._json(
                        {"error": msg, "url": f"http://{self.headers['Host']}/{repo}"},
                        409,
                        {"X-Error-Message": msg},
                    )
                hub.commit(repo, {".gitattributes": b"*.onnx filter=lfs diff=lfs merge=lfs\n"})
            self._json({"url": f"http://{self.headers['Host']}/{repo}"})
            return None

        def _write(self, repo: str, op: str, rev: str, raw: bytes) -> None:
            """Model repo writes: every file is small and 'regular' (sent inline, no LFS)."""
            if repo not in hub.repos:
                return self._error(404, "RepoNotFound", "Repository not found")
            if op == "preupload":
                files = json.loads(raw)["files"]
                self._json(
                    {
                        "files": [
                            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                            for f in files
                        ]
                    }
                )
                return None
            if op == "commit":
                lines = [json.loads(x) for x in raw.decode().splitlines() if x.strip()]
                header = next(x["value"] for x in lines if x["key"] == "header")
                with hub.lock:
                    head = hub.branches[repo].get(unquote(rev))
                    parent = header.get("parentCommit")
                    if parent and parent != head:
                        return self._error(412, "PreconditionFailed", "parent is not the head")
                    files = dict(hub.repos[repo].get(head, {})) if head else {}
                    for x in lines:
                        if x["key"] == "file":
                            files[x["value"]["path"]] = base64.b64decode(x["value"]["content"])
                        elif x["key"] == "deletedFile":
                            files.pop(x["value"]["path"], None)
                    sha = hub.commit(repo, files, unquote(rev))
                self._json(
                    {
                        "commitUrl": f"http://{self.headers['Host']}/{repo}/commit/{sha}",
                        "commitOid": sha,
                        "pullRequestUrl": None,
                    }
                )
                return None
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
            if self.headers.get("Authorization") not in (None, "Bearer hf_test_token"):
                return self._error(401, "Unauthorized", "Invalid credentials")
            if parts[:2] == ["api", "models"] and len(parts) == 4:  # repo_info at the head
                parts = [*parts, "revision", "main"]
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
            start = int(query.get("cursor", ["0"])[0])
            page = entries[start : start + PAGE]
            extra = {}
            if start + PAGE < len(entries):
                nxt = (
                    f"http://{self.headers['Host']}{urlparse(self.path).path}?cursor={start + PAGE}"
                )
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
                entry = {"type": "file", "path": p, "size": len(data), "oid": git_blob_sha1(data)}
                if len(data) >= LFS_MIN:  # big files live in LFS, as on the Hub
                    entry["lfs"] = {
                        "oid": hashlib.sha256(data).hexdigest(),
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
            etag = hashlib.sha256(data).hexdigest() if len(data) >= LFS_MIN else git_blob_sha1(data)
            start, end = 0, len(data) - 1
            rng = None if fault.ignore_range else self.headers.get("Range")
            if rng and rng.startswith("bytes="):
                a, _, b = rng[6:].partition("-")
                start, end = int(a), int(b) if b else len(data) - 1
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
