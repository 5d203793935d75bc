"""The local hub server answers the real huggingface_hub client the way the hub does."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from huggingface_hub import HfApi, constants, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile, RepoFolder

from _fakehub import FakeHub

REPO = "org/tiny"
PT = "iter_0000010/mp_rank_00/model_optim_rng.pt"
BRANCHES = ["main", "stage1-step140000-tokens294B", "ckpt_000"]  # ckpt_000: a byte-identical copy of main


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hub")
    for seed, name in enumerate(BRANCHES[:2]):
        folder = root / REPO / name
        (folder / PT).parent.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({"seed": seed}))
        (folder / "model.safetensors").write_bytes(os.urandom(4096))
        (folder / PT).write_bytes(os.urandom(2048))
    shutil.copytree(root / REPO / "main", root / REPO / "ckpt_000")
    shutil.copytree(root / REPO / "main", root / "org/gated/main")
    (root / "org/gated/gated").write_text("")
    return root


@pytest.fixture(autouse=True)
def online(monkeypatch):
    """conftest sets HF_HUB_OFFLINE=1, which huggingface_hub reads once, at import: switch it off here."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)  # no agent-registry fetch
    monkeypatch.delenv("HF_TOKEN", raising=False)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_refs_commits_and_model_info(root):
    with FakeHub(root) as hub:
        api = HfApi(endpoint=hub.endpoint)
        refs = api.list_repo_refs(REPO)
        commits = {b.name: b.target_commit for b in refs.branches}
        assert sorted(commits) == sorted(BRANCHES) and refs.tags == []
        assert all(b.ref == f"refs/heads/{b.name}" for b in refs.branches)
        assert len(set(commits.values())) == 3 and all(len(c) == 40 for c in commits.values())
        for name, commit in commits.items():
            for rev in (name, commit):
                (c,) = api.list_repo_commits(REPO, revision=rev)
                assert c.commit_id == commit and c.authors == [] and c.title and c.created_at
                info = api.model_info(REPO, revision=rev)
                assert info.sha == commit
                assert {s.rfilename for s in info.siblings} == {"config.json", "model.safetensors", PT}
        assert api.model_info(REPO).sha == commits["main"]
    with FakeHub(root) as hub:  # deterministic across servers
        assert {
            b.name: b.target_commit for b in HfApi(endpoint=hub.endpoint).list_repo_refs(REPO).branches
        } == commits


def test_tree(root):
    with FakeHub(root) as hub:
        api = HfApi(endpoint=hub.endpoint)
        flat = {e.path: e for e in api.list_repo_tree(REPO, recursive=True, revision="main")}
        assert sorted(flat) == [
            "config.json",
            "iter_0000010",
            "iter_0000010/mp_rank_00",
            PT,
            "model.safetensors",
        ]
        assert isinstance(flat["iter_0000010"], RepoFolder) and isinstance(flat[PT], RepoFile)
        for path in ("model.safetensors", PT):
            f = flat[path]
            assert f.lfs.sha256 == _sha256(root / REPO / "main" / path)
            size = (root / REPO / "main" / path).stat().st_size
            # the pointer file: "version https://git-lfs.github.com/spec/v1\n" (43 bytes),
            # "oid sha256:" + 64 hex digits + "\n" (76), "size " + the size's digits + "\n" (6 + digits)
            assert f.size == f.lfs.size == size and f.lfs.pointer_size == 125 + len(str(size))
        assert flat["config.json"].lfs is None and len(flat["config.json"].blob_id) == 40
        # a byte-identical branch, named by its commit: same blobs, other commit
        commit = {b.name: b.target_commit for b in api.list_repo_refs(REPO).branches}["ckpt_000"]
        twin = {e.path: e for e in api.list_repo_tree(REPO, recursive=True, revision=commit)}
        assert {p: e.blob_id for p, e in twin.items() if isinstance(e, RepoFile)} == {
            p: e.blob_id for p, e in flat.items() if isinstance(e, RepoFile)
        }
        top = {e.path: type(e) for e in api.list_repo_tree(REPO, revision="stage1-step140000-tokens294B")}
        assert top == {"config.json": RepoFile, "model.safetensors": RepoFile, "iter_0000010": RepoFolder}
        sub = list(api.list_repo_tree(REPO, path_in_repo="iter_0000010", revision="ckpt_000"))
        assert [(e.path, type(e)) for e in sub] == [("iter_0000010/mp_rank_00", RepoFolder)]
        deep = list(api.list_repo_tree(REPO, path_in_repo="iter_0000010", recursive=True, expand=True))
        assert [e.path for e in deep] == ["iter_0000010/mp_rank_00", PT]
        assert deep[1].last_commit.oid == commit_of(api, "main") and deep[1].security.safe


def commit_of(api: HfApi, branch: str) -> str:
    return api.model_info(REPO, revision=branch).sha


