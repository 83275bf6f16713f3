"""The AWS backend: records in DynamoDB, jobs on SQS, handlers for Lambda.

Needs boto3 (``pip install 'runfox[aws]'``); importing this package does not
import boto3, constructing a store or runner does.

- ``DynamoDBStore``: workflow records, written conditionally on their version.
- ``SQSRunner``: jobs on SQS; a DynamoDB task table makes dispatch and results
  idempotent and holds results until they are gathered.
- ``S3Payloads``: offloaded values (``runfox.payloads``) as S3 objects.
- ``parts_from_url("aws://?...")``: both, as ``runfox --backend aws://...`` builds them.
- ``ResultHandler``, ``JobHandler``, ``lambda_handler``, ``SQSConsumer``, ``sweep``:
  the event-driven mode, where Lambda functions (or any SQS consumer) run jobs
  and drive workflows with no other process.
- ``create_resources``: the tables and queues for development and tests;
  ``backends/aws/template.yaml`` is the production definition.
"""

from __future__ import annotations

from .config import AwsSettings, Resources, create_resources, parse_url, parts_from_url
from .handlers import JobHandler, ResultHandler, SQSConsumer, lambda_handler, sweep
from .messages import Message
from .payloads import S3Payloads
from .runner import SQSRunner
from .store import DynamoDBStore

__all__ = [
    "AwsSettings",
    "DynamoDBStore",
    "JobHandler",
    "Message",
    "Resources",
    "ResultHandler",
    "S3Payloads",
    "SQSConsumer",
    "SQSRunner",
    "create_resources",
    "lambda_handler",
    "parse_url",
    "parts_from_url",
    "sweep",
]
