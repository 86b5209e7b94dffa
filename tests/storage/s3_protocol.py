"""Shared by the S3 protocol tests: an access key issued by the CLI, and boto3 clients of a live server."""

from __future__ import annotations

import subprocess
from typing import Any

import boto3  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]

from tests.support import RunningServer, gatehouse_command

REGION = "local"


def issue_key(server: RunningServer, description: str = "tests") -> tuple[str, str]:
    """A new S3 access key, through ``gatehouse s3-keys create --env`` on the server's data folder."""
    done = subprocess.run(
        gatehouse_command("s3-keys", "--data-dir", str(server.data_dir), "create", "--env", "--description", description),
        env=server.env, capture_output=True, text=True, timeout=120, check=True,
    )
    values = dict(line.split("=", 1) for line in done.stdout.strip().splitlines())
    return values["AWS_ACCESS_KEY_ID"], values["AWS_SECRET_ACCESS_KEY"]


def s3_client(server: RunningServer, access_key: str, secret: str, token: str | None = None, **config: Any) -> Any:
    """boto3's S3 client, configured as the README says: path style, the region, the endpoint."""
    return boto3.client(
        "s3", endpoint_url=config.pop("endpoint", f"{server.url}/storage/v1/s3"), region_name=config.pop("region", REGION),
        aws_access_key_id=access_key, aws_secret_access_key=secret, aws_session_token=token,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, **config),
    )


def code_of(error: Exception) -> tuple[str, int]:
    """(S3 error code, HTTP status) of a botocore ClientError."""
    response = error.response  # type: ignore[attr-defined]
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]
