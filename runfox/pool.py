"""Where a worker's jobs run: a pool of threads, or of process slots.

Both pools have the same small surface, used by ``runfox.worker.Worker`` from
one thread: ``start(job)`` while ``busy < size``, ``wait(timeout)`` for the jobs
that finished (each with its output dict), ``running()``, ``close(wait)``.
Neither raises because of the executor: every outcome is an output dict.

``ProcessSlots`` keeps one child process per slot, each running one job at a
time and talking to the worker over a pipe (job and output cross it as JSON
text, so no pickling depth limit applies). Because each job has its own
process, the worker can tell exactly which job a dead child was running:

- a child that exits (``os._exit``, a crash in C code, the OOM killer) fails
  only its job, with ``WorkerProcessDied`` naming the exit code or signal, and
  the slot gets a new process; the other slots keep running;
- a job that overruns its ``timeout`` has its process killed (a real stop, not
  an abandoned thread) and fails with ``TimeoutError``;
- an output that cannot be encoded fails with ``InvalidOutput`` and the reason.

Children ignore SIGINT: a Ctrl-C reaches the whole process group, and it is the
worker (the parent) that decides whether running jobs finish or are given back.
(A service manager should send SIGTERM to the worker alone, as systemd's
``KillMode=mixed`` does; a child killed by it fails its job as a dead process.)

``ThreadSlots`` also runs async steps (``runfox.execution.is_async``): they are
coroutines on one event loop in one extra thread, started at the first async
job, instead of a thread each; sync steps of the same executor stay on the
thread pool. Both count against ``size``.

Each job has a cancellation flag for ``runfox.context().cancelled``:
``cancel(key)`` sets it (a ``threading.Event`` per job in threads and on the
loop, a ``multiprocessing.Event`` per process slot, cleared before each job).
``on_beat`` (thread and async steps only) is what ``ctx.heartbeat()`` calls.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import json
import logging
import multiprocessing
import multiprocessing.connection
import queue
import signal
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from .authoring.context import StepContext, step_context
from .execution import (
    Executor,
    arun_job,
    error_output,
    invoke,
    is_async,
    load_executor,
    run_job,
)
from .results import DispatchJob

__all__ = ["ProcessSlots", "Slots", "ThreadSlots"]

logger = logging.getLogger("runfox.worker")

Finished = tuple[DispatchJob, dict[str, Any]]
#: What ``ctx.heartbeat()`` calls in the harness, with the job it runs for.
OnBeat = Callable[[DispatchJob], None]

# ``fork`` is not safe here: the worker process has threads (the heartbeat, the
# loop started by ``runfox worker``, SQLAlchemy's pool), and a forked child
# inherits their locks in whatever state they were and the database sockets in
# use. ``spawn`` starts a clean interpreter that imports only the executor; its
# start-up cost is paid once per slot and again only when a child died.
# (``forkserver`` would restart faster but adds a shared server process that a
# signal to the process group can take down.)


class Slots(ABC):
    """The pool interface the worker loop uses (from a single thread)."""

    size: int

    @property
    @abstractmethod
    def busy(self) -> int:
        """How many jobs are running."""

    @abstractmethod
    def start(self, job: DispatchJob) -> None:
        """Start ``job`` in a free slot (the caller keeps ``busy < size``)."""

    @abstractmethod
    def wait(self, timeout: float) -> list[Finished]:
        """Wait up to ``timeout`` seconds for a job to finish; return those that did."""

    @abstractmethod
    def running(self) -> list[DispatchJob]:
        """The jobs started and not yet returned by ``wait``."""

    @abstractmethod
    def close(self, wait: bool = True) -> None:
        """Stop the pool; ``wait=False`` abandons (threads) or kills (processes) running jobs."""

    @abstractmethod
    def cancel(self, key: str) -> None:
        """Set the ``cancelled`` flag of the running job ``key`` (thread-safe; unknown
        keys are ignored)."""


class _SlotThreads:
    """``size`` threads running calls from one queue, each call's outcome in a
    ``concurrent.futures.Future``: what ``ThreadSlots`` needs of a thread pool.

    ``ThreadPoolExecutor.submit`` takes two locks and counts idle threads with a
    semaphore on every call; a worker hands over a job per step, so that was a
    noticeable share of a short step. Threads start with the first call and are
    not daemons: a job still running when the process exits is waited for, as
    ``ThreadPoolExecutor`` does.
    """

    def __init__(self, size: int, name: str) -> None:
        self._size = size
        self._name = name
        self._calls: queue.SimpleQueue[tuple[cf.Future[Any], Callable[..., Any],
                                             tuple[Any, ...]] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    def submit(self, fn: Callable[..., Any], *args: Any) -> cf.Future[Any]:
        if not self._threads:
            for n in range(self._size):
                thread = threading.Thread(target=self._serve, name=f"{self._name}_{n}")
                thread.start()
                self._threads.append(thread)
        future: cf.Future[Any] = cf.Future()
        self._calls.put((future, fn, args))
        return future

    def _serve(self) -> None:
        while True:
            call = self._calls.get()
            if call is None:
                return
            future, fn, args = call
            del call
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)
            del future, fn, args

    def shutdown(self, wait: bool) -> None:
        """Cancel the calls not started, end the threads (joined when ``wait``)."""
        try:
            while True:
                call = self._calls.get_nowait()
                if call is not None:
                    call[0].cancel()
        except queue.Empty:
            pass
        for _ in self._threads:
            self._calls.put(None)
        if wait:
            for thread in self._threads:
                thread.join()
        self._threads = []


class ThreadSlots(Slots):
    """Jobs on a thread pool, async ones on an event loop thread.

    A sync job's ``timeout`` abandons its thread (see ``call_executor``); an async
    job's cancels its coroutine.
    """

    def __init__(self, executor: Executor, size: int, on_beat: OnBeat | None = None) -> None:
        self.size = size
        self._executor = executor
        self._on_beat = on_beat
        self._pool = _SlotThreads(size, "runfox-worker")
        self._futures: dict[cf.Future[dict[str, Any]], DispatchJob] = {}
        # Futures as they finish (put by their done-callback): ``wait`` blocks on
        # this queue instead of registering a waiter on every running future.
        self._done: queue.SimpleQueue[cf.Future[dict[str, Any]]] = queue.SimpleQueue()
        self._flags: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None

    @property
    def busy(self) -> int:
        return len(self._futures)

    def start(self, job: DispatchJob) -> None:
        flag = threading.Event()
        with self._lock:
            self._flags[job.key] = flag
        on_beat = self._on_beat
        beat = None if on_beat is None else (lambda: on_beat(job))
        future: cf.Future[dict[str, Any]]
        if is_async(self._executor, job.fn):
            future = asyncio.run_coroutine_threadsafe(
                arun_job(self._executor, job, flag, beat), self._event_loop())
        else:
            future = self._pool.submit(run_job, self._executor, job, flag, beat)
        self._futures[future] = job
        future.add_done_callback(self._done.put)

    def cancel(self, key: str) -> None:
        with self._lock:
            flag = self._flags.get(key)
        if flag is not None:
            flag.set()

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        """The loop async jobs run on, started with its thread at the first one."""
        if self._loop is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=_serve_loop, args=(loop,), name="runfox-async",
                                      daemon=True)
            thread.start()
            self._loop, self._loop_thread = loop, thread
        return self._loop

    def _stop_loop(self, wait: bool) -> None:
        loop, thread = self._loop, self._loop_thread
        self._loop = self._loop_thread = None
        if loop is None or thread is None:
            return
        if not wait:  # cancel what runs: each job's coroutine ends with an error output
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(_cancel_tasks(), loop).result(2.0)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5.0)
        if not thread.is_alive():
            loop.close()

    def wait(self, timeout: float) -> list[Finished]:
        if not self._futures:
            return []
        done: list[cf.Future[dict[str, Any]]] = []
        try:
            done.append(self._done.get(timeout=timeout) if timeout > 0
                        else self._done.get_nowait())
            while True:
                done.append(self._done.get_nowait())
        except queue.Empty:
            pass
        finished = []
        for future in done:
            job = self._futures.pop(future, None)
            if job is None:  # not ours any more (the pool was closed meanwhile)
                continue
            with self._lock:
                self._flags.pop(job.key, None)
            try:
                output = future.result()
            except BaseException as exc:  # run_job does not raise; be sure
                output = error_output(type(exc).__name__, f"the worker thread failed: {exc}")
            finished.append((job, output))
        return finished

    def running(self) -> list[DispatchJob]:
        return list(self._futures.values())

    def close(self, wait: bool = True) -> None:
        if wait:  # async jobs finish as sync ones do
            running = [f for f, j in self._futures.items() if is_async(self._executor, j.fn)]
            cf.wait(running)
        self._stop_loop(wait)
        self._pool.shutdown(wait=wait)
        self._futures.clear()
        with self._lock:
            self._flags.clear()


def _serve_loop(loop: asyncio.AbstractEventLoop) -> None:
    """The async slots' thread: run ``loop`` until ``loop.stop()``.

    ``acall_executor`` contains every exception of a step inside its task, so
    nothing should escape ``run_forever``; if something does (a task the step
    started itself let ``SystemExit`` through), it is logged and the loop goes on.
    """
    asyncio.set_event_loop(loop)
    while True:
        try:
            loop.run_forever()
            return
        except BaseException:
            logger.exception("the async steps' event loop stopped on an error; restarting it")


async def _cancel_tasks() -> None:
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


# -- process slots --------------------------------------------------------------------


def _child_main(ref: str, conn: Connection, cancelled: Any = None) -> None:
    """A slot's child: run the jobs the parent sends, one at a time, until told to stop.

    ``cancelled`` is the slot's ``multiprocessing.Event``: the ``cancelled`` flag
    of each job's ``runfox.context()``, set by the parent, cleared before a job.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    executor: Executor | None = None
    failure = ""
    try:
        executor = load_executor(ref)
    except BaseException as exc:  # reported with every job instead
        failure = f"the worker process could not load the executor: {exc}"
    while True:
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):  # the parent is gone
            return
        if not message:  # the parent's "stop"
            return
        fn = "?"
        try:
            request = json.loads(message)
            fn, inputs = request["fn"], request["inputs"]
            wf_id, step_id, run_id, attempt = request.get("job") or ("?", "?", 0, 1)
            ctx = StepContext(str(wf_id), str(step_id), int(run_id), int(attempt), str(fn),
                              **({"_flag": cancelled} if cancelled is not None else {}))
        except (RecursionError, MemoryError, ValueError, KeyError, TypeError) as exc:
            output = error_output("InvalidInput", f"the worker process could not read the "
                                                  f"job ({type(exc).__name__}: {exc})")
        else:
            if executor is None:
                output = error_output("ExecutorImportError", failure)
            else:
                with step_context(ctx):
                    output = invoke(executor, fn, inputs)
        conn.send_bytes(_encode_output(output, fn))


