"""boto3 plumbing shared by the DynamoDB store and the SQS runner.

- ``require_boto3`` imports boto3 on first use and says which extra to install.
- ``make_client`` builds a low-level client the standard way (default credential
  chain, ``AWS_ENDPOINT_URL``, region from the environment or profile) or takes
  one the caller built, and rejects contradictory combinations.
- ``call`` runs one API operation and translates botocore errors into runfox
  errors that name the table or queue and say what to do (``BackendError ...
  from exc``). Codes a caller handles itself (a failed condition, a cancelled
  transaction) are passed through untouched.
- ``Transaction`` runs conditional writes as few requests as it can: one
  ``TransactWriteItems`` per 100 items, or the single-item call for one item,
  and reports per item which condition failed (with the stored item).

Everything here uses the low-level client API (``{"S": ...}`` attribute values),
which is explicit about types and is where new service features appear first.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ...errors import BackendError

__all__ = [
    "CONDITION_FAILED",
    "Refused",
    "Transaction",
    "all_pages",
    "call",
    "error_code",
    "make_client",
    "require_boto3",
]

CONDITION_FAILED = "ConditionalCheckFailedException"

_INSTALL_HINT = "the AWS backend needs boto3: pip install 'runfox[aws]'"

# AWS limits for TransactWriteItems (items per call, bytes per call). The byte
# budget is kept well under the 4 MB limit because our size estimate is rough.
_TX_MAX_ITEMS = 100
_TX_MAX_BYTES = 3_000_000

_NOT_FOUND = {
    "ResourceNotFoundException": "DynamoDB table",
    "AWS.SimpleQueueService.NonExistentQueue": "SQS queue",
    "QueueDoesNotExist": "SQS queue",
}
_DENIED = {"AccessDenied", "AccessDeniedException", "UnrecognizedClientException",
           "InvalidClientTokenId", "ExpiredToken", "ExpiredTokenException"}


def require_boto3() -> Any:
    """The ``boto3`` module; ``ImportError`` with the install command when it is missing."""
    try:
        import boto3
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(_INSTALL_HINT) from exc
    return boto3


def make_client(
    service: str,
    *,
    client: Any = None,
    session: Any = None,
    region_name: str | None = None,
    endpoint_url: str | None = None,
    config: Any = None,
) -> tuple[Any, bool]:
    """A boto3 client for ``service`` and whether the caller now owns it.

    Args:
        service: ``"dynamodb"`` or ``"sqs"``.
        client: a ready client; returned as is (not owned, never closed by runfox).
        session: a ``boto3.session.Session`` to build the client from (default: a
            new session, which reads the standard credential chain and profile).
        region_name: overrides the region from the environment or profile.
        endpoint_url: overrides ``AWS_ENDPOINT_URL`` (LocalStack, moto, a VPC endpoint).
        config: a ``botocore.config.Config`` merged over runfox's default
            (standard retry mode).

    Raises:
        ValueError: ``client`` was given together with settings to build one.
        BackendError: no region is configured.
    """
    if client is not None:
        extra = [name for name, value in (("session", session), ("region_name", region_name),
                                          ("endpoint_url", endpoint_url), ("config", config))
                 if value is not None]
        if extra:
            raise ValueError(f"pass either a ready {service} client or the settings to build "
                             f"one, not both (got a client and {', '.join(extra)})")
        return client, False
    boto3 = require_boto3()
    from botocore.config import Config
    from botocore.exceptions import NoRegionError

    merged = Config(retries={"mode": "standard"})
    if config is not None:
        merged = merged.merge(config)
    session = session if session is not None else boto3.session.Session()
    try:
        built = session.client(service, region_name=region_name, endpoint_url=endpoint_url,
                               config=merged)
    except NoRegionError as exc:
        raise BackendError(
            f"no AWS region is configured for {service}: set AWS_REGION (or "
            "AWS_DEFAULT_REGION), give the profile a region, or pass region_name "
            "(?region= in an aws:// URL)") from exc
    return built, True


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ``ClientError`` (``""`` for anything else)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code", ""))


def _translate(exc: Exception, service: str, operation: str, resource: str) -> BackendError:
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return BackendError(
            f"no usable AWS credentials for {service} {resource!r}: configure the standard "
            "boto3 credential chain (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
            "AWS_PROFILE, or an IAM role) or pass a session")
    if isinstance(exc, EndpointConnectionError):
        return BackendError(
            f"cannot reach the {service} endpoint for {resource!r} ({exc}): check "
            "AWS_ENDPOINT_URL / endpoint_url, the region and the network")
    if isinstance(exc, ClientError):
        code = error_code(exc)
        message = exc.response.get("Error", {}).get("Message", "")
        kind = _NOT_FOUND.get(code)
        if kind is not None:
            return BackendError(
                f"{kind} {resource!r} does not exist (or is not visible with these "
                "credentials in this region): create it with backends/aws/template.yaml "
                "or runfox.backend.aws.create_resources(), or point runfox at the right "
                f"name ({service} {operation}: {code})")
        if code in _DENIED:
            return BackendError(
                f"AWS refused {service}:{operation} on {resource!r} ({code}: {message}): "
                "check the credentials and grant that IAM permission")
        return BackendError(f"{service} {operation} on {resource!r} failed: {code}: {message}")
    return BackendError(f"{service} {operation} on {resource!r} failed: "
                        f"{type(exc).__name__}: {exc}")


def call(client: Any, operation: str, resource: str, *, passthrough: Sequence[str] = (),
         **params: Any) -> dict[str, Any]:
    """Run ``client.<operation>(**params)``; translate botocore errors at this boundary.

    ``resource`` (a table name or queue URL) is named in every error message.
    ``ClientError`` codes listed in ``passthrough`` are re-raised unchanged for the
    caller to handle.

    Raises:
        BackendError: any other botocore error, with the original as ``__cause__``.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        response: dict[str, Any] = getattr(client, operation)(**params)
        return response
    except ClientError as exc:
        if error_code(exc) in passthrough:
            raise
        raise _translate(exc, client.meta.service_model.service_name, operation,
                         resource) from exc
    except BotoCoreError as exc:
        raise _translate(exc, client.meta.service_model.service_name, operation,
                         resource) from exc


