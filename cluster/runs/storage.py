"""Run storage: a local or shared path (NFS), or an object-store URI that pyarrow.fs opens.

Ray Train writes checkpoints straight to a URI ``storage_path``. The other artifacts of a run
(metrics.jsonl, TensorBoard, loss.png, export/) are written by rank 0 and the driver with
plain file I/O, so with a URI they go to a local *mirror* of the run directory under
``cache_dir/storage/``: rank 0 uploads it when training ends, the driver pulls it back for
the summary and uploads config.yaml and summary.json. A local or shared path needs none of
this: every node writes the run directory in place.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pyarrow
import pyarrow.fs as pafs

from console import log
from rundir import layout
from rundir.node_cache import EXPORT_MANIFEST
from rundir.store import Location, first_line, probe, upload_tree
from schemas.fields import ConfigError

# What pyarrow.fs.FileSystem.from_uri opens (and so what Ray Train accepts as storage_path).
URI_SCHEMES = ("s3", "gs", "gcs", "abfs", "abfss", "hdfs", "viewfs", "file")
# What the driver pulls back from a URI run for the summary (checkpoints stay remote).
RUN_OUTPUTS = (layout.METRICS, layout.LOSS_PICTURE, layout.TENSORBOARD, layout.EXPORT)


# The standard variables by which pyarrow.fs (and boto3, gcloud, the Azure SDK) find a store:
# its settings, which the driver hands to Ray's runtime environment (cluster/ray_setup.py) so
# that workers and replicas on any node reach the same store, and its secrets, which it never
# hands on: Ray's runtime-env agent writes every runtime_env value into its log
# (runtime_env_agent.log, "Creating runtime env: {...}"), seen in
# tests/integration/test_object_store_runs.py. Nodes get their own credentials (an instance
# role, IRSA or Workload Identity, a Kubernetes Secret in the pod's environment, or a profile
# in the credentials file that AWS_SHARED_CREDENTIALS_FILE names); a cluster the driver
# starts itself inherits the driver's environment.
STORE_SETTINGS = (
    "AWS_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",  # an S3-compatible store: MinIO, Ceph, R2, moto
    "AWS_ENDPOINT_URL_S3",
    "AWS_EC2_METADATA_DISABLED",
    "GOOGLE_APPLICATION_CREDENTIALS",  # a path to a key file on each node
    "AZURE_STORAGE_ACCOUNT_NAME",
)
STORE_SECRETS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AZURE_STORAGE_ACCOUNT_KEY",
)


def store_env() -> dict[str, str]:
    """The store settings set in this process, for the runtime environment's env_vars."""
    return {key: os.environ[key] for key in STORE_SETTINGS if os.environ.get(key)}


def store_secrets_set() -> list[str]:
    """The names (never the values) of the store secrets set in this process."""
    return [key for key in STORE_SECRETS if os.environ.get(key)]


def is_uri(path: str) -> bool:
    return "://" in path


def check_uri(uri: str, key: str) -> None:
    scheme = uri.split("://", 1)[0].lower()
    if scheme not in URI_SCHEMES:
        allowed = ", ".join(f"{s}://" for s in URI_SCHEMES)
        raise ConfigError(
            f"{key}={uri!r} has an unknown storage scheme {scheme!r}; allowed: a local or "
            f"shared path, or a URI starting with one of {allowed}"
        )
    # The local mirror (mirror_dir) is the URI's path below cache_dir/storage/, and it is
    # deleted and rewritten: a ".." would put it, and what is deleted, outside the cache.
    if any(part in (".", "..") for part in uri.partition("?")[0].split("://", 1)[1].split("/")):
        raise ConfigError(
            f"{key}={uri!r} has a '.' or '..' path segment; allowed: a URI whose path "
            "names its folders without '.' or '..'"
        )


