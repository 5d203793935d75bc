"""A local stand-in for the Hugging Face hub, good enough for the real `huggingface_hub` client.

Repositories are plain folders, one per branch:

    ROOT/<org>/<name>/<branch>/<files and subfolders>    ("main" must exist)
    ROOT/<org>/<name>/gated                              (empty marker: the repo is gated)

Served (model repos only): list_repo_refs, list_repo_tree, list_repo_commits, model_info/repo_info,
list_models (author and search filters, pages of 2 linked by the `Link: <...>; rel="next"` header
the client follows, as huggingface_hub/utils/_pagination.py reads it), and /resolve (HEAD metadata +
GET, with Range) for hf_hub_download and snapshot_download.
Files ending in .safetensors, .bin or .pt are LFS files: the tree reports their real sha256 and
their ETag is that sha256, as on the hub. No Xet header is ever sent, so downloads stay plain HTTP.
Errors carry the hub's `X-Error-Code` so the client raises RepositoryNotFoundError,
RevisionNotFoundError, GatedRepoError or EntryNotFoundError.
"""
from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".pt")
DATE = "2024-01-01T00:00:00.000Z"
SAFE = {"status": "safe", "avScan": {"virusFound": False, "virusNames": None}, "pickleImportScan": None}


def _git_sha1(data: bytes) -> str:
    """The git blob id of `data`."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class Blob:
    """One file of a branch. For LFS files `oid` is the git id of the LFS pointer, as on the hub."""
    disk: Path
    size: int
    oid: str
    sha256: str | None = None
    pointer_size: int | None = None

    @classmethod
    def read(cls, disk: Path) -> "Blob":
        data = disk.read_bytes()
        if not disk.name.endswith(LFS_SUFFIXES):
            return cls(disk, len(data), _git_sha1(data))
        sha = hashlib.sha256(data).hexdigest()
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {len(data)}\n".encode()
        return cls(disk, len(data), _git_sha1(pointer), sha, len(pointer))


class Branch:
    """A branch folder: files by repo path, folder ids, and a commit sha over name + contents."""

    def __init__(self, name: str, folder: Path) -> None:
        self.name = name
        self.files = {p.relative_to(folder).as_posix(): Blob.read(p)
                      for p in sorted(folder.rglob("*")) if p.is_file()}
        dirs = {
            "/".join(parts[:i]) for f in self.files for parts in [f.split("/")] for i in range(1, len(parts))
        }
        self.folders = {d: self._tree_id(d) for d in sorted(dirs)}
        self.commit = hashlib.sha1(name.encode() + self._tree_id("").encode()).hexdigest()

    def _tree_id(self, folder: str) -> str:
        prefix = folder + "/" if folder else ""
        items = "".join(f"{p}\0{b.oid}\n" for p, b in self.files.items() if p.startswith(prefix))
        return hashlib.sha1(f"{folder}\n{items}".encode()).hexdigest()


class HubError(Exception):
    """An error answered the way the hub answers it."""

    def __init__(self, status: int, code: str | None, message: str, commit: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.commit = status, code, commit


class Repo:
    """A repository folder with its branches (read once, on first use)."""

    def __init__(self, repo_id: str, folder: Path) -> None:
        self.id, self.gated = repo_id, (folder / "gated").is_file()
        self.branches = {d.name: Branch(d.name, d) for d in sorted(folder.iterdir()) if d.is_dir()}

    def branch(self, revision: str) -> Branch:
        """The branch named `revision`, or whose commit is `revision`."""
        found = self.branches.get(revision) or next(
            (b for b in self.branches.values() if b.commit == revision), None
        )
        if found is None:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return found


def _entry(branch: Branch, path: str, expand: bool) -> dict:
    """One tree entry in the hub's JSON shape."""
    blob = branch.files.get(path)
    if blob is None:
        out = {"type": "directory", "oid": branch.folders[path], "size": 0, "path": path}
    else:
        out = {"type": "file", "oid": blob.oid, "size": blob.size, "path": path}
        if blob.sha256:
            out["lfs"] = {"oid": blob.sha256, "size": blob.size, "pointerSize": blob.pointer_size}
        if expand:
            out["securityFileStatus"] = SAFE
    if expand:
        out["lastCommit"] = {"id": branch.commit, "title": f"Upload {branch.name}", "date": DATE}
    return out