# ---------------------------------------------------------------------------
# Conditional writes in as few requests as possible
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Refused:
    """An item whose condition failed; ``item`` is what was stored (``None``: nothing)."""

    item: dict[str, Any] | None


_SINGLE = {"Put": "put_item", "Update": "update_item", "Delete": "delete_item"}


def _approx_size(op: dict[str, Any]) -> int:
    return len(repr(op))  # an over-estimate of the wire size, good enough for chunking


class Transaction:
    """Runs conditional writes on one DynamoDB client, batching them into transactions.

    Each operation is a ``TransactWriteItems`` entry (``{"Put": {...}}``,
    ``{"Update": {...}}`` or ``{"Delete": {...}}``). ``run`` returns, per
    operation, ``None`` when it was applied or ``Refused(item)`` when its
    condition failed. Items that only lost a race with another transaction are
    retried. A transaction costs two write units per item where a single write
    costs one; runfox trades that for fewer requests (see the README).
    """

    def __init__(self, client: Any, resource: str, *, max_retries: int = 20,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.client = client
        self.resource = resource
        self.max_retries = max_retries
        self._sleep = sleep

    def run(self, operations: Sequence[dict[str, Any]]) -> list[Refused | None]:
        outcome: list[Refused | None] = [None] * len(operations)
        for chunk in self._chunks(list(range(len(operations))), operations):
            self._run_chunk(chunk, operations, outcome)
        return outcome

    @staticmethod
    def _chunks(indexes: list[int], operations: Sequence[dict[str, Any]]) -> list[list[int]]:
        chunks: list[list[int]] = []
        current: list[int] = []
        size = 0
        for i in indexes:
            op_size = _approx_size(operations[i])
            if current and (len(current) >= _TX_MAX_ITEMS or size + op_size > _TX_MAX_BYTES):
                chunks.append(current)
                current, size = [], 0
            current.append(i)
            size += op_size
        if current:
            chunks.append(current)
        return chunks

    def _run_chunk(self, chunk: list[int], operations: Sequence[dict[str, Any]],
                   outcome: list[Refused | None]) -> None:
        todo = chunk
        for attempt in range(self.max_retries + 1):
            if len(todo) == 1:
                self._single(todo[0], operations, outcome)
                return
            try:
                call(self.client, "transact_write_items", self.resource,
                     passthrough=("TransactionCanceledException",),
                     TransactItems=[operations[i] for i in todo])
                return
            except Exception as exc:
                if error_code(exc) != "TransactionCanceledException":
                    raise
                reasons = getattr(exc, "response", {}).get("CancellationReasons") or []
                if len(reasons) != len(todo):
                    raise BackendError(f"dynamodb transact_write_items on {self.resource!r} "
                                       f"was cancelled without per-item reasons: {exc}") from exc
                retry = []
                for i, reason in zip(todo, reasons, strict=True):
                    code = reason.get("Code") or "None"
                    if code == "ConditionalCheckFailed":
                        outcome[i] = Refused(reason.get("Item"))
                    elif code in ("None", "TransactionConflict", "ThrottlingError",
                                  "ProvisionedThroughputExceeded"):
                        retry.append(i)
                    else:
                        raise BackendError(
                            f"dynamodb transact_write_items on {self.resource!r} refused an "
                            f"item: {code}: {reason.get('Message', '')}") from exc
                if not retry:
                    return
                if len(retry) == len(todo):  # nothing was refused: we lost a race, back off
                    self._sleep(random.uniform(0, min(0.2, 0.005 * 2 ** attempt)))
                todo = retry
        raise BackendError(f"dynamodb transact_write_items on {self.resource!r}: gave up after "
                           f"{self.max_retries} conflicting attempts")

    def _single(self, i: int, operations: Sequence[dict[str, Any]],
                outcome: list[Refused | None]) -> None:
        ((kind, params),) = operations[i].items()
        try:
            call(self.client, _SINGLE[kind], self.resource, passthrough=(CONDITION_FAILED,),
                 **params)
        except Exception as exc:
            if error_code(exc) != CONDITION_FAILED:
                raise
            outcome[i] = Refused(getattr(exc, "response", {}).get("Item"))


def all_pages(client: Any, operation: str, table: str, params: dict[str, Any]
              ) -> list[dict[str, Any]]:
    """Every item of a ``query`` or ``scan`` of ``table``, following ``LastEvaluatedKey``.

    ``params`` (without ``TableName``) is updated with each page's start key.
    """
    items: list[dict[str, Any]] = []
    while True:
        page = call(client, operation, table, TableName=table, **params)
        items.extend(page.get("Items", []))
        if not page.get("LastEvaluatedKey"):
            return items
        params["ExclusiveStartKey"] = page["LastEvaluatedKey"]
