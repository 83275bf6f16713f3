"""The ``aws://`` backend URL, the table and queue definitions, and provisioning.

URL form (every parameter optional)::

    aws://?prefix=runfox&region=eu-west-1
    aws://?table=wf&tasks_table=tasks&queue=https://sqs.eu-west-1.amazonaws.com/123/jobs

========================  =============================================================
parameter                 meaning (default)
========================  =============================================================
``prefix``                default names: ``{prefix}-workflows``, ``{prefix}-tasks``,
                          ``{prefix}-jobs`` (``runfox``)
``table``                 the workflows table
``tasks_table``           the task table
``queue``                 the job queue: a name or a URL
``events_queue``          where wake-ups and result messages go (the job queue)
``region``                the AWS region (the environment's / profile's)
``endpoint_url``          one endpoint for both services (``AWS_ENDPOINT_URL``)
``profile``               a named profile of the shared AWS config
``status_index``          the status index of the workflows table, ``none`` to scan
                          (``by_status``)
``lease``                 seconds a taken job stays invisible (30)
``wait_time``             long-poll seconds when taking jobs, 0-20 (0)
``resend_after``          seconds before a stuck ``pending`` job is sent again (300)
``bucket``                the S3 bucket for offloaded payloads, ``none`` to keep every
                          value inline (``{prefix}-payloads``)
``offload``               values (outputs, inputs, state keys, job inputs) whose JSON
                          is over this many bytes go to the bucket; ``off`` never
                          (``$RUNFOX_OFFLOAD_BYTES``, else 32768)
========================  =============================================================

Credentials always come from boto3's default chain (environment, profile, IAM
role); they never go in a URL. ``parts_from_url`` also takes keyword options:
``session``, ``config``, ``dynamodb_client``, ``sqs_client`` and ``verify``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from ...errors import BackendError
from ..payload_store import Offloader, offload_threshold
from ._boto import call, error_code, make_client, require_boto3
from .payloads import S3Payloads
from .runner import SQSRunner
from .store import DEFAULT_STATUS_INDEX, DynamoDBStore
from .tasks import TASKS_ATTRIBUTES as TASKS_ATTRIBUTES  # the template matches these
from .tasks import TASKS_KEYS as TASKS_KEYS
from .tasks import TASKS_TTL_ATTRIBUTE as TASKS_TTL_ATTRIBUTE
from .tasks import TaskTable

__all__ = ["AwsSettings", "Resources", "create_resources", "parse_url", "parts_from_url"]

#: Key schema and attribute types of the workflows table (the template matches these).
WORKFLOWS_KEYS = [("id", "HASH")]
WORKFLOWS_ATTRIBUTES = {"id": "S", "status": "S", "created_at": "N"}
STATUS_INDEX_KEYS = [("status", "HASH"), ("created_at", "RANGE")]
STATUS_INDEX_PROJECTED = ["name", "updated_at"]

_PARAMETERS = ("prefix", "table", "tasks_table", "queue", "events_queue", "region",
               "endpoint_url", "profile", "status_index", "lease", "wait_time", "resend_after",
               "bucket", "offload")

#: The offload threshold of the AWS backend when none is set (bytes of JSON): low,
#: because a whole record must fit one 400 KB DynamoDB item.
AWS_OFFLOAD_BYTES = 32 * 1024


@dataclass(frozen=True, slots=True)
class AwsSettings:
    """What an ``aws://`` URL says; see the module docstring."""

    table: str
    tasks_table: str
    queue: str
    events_queue: str | None = None
    region: str | None = None
    endpoint_url: str | None = None
    profile: str | None = None
    status_index: str | None = DEFAULT_STATUS_INDEX
    lease: float = 30.0
    wait_time: int = 0
    resend_after: float = 300.0
    bucket: str | None = None
    offload: int | None = AWS_OFFLOAD_BYTES


def _number(name: str, text: str, kind: type) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"aws:// URL parameter {name}={text!r} is not a number") from None
    if value < 0:
        raise ValueError(f"aws:// URL parameter {name} must not be negative")
    return value


