"""``S3Payloads``: offloaded blobs as S3 objects, one per key.

An object's key is ``{prefix}{blob key}`` (``payloads/sha256:<hex>``); its body is
the blob (the value's JSON, UTF-8). Blobs are named by their content, so a
repeated put writes the same bytes and readers never see two versions. The
bucket comes from the ``aws://`` URL (``bucket``, default ``{prefix}-payloads``)
and from ``backends/aws/template.yaml``; give it a lifecycle rule only if
executions that old are pruned too (a reference to an expired object is a
``PayloadMissing`` defect of that record).
"""

from __future__ import annotations

from typing import Any

from ..payload_store import PayloadStore
from ._boto import call, error_code, make_client

__all__ = ["DEFAULT_PAYLOAD_PREFIX", "S3Payloads"]

#: The key prefix of payload objects in the bucket.
DEFAULT_PAYLOAD_PREFIX = "payloads/"
_DELETE_BATCH = 1000
_MISSING = ("NoSuchKey", "404", "NotFound")


class S3Payloads(PayloadStore):
    """Blobs in an S3 bucket.

    Args:
        bucket: the bucket name.
        prefix: the key prefix of payload objects (``payloads/``).
        client: a ready ``boto3`` S3 client (then give none of the settings below).
        session, region_name, endpoint_url, config: how to build one (boto3's
            credential chain, ``AWS_ENDPOINT_URL``, standard retries).
        verify: check at construction that the bucket exists.

    Raises:
        BackendError: (with ``verify``) no credentials or no such bucket; the
            message names the bucket.
    """

    def __init__(self, bucket: str, *, prefix: str = DEFAULT_PAYLOAD_PREFIX, client: Any = None,
                 session: Any = None, region_name: str | None = None,
                 endpoint_url: str | None = None, config: Any = None,
                 verify: bool = False) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.client, self._owns_client = make_client(
            "s3", client=client, session=session, region_name=region_name,
            endpoint_url=endpoint_url, config=config)
        self.where = f"s3://{bucket}/{prefix}"
        if verify:
            call(self.client, "head_bucket", bucket, Bucket=bucket)

    def __repr__(self) -> str:
        return f"S3Payloads({self.where!r})"

    def _put(self, key: str, blob: bytes) -> None:
        call(self.client, "put_object", self.bucket, Bucket=self.bucket, Key=self.prefix + key,
             Body=blob, ContentType="application/json")

    def _get(self, key: str) -> bytes | None:
        try:
            response = call(self.client, "get_object", self.bucket, passthrough=_MISSING,
                            Bucket=self.bucket, Key=self.prefix + key)
        except Exception as exc:
            if error_code(exc) in _MISSING:
                return None
            raise
        body: bytes = response["Body"].read()
        return body

    def _delete(self, keys: list[str]) -> int:
        gone = 0
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = keys[start:start + _DELETE_BATCH]
            present = [k for k in batch if self._get(k) is not None]
            if present:
                call(self.client, "delete_objects", self.bucket, Bucket=self.bucket,
                     Delete={"Objects": [{"Key": self.prefix + k} for k in present],
                             "Quiet": True})
            gone += len(present)
        return gone

    def close(self) -> None:
        if self._owns_client:
            self.client.close()
