"""The CLI's connection to a Lamina server: botocore's own Lambda client."""

from __future__ import annotations

import os
from typing import Any

import botocore.session
from botocore.config import Config

DEFAULT_ENDPOINT = "http://127.0.0.1:9000"


def lambda_client(endpoint: str | None, service: str = "lambda") -> Any:
    session = botocore.session.get_session()
    return session.create_client(
        service,
        endpoint_url=endpoint or os.environ.get("LAMINA_ENDPOINT") or DEFAULT_ENDPOINT,
        region_name=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        # Local development servers accept any key; real keys come from the usual
        # AWS variables or profile when the server verifies signatures.
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "lamina"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "lamina"),
        config=Config(retries={"max_attempts": 1}, read_timeout=960),
    )