def _encode_output(output: dict[str, Any], fn: str) -> bytes:
    try:
        return json.dumps(output).encode()
    except (RecursionError, MemoryError, TypeError, ValueError) as exc:
        return json.dumps(error_output(
            "InvalidOutput", f"the output for fn {fn!r} cannot be sent to the worker as JSON "
                             f"({type(exc).__name__}: {exc})")).encode()


def _decode_output(data: bytes, fn: str) -> dict[str, Any]:
    try:
        output = json.loads(data)
    except (RecursionError, MemoryError, ValueError) as exc:
        return error_output("InvalidOutput", f"the output for fn {fn!r} could not be read "
                                             f"back from its process ({type(exc).__name__}: "
                                             f"{exc})")
    if not isinstance(output, dict):
        return error_output("InvalidOutput", f"the process running fn {fn!r} sent "
                                             f"{type(output).__name__}, expected an object")
    return output


def _death(fn: str, code: int | None) -> dict[str, Any]:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "unknown signal"
        how = f"was killed by signal {-code} ({name})"
    elif code is None:
        how = "stopped answering"
    else:
        how = f"exited with code {code}"
    return error_output("WorkerProcessDied", f"the process running fn {fn!r} {how}")


@dataclass
class _Slot:
    process: BaseProcess | None = None
    conn: Connection | None = None
    job: DispatchJob | None = None
    deadline: float | None = None  # monotonic time the job's timeout runs out
    cancelled: Any = None  # the child's multiprocessing.Event (runfox.context().cancelled)


