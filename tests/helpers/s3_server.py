"""A real S3 server on loopback for the object-storage tests: moto's server mode (the
`moto[server]` dev dependency) in a subprocess on a free port, reached the standard way,
through AWS_ENDPOINT_URL and the AWS_* credentials that pyarrow (and so Ray Train) reads.

Authentication is on (moto's INITIAL_NO_AUTH_ACTION_COUNT): after the three calls that make
an IAM user with an allow-all policy and an access key, every request must be signed with
that key, so wrong or missing credentials are refused as by S3 itself. The key is moto's
own (random, distinctive), so a test can search for it in whatever a run wrote."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ALLOW_ALL = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
}


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    bucket: str
    access_key: str
    secret_key: str

    @property
    def env(self) -> dict[str, str]:
        """What a process needs to reach the bucket (AWS_ENDPOINT_URL: any S3-compatible store)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",  # no instance-metadata lookups on loopback
        }

    def profile_env(self, directory: Path) -> dict[str, str]:
        """The same key as a profile in a credentials file (mode 0600) in ``directory``, the
        way a node holds its own: only the file's path and the profile's name are in the
        environment, and those may travel in Ray's runtime environment."""
        credentials = directory / "aws-credentials"
        credentials.touch(mode=0o600)
        credentials.write_text(
            f"[zeroray-test]\naws_access_key_id = {self.access_key}\n"
            f"aws_secret_access_key = {self.secret_key}\n"
        )
        env = {k: v for k, v in self.env.items() if k not in SECRETS}
        return env | {
            "AWS_SHARED_CREDENTIALS_FILE": str(credentials),
            "AWS_PROFILE": "zeroray-test",
        }

    def uri(self, *parts: str) -> str:
        return "/".join([f"s3://{self.bucket}", *parts])


SECRETS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_s3_server(bucket: str = "zeroray-test"):
    """moto's S3 server on 127.0.0.1, authenticating, with ``bucket`` created; stopped on exit."""
    import boto3

    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto's S3 server did not start on {endpoint}") from None
                time.sleep(0.2)
        plain = {"endpoint_url": endpoint, "region_name": "us-east-1"}
        iam = boto3.client("iam", aws_access_key_id="setup", aws_secret_access_key="setup", **plain)
        iam.create_user(UserName="zeroray")
        iam.put_user_policy(
            UserName="zeroray", PolicyName="all", PolicyDocument=json.dumps(ALLOW_ALL)
        )
        key = iam.create_access_key(UserName="zeroray")["AccessKey"]
        server = S3Server(endpoint, bucket, key["AccessKeyId"], key["SecretAccessKey"])
        boto3.client(
            "s3",
            aws_access_key_id=server.access_key,
            aws_secret_access_key=server.secret_key,
            **plain,
        ).create_bucket(Bucket=bucket)
        yield server
    finally:
        proc.terminate()
        proc.wait(timeout=30)