def parse_url(url: str) -> AwsSettings:
    """Read an ``aws://`` URL. ``ValueError`` names an unknown or malformed parameter."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "aws":
        raise ValueError(f"not an aws:// URL: {url!r}")
    if parts.netloc or parts.path not in ("", "/"):
        raise ValueError(f"an aws:// URL takes its settings as query parameters only, e.g. "
                         f"aws://?prefix=runfox&region=eu-west-1 (got {url!r})")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - set(_PARAMETERS))
    if unknown:
        raise ValueError(f"unknown aws:// URL parameter(s) {', '.join(unknown)}; known: "
                         f"{', '.join(_PARAMETERS)}")
    repeated = sorted(name for name, values in query.items() if len(values) > 1)
    if repeated:
        raise ValueError(f"aws:// URL parameter(s) given more than once: {', '.join(repeated)}")
    given = {name: values[0] for name, values in query.items() if values[0] != ""}
    prefix = given.get("prefix", "runfox")
    index = given.get("status_index", DEFAULT_STATUS_INDEX)
    return AwsSettings(
        table=given.get("table", f"{prefix}-workflows"),
        tasks_table=given.get("tasks_table", f"{prefix}-tasks"),
        queue=given.get("queue", f"{prefix}-jobs"),
        events_queue=given.get("events_queue"),
        region=given.get("region"),
        endpoint_url=given.get("endpoint_url"),
        profile=given.get("profile"),
        status_index=None if index.lower() == "none" else index,
        lease=_number("lease", given["lease"], float) if "lease" in given else 30.0,
        wait_time=_number("wait_time", given["wait_time"], int) if "wait_time" in given else 0,
        resend_after=(_number("resend_after", given["resend_after"], float)
                      if "resend_after" in given else 300.0),
        bucket=None if given.get("bucket", "").lower() == "none" else given.get(
            "bucket", f"{prefix}-payloads"),
        offload=_offload(given.get("offload")),
    )


def _offload(text: str | None) -> int | None:
    try:
        return offload_threshold(text, AWS_OFFLOAD_BYTES)
    except ValueError as exc:
        raise ValueError(f"aws:// URL parameter {exc}") from None


def parts_from_url(url: str, **options: Any) -> tuple[DynamoDBStore, SQSRunner]:
    """The DynamoDB store and SQS runner an ``aws://`` URL describes.

    The runner's ``on_control`` is left unset: the harness that takes jobs from
    it (``Worker``, ``Workflow.run``) wires it to a result handler
    (``runfox.execution.serve_control``), so ``runfox worker --backend
    aws://...`` also serves wake-ups scheduled by Lambda handlers.

    Raises:
        ValueError: a malformed URL, or an unknown option.
        BackendError: missing credentials, table or queue (named in the message).
    """
    settings = parse_url(url)
    session = options.pop("session", None)
    config = options.pop("config", None)
    dynamodb_client = options.pop("dynamodb_client", None)
    sqs_client = options.pop("sqs_client", None)
    verify = bool(options.pop("verify", True))
    if options:
        raise ValueError(f"unknown option(s) for an aws:// backend: {', '.join(sorted(options))}"
                         "; known: session, config, dynamodb_client, sqs_client, verify")
    if session is None and settings.profile:
        session = require_boto3().session.Session(profile_name=settings.profile)
    build = {"session": session, "region_name": settings.region,
             "endpoint_url": settings.endpoint_url, "config": config}
    built_dynamodb, built_sqs = dynamodb_client is None, sqs_client is None
    if dynamodb_client is None:
        dynamodb_client, _ = make_client("dynamodb", **build)
    if sqs_client is None:
        sqs_client, _ = make_client("sqs", **build)
    payloads = None
    if settings.bucket is not None:
        try:
            blobs = S3Payloads(settings.bucket, verify=verify, **build)
        except BackendError as exc:
            raise BackendError(f"{exc}; create the payload bucket (backends/aws/template.yaml "
                               "or runfox.backend.aws.create_resources) or give the URL "
                               "bucket=none to keep every value inside the records") from exc
        payloads = Offloader(blobs, settings.offload)
    store = DynamoDBStore(settings.table, client=dynamodb_client,
                          status_index=settings.status_index, verify=verify,
                          tasks_table=settings.tasks_table, payloads=payloads)
    runner = SQSRunner(settings.queue, tasks_table=settings.tasks_table,
                       events_queue=settings.events_queue, sqs_client=sqs_client,
                       dynamodb_client=dynamodb_client, lease=settings.lease,
                       wait_time=settings.wait_time, resend_after=settings.resend_after,
                       verify=verify, payloads=payloads)
    # Clients built here belong to the pair: the store closes the shared DynamoDB one.
    store._owns_client, runner._owns_sqs = built_dynamodb, built_sqs
    return store, runner


# ---------------------------------------------------------------------------
# Provisioning, for development and tests (production: backends/aws/template.yaml)
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Resources:
    """Names and URLs of what ``create_resources`` made (or found)."""

    table: str
    tasks_table: str
    queue_url: str
    dead_letter_queue_url: str
    bucket: str | None = None

    def url(self, **extra: str) -> str:
        """An ``aws://`` URL for these resources (plus extra parameters)."""
        params = {"table": self.table, "tasks_table": self.tasks_table,
                  "queue": self.queue_url, "bucket": self.bucket or "none", **extra}
        return "aws://?" + urlencode(params)


