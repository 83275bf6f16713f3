"""A local moto server on 127.0.0.1, for testing code that uses the AWS backend.

Needs the test dependencies (``moto[dynamodb,sqs,s3]``, ``flask``, ``flask-cors``)::

    with LocalAws() as aws:                      # a free port on 127.0.0.1
        store, runner = parts_from_url(resources.url(endpoint_url=aws.url), ...)

It is moto's own server (the WSGI application behind ``ThreadedMotoServer`` and
``moto_server``), spoken to over HTTP by real boto3 clients, with one change:
DynamoDB requests are served one at a time. moto checks a condition and then
writes without a lock, and it undoes a cancelled ``TransactWriteItems`` by
restoring a copy of each table taken when the transaction began, which erases
writes other requests made meanwhile. DynamoDB itself makes each request atomic,
so serving one at a time is the faithful model; SQS requests (long polls
included) still run concurrently.
"""

from __future__ import annotations

import logging
import threading
import urllib.request
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

__all__ = ["LocalAws"]


class _OneDynamoDBRequestAtATime:
    """WSGI middleware holding a lock around each DynamoDB request."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB"):
            with self.lock:
                return list(self.app(environ, start_response))  # the body is built inside
        return self.app(environ, start_response)


class LocalAws:
    """A moto server in a daemon thread; ``url`` is its endpoint once started.

    Args:
        host: the address to bind (keep the loopback address).
        port: the port; 0 picks a free one.
        quiet: silence werkzeug's log line per request.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, quiet: bool = True) -> None:
        self.host = host
        self.port = port
        self.quiet = quiet
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("LocalAws is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> str:
        """Start serving; returns the endpoint URL.

        Raises:
            ImportError: moto is not installed (``pip install 'moto[dynamodb,sqs,s3]'
                flask flask-cors``).
        """
        from moto.server import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        if self.quiet:
            logging.getLogger("werkzeug").setLevel(logging.ERROR)
        app = _OneDynamoDBRequestAtATime(DomainDispatcherApplication(create_backend_app))
        self._server = make_server(self.host, self.port, app, threaded=True,
                                   request_handler=MotoRequestHandler)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="runfox-moto", daemon=True)
        self._thread.start()
        return self.url

    def reset(self) -> None:
        """Forget every table and queue (moto's ``POST /moto-api/reset``)."""
        request = urllib.request.Request(self.url + "/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=30):
            pass

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> LocalAws:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()