def _tree(branch: Branch, folder: str, recursive: bool, expand: bool) -> list[dict]:
    """Entries under `folder`: its immediate children, or all descendants if `recursive`."""
    if folder and folder not in branch.folders:
        raise HubError(404, "EntryNotFound", f"{folder} does not exist on {branch.name}", branch.commit)
    prefix = folder + "/" if folder else ""
    paths = [
        p
        for p in sorted([*branch.folders, *branch.files])
        if p.startswith(prefix) and (recursive or "/" not in p[len(prefix) :])
    ]
    return [_entry(branch, p, expand) for p in paths]


def _model_info(repo: Repo, branch: Branch) -> dict:
    siblings = [
        {
            "rfilename": p,
            "size": b.size,
            "blobId": b.oid,
            **(
                {"lfs": {"sha256": b.sha256, "size": b.size, "pointerSize": b.pointer_size}}
                if b.sha256
                else {}
            ),
        }
        for p, b in branch.files.items()
    ]
    return {
        "_id": repo.id,
        "id": repo.id,
        "modelId": repo.id,
        "author": repo.id.split("/")[0],
        "sha": branch.commit,
        "private": False,
        "gated": "auto" if repo.gated else False,
        "disabled": False,
        "lastModified": DATE,
        "createdAt": DATE,
        "tags": [],
        "downloads": 0,
        "likes": 0,
        "siblings": siblings,
    }