def _attribute_definitions(types: dict[str, str]) -> list[dict[str, str]]:
    return [{"AttributeName": name, "AttributeType": kind} for name, kind in types.items()]


def _key_schema(keys: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"AttributeName": name, "KeyType": kind} for name, kind in keys]


def _create_table(client: Any, name: str, **definition: Any) -> None:
    try:
        call(client, "create_table", name, passthrough=("ResourceInUseException",),
             TableName=name, BillingMode="PAY_PER_REQUEST", **definition)
    except Exception as exc:
        if error_code(exc) != "ResourceInUseException":
            raise
    client.get_waiter("table_exists").wait(TableName=name,
                                           WaiterConfig={"Delay": 1, "MaxAttempts": 120})


def create_resources(
    prefix: str = "runfox",
    *,
    dynamodb_client: Any = None,
    sqs_client: Any = None,
    session: Any = None,
    region_name: str | None = None,
    endpoint_url: str | None = None,
    config: Any = None,
    status_index: bool = True,
    visibility_timeout: int = 30,
    max_receive_count: int = 5,
    s3_client: Any = None,
    bucket: bool = True,
) -> Resources:
    """Create the two tables, the job queue, its dead-letter queue and (with
    ``bucket``) the payload bucket ``{prefix}-payloads`` if missing.

    Names follow ``prefix`` as in an ``aws://`` URL. Tables are on-demand, the
    task table has TTL on ``expires_at``, and the queue moves a message to the
    dead-letter queue after ``max_receive_count`` receives. Existing resources
    are left as they are.

    Raises:
        BackendError: AWS refused (credentials, permissions, region).
    """
    build = {"session": session, "region_name": region_name, "endpoint_url": endpoint_url,
             "config": config}
    ddb = make_client("dynamodb", client=dynamodb_client,
                      **(build if dynamodb_client is None else {}))[0]
    sqs = make_client("sqs", client=sqs_client, **(build if sqs_client is None else {}))[0]
    table, tasks = f"{prefix}-workflows", f"{prefix}-tasks"
    workflows: dict[str, Any] = {"KeySchema": _key_schema(WORKFLOWS_KEYS)}
    if status_index:
        workflows["AttributeDefinitions"] = _attribute_definitions(WORKFLOWS_ATTRIBUTES)
        workflows["GlobalSecondaryIndexes"] = [{
            "IndexName": DEFAULT_STATUS_INDEX, "KeySchema": _key_schema(STATUS_INDEX_KEYS),
            "Projection": {"ProjectionType": "INCLUDE",
                           "NonKeyAttributes": STATUS_INDEX_PROJECTED}}]
    else:
        workflows["AttributeDefinitions"] = _attribute_definitions({"id": "S"})
    _create_table(ddb, table, **workflows)
    TaskTable(ddb, tasks).create()  # the task table's definition lives with its code
    dlq_url = _create_queue(sqs, f"{prefix}-jobs-dlq", {"MessageRetentionPeriod": "1209600"})
    dlq_arn = call(sqs, "get_queue_attributes", dlq_url, QueueUrl=dlq_url,
                   AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count})
    queue_url = _create_queue(sqs, f"{prefix}-jobs", {
        "VisibilityTimeout": str(visibility_timeout), "RedrivePolicy": redrive})
    bucket_name = None
    if bucket:
        s3 = make_client("s3", client=s3_client, **(build if s3_client is None else {}))[0]
        bucket_name = f"{prefix}-payloads"
        _create_bucket(s3, bucket_name)
    return Resources(table, tasks, queue_url, dlq_url, bucket_name)


def _create_bucket(client: Any, name: str) -> None:
    """Create bucket ``name`` in the client's region unless this account has it."""
    region = client.meta.region_name
    params: dict[str, Any] = {"Bucket": name}
    if region and region != "us-east-1":  # us-east-1 refuses a location constraint
        params["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        call(client, "create_bucket", name,
             passthrough=("BucketAlreadyOwnedByYou", "BucketAlreadyExists"), **params)
    except Exception as exc:
        if error_code(exc) != "BucketAlreadyOwnedByYou":
            raise BackendError(f"S3 bucket {name!r} cannot be created: {exc}") from exc


def _create_queue(client: Any, name: str, attributes: dict[str, str]) -> str:
    """The queue's URL, creating it with ``attributes`` if it does not exist."""
    try:
        url: str = call(client, "create_queue", name, passthrough=("QueueAlreadyExists",),
                        QueueName=name, Attributes=attributes)["QueueUrl"]
    except Exception as exc:  # exists with other attributes: leave it as it is
        if error_code(exc) != "QueueAlreadyExists":
            raise
        url = call(client, "get_queue_url", name, QueueName=name)["QueueUrl"]
    if not url:
        raise BackendError(f"SQS returned no URL for queue {name!r}")
    return url
