"""A real S3-API server for the tests: moto's server mode on a free loopback port.

Started per test session (like the tests' own Postgres database), in its own process; the
bucket is made by the fixture. Credentials are moto's defaults (any value is accepted).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from bench._harness import start_moto

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "stillhouse-test",
    "AWS_SECRET_ACCESS_KEY": "stillhouse-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    os.environ.update(S3_ENV)
    proc, endpoint = start_moto(tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def make_bucket(endpoint: str, name: str) -> None:
    import boto3

    boto3.client("s3", endpoint_url=endpoint, **_credentials()).create_bucket(Bucket=name)


def _credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": S3_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": S3_ENV["AWS_SECRET_ACCESS_KEY"],
        "region_name": S3_ENV["AWS_DEFAULT_REGION"],
    }
