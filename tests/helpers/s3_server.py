"""A real S3 server on loopback for the object-storage tests: moto's server mode (the
`moto[server]` dev dependency) in a subprocess on a free port, reached the standard way,
through AWS_ENDPOINT_URL and the AWS_* credential variables that pyarrow (and so Ray Train)
reads. The credentials are fake but distinctive, so a test can look for them in whatever a
run wrote."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass

# Distinctive values: a leak of either into a file or a log is found by searching for it.
ACCESS_KEY = "AKIAZERORAYTESTLEAK01"
SECRET_KEY = "zeroray-test-secret-MUST-NOT-LEAK-5f3a9c"


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    bucket: str

    @property
    def env(self) -> dict[str, str]:
        """What a process needs to reach the bucket (AWS_ENDPOINT_URL: any S3-compatible store)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",  # no instance-metadata lookups on loopback
        }

    def uri(self, *parts: str) -> str:
        return "/".join([f"s3://{self.bucket}", *parts])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_s3_server(bucket: str = "zeroray-test"):
    """moto's S3 server on 127.0.0.1 with ``bucket`` created; stopped on exit."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
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
        # PUT /<bucket>: moto, like any S3 server, takes a bucket creation without signing
        # checks; the tests then reach it only through pyarrow.
        request = urllib.request.Request(f"{endpoint}/{bucket}", method="PUT")
        urllib.request.urlopen(request, timeout=10)
        yield S3Server(endpoint, bucket)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