def open_uri(uri: str, key: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it); a one-line ConfigError if pyarrow cannot open it."""
    check_uri(uri, key)
    try:
        return pafs.FileSystem.from_uri(uri)
    except (OSError, pyarrow.ArrowException) as e:
        raise ConfigError(
            f"{key}={uri!r} cannot be opened ({first_line(e)}); allowed: a URI whose "
            "bucket exists and whose credentials this machine has"
        ) from None


def join(uri: str, *parts: str) -> str:
    """Append path parts to a URI, keeping a query string (``?endpoint_override=...``) last."""
    base, sep, query = uri.partition("?")
    return "/".join([base.rstrip("/"), *parts]) + sep + query


def check_writable_uri(uri: str, key: str) -> None:
    fs, path = open_uri(uri, key)
    probe = f"{path.rstrip('/')}/.zeroray-write-test-{time.time_ns()}"
    try:
        fs.create_dir(path, recursive=True)
        with fs.open_output_stream(probe) as f:
            f.write(b"")
        fs.delete_file(probe)
    except (OSError, pyarrow.ArrowException) as e:
        raise ConfigError(
            f"{key}={uri!r} is not writable ({first_line(e)}); allowed: a location "
            "this machine's credentials can write"
        ) from None


def exists(uri: str) -> bool:
    fs, path = open_uri(uri, "output_dir")
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def mirror_dir(cache_dir: str, uri: str) -> Path:
    """The local directory that stands for ``uri`` on this machine."""
    check_uri(uri, "output_dir")
    scheme, rest = uri.partition("?")[0].split("://", 1)
    return Path(cache_dir) / "storage" / scheme / rest.strip("/")


def upload(local: Path, uri: str) -> None:
    """Copy a local file or directory tree to ``uri`` (rundir/store.py upload_tree: an
    export's manifest last, each file retried)."""
    open_uri(uri, "output_dir")  # a URI that cannot be opened: one line naming the setting
    upload_tree(local, uri, last=(EXPORT_MANIFEST,))


def download(uri: str, local: Path) -> bool:
    """Copy ``uri`` (a file or a tree) to ``local``; False if there is nothing there."""
    fs, path = open_uri(uri, "output_dir")
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        return False
    if info.type == pafs.FileType.Directory:
        local.mkdir(parents=True, exist_ok=True)
    else:
        local.parent.mkdir(parents=True, exist_ok=True)
    pafs.copy_files(path, str(local), fs, pafs.LocalFileSystem())
    return True


# ---- a run's directory when output_dir is a URI --------------------------------------------


def experiment_storage(output_dir: str, experiment: str) -> str:
    """Ray Train's storage_path, <output_dir>/<experiment>: a path or a URI. Checkpoints go
    there directly, so with a URI they never touch the driver's disk."""
    if is_uri(output_dir):
        return join(output_dir, experiment)
    return str(Path(output_dir) / experiment)


def run_uri(output_dir: str, experiment: str, run_name: str) -> str:
    return join(output_dir, experiment, run_name)


def pull_run_outputs(output_dir: str, experiment: str, run_dir: Path) -> None:
    """In the driver, after training: bring rank 0's outputs into the local mirror, which
    rank 0 may have written on another node."""
    if not is_uri(output_dir):
        return
    uri = run_uri(output_dir, experiment, run_dir.name)
    for name in RUN_OUTPUTS:
        download(join(uri, name), run_dir / name)


def push_carried_history(output_dir: str, experiment: str, run_dir: Path) -> None:
    """In the driver, before training: the history a resume carried into the mirror
    (metrics, TensorBoard) joins the run at its URI, where rank 0 takes it from on
    whichever node it runs (rundir/run_copy.py)."""
    _push(output_dir, experiment, run_dir, (layout.METRICS, layout.TENSORBOARD))


def push_driver_outputs(output_dir: str, experiment: str, run_dir: Path) -> None:
    """In the driver, at the end: what it wrote (config.yaml, summary.json, and where they
    were made, the closing evaluation's report and answers and the MLflow run's id) joins
    the run at its URI."""
    written = (layout.CONFIG, layout.SUMMARY, layout.EVAL, layout.PREDICTIONS, layout.TRACKING)
    uri = _push(output_dir, experiment, run_dir, written)
    if uri:
        log.info(f"run stored at {uri} (local copy: {run_dir})")


def _push(output_dir: str, experiment: str, run_dir: Path, names: tuple[str, ...]) -> str | None:
    """Those of ``names`` the mirror holds, uploaded to the run's URI; the URI (None for a
    local or shared output_dir, written in place)."""
    if not is_uri(output_dir):
        return None
    uri = run_uri(output_dir, experiment, run_dir.name)
    for name in names:
        if (run_dir / name).exists():
            upload(run_dir / name, join(uri, name))
    return uri


def probe_model_dir(path: str | Path, key: str) -> Location:
    """A model directory's location (a path, or a URI whose bucket answered), or a one-line
    ConfigError naming ``key`` and the cause: no such bucket, an unreachable store, refused
    credentials."""
    try:
        return probe(path)
    except OSError as e:
        raise ConfigError(
            f"{key}={str(path)!r}: {first_line(e)}; allowed: an export this machine's "
            "credentials can read"
        ) from None