@pytest.mark.slow  # an offline client subprocess
def test_download_snapshot_and_offline_cache(root, tmp_path):
    cache = tmp_path / "cache"
    with FakeHub(root) as hub:
        commit = commit_of(HfApi(endpoint=hub.endpoint), "stage1-step140000-tokens294B")
        kw = dict(cache_dir=cache, endpoint=hub.endpoint)
        a = hf_hub_download(REPO, "model.safetensors", revision="stage1-step140000-tokens294B", **kw)
        b = hf_hub_download(
            REPO, "model_optim_rng.pt", subfolder="iter_0000010/mp_rank_00", revision=commit, **kw
        )
        snap = snapshot_download(
            REPO, revision="main", allow_patterns=["*.json", "iter_*/mp_rank_*/*.pt"], **kw
        )
    branch = root / REPO / "stage1-step140000-tokens294B"
    assert Path(a).read_bytes() == (branch / "model.safetensors").read_bytes()
    assert Path(b).read_bytes() == (branch / PT).read_bytes()
    assert sorted(p.relative_to(snap).as_posix() for p in Path(snap).rglob("*") if p.is_file()) == [
        "config.json",
        PT,
    ]
    assert (Path(snap) / PT).read_bytes() == (root / REPO / "main" / PT).read_bytes()
    gets = [p for m, p in hub.requests if m == "GET" and "/resolve/" in p]
    assert [p for p in gets if p.endswith(".safetensors")] == [  # allow_patterns kept main's weights out
        f"/{REPO}/resolve/stage1-step140000-tokens294B/model.safetensors"
    ]
    assert ("HEAD", f"/{REPO}/resolve/stage1-step140000-tokens294B/model.safetensors") in hub.requests
    # the server is gone: the same calls, offline, come from the cache
    script = f"""
from huggingface_hub import hf_hub_download, snapshot_download
a = hf_hub_download({REPO!r}, "model.safetensors", revision="stage1-step140000-tokens294B",
                    cache_dir={str(cache)!r})
b = hf_hub_download({REPO!r}, "model_optim_rng.pt", subfolder="iter_0000010/mp_rank_00", revision={commit!r},
                    cache_dir={str(cache)!r})
s = snapshot_download({REPO!r}, revision="main", allow_patterns=["*.json", "iter_*/mp_rank_*/*.pt"],
                      cache_dir={str(cache)!r})
print(a, b, s, sep="\\n")
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": hub.endpoint, "HF_HUB_DISABLE_TELEMETRY": "1"}
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [a, b, snap]


def test_dropped_connection_resumes_with_range(root, tmp_path):
    with FakeHub(root, drop_after_bytes=1000, drop_times=1) as hub:
        path = hf_hub_download(
            REPO, "model.safetensors", revision="main", cache_dir=tmp_path, endpoint=hub.endpoint
        )
        cfg = hf_hub_download(REPO, "config.json", revision="main", cache_dir=tmp_path, endpoint=hub.endpoint)
    assert Path(path).read_bytes() == (root / REPO / "main/model.safetensors").read_bytes()
    assert Path(cfg).read_bytes() == (root / REPO / "main/config.json").read_bytes()
    assert (
        hub.requests.count(("GET", f"/{REPO}/resolve/main/model.safetensors")) == 2
    )  # dropped, then resumed
    assert hub.drops_left == 0


def test_range_request(root):
    data = (root / REPO / "main/model.safetensors").read_bytes()
    with FakeHub(root) as hub:
        r = httpx.get(
            f"{hub.endpoint}/{REPO}/resolve/main/model.safetensors", headers={"Range": "bytes=1000-"}
        )
    assert r.status_code == 206 and r.content == data[1000:]
    assert r.headers["Content-Range"] == f"bytes 1000-{len(data) - 1}/{len(data)}"
    assert r.headers["X-Linked-Etag"].strip('"') == hashlib.sha256(data).hexdigest()
    assert not any(k.lower().startswith("x-xet") for k in r.headers)


def test_errors(root, tmp_path):
    with FakeHub(root, token="secret") as hub:
        api, kw = HfApi(endpoint=hub.endpoint), dict(cache_dir=tmp_path, endpoint=hub.endpoint)
        with pytest.raises(RepositoryNotFoundError):
            api.list_repo_refs("nobody/nothing")
        with pytest.raises(RepositoryNotFoundError):
            hf_hub_download("nobody/nothing", "config.json", **kw)
        with pytest.raises(RevisionNotFoundError):
            list(api.list_repo_tree(REPO, revision="step999"))
        with pytest.raises(RevisionNotFoundError):
            hf_hub_download(REPO, "config.json", revision="0" * 40, **kw)
        with pytest.raises(EntryNotFoundError):
            hf_hub_download(REPO, "missing.bin", **kw)
        for bad in (None, "wrong"):
            with pytest.raises(GatedRepoError):
                HfApi(endpoint=hub.endpoint, token=bad or False).list_repo_refs("org/gated")
            with pytest.raises(GatedRepoError):
                hf_hub_download("org/gated", "config.json", token=bad or False, **kw)
        assert HfApi(endpoint=hub.endpoint, token="secret").list_repo_refs("org/gated").branches
        path = hf_hub_download("org/gated", "model.safetensors", token="secret", **kw)
        assert Path(path).read_bytes() == (root / "org/gated/main/model.safetensors").read_bytes()


def test_fail_all(root, tmp_path):
    with FakeHub(root) as hub:
        commit = commit_of(HfApi(endpoint=hub.endpoint), "main")
        cached = snapshot_download(
            REPO,
            revision=commit,
            allow_patterns=["*.json"],
            cache_dir=tmp_path / "warm",
            endpoint=hub.endpoint,
        )
    with FakeHub(root, fail_all=True) as hub:  # connections dropped: httpx.RemoteProtocolError
        with pytest.raises(httpx.TransportError):
            HfApi(endpoint=hub.endpoint).list_repo_refs(REPO)
        with pytest.raises(httpx.TransportError):
            hf_hub_download(REPO, "config.json", cache_dir=tmp_path, endpoint=hub.endpoint)
        with pytest.raises(httpx.TransportError):
            snapshot_download(REPO, cache_dir=tmp_path, endpoint=hub.endpoint)
        assert [m for m, _ in hub.requests] == ["GET", "HEAD", "GET"]
        # a commit already in the cache needs no request at all
        assert (
            snapshot_download(
                REPO,
                revision=commit,
                allow_patterns=["*.json"],
                cache_dir=tmp_path / "warm",
                endpoint=hub.endpoint,
            )
            == cached
        )
    assert len(hub.requests) == 3
