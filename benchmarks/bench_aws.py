"""AWS backend: DynamoDB and SQS requests per step transition (against a local moto server).

Wall time on moto says nothing about AWS, so this counts requests instead, with
botocore ``before-call`` hooks on the clients.

A *step transition* is a change of one step's state: each claim (ready ->
in_progress) and each completion (in_progress -> complete) counts once, so a
workflow of N steps that runs without failures makes 2N transitions, however
many of them share one record write.

Two ways of driving, both with no ``wf.run`` and no driver process:

- ``lambda``: the Lambda handler (``runfox.backend.aws.lambda_handler``) fed by
  ``SQSConsumer`` in batches of 10, as Lambda's event source mapping would. The
  executions are started by an advance message. ``handler`` counts the requests
  runfox makes; ``poller`` counts ReceiveMessage/DeleteMessageBatch, which Lambda
  makes on your behalf in production (and bills as SQS requests).
- ``worker``: the generic ``runfox worker`` harness (``runfox.worker.Worker``) over
  ``SQSRunner``, one job at a time; it receives and deletes itself, so everything
  is in ``handler``. Sweeps are off; the execution is started by ``advance``.

    python benchmarks/bench_aws.py [--chain 20] [--fan 50,200] [--modes lambda,worker]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import runfox as rfx
from runfox.backend import Backend
from runfox.backend.aws import (
    DynamoDBStore,
    SQSConsumer,
    SQSRunner,
    create_resources,
    lambda_handler,
)
from runfox.backend.aws.testing import LocalAws
from runfox.worker import Worker

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_core import chain, execute, fan  # the same shapes as the core benchmark


class Counted:
    """Clients whose requests are counted by ``service.Operation``."""

    def __init__(self, url: str) -> None:
        import boto3
        from botocore.config import Config

        self.counts: Counter[str] = Counter()
        session = boto3.session.Session()
        config = Config(retries={"max_attempts": 1})
        self.dynamodb = session.client("dynamodb", endpoint_url=url, config=config)
        self.sqs = session.client("sqs", endpoint_url=url, config=config)
        for client in (self.dynamodb, self.sqs):
            client.meta.events.register("before-call.*.*", self._count)

    def _count(self, event_name: str, **_: Any) -> None:
        self.counts[event_name.split(".", 1)[1]] += 1

    def total(self, service: str | None = None) -> int:
        return sum(v for k, v in self.counts.items()
                   if service is None or k.startswith(service + "."))


def run(url: str, spec: dict[str, Any], mode: str) -> dict[str, Any]:
    resources = create_resources(f"bench-{uuid.uuid4().hex[:8]}", endpoint_url=url,
                                 visibility_timeout=60)
    ours, poller = Counted(url), Counted(url)
    store = DynamoDBStore(resources.table, client=ours.dynamodb, verify=False)
    runner = SQSRunner(resources.queue_url, tasks_table=resources.tasks_table,
                       sqs_client=ours.sqs, dynamodb_client=ours.dynamodb, verify=False)
    backend = Backend(store=store, runner=runner)
    wf = backend.create(spec, {"x": 0})
    # Reads made here to watch the execution go through an uncounted client.
    watcher = DynamoDBStore(resources.table, client=Counted(url).dynamodb, verify=False)
    ours.counts.clear()  # count driving the execution, not creating it
    steps = len(spec["steps"])
    if mode == "lambda":
        runner.schedule_advance(wf)
        feeder = SQSRunner(resources.queue_url, tasks_table=resources.tasks_table,
                           sqs_client=poller.sqs, dynamodb_client=poller.dynamodb, verify=False)
        consumer = SQSConsumer(feeder, lambda_handler(backend, execute), batch_size=10,
                               visibility_timeout=60, wait_time=0)
        while not watcher.load(wf).status.is_terminal:
            consumer.poll()
    else:
        backend.apply_and_advance(wf)
        worker = Worker(backend, execute, concurrency=1, lease=60, poll_interval=0.01,
                        sweep_interval=1e9)
        worker.run(max_jobs=steps)
    record = watcher.load(wf)
    assert isinstance(rfx.graph.terminal_result(record), rfx.Complete), record.outcome
    transitions = 2 * steps
    handler = ours.total()
    return {
        "shape": spec["name"], "mode": mode, "steps": steps, "transitions": transitions,
        "dynamodb": ours.total("dynamodb"), "sqs": ours.total("sqs"), "handler": handler,
        "poller": poller.total(), "per_transition": handler / transitions,
        "with_poller": (handler + poller.total()) / transitions,
        "breakdown": dict(sorted((ours.counts + poller.counts).items())),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chain", default="20", help="chain lengths, comma-separated")
    parser.add_argument("--fan", default="50,200", help="fan-out sizes (steps), comma-separated")
    parser.add_argument("--modes", default="lambda,worker")
    parser.add_argument("--breakdown", action="store_true", help="requests per operation")
    args = parser.parse_args()
    for name, value in (("AWS_ACCESS_KEY_ID", "bench"), ("AWS_SECRET_ACCESS_KEY", "bench"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        os.environ[name] = value  # moto accepts anything; never reach real AWS from here
    shapes = [chain(int(n)) for n in args.chain.split(",") if n] + \
             [fan(int(n)) for n in args.fan.split(",") if n]
    rows = []
    with LocalAws() as aws:
        os.environ["AWS_ENDPOINT_URL"] = aws.url
        for mode in args.modes.split(","):
            for spec in shapes:
                start = time.perf_counter()
                rows.append(run(aws.url, spec, mode))
                rows[-1]["seconds"] = time.perf_counter() - start
    print("step transition = one claim or one completion of a step (2 per step here)")
    print(f"{'shape':<10} {'mode':<7} {'steps':>5} {'trans':>6} {'dynamodb':>9} {'sqs':>5} "
          f"{'handler':>8} {'per trans':>9} {'poller':>7} {'+poller':>8}")
    for r in rows:
        print(f"{r['shape']:<10} {r['mode']:<7} {r['steps']:>5} {r['transitions']:>6} "
              f"{r['dynamodb']:>9} {r['sqs']:>5} {r['handler']:>8} {r['per_transition']:>9.2f} "
              f"{r['poller']:>7} {r['with_poller']:>8.2f}")
    if args.breakdown:
        for r in rows:
            print(f"\n{r['shape']} / {r['mode']}:")
            for operation, count in r["breakdown"].items():
                print(f"  {operation:<34} {count:>6}")
    print("\n(moto wall time is not a measure of AWS; only the request counts matter)")


if __name__ == "__main__":
    main()
