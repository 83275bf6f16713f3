"""Configuration, start-up errors, size limits, the template and the entry points."""

from __future__ import annotations

import base64
import importlib.util
import json
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from contract import fan_executor, fan_spec, new_record

import runfox as rfx
from runfox.backend import Backend
from runfox.backend.aws import (
    DynamoDBStore,
    SQSRunner,
    create_resources,
    lambda_handler,
    parse_url,
    parts_from_url,
)
from runfox.backend.aws import config as aws_config
from runfox.backend.urls import backend_from_url
from runfox.errors import BackendError, CorruptRecord, RecordTooLarge
from runfox.results import DispatchJob
from runfox.status import StepStatus, WorkflowStatus
from runfox.worker import Worker

from .conftest import ROOT, Aws, make_clients, no_retry_config


def noise(size: int) -> str:
    """Text that zlib cannot shrink much (random bytes in base64)."""
    return base64.b64encode(secrets.token_bytes(size)).decode()


# -- the aws:// URL ----------------------------------------------------------------------


def test_url_defaults_follow_the_prefix() -> None:
    settings = parse_url("aws://")
    assert (settings.table, settings.tasks_table, settings.queue) == (
        "runfox-workflows", "runfox-tasks", "runfox-jobs")
    settings = parse_url("aws://?prefix=shop&region=eu-west-1&status_index=none&lease=90"
                         "&queue=https://sqs.eu-west-1.amazonaws.com/1/jobs")
    assert settings.table == "shop-workflows" and settings.region == "eu-west-1"
    assert settings.queue == "https://sqs.eu-west-1.amazonaws.com/1/jobs"
    assert settings.status_index is None and settings.lease == 90.0


@pytest.mark.parametrize(("url", "message"), [
    ("aws://?tabel=x", "unknown aws:// URL parameter"),
    ("aws://?table=a&table=b", "more than once"),
    ("aws://somewhere/?table=a", "query parameters only"),
    ("aws://?lease=soon", "not a number"),
    ("aws://?wait_time=-1", "must not be negative"),
])
def test_malformed_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_url(url)


def test_unknown_options_are_refused(aws: Aws) -> None:
    with pytest.raises(ValueError, match="unknown option"):
        parts_from_url(aws.backend_url, colour="blue")


# -- failing at start, with the name and what to do ----------------------------------


def test_a_missing_table_is_named_at_start(aws: Aws) -> None:
    with pytest.raises(BackendError, match=r"DynamoDB table 'no-such-table' does not exist.*"
                                           r"create it"):
        DynamoDBStore("no-such-table", client=aws.dynamodb)
    with pytest.raises(BackendError, match="'no-such-tasks' does not exist"):
        SQSRunner(aws.resources.queue_url, tasks_table="no-such-tasks", sqs_client=aws.sqs,
                  dynamodb_client=aws.dynamodb)


def test_a_missing_queue_is_named_at_start(aws: Aws) -> None:
    with pytest.raises(BackendError, match=r"SQS queue 'no-such-queue' does not exist"):
        SQSRunner("no-such-queue", tasks_table=aws.resources.tasks_table, sqs_client=aws.sqs,
                  dynamodb_client=aws.dynamodb)
    url = aws.resources.queue_url.rsplit("/", 1)[0] + "/gone"
    with pytest.raises(BackendError, match="gone' does not exist"):
        SQSRunner(url, tasks_table=aws.resources.tasks_table, sqs_client=aws.sqs,
                  dynamodb_client=aws.dynamodb)


def test_a_table_with_another_key_is_refused(aws: Aws) -> None:
    with pytest.raises(BackendError, match="keyed by 'id'"):
        DynamoDBStore(aws.resources.tasks_table, client=aws.dynamodb)
    with pytest.raises(BackendError, match="hash key 'wf'"):
        SQSRunner(aws.resources.queue_url, tasks_table=aws.resources.table,
                  sqs_client=aws.sqs, dynamodb_client=aws.dynamodb)