class _Handler(BaseHTTPRequestHandler):
    """Routes /api/models/<org>/<name>/... and /<org>/<name>/resolve/<rev>/<file>. HTTP/1.0: one request
    per connection, so no keep-alive connection outlives its server."""

    hub: "FakeHub"

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        self.hub.requests.append((self.command, unquote(url.path)))
        if self.hub.fail_all:
            return self._drop()
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        try:
            if parts == ["api", "agent-harnesses"]:  # client telemetry: an empty registry
                return self._json({"standardEnvVars": [], "harnesses": {}})
            if parts == ["api", "models"]:
                return self._list_models(query)
            if parts[:2] == ["api", "models"] and len(parts) >= 4:
                return self._api(self.hub.repo(*parts[2:4], self.headers), parts[4:], query)
            if parts[:2] == ["api", "datasets"] and len(parts) >= 4:
                return self._api(self.hub.repo(*parts[2:4], self.headers, "datasets"), parts[4:], query)
            if len(parts) >= 5 and parts[2] == "resolve":
                return self._resolve(self.hub.repo(*parts[:2], self.headers), parts[3], "/".join(parts[4:]))
            if len(parts) >= 6 and parts[0] == "datasets" and parts[3] == "resolve":
                return self._resolve(
                    self.hub.repo(*parts[1:3], self.headers, "datasets"), parts[4], "/".join(parts[5:])
                )
            raise HubError(404, None, "Sorry, we can't find the page you are looking for.")
        except HubError as e:
            headers = {"X-Error-Code": e.code, "X-Error-Message": str(e), "X-Repo-Commit": e.commit}
            self._json({"error": str(e)}, e.status, {k: v for k, v in headers.items() if v})

    do_HEAD = do_GET

    def _api(self, repo: Repo, rest: list[str], query: dict) -> None:
        flag = lambda k: query.get(k, "false").lower() in ("true", "1")  # noqa: E731
        action, rev = (rest + ["main"])[:2] if rest else ("revision", "main")
        if action == "refs":
            refs = [
                {"name": b.name, "ref": f"refs/heads/{b.name}", "targetCommit": b.commit}
                for b in repo.branches.values()
            ]
            return self._json({"branches": refs, "converts": [], "tags": [], "pullRequests": []})
        branch = repo.branch(rev)
        if action == "revision":
            return self._json(_model_info(repo, branch))
        if action == "tree":
            return self._json(_tree(branch, "/".join(rest[2:]), flag("recursive"), flag("expand")))
        if action == "commits":
            return self._json(
                [
                    {
                        "id": branch.commit,
                        "title": f"Upload {branch.name}",
                        "message": "",
                        "date": DATE,
                        "authors": [],
                    }
                ]
            )
        raise HubError(404, None, f"unknown endpoint {action}")

    def _list_models(self, query: dict) -> None:
        """GET /api/models?author=A&search=S[&cursor=N]: ids under ROOT/<author>/ containing S."""
        author, search = query.get("author"), query.get("search", "").lower()
        ids = sorted(
            f"{org.name}/{repo.name}"
            for org in self.hub.root.iterdir()
            if org.is_dir() and (author is None or org.name == author)
            for repo in org.iterdir()
            if (repo / "main").is_dir()
        )
        ids = [i for i in ids if search in i.lower()]
        start = int(query.get("cursor", 0))
        headers = {}
        if start + 2 < len(ids):
            nxt = "&".join(f"{k}={v}" for k, v in {**query, "cursor": start + 2}.items())
            headers["Link"] = f'<{self.hub.endpoint}/api/models?{nxt}>; rel="next"'
        self._json(
            [
                {
                    "_id": i,
                    "id": i,
                    "modelId": i,
                    "likes": 0,
                    "downloads": 0,
                    "tags": [],
                    "private": False,
                    "createdAt": DATE,
                }
                for i in ids[start : start + 2]
            ],
            headers=headers,
        )

    def _resolve(self, repo: Repo, rev: str, path: str) -> None:
        """HEAD: metadata only. GET: the bytes, from a `Range: bytes=N-` start if asked (206)."""
        branch = repo.branch(rev)
        blob = branch.files.get(path)
        if blob is None:
            raise HubError(404, "EntryNotFound", f"{path} does not exist on {rev}", branch.commit)
        headers = {
            "X-Repo-Commit": branch.commit,
            "ETag": f'"{blob.sha256 or blob.oid}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if blob.sha256:
            headers |= {"X-Linked-Etag": f'"{blob.sha256}"', "X-Linked-Size": str(blob.size)}
        start, end = self._range(blob.size)
        status = 206 if "Range" in self.headers else 200
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{blob.size}"
        if self.command == "HEAD":
            return self._send(status, b"", headers, length=end - start)
        data = blob.disk.read_bytes()[start:end]
        cut = self.hub.take_drop(len(data)) if blob.sha256 else None
        self._send(status, data if cut is None else data[:cut], headers, length=len(data))
        if cut is not None:
            self._drop()

    def _range(self, size: int) -> tuple[int, int]:
        """[start, end) of `Range: bytes=N-` or `bytes=N-M`; the whole file without one."""
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "bytes=0-").strip())
        start, end = (int(m[1]), min(int(m[2]) + 1 if m[2] else size, size)) if m else (size, 0)
        if start >= end and size:
            raise HubError(416, None, f"Range Not Satisfiable: {self.headers.get('Range')} of {size} bytes")
        return start, end

    def _json(self, obj, status: int = 200, headers: dict | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _send(self, status: int, body: bytes, headers: dict, length: int | None = None) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _drop(self) -> None:
        """Close the connection abruptly, whatever was (or was not) sent."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class FakeHub:
    """`with FakeHub(root) as hub:` serves `root` at `hub.endpoint`; `hub.requests` lists (method, path).

    token: the one token that opens gated repos (`Authorization: Bearer <token>`).
    drop_after_bytes / drop_times: the first `drop_times` GETs of an LFS file send that many bytes of the
    body (announcing its full Content-Length) and then close the connection.
    fail_all: every request is answered by closing the connection (the network is down for good).
    """

    def __init__(
        self,
        root: Path,
        token: str | None = None,
        drop_after_bytes: int | None = None,
        drop_times: int = 0,
        fail_all: bool = False,
    ) -> None:
        self.root, self.token, self.fail_all = Path(root), token, fail_all
        self.drop_after_bytes, self.drops_left = (
            drop_after_bytes,
            drop_times if drop_after_bytes is not None else 0,
        )
        self.requests: list[tuple[str, str]] = []
        self.endpoint = ""
        self._repos: dict[tuple[str, str], Repo] = {}
        self._lock = threading.Lock()

    def repo(self, org: str, name: str, headers, kind: str = "models") -> Repo:
        """The repository, read on first use; RepoNotFound / GatedRepo as the hub answers them.
        Dataset repositories live under ROOT/datasets/<org>/<name>/<branch>/."""
        repo_id = f"{org}/{name}"
        folder = self.root / org / name if kind == "models" else self.root / "datasets" / org / name
        if not (folder / "main").is_dir():
            raise HubError(404, "RepoNotFound", f"Repository Not Found for url: {repo_id}.")
        with self._lock:
            if (kind, repo_id) not in self._repos:
                self._repos[(kind, repo_id)] = Repo(repo_id, folder)
            repo = self._repos[(kind, repo_id)]
        auth = headers.get("Authorization")
        if repo.gated and (self.token is None or auth != f"Bearer {self.token}"):
            raise HubError(
                401 if auth is None else 403,
                "GatedRepo",
                f"Access to model {repo_id} is restricted. You must have access to it and be authenticated.",
            )
        return repo

    def take_drop(self, length: int) -> int | None:
        """How many bytes to send before dropping a body of `length` bytes; None: send it all."""
        with self._lock:
            if self.drops_left <= 0 or length <= self.drop_after_bytes:
                return None
            self.drops_left -= 1
            return self.drop_after_bytes

    def __enter__(self) -> "FakeHub":
        handler = type("Handler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
