"""Worker processes for CPU-bound scorers, with a hard timeout per call.

Why not ``concurrent.futures.ProcessPoolExecutor``: it cannot stop one task. A
pathological math expression would hold a worker forever, and its timeout relies
on ``signal.alarm``, which only works on a process's main thread. Here each worker
runs one call at a time on its main thread; when a call overruns, or the request
behind it is cancelled (deadline passed, client gone), the worker is killed and a
fresh one takes its place. A worker that dies (segfault, ``os._exit``) costs only
the call it was running.

Workers come from a ``forkserver``: a clean process started before the gRPC server,
which imports the scorer modules once and forks each worker from there (gRPC's own
threads make forking the server process itself unsafe).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import multiprocessing.connection
import pickle
import signal
import time
from collections.abc import Sequence
from multiprocessing.context import ForkServerContext
from typing import Any

from pydantic import BaseModel

from sdk import Sample, Scorer, ScoreResult, Status

__all__ = ["WorkerPool", "WorkerStartError"]

log = logging.getLogger("arbiter.workers")

_context: ForkServerContext | None = None


def _forkserver(preload: Sequence[str]) -> ForkServerContext:
    """The process-wide forkserver context (the forkserver is one per process)."""
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(["sdk", *preload])
    return _context


def _worker_main(conn: multiprocessing.connection.Connection) -> None:
    # The server handles Ctrl-C and SIGTERM; a worker just stops when its pipe closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    from sdk._execute import run_sync

    conn.send("ready")
    while True:
        try:
            payload = conn.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            task = pickle.loads(payload)
        except Exception as exc:  # e.g. a plugin module this worker cannot import
            conn.send(ScoreResult.failure(Status.INTERNAL, f"worker cannot load the task: {exc!r}"))
            continue
        if task is None:
            return
        scorer, sample, params = task
        conn.send(run_sync(scorer, sample, params))


class WorkerStartError(RuntimeError):
    """A worker process died or hung before it was ready."""


_READY_TIMEOUT_S = 60.0


class _Worker:
    def __init__(self, ctx: ForkServerContext) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=_worker_main, args=(child,), daemon=True, name="arbiter-worker")
        self.process.start()
        child.close()
        # Handshake, so a worker that cannot start (an unimportable plugin, a script
        # without the ``if __name__ == "__main__"`` guard) fails loudly here instead
        # of dying on its first sample, again and again.
        try:
            if not self.conn.poll(_READY_TIMEOUT_S) or self.conn.recv() != "ready":
                raise WorkerStartError(f"worker did not start within {_READY_TIMEOUT_S:g}s")
        except (EOFError, OSError) as exc:
            self.process.join(timeout=5)
            exit_code = self.process.exitcode  # read before kill() closes the process object
            self.kill()
            raise WorkerStartError(
                f"worker process exited during start-up (exit code {exit_code}); see its traceback above"
                ' (a script that starts a server needs the `if __name__ == "__main__":` guard)'
            ) from exc

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            self.process.kill()
        with contextlib.suppress(Exception):
            self.conn.close()
        self.process.join(timeout=5)
        with contextlib.suppress(Exception):
            self.process.close()


class WorkerPool:
    """A fixed number of worker processes; ``run`` scores one sample on one of them."""

    def __init__(self, processes: int, preload: Sequence[str] = ()) -> None:
        if processes < 1:
            raise ValueError("a worker pool needs at least one process")
        self._size = processes
        self._preload = list(preload)
        self._idle: asyncio.Queue[_Worker] = asyncio.Queue()
        self._all: set[_Worker] = set()
        self._closed = False
        self._respawning: set[asyncio.Task[None]] = set()
        self.restarts = 0

    @property
    def size(self) -> int:
        return self._size

    async def start(self) -> None:
        """Start the forkserver and the workers (blocking work runs off the loop)."""
        ctx = _forkserver(self._preload)
        for _ in range(self._size):
            worker = await asyncio.to_thread(_Worker, ctx)
            self._all.add(worker)
            self._idle.put_nowait(worker)

    async def run(
        self,
        scorer: Scorer,
        sample: Sample,
        params: BaseModel,
        timeout_s: float,
        deadline: float | None = None,
    ) -> ScoreResult:
        """Score on a worker.

        Waiting for a free worker is bounded by the request's ``deadline`` (loop
        time; None waits as long as the caller does), not by ``timeout_s``: a long
        batch queues without failing. Scoring itself is bounded by ``timeout_s`` and
        the deadline: TIMEOUT, or DEADLINE_EXCEEDED when the deadline came first,
        and the worker is killed. A worker that dies is SCORER_ERROR. Cancellation
        kills the worker too.
        """
        if self._closed:
            return ScoreResult.failure(Status.INTERNAL, "worker pool is shut down", scorer=scorer.name)
        loop = asyncio.get_running_loop()
        waited = time.perf_counter()
        while True:
            try:
                remaining = None if deadline is None else max(0.0, deadline - loop.time())
                worker = await asyncio.wait_for(self._idle.get(), remaining)
            except TimeoutError:
                return ScoreResult.failure(
                    Status.DEADLINE_EXCEEDED,
                    "the deadline passed while waiting for a free worker",
                    scorer=scorer.name,
                )
            if worker.process.is_alive():
                break
            # Killed while idle (the OOM killer, an operator): not this sample's fault.
            self._replace(worker)
        started = time.perf_counter()
        queued_ms = (started - waited) * 1000.0
        deadline_binds = deadline is not None and deadline - loop.time() < timeout_s
        if deadline is not None:
            timeout_s = min(timeout_s, max(0.0, deadline - loop.time()))
        try:
            worker.conn.send((scorer, sample, params))
            ready: asyncio.Future[None] = loop.create_future()
            fd = worker.conn.fileno()

            def wake() -> None:
                if not ready.done():
                    ready.set_result(None)

            loop.add_reader(fd, wake)
            try:
                await asyncio.wait_for(ready, timeout_s)
            finally:
                loop.remove_reader(fd)
            result: Any = worker.conn.recv()
        except TimeoutError:
            self._replace(worker)
            return ScoreResult.failure(
                Status.DEADLINE_EXCEEDED if deadline_binds else Status.TIMEOUT,
                "the request's deadline passed while scoring; the worker was stopped"
                if deadline_binds
                else f"scoring took longer than {timeout_s:g}s; the worker was stopped",
                scorer=scorer.name,
                queued_ms=queued_ms,
                scoring_ms=(time.perf_counter() - started) * 1000.0,
            )
        except asyncio.CancelledError:
            self._replace(worker)
            raise
        except (EOFError, OSError, BrokenPipeError) as exc:
            worker.process.join(0.2)  # briefly, for the exit code; no await, so no cancellation gap
            code = worker.process.exitcode
            self._replace(worker)
            detail = f"exit code {code}" if code is not None else type(exc).__name__
            return ScoreResult.failure(
                Status.SCORER_ERROR, f"worker process died while scoring ({detail})", scorer=scorer.name
            )
        except Exception as exc:  # e.g. the sample or params could not be pickled
            self._replace(worker)
            return ScoreResult.failure(
                Status.INTERNAL, f"cannot hand the sample to a worker: {exc}", scorer=scorer.name
            )
        self._idle.put_nowait(worker)
        if not isinstance(result, ScoreResult):
            return ScoreResult.failure(Status.INTERNAL, "worker answered garbage", scorer=scorer.name)
        return dataclasses.replace(result, queued_ms=queued_ms)

    def _replace(self, worker: _Worker) -> None:
        """Kill ``worker`` and start a replacement in the background.

        Not awaited by the caller: a cancelled request must not wait for it, and
        the replacement joins the idle queue when it is ready.
        """
        self._all.discard(worker)
        task = asyncio.get_running_loop().create_task(self._respawn(worker))
        self._respawning.add(task)
        task.add_done_callback(self._respawning.discard)

    async def _respawn(self, worker: _Worker) -> None:
        await asyncio.to_thread(worker.kill)
        if self._closed:
            return
        self.restarts += 1
        delay = 0.5
        while True:
            try:
                replacement = await asyncio.to_thread(_Worker, _forkserver(self._preload))
                break
            except Exception:
                log.exception("cannot start a replacement worker; retrying in %.1fs", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                if self._closed:
                    return
        if self._closed:
            await asyncio.to_thread(replacement.kill)
            return
        self._all.add(replacement)
        self._idle.put_nowait(replacement)

    async def close(self) -> None:
        """Stop every worker (in-flight calls should have finished first)."""
        self._closed = True
        if self._respawning:
            await asyncio.gather(*self._respawning, return_exceptions=True)
        workers, self._all = list(self._all), set()
        for worker in workers:
            with contextlib.suppress(Exception):
                worker.conn.send(None)
        await asyncio.to_thread(_join_all, workers)


def _join_all(workers: list[_Worker]) -> None:
    deadline = time.monotonic() + 2.0
    for worker in workers:
        worker.process.join(timeout=max(0.0, deadline - time.monotonic()))
        if worker.process.is_alive():
            worker.kill()
        else:
            with contextlib.suppress(Exception):
                worker.conn.close()