class ProcessSlots(Slots):
    """``size`` child processes, one job each; see the module docstring.

    Args:
        ref: the executor as ``"module:attr"``, imported once by each child.
        size: how many children (jobs at once).
    """

    def __init__(self, ref: str, size: int) -> None:
        self.size = size
        self._ref = ref
        self._context = multiprocessing.get_context("spawn")  # see above: not fork
        self._slots = [_Slot() for _ in range(size)]
        self._finished: list[Finished] = []  # jobs that ended without reaching a child
        for slot in self._slots:
            self._spawn(slot)  # start all at once: children import while others wait

    @property
    def busy(self) -> int:
        return sum(1 for s in self._slots if s.job is not None) + len(self._finished)

    def _spawn(self, slot: _Slot) -> None:
        parent, child = self._context.Pipe()
        cancelled = self._context.Event()
        process = self._context.Process(target=_child_main, args=(self._ref, child, cancelled),
                                        name="runfox-slot", daemon=True)
        try:
            process.start()
        except OSError as exc:  # out of processes or memory: try again at the next job
            logger.warning("could not start a worker process: %s", exc)
            parent.close()
            return
        finally:
            child.close()  # the child has its own copy; ours would hide its death
        slot.process, slot.conn, slot.cancelled = process, parent, cancelled

    def _discard(self, slot: _Slot, grace: float = 0.0) -> int | None:
        """Stop ``slot``'s process, killed unless it ends within ``grace`` seconds;
        return its exit code."""
        process, conn = slot.process, slot.conn
        slot.process = slot.conn = None
        slot.job = slot.deadline = None
        if conn is not None:
            conn.close()
        if process is None:
            return None
        if grace > 0:
            process.join(grace)  # a child that is exiting: let it report its own code
        if process.is_alive():
            process.kill()
        process.join(2.0)
        code = process.exitcode
        if code is not None:
            process.close()
        return code

    def start(self, job: DispatchJob) -> None:
        slot = next((s for s in self._slots if s.job is None), None)
        if slot is None:
            raise RuntimeError("ProcessSlots.start: every slot is busy")
        try:
            request = json.dumps({
                "fn": job.fn, "inputs": job.inputs,
                "job": [job.workflow_execution_id, job.step_id, job.run_id, job.attempt],
            }).encode()
        except (RecursionError, MemoryError, TypeError, ValueError) as exc:
            self._finished.append((job, error_output(
                "InvalidInput", f"the inputs of fn {job.fn!r} cannot be sent to a worker "
                                f"process as JSON ({type(exc).__name__}: {exc})")))
            return
        for _ in range(2):  # a child that died while idle is replaced once
            if slot.process is None or not slot.process.is_alive():
                self._discard(slot)
                self._spawn(slot)
            if slot.conn is None:
                break
            if slot.cancelled is not None:
                slot.cancelled.clear()
            try:
                slot.conn.send_bytes(request)
            except OSError:
                self._discard(slot)
                continue
            slot.job = job
            slot.deadline = time.monotonic() + job.timeout if job.timeout else None
            return
        self._finished.append((job, error_output(
            "WorkerProcessDied", f"could not start a process to run fn {job.fn!r}")))

    def wait(self, timeout: float) -> list[Finished]:
        finished, self._finished = self._finished, []
        busy = [s for s in self._slots if s.job is not None]
        if not busy:
            return finished
        now = time.monotonic()
        deadlines = [s.deadline for s in busy if s.deadline is not None]
        if finished:
            timeout = 0.0
        if deadlines:
            timeout = min(timeout, max(0.0, min(deadlines) - now))
        handles: list[Any] = []
        for slot in busy:
            assert slot.conn is not None and slot.process is not None
            handles += [slot.conn, slot.process.sentinel]
        ready = set(multiprocessing.connection.wait(handles, max(0.0, timeout)))
        for slot in busy:
            assert slot.conn is not None and slot.process is not None and slot.job is not None
            if slot.conn in ready or slot.process.sentinel in ready:
                finished.append(self._collect(slot))
            elif slot.deadline is not None and time.monotonic() >= slot.deadline:
                job = slot.job
                self._discard(slot)
                self._spawn(slot)
                finished.append((job, error_output(
                    "TimeoutError", f"fn {job.fn!r} did not finish within {job.timeout:g}s; "
                                    "its process was killed")))
        return finished

    def _collect(self, slot: _Slot) -> Finished:
        """The finished job of ``slot``: its output, or how its process died."""
        assert slot.conn is not None and slot.job is not None
        job = slot.job
        data: bytes | None = None
        try:
            if slot.conn.poll():
                data = slot.conn.recv_bytes()
        except (EOFError, OSError):
            data = None
        if data is not None:
            slot.job = slot.deadline = None
            return job, _decode_output(data, job.fn)
        code = self._discard(slot, grace=1.0)
        logger.warning("the process running %s (fn %r) died (exit code %s); starting a new "
                       "one", job.key, job.fn, code)
        self._spawn(slot)
        return job, _death(job.fn, code)

    def cancel(self, key: str) -> None:
        for slot in list(self._slots):
            job, flag = slot.job, slot.cancelled
            if job is not None and job.key == key and flag is not None:
                with contextlib.suppress(OSError):
                    flag.set()

    def running(self) -> list[DispatchJob]:
        return [s.job for s in self._slots if s.job is not None] + \
            [job for job, _ in self._finished]

    def close(self, wait: bool = True) -> None:
        for slot in self._slots:
            if slot.conn is not None and slot.job is None:
                with contextlib.suppress(OSError):
                    slot.conn.send_bytes(b"")  # the child's "stop"
        deadline = time.monotonic() + 5.0
        for slot in self._slots:
            if slot.process is not None and wait and slot.job is None:
                slot.process.join(max(0.0, deadline - time.monotonic()))
            self._discard(slot)
        self._finished.clear()
