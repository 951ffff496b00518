"""moto's standalone S3 server on loopback: boto3 talks real HTTP to it, in this process."""

from __future__ import annotations

import logging
import urllib.request
from dataclasses import dataclass
from typing import Any

from harness.net import free_port, wait_port
from harness.service import Service

# moto accepts any key; boto3 only needs some to sign with.
AWS_TEST_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass(frozen=True)
class S3Endpoint:
    """Where the images and the archived results are: what a worker's settings need."""

    url: str
    bucket: str = "kyc-images"
    results_bucket: str | None = "kyc-results"

    def buckets(self) -> list[str]:
        return [b for b in (self.bucket, self.results_bucket) if b]


class MotoS3(Service):
    """``moto.server.ThreadedMotoServer`` on a free port.

    Raises:
        ImportError: from :meth:`start` when ``moto[server]`` is not installed.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: Any = None

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        wait_port(self.port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def reset(self) -> None:
        """Delete every bucket and object (moto's reset endpoint)."""
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")).close()

    def client(self) -> Any:
        """A boto3 S3 client for this server (credentials from :data:`AWS_TEST_CREDENTIALS`)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=AWS_TEST_CREDENTIALS["AWS_DEFAULT_REGION"],
            aws_access_key_id=AWS_TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=AWS_TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def fresh(self, endpoint: S3Endpoint, objects: dict[str, bytes] | None = None) -> S3Endpoint:
        """Wipe the server, create the endpoint's buckets and put ``objects`` (key -> bytes) in its
        image bucket."""
        self.reset()
        client = self.client()
        for bucket in endpoint.buckets():
            client.create_bucket(Bucket=bucket)
        for key, body in (objects or {}).items():
            client.put_object(Bucket=endpoint.bucket, Key=key, Body=body)
        return endpoint