def test_missing_credentials_fail_at_start(aws: Aws, monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(BackendError, match=r"no usable AWS credentials.*credential chain"):
        parts_from_url(aws.backend_url)


def test_a_missing_region_fails_at_start(aws: Aws, monkeypatch: pytest.MonkeyPatch,
                                         tmp_path: Path) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(BackendError, match="no AWS region"):
        DynamoDBStore(aws.resources.table)


def test_a_client_and_settings_together_are_refused(aws: Aws) -> None:
    with pytest.raises(ValueError, match="not both"):
        DynamoDBStore(aws.resources.table, client=aws.dynamodb, region_name="eu-west-1")


def test_the_environment_alone_configures_the_clients(aws: Aws) -> None:
    """AWS_ENDPOINT_URL, the region and the credentials come from the environment."""
    store = DynamoDBStore(aws.resources.table)
    assert store.client.meta.endpoint_url == aws.url
    record = new_record(fan_spec(1))
    store.write(record)
    assert store.load(record.workflow_execution_id) == record
    store.close()


# -- records and the size policy ----------------------------------------------------------


def test_big_records_are_compressed_and_read_back(aws: Aws) -> None:
    store = aws.store(compress_over=1024)
    record = new_record(fan_spec(200), {"n": 1, "text": "abc" * 2000})
    store.write(record)
    item = aws.dynamodb.get_item(TableName=aws.resources.table,
                                 Key={"id": {"S": record.workflow_execution_id}})["Item"]
    assert "B" in item["fixed"] and "B" in item["body"]
    assert store.load(record.workflow_execution_id) == record


def test_an_oversized_record_is_refused_before_anything_is_written(aws: Aws) -> None:
    store = aws.store()
    record = new_record(fan_spec(1), {"blob": noise(450_000)})  # 600 KB, barely compressible
    with pytest.raises(RecordTooLarge) as caught:
        store.write(record)
    message = str(caught.value)
    assert record.workflow_execution_id in message and "over this store's limit" in message
    size = int(message.split(" would be ")[1].split(" bytes")[0].replace(",", ""))
    assert size > 400_000
    with pytest.raises(KeyError):
        store.load(record.workflow_execution_id)


def test_dynamodb_refusing_a_large_item_is_also_record_too_large(aws: Aws) -> None:
    store = aws.store(max_item_bytes=10_000_000)  # our check off: moto's own limit decides
    record = new_record(fan_spec(1), {"blob": noise(450_000)})
    with pytest.raises(RecordTooLarge, match="DynamoDB refused"):
        store.write(record)


def test_an_output_too_large_for_the_record_fails_the_attempt(aws: Aws) -> None:
    """The handler applies an error instead, so the step fails rather than loop forever."""
    backend = Backend(store=aws.store(max_item_bytes=30_000), runner=aws.runner())

    def executor(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
        return {"blob": noise(30_000)}

    handler = lambda_handler(backend, executor)
    wf = backend.create({"steps": [{"id": "big", "fn": "big"}]})
    _, nxt = backend.apply_and_advance(wf, dispatch=False)
    (job,) = nxt.jobs  # type: ignore[union-attr]
    backend.runner.dispatch(wf, [job])
    (message,) = backend.runner.receive(aws.resources.queue_url, 10, 30)
    assert handler({"Records": [message.to_lambda()]}, None) == {"batchItemFailures": []}
    record = backend.load(wf)
    assert record.status is WorkflowStatus.FAILED
    assert record.outcome["error"]["type"] == "RecordTooLarge"


def test_a_result_too_large_for_the_task_table_is_stored_as_an_error(aws: Aws) -> None:
    runner = aws.runner()
    runner.dispatch("wf#1", [DispatchJob("wf#1", "a", "f", {})])
    (job,) = runner.take_pending_jobs()
    assert runner.submit_work_result("wf#1", "a", {"blob": noise(450_000)},
                                     job.run_id)
    (result,) = runner.gather("wf#1")
    assert result.output["ok"] is False and result.output["error_type"] == "RecordTooLarge"


def test_an_undecodable_item_is_a_corrupt_record(aws: Aws) -> None:
    aws.dynamodb.put_item(TableName=aws.resources.table,
                          Item={"id": {"S": "w#x"}, "version": {"N": "1"},
                                "fixed": {"S": "{not json"}, "body": {"S": "{}"}})
    with pytest.raises(CorruptRecord, match="w#x"):
        aws.store().load("w#x")


def test_a_job_message_over_the_sqs_limit_is_refused_before_any_write(aws: Aws) -> None:
    runner = aws.runner()
    job = DispatchJob("wf#1", "a", "f", {"blob": "x" * 300_000})
    with pytest.raises(BackendError, match="over the SQS limit"):
        runner.dispatch("wf#1", [job])
    assert aws.dynamodb.scan(TableName=aws.resources.tasks_table)["Items"] == []


# -- runfox worker over an aws:// URL ---------------------------------------------------


def test_the_generic_worker_runs_workflows_from_an_aws_url(aws: Aws) -> None:
    """What ``runfox worker --backend aws://...`` does: the generic Worker over SQS."""
    backend = backend_from_url(aws.backend_url, config=no_retry_config())
    assert isinstance(backend.runner, SQSRunner)
    calls: list[tuple[str, Any]] = []

    def executor(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
        key = (fn, inputs.get("n"), inputs.get("i"))
        calls.append(key)
        if fn == "leaf" and inputs["i"] == 1 and calls.count(key) == 1:
            raise ConnectionError("transient")  # the first attempt of leaf1 fails
        return fan_executor(fn, inputs)

    spec = fan_spec(3)
    spec["steps"][1:4] = [{**s, "max_attempts": 2, "retry": {"backoff": "fixed", "delay": 1}}
                          for s in spec["steps"][1:4]]
    ids = [backend.create(spec, {"n": n}) for n in (1, 2)]
    backend.runner.schedule_advance(ids[0])  # started by a message ...
    backend.advance(ids[1])  # ... or claimed by hand and left for the sweep to send
    worker = Worker(backend, executor, concurrency=2, lease=5, poll_interval=0.05,
                    sweep_interval=0.5, stale_after=0.0)
    stopper = threading.Thread(target=_stop_when_done, args=(worker, backend, ids))
    stopper.start()
    worker.run(idle_timeout=120)
    stopper.join()
    for n, wf in zip((1, 2), ids, strict=True):
        record = backend.load(wf)
        assert record.status is WorkflowStatus.COMPLETE, record.outcome
        assert record.outcome == {"total": n * 3}
    assert len(calls) == 2 * 5 + 2  # every step once, plus one retry per workflow


def test_the_harness_that_takes_jobs_wires_the_control_messages(aws: Aws) -> None:
    """``parts_from_url`` leaves ``on_control`` to the harness (layers point down)."""
    backend = backend_from_url(aws.backend_url, config=no_retry_config())
    assert isinstance(backend.runner, SQSRunner)
    assert backend.runner.on_control is None
    Worker(backend, fan_executor)
    assert backend.runner.on_control is not None
    mine = backend.runner.on_control
    other = backend_from_url(aws.backend_url, executor=fan_executor)
    wf = other.create(fan_spec(1), {"n": 2})
    rfx.Workflow(wf, other).run(timeout=60)
    assert other.runner.on_control is not None  # Workflow.run wired its own
    assert backend.runner.on_control is mine  # a handler already set is kept
    Worker(backend, fan_executor)
    assert backend.runner.on_control is mine


def _stop_when_done(worker: Worker, backend: Backend, ids: list[str]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if all(backend.load(wf).status.is_terminal for wf in ids):
            break
        time.sleep(0.2)
    worker.stop()


# -- the Lambda entry point and the template ---------------------------------------------


def _load_entry_module() -> Any:
    path = ROOT / "workers" / "aws_lambda.py"
    spec = importlib.util.spec_from_file_location("runfox_test_aws_lambda", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_lambda_entry_point_is_configured_by_environment(
        aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNFOX_BACKEND", aws.backend_url)
    monkeypatch.setenv("RUNFOX_EXECUTOR", "contract:fan_executor")
    monkeypatch.setenv("RUNFOX_STALE_AFTER", "0")
    module = _load_entry_module()
    backend = Backend(store=aws.store(), runner=aws.runner())
    wf = backend.create(fan_spec(2), {"n": 3})
    backend.runner.schedule_advance(wf)
    deadline = time.monotonic() + 60
    while not backend.load(wf).status.is_terminal and time.monotonic() < deadline:
        messages = backend.runner.receive(aws.resources.queue_url, 10, 5, 1)
        if not messages:
            continue
        response = module.handler({"Records": [m.to_lambda() for m in messages]}, None)
        assert response == {"batchItemFailures": []}
        backend.runner.delete(messages)
    assert backend.load(wf).outcome == {"total": 3}
    assert module.sweep({}, None) == {"swept": 0}


def test_the_lambda_entry_point_names_a_missing_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNFOX_BACKEND", raising=False)
    module = _load_entry_module()
    with pytest.raises(ValueError, match="RUNFOX_BACKEND"):
        module.handler({"Records": []}, None)


def _template() -> dict[str, Any]:
    text = (ROOT / "backends" / "aws" / "template.yaml").read_text()
    return yaml.safe_load(text)  # type: ignore[no-any-return]


def _keys(schema: list[dict[str, str]]) -> list[tuple[str, str]]:
    return [(k["AttributeName"], k["KeyType"]) for k in schema]


def test_the_template_matches_what_the_code_expects() -> None:
    template = _template()
    resources = template["Resources"]
    workflows = resources["WorkflowsTable"]["Properties"]
    assert _keys(workflows["KeySchema"]) == aws_config.WORKFLOWS_KEYS
    assert {a["AttributeName"]: a["AttributeType"] for a in workflows["AttributeDefinitions"]} \
        == aws_config.WORKFLOWS_ATTRIBUTES
    (index,) = workflows["GlobalSecondaryIndexes"]
    assert index["IndexName"] == "by_status"
    assert _keys(index["KeySchema"]) == aws_config.STATUS_INDEX_KEYS
    assert index["Projection"]["NonKeyAttributes"] == aws_config.STATUS_INDEX_PROJECTED
    tasks = resources["TasksTable"]["Properties"]
    assert _keys(tasks["KeySchema"]) == aws_config.TASKS_KEYS
    assert tasks["TimeToLiveSpecification"] == {"AttributeName": aws_config.TASKS_TTL_ATTRIBUTE,
                                                "Enabled": True}
    queue = resources["JobQueue"]["Properties"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {
        "Fn::GetAtt": ["DeadLetterQueue", "Arn"]}
    assert resources["DeadLetterQueue"]["Type"] == "AWS::SQS::Queue"
    parameters = template["Parameters"]
    # Lambda refuses a mapping whose queue hides messages for less than the function runs.
    assert parameters["QueueVisibilityTimeout"]["Default"] >= \
        6 * parameters["FunctionTimeout"]["Default"]
    mapping = resources["WorkerEventSource"]["Properties"]
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": ["JobQueue", "Arn"]}
    assert resources["WorkerFunction"]["Properties"]["Handler"] == "aws_lambda.handler"
    assert resources["SweepFunction"]["Properties"]["Handler"] == "aws_lambda.sweep"
    module = _load_entry_module()
    assert callable(module.handler) and callable(module.sweep)
    # Every Ref / GetAtt names a resource or parameter of the template.
    names = set(resources) | set(parameters) | {"AWS::Region"}
    text = json.dumps(template)
    for ref in [*_collect(template, "Ref"), *(g[0] for g in _collect(template, "Fn::GetAtt"))]:
        assert ref in names, ref
    assert "${Prefix}" in text


def _collect(node: Any, key: str) -> list[Any]:
    found = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                found.append(v)
            found.extend(_collect(v, key))
    elif isinstance(node, list):
        for item in node:
            found.extend(_collect(item, key))
    return found


def test_resources_made_by_create_resources_work_with_a_second_client(aws: Aws) -> None:
    """create_resources is idempotent and gives a URL other processes can use."""
    dynamodb, sqs = make_clients(aws.url)
    prefix = aws.resources.table.removesuffix("-workflows")
    again = create_resources(prefix, dynamodb_client=dynamodb, sqs_client=sqs)
    assert again == aws.resources
    backend = backend_from_url(again.url(endpoint_url=aws.url))
    wf = rfx.Workflow.from_dict(fan_spec(1), backend, {"n": 1})
    assert wf.status is WorkflowStatus.PENDING
    assert backend.store.list_executions()[0].workflow_execution_id == wf.id
    assert wf.step_statuses["root"] is StepStatus.READY


# -- boto3 is optional ---------------------------------------------------------------


def test_importing_the_aws_backend_does_not_import_boto3() -> None:
    code = ("import sys, runfox.backend as b; b.DynamoDBStore; b.SQSRunner; "
            "print('boto3' in sys.modules or 'botocore' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=ROOT)
    assert done.stdout.strip() == "False"


def test_without_boto3_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # what an absent package looks like
    with pytest.raises(ImportError, match=r"pip install 'runfox\[aws\]'"):
        DynamoDBStore("any-table")
