"""A moto server for the AWS tests, and fresh tables and queues for each test.

The server is started once per session on 127.0.0.1 (a free port) and spoken to
over HTTP by real boto3 clients. It is moto's server with DynamoDB requests served
one at a time (``runfox.backend.aws.testing.LocalAws`` says why). The session
points the standard AWS variables (``AWS_ENDPOINT_URL``, dummy credentials,
region) at it, so nothing here can reach real AWS. Each test gets tables and
queues under a prefix of its own instead of resetting the server, so tests never
see each other's state.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import need_service

#: The repository root.
ROOT = Path(__file__).resolve().parents[2]
#: Short visibility timeout (seconds): leases expire quickly in tests.
VISIBILITY = 2
#: Receives before a message moves to the dead-letter queue.
MAX_RECEIVES = 3


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """The URL of a moto server started for this session (see ``LocalAws``)."""
    try:
        import boto3  # noqa: F401
        import moto.server  # noqa: F401
    except ImportError as exc:
        need_service("moto", f"{exc}: pip install -e '.[dev]'")
    from runfox.backend.aws.testing import LocalAws

    server = LocalAws()
    try:
        url = server.start()
    except Exception as exc:  # a broken install or a sandbox without sockets
        need_service("moto", f"the moto server did not start: {exc}")
    patch = pytest.MonkeyPatch()
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):
        patch.delenv(name, raising=False)
    patch.setenv("AWS_ACCESS_KEY_ID", "testing")
    patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    patch.setenv("AWS_REGION", "us-east-1")
    patch.setenv("AWS_ENDPOINT_URL", url)
    patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    try:
        yield url
    finally:
        patch.undo()
        server.stop()


def no_retry_config() -> Any:
    """botocore config for tests: moto answers unimplemented calls with HTTP 500, don't retry."""
    from botocore.config import Config

    return Config(retries={"max_attempts": 1})


@dataclass
class Aws:
    """A test's own tables and queues on the moto server, with clients and factories."""

    url: str
    dynamodb: Any
    sqs: Any
    resources: Any

    @property
    def backend_url(self) -> str:
        return self.resources.url(endpoint_url=self.url)

    def offloader(self, threshold: int | None = None) -> Any:
        """An ``Offloader`` over this test's payload bucket (``S3Payloads``); the
        threshold defaults to the aws:// URL's default."""
        from runfox.backend.aws import S3Payloads
        from runfox.backend.aws.config import AWS_OFFLOAD_BYTES
        from runfox.backend.payload_store import Offloader

        return Offloader(S3Payloads(self.resources.bucket, endpoint_url=self.url),
                         threshold or AWS_OFFLOAD_BYTES)

    def store(self, **options: Any) -> Any:
        from runfox.backend.aws import DynamoDBStore

        options.setdefault("tasks_table", self.resources.tasks_table)
        return DynamoDBStore(self.resources.table, client=self.dynamodb, **options)

    def runner(self, **options: Any) -> Any:
        from runfox.backend.aws import SQSRunner

        options.setdefault("lease", VISIBILITY)
        return SQSRunner(self.resources.queue_url, tasks_table=self.resources.tasks_table,
                         sqs_client=self.sqs, dynamodb_client=self.dynamodb, **options)

    def backend(self, executor: Any = None, runner_options: dict[str, Any] | None = None,
                **options: Any) -> Any:
        from runfox.backend import Backend

        return Backend(executor=executor, store=self.store(),
                       runner=self.runner(**(runner_options or {})), **options)

    def queue_depth(self, queue_url: str | None = None) -> int:
        """Messages in a queue, visible or not (approximate, exact enough on moto)."""
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=queue_url or self.resources.queue_url,
            AttributeNames=["ApproximateNumberOfMessages",
                            "ApproximateNumberOfMessagesNotVisible",
                            "ApproximateNumberOfMessagesDelayed"])["Attributes"]
        return sum(int(v) for v in attributes.values())

    def dead_letters(self) -> list[dict[str, Any]]:
        """Everything in the dead-letter queue (received, and hidden for a minute)."""
        found: list[dict[str, Any]] = []
        while True:
            got = self.sqs.receive_message(QueueUrl=self.resources.dead_letter_queue_url,
                                           MaxNumberOfMessages=10,
                                           VisibilityTimeout=60).get("Messages", [])
            if not got:
                return found
            found.extend(got)


def make_clients(url: str) -> tuple[Any, Any]:
    import boto3

    session = boto3.session.Session()
    return (session.client("dynamodb", endpoint_url=url, config=no_retry_config()),
            session.client("sqs", endpoint_url=url, config=no_retry_config()))


@pytest.fixture(scope="session")
def aws_clients(moto_url: str) -> tuple[Any, Any]:
    return make_clients(moto_url)


def new_aws(url: str, dynamodb: Any, sqs: Any, **options: Any) -> Aws:
    from runfox.backend.aws import create_resources

    options.setdefault("visibility_timeout", VISIBILITY)
    options.setdefault("max_receive_count", MAX_RECEIVES)
    resources = create_resources(f"t{uuid.uuid4().hex[:12]}", dynamodb_client=dynamodb,
                                 sqs_client=sqs, **options)
    return Aws(url, dynamodb, sqs, resources)


@pytest.fixture
def aws(moto_url: str, aws_clients: tuple[Any, Any]) -> Aws:
    """Fresh tables, queue and dead-letter queue for one test."""
    return new_aws(moto_url, *aws_clients)


def requests_counter(*clients: Any) -> dict[str, int]:
    """Count API requests made through ``clients`` (by ``service.Operation``)."""
    counts: dict[str, int] = {}

    def count(event_name: str, **_: Any) -> None:
        _, service, operation = event_name.split(".", 2)
        key = f"{service}.{operation}"
        counts[key] = counts.get(key, 0) + 1

    for client in clients:
        client.meta.events.register("before-call.*.*", count)
    return counts


__all__ = ["MAX_RECEIVES", "ROOT", "VISIBILITY", "Aws", "make_clients", "new_aws",
           "no_retry_config", "requests_counter"]
