"""The real huggingface_hub client (tests/oracle/requirements-hub.txt) against
a Hub endpoint, through its public API only, unchanged.

  selftest --endpoint URL --token T --work DIR [--gated-repo R --private-repo R --big-size N]
      uploads, commits, branches, a PR, downloads and error cases against the
      test server (tests/hub_server.rs); prints a JSON summary, exits 1 on any
      mismatch.
  upload --endpoint URL --token T --folder F --repo R [--revision B]
      create_repo(exist_ok) + upload_folder; prints {"commit": sha}.
  download --endpoint URL [--token T] --repo R --cache C [--revision B]
      snapshot_download into the HF cache C; prints {"path", "files": {path: sha256}}.
      --offline: local_files_only=True, the cache alone (as llmtool filled it).

Xet is disabled (HF_HUB_DISABLE_XET=1, and hf_xet is not in the requirements):
uploads take the LFS path the test server implements.
"""

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path


def parse_args():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("selftest", "upload", "download"):
        s = sub.add_parser(name)
        s.add_argument("--endpoint", required=True)
        s.add_argument("--token")
        if name == "selftest":
            s.add_argument("--work", required=True)
            s.add_argument("--gated-repo")
            s.add_argument("--private-repo")
            s.add_argument("--big-size", type=int, default=20 * 1024 * 1024)
        if name == "upload":
            s.add_argument("--folder", required=True)
            s.add_argument("--repo", required=True)
            s.add_argument("--revision")
            s.add_argument("--message", default="upload from huggingface_hub")
        if name == "download":
            s.add_argument("--repo", required=True)
            s.add_argument("--cache", required=True)
            s.add_argument("--revision")
            s.add_argument("--offline", action="store_true",
                           help="local_files_only: read the cache alone (another tool filled it)")
    return p.parse_args()


ARGS = parse_args()
# huggingface_hub reads these when imported.
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_ENDPOINT"] = ARGS.endpoint
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ.pop("HF_TOKEN", None)
if getattr(ARGS, "work", None):
    # No stored token or cache of the user's leaks in.
    os.environ["HF_HOME"] = str(Path(ARGS.work) / "hf-home")

