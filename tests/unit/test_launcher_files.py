"""What `ray up deploy/aws.yaml` leaves on the nodes: a shared folder only the image's ray
user can write (resume=latest and the newest export pick whatever lies there), and a
checkout copy without the secrets `make submit` keeps out of a job."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def aws() -> dict:
    return yaml.safe_load((REPO_ROOT / "deploy" / "aws.yaml").read_text())


def test_shared_storage_is_not_world_writable(aws):
    # resume=latest and the newest export pick whatever lies in /shared, and DeepSpeed's
    # shards are unpickled: only the image's ray user (uid 1000, group users) may write.
    [mount] = [c for c in aws["initialization_commands"] if "/shared" in c]
    assert "chmod 777" not in mount and "a+w" not in mount and "o+w" not in mount
    mode = re.search(r"chmod (\d{3,4}) /shared", mount)
    assert mode and int(mode.group(1), 8) & 0o007 == 0, mount
    assert "chown 1000:100 /shared" in mount


def test_ray_up_syncs_no_secret(aws):
    """Every secret pattern `make submit` keeps out of a job is kept out of `ray up`'s copy
    of the checkout too, and the files they name are excluded by rsync's rules (a pattern
    without a slash matches a name at any depth)."""
    submit = yaml.safe_load((REPO_ROOT / "conf" / "submit.yaml").read_text())["excludes"]
    secrets = submit[submit.index("serve_config.yaml") :]
    assert set(secrets) <= set(aws["rsync_exclude"]), set(secrets) - set(aws["rsync_exclude"])
    for path in (".env", "deploy/.env.local", "k/server.pem", "tls.key", "keys/id_rsa",
                 "id_ed25519.pub", "serve_config.yaml", "a/api.token", ".netrc",
                 ".aws/credentials", "auth_token", "credentials.json"):  # fmt: skip
        assert _rsync_excluded(path, aws["rsync_exclude"]), path
    assert not _rsync_excluded("cluster/serve.py", aws["rsync_exclude"])


def _rsync_excluded(path: str, patterns: list[str]) -> bool:
    """rsync's --exclude for these simple patterns: a trailing "/" matches a directory (so
    everything below it), no other "/" matches the name of any component."""
    parts = path.split("/")
    for pattern in patterns:
        name = pattern.rstrip("/").removeprefix("**/")
        components = parts[:-1] if pattern.endswith("/") else parts
        if any(fnmatch.fnmatchcase(part, name) for part in components):
            return True
    return False