import huggingface_hub  # noqa: E402
from huggingface_hub import (  # noqa: E402
    CommitOperationAdd,
    CommitOperationCopy,
    CommitOperationDelete,
    HfApi,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.hf_api import RepoFolder  # noqa: E402
from huggingface_hub.utils import (  # noqa: E402
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def git_blob_id(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def tree_hashes(root):
    root = Path(root)
    return {
        str(p.relative_to(root)): sha256(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".cache" not in p.relative_to(root).parts
    }


class Checks:
    def __init__(self):
        self.failures = []
        self.passed = []

    def eq(self, name, got, want):
        if got == want:
            self.passed.append(name)
        else:
            self.failures.append({"check": name, "got": repr(got), "want": repr(want)})

    def true(self, name, cond, detail=""):
        self.eq(name + (f" ({detail})" if detail and not cond else ""), bool(cond), True)

    def raises(self, name, cls, fn):
        try:
            fn()
        except cls:
            self.passed.append(name)
            return
        except Exception as e:  # noqa: BLE001 - reported as the mismatch
            self.failures.append({"check": name, "got": f"{type(e).__name__}: {e}", "want": cls.__name__})
            return
        self.failures.append({"check": name, "got": "no error", "want": cls.__name__})


def selftest(a):
    work = Path(a.work)
    api = HfApi(endpoint=a.endpoint, token=a.token)
    c = Checks()
    repo = "test-org/oracle"

    url = api.create_repo(repo)
    c.eq("create_repo url", str(url), f"{a.endpoint}/{repo}")
    try:
        api.create_repo(repo)
        c.failures.append({"check": "create_repo twice", "got": "no error", "want": "409"})
    except HfHubHTTPError as e:
        c.eq("create_repo twice is 409", e.response.status_code, 409)
    api.create_repo(repo, exist_ok=True)
    c.passed.append("create_repo exist_ok")

    up = work / "up"
    (up / "sub").mkdir(parents=True)
    files = {
        # A model card: the client validates its front matter first.
        "README.md": b"---\nlicense: apache-2.0\ntags: [test]\n---\n# Oracle\n",
        "hello.txt": b"hello hub\n",
        "sub/nested.txt": b"nested file\n",
        # Deterministic, incompressible-looking bytes above the multipart threshold.
        "big.safetensors": b"".join(
            hashlib.sha256(i.to_bytes(8, "little")).digest() for i in range(a.big_size // 32 + 1)
        )[: a.big_size],
        "small.safetensors": bytes(range(256)) * 4,
    }
    for rel, data in files.items():
        (up / rel).write_bytes(data)

    first = api.upload_folder(folder_path=up, repo_id=repo, commit_message="first upload")
    info = api.model_info(repo)
    c.eq("upload_folder commit is main's head", first.oid, info.sha)
    c.eq(
        "siblings after upload_folder",
        sorted(s.rfilename for s in info.siblings),
        sorted([".gitattributes", *files]),
    )

    c.eq("list_repo_files (tree, recursive)", sorted(api.list_repo_files(repo)), sorted([".gitattributes", *files]))
    c.eq(
        "list_repo_tree (top level)",
        sorted((type(e).__name__, e.path) for e in api.list_repo_tree(repo)),
        sorted(
            [("RepoFolder", "sub")]
            + [("RepoFile", f) for f in (".gitattributes", "README.md", "big.safetensors", "hello.txt", "small.safetensors")]
        ),
    )
    c.eq(
        "get_paths_info",
        [(isinstance(e, RepoFolder), e.path) for e in api.get_paths_info(repo, ["hello.txt", "sub", "missing.txt"])],
        [(False, "hello.txt"), (True, "sub")],
    )

    # 0.36 drops files whose preupload `oid` matches the local one and, with
    # nothing left, makes no commit: it returns main's current head.
    again = api.upload_folder(folder_path=up, repo_id=repo, commit_message="unchanged")
    c.eq("unchanged re-upload returns the same commit", again.oid, first.oid)
    c.eq("unchanged re-upload leaves main", api.model_info(repo).sha, first.oid)

    second = api.create_commit(
        repo_id=repo,
        operations=[
            CommitOperationAdd(path_in_repo="added.txt", path_or_fileobj=b"added by create_commit\n"),
            CommitOperationDelete(path_in_repo="sub/nested.txt"),
        ],
        commit_message="add and delete",
        parent_commit=first.oid,
    )
    names = sorted(s.rfilename for s in api.model_info(repo).siblings)
    c.true("create_commit adds", "added.txt" in names)
    c.true("create_commit deletes", "sub/nested.txt" not in names)
    files["added.txt"] = b"added by create_commit\n"
    del files["sub/nested.txt"]

    # Copies read paths-info, download the regular source and send the LFS
    # one as an lfsFile without size.
    copied = api.create_commit(
        repo_id=repo,
        operations=[
            CommitOperationCopy(src_path_in_repo="big.safetensors", path_in_repo="copy/big.safetensors"),
            CommitOperationCopy(src_path_in_repo="hello.txt", path_in_repo="copy/hello.txt"),
        ],
        commit_message="copies",
    )
    files["copy/big.safetensors"] = files["big.safetensors"]
    files["copy/hello.txt"] = files["hello.txt"]

    api.create_branch(repo, branch="dev")
    dev = work / "dev"
    dev.mkdir()
    (dev / "dev.txt").write_bytes(b"on the dev branch\n")
    on_dev = api.upload_folder(folder_path=dev, repo_id=repo, revision="dev", commit_message="dev")
    c.eq("branch head", api.model_info(repo, revision="dev").sha, on_dev.oid)
    c.true("branch has its file", "dev.txt" in [s.rfilename for s in api.model_info(repo, revision="dev").siblings])
    c.true("main does not", "dev.txt" not in [s.rfilename for s in api.model_info(repo).siblings])
    c.eq("main unmoved by branch upload", api.model_info(repo).sha, copied.oid)

    pr = api.create_commit(
        repo_id=repo,
        operations=[CommitOperationAdd(path_in_repo="pr.txt", path_or_fileobj=b"proposed\n")],
        commit_message="a pull request",
        create_pr=True,
    )
    c.eq("create_pr revision", pr.pr_revision, "refs/pr/1")
    c.true("create_pr url", pr.pr_url is not None and pr.pr_url.endswith("/discussions/1"), str(pr.pr_url))
    c.true("PR ref has its file", "pr.txt" in [s.rfilename for s in api.model_info(repo, revision="refs/pr/1").siblings])
    c.eq("main unmoved by PR", api.model_info(repo).sha, copied.oid)

    meta = {s.rfilename: s for s in api.model_info(repo, files_metadata=True).siblings}
    big = meta["big.safetensors"]
    c.eq("lfs sha256", big.lfs and big.lfs.sha256, hashlib.sha256(files["big.safetensors"]).hexdigest())
    c.eq("lfs size", (big.size, big.lfs and big.lfs.size), (len(files["big.safetensors"]),) * 2)
    c.eq("regular file has no lfs", meta["hello.txt"].lfs, None)
    c.eq("regular blob id", meta["hello.txt"].blob_id, git_blob_id(files["hello.txt"]))

    cache = work / "cache"
    snap = snapshot_download(repo, cache_dir=cache, token=a.token)
    c.eq("snapshot folder is main's head", Path(snap).name, copied.oid)
    got = tree_hashes(snap)
    want = {rel: hashlib.sha256(d).hexdigest() for rel, d in files.items()}
    want[".gitattributes"] = got.get(".gitattributes")
    c.eq("snapshot_download is byte-identical", got, want)

    one = hf_hub_download(repo, "big.safetensors", cache_dir=work / "cache-one", token=a.token)
    c.eq("hf_hub_download is byte-identical", sha256(one), want["big.safetensors"])

    offline = snapshot_download(repo, cache_dir=cache, local_files_only=True)
    c.eq("local_files_only finds the snapshot", offline, snap)

    c.raises(
        "missing repo",
        RepositoryNotFoundError,
        lambda: api.model_info("test-org/does-not-exist"),
    )
    c.raises(
        "missing revision",
        RevisionNotFoundError,
        lambda: api.model_info(repo, revision="no-such-branch"),
    )
    c.raises(
        "missing file",
        EntryNotFoundError,
        lambda: hf_hub_download(repo, "missing.txt", cache_dir=work / "cache-err", token=a.token),
    )
    if a.gated_repo:
        c.raises(
            "gated repo",
            GatedRepoError,
            lambda: hf_hub_download(a.gated_repo, ".gitattributes", cache_dir=work / "cache-err", token=a.token),
        )
    if a.private_repo:
        c.raises(
            "private repo without a token",
            RepositoryNotFoundError,
            lambda: HfApi(endpoint=a.endpoint, token=False).model_info(a.private_repo),
        )
        c.eq("private repo with a token", api.model_info(a.private_repo).id, a.private_repo)

    summary = {
        "huggingface_hub": huggingface_hub.__version__,
        "commits": {"first": first.oid, "second": second.oid, "copies": copied.oid, "dev": on_dev.oid, "pr": pr.oid},
        "passed": len(c.passed),
        "failures": c.failures,
    }
    print(json.dumps(summary, indent=1))
    return 1 if c.failures else 0


def upload(a):
    api = HfApi(endpoint=a.endpoint, token=a.token)
    api.create_repo(a.repo, exist_ok=True)
    info = api.upload_folder(folder_path=a.folder, repo_id=a.repo, revision=a.revision, commit_message=a.message)
    print(json.dumps({"commit": info.oid}))
    return 0


def download(a):
    path = snapshot_download(a.repo, revision=a.revision, cache_dir=a.cache, token=a.token,
                             local_files_only=a.offline)
    print(json.dumps({"path": path, "files": tree_hashes(path)}))
    return 0


if __name__ == "__main__":
    sys.exit({"selftest": selftest, "upload": upload, "download": download}[ARGS.cmd](ARGS))
