"""The local model's child process: llama.cpp runs there, never in the runtime's process.

llama.cpp is native code; a fault in it (a bad kernel for the CPU, an assertion) kills the
process that runs it. So the runtime's process only talks to a child
(`python -m threadline.models.local_child`) over its stdin/stdout pipes, and a crash of
the child becomes a retryable `ModelError` for the call in flight instead of the end of the
server, worker or CLI.

Protocol. Each frame is a 4-byte big-endian length and that many bytes of UTF-8 JSON (one
object). The parent sends `{"id", "op", ...}`; the child answers each with
`{"id", "ok": true, "result": {...}}` or `{"id", "ok": false, "error": {"kind", "message"}}`.

    op="load"      first frame: path, n_ctx, n_threads, seed, repack
                   -> pid, use_extra_bufts (as loaded), n_ctx, n_threads, llama_cpp,
                      omp_wait_policy, load_ms
    op="chat"      messages, schema (JSON Schema or null), max_tokens, temperature, seed
                   -> text, input_tokens, output_tokens, latency_ms
    op="tokenize"  text -> tokens (the count, by the GGUF's own tokenizer)

Error kinds: `config` (bad file, rejected grammar) -> ConfigError, `missing_extra` ->
MissingExtraError, `invalid_request` (the prompt does not fit the window) -> non-retryable
ModelError, `failed` -> retryable ModelError.

Invariants:
    * one child per `ChildConfig` per process, started lazily, reused by every
      `LocalModel`, thread and event loop; a dead child is replaced on the next call;
    * at most one generation is in flight per child (a queue served by one dispatcher
      thread); token counts are answered beside it, so a count never waits behind one;
    * an abandoned generation (timeout, cancellation) kills the child: the call really
      stops, and the next call starts a fresh child;
    * this module never imports `llama_cpp`.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import concurrent.futures
import contextlib
import json
import logging
import os
import queue
import signal
import struct
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..errors import ConfigError, InvalidRequest, MissingExtraError, ModelError

__all__ = [
    "ChildConfig",
    "ModelProcess",
    "model_process",
    "read_frame",
    "write_frame",
]

log = logging.getLogger("threadline.models.local")

_HEADER = struct.Struct(">I")
_MAX_FRAME = 256 * 1024 * 1024
_STDERR_LINES = 20


def write_frame(stream: IO[bytes], message: dict[str, Any]) -> None:
    """Write one length-prefixed JSON frame and flush it."""
    body = json.dumps(message, separators=(",", ":")).encode("utf-8")
    stream.write(_HEADER.pack(len(body)) + body)
    stream.flush()


def read_frame(stream: IO[bytes]) -> dict[str, Any] | None:
    """Read one frame; None at end of stream (the other side is gone).

    Raises:
        ValueError: the frame is not a JSON object or claims an absurd length.
    """
    header = _read_exactly(stream, _HEADER.size)
    if header is None:
        return None
    (length,) = _HEADER.unpack(header)
    if length > _MAX_FRAME:
        raise ValueError(f"frame of {length} bytes is over the {_MAX_FRAME} limit")
    body = _read_exactly(stream, length)
    if body is None:
        return None
    message = json.loads(body)
    if not isinstance(message, dict):
        raise ValueError("a frame must hold a JSON object")
    return message


def _read_exactly(stream: IO[bytes], size: int) -> bytes | None:
    chunks, missing = [], size
    while missing:
        chunk = stream.read(missing)
        if not chunk:
            return None
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


@dataclass(frozen=True, slots=True)
class ChildConfig:
    """What a child loads; one child per distinct config.

    Attributes:
        path: the GGUF file.
        n_ctx: context window in tokens.
        n_threads: llama.cpp threads (None: one per CPU).
        seed: the sampler's default seed.
        repack: let llama.cpp repack weights into extra buffer types (`use_extra_bufts`),
            off unless the user opts in (`THREADLINE_LOCAL_REPACK=1`): the AMX repacking
            kernel crashes on some CPUs (docs/models.md).
    """

    path: str
    n_ctx: int
    n_threads: int | None = None
    seed: int = 0
    repack: bool = False


class _ChildDied(Exception):
    """The child exited (or its pipes broke) before answering."""


def describe_exit(returncode: int | None) -> str:
    """`died with SIGSEGV`, `exited with code 1`: how a child ended, for error messages."""
    if returncode is None:
        return "stopped answering"
    if returncode < 0:
        try:
            return f"died with {signal.Signals(-returncode).name}"
        except ValueError:
            return f"died with signal {-returncode}"
    return f"exited with code {returncode}"


class _Child:
    """One running child process and the threads that read its pipes."""

    def __init__(self, config: ChildConfig) -> None:
        src = str(Path(__file__).resolve().parents[2])  # the folder holding `threadline`
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
        # llama.cpp's OpenMP threads spin while they wait by default; when the CPUs are
        # shared (a server, tests, other work) spinning threads starve each other and one
        # call can take minutes instead of a second. Waiting passively avoids that
        # (docs/models.md); a user's own setting wins.
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "threadline.models.local_child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self.config = config
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=_STDERR_LINES)
        self._lock = threading.Lock()  # guards _pending, _next_id and _dead
        self._write_lock = threading.Lock()  # one frame at a time on stdin
        self._pending: dict[int, concurrent.futures.Future[dict[str, Any]]] = {}
        self._next_id = 0
        self._dead = False
        self.info: dict[str, Any] = {}
        threading.Thread(target=self._read, name="threadline-local-read", daemon=True).start()
        threading.Thread(target=self._drain, name="threadline-local-err", daemon=True).start()

    @property
    def alive(self) -> bool:
        return not self._dead and self.proc.poll() is None

    def call(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one request and wait for its answer (the raw response frame).

        Raises:
            _ChildDied: the child ended before answering.
        """
        future: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()
        with self._lock:
            if self._dead:
                raise _ChildDied(self.death())
            request_id = self._next_id
            self._next_id += 1
            self._pending[request_id] = future
        # Written outside `_lock`, which the reader needs to deliver answers: a large frame
        # must never wait on a reader that waits on it.
        with self._write_lock:
            try:
                if self.proc.stdin is None:
                    raise BrokenPipeError
                write_frame(self.proc.stdin, {"id": request_id, "op": op, **fields})
            except (BrokenPipeError, OSError, ValueError):
                pass  # the reader sees the end of the child and fails the future
        return future.result()

    def kill(self) -> None:
        """SIGKILL the child (its reader then fails whatever is pending)."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()

    def close(self, wait: float = 2.0) -> None:
        """Ask the child to exit (end of its stdin), then kill it if it lingers."""
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.wait(wait)
        except (OSError, subprocess.TimeoutExpired):
            self.kill()

    def death(self) -> str:
        """Why the child is gone, with the last line it printed to stderr."""
        try:
            code = self.proc.wait(5)
        except subprocess.TimeoutExpired:
            code = None
        text = f"local model process {describe_exit(code)} (pid {self.proc.pid})"
        last = next((line for line in reversed(self.stderr_tail) if line.strip()), "")
        return f"{text}; its last output: {last[:200]}" if last else text

    def _read(self) -> None:
        stdout = self.proc.stdout
        try:
            while stdout is not None:
                frame = read_frame(stdout)
                if frame is None:
                    break
                with self._lock:
                    future = self._pending.pop(int(frame.get("id", -1)), None)
                if future is not None:
                    future.set_result(frame)
        except (OSError, ValueError) as exc:
            log.warning("local model process sent an unreadable frame: %s", exc)
            self.kill()
        with self._lock:
            self._dead = True
            pending, self._pending = self._pending, {}
        reason = self.death()  # also reaps the child, so no zombie is left behind
        if pending:
            log.warning("%s", reason)
            for future in pending.values():
                future.set_exception(_ChildDied(reason))

    def _drain(self) -> None:
        stderr = self.proc.stderr
        if stderr is None:
            return
        for raw in iter(stderr.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip()
            self.stderr_tail.append(line)
            log.debug("local model process: %s", line)


@dataclass
class _Job:
    fields: dict[str, Any]
    future: concurrent.futures.Future[dict[str, Any]]
    abandoned: bool = False


class ModelProcess:
    """The parent's handle on one model's child process (see the module invariants)."""

    def __init__(self, config: ChildConfig) -> None:
        self.config = config
        self._child: _Child | None = None
        self._start_lock = threading.Lock()  # one start at a time
        self._lock = threading.Lock()  # guards _current and the dispatcher
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._current: _Job | None = None
        self._dispatcher: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        """The running child's pid (None before the first call or after it died)."""
        child = self._child
        return child.proc.pid if child is not None and child.alive else None

    @property
    def busy(self) -> bool:
        """A generation is in flight (or its child is starting for one)."""
        return self._current is not None

    def start(self) -> dict[str, Any]:
        """Start the child and load the model if it is not running; what the load reported.

        Raises:
            ConfigError: the file cannot be loaded. MissingExtraError: no llama-cpp-python.
            ModelError: the child died while loading (retryable).
        """
        return self._ensure_child().info

    async def chat(self, fields: dict[str, Any]) -> dict[str, Any]:
        """One generation (queued behind any in flight).

        Cancelling the call (`asyncio.timeout` around it, a cancelled task) kills the child
        if the generation had started, so it really stops; the next call starts a new one.

        Raises:
            ModelError: the child died (retryable, naming the signal) or refused the
                request; ConfigError / MissingExtraError as for `start`.
        """
        job = _Job(fields, concurrent.futures.Future())
        self._jobs.put(job)
        self._ensure_dispatcher()
        try:
            return await asyncio.wrap_future(job.future)
        except asyncio.CancelledError:
            self._abandon(job)
            raise

    def tokenize(self, text: str) -> int:
        """Token count of `text` by the GGUF tokenizer (starts the child if needed)."""
        try:
            return int(_result(self._ensure_child().call("tokenize", text=text))["tokens"])
        except _ChildDied:
            pass  # a count is idempotent: ask a fresh child once
        try:
            return int(_result(self._ensure_child().call("tokenize", text=text))["tokens"])
        except _ChildDied as exc:
            raise ModelError(str(exc), retryable=True) from None

    def close(self) -> None:
        """Stop the child (a later call starts a new one)."""
        with self._start_lock:
            child, self._child = self._child, None
        if child is not None:
            child.close()

    def _ensure_child(self) -> _Child:
        with self._start_lock:
            child = self._child
            if child is not None and child.alive:
                return child
            child = _Child(self.config)
            c = self.config
            try:
                info = _result(
                    child.call(
                        "load",
                        path=c.path,
                        n_ctx=c.n_ctx,
                        n_threads=c.n_threads,
                        seed=c.seed,
                        repack=c.repack,
                    )
                )
            except _ChildDied as exc:
                raise ModelError(f"{exc} while loading {c.path}", retryable=True) from None
            except BaseException:
                child.close()
                raise
            child.info = info
            self._child = child
            log.info("local model process %s loaded %s: %s", child.proc.pid, c.path, info)
            return child

    def _ensure_dispatcher(self) -> None:
        with self._lock:
            if self._dispatcher is None or not self._dispatcher.is_alive():
                self._dispatcher = threading.Thread(
                    target=self._dispatch, name="threadline-local-dispatch", daemon=True
                )
                self._dispatcher.start()

    def _dispatch(self) -> None:
        while True:
            job = self._jobs.get()
            if not job.future.set_running_or_notify_cancel():
                continue  # cancelled while queued
            with self._lock:
                self._current = job
            try:
                child = self._ensure_child()
                if job.abandoned:
                    raise ModelError("abandoned before it started", retryable=True)
                job.future.set_result(_result(child.call("chat", **job.fields)))
            except _ChildDied as exc:
                job.future.set_exception(ModelError(str(exc), retryable=True))
            except BaseException as exc:  # delivered to the caller, never lost
                job.future.set_exception(exc)
            finally:
                with self._lock:
                    self._current = None

    def _abandon(self, job: _Job) -> None:
        with self._lock:
            job.abandoned = True
            if self._current is job and self._child is not None:
                log.warning("killing local model process %s: call abandoned", self.pid)
                self._child.kill()


def _result(frame: dict[str, Any]) -> dict[str, Any]:
    """The result of a response frame, or the matching Threadline error."""
    if frame.get("ok"):
        result = frame.get("result")
        return result if isinstance(result, dict) else {}
    error = frame.get("error") or {}
    kind, message = error.get("kind"), str(error.get("message", "unknown error"))
    if kind == "missing_extra":
        raise MissingExtraError("local", "llama_cpp")
    if kind == "config":
        raise ConfigError(message)
    if kind == "invalid_request":
        raise InvalidRequest(message)
    raise ModelError(f"llama.cpp failed: {message}", retryable=True)


_PROCESSES: dict[ChildConfig, ModelProcess] = {}
_PROCESSES_LOCK = threading.Lock()
_OWNER = [os.getpid()]


def model_process(config: ChildConfig) -> ModelProcess:
    """The process-wide handle for `config` (created on first use, never started here).

    Process-wide on purpose: a loaded GGUF costs real memory and load time, so every
    `LocalModel` for the same file and settings shares one child.
    """
    with _PROCESSES_LOCK:
        if _OWNER[0] != os.getpid():  # a forked copy of this process: the children are not ours
            _PROCESSES.clear()
            _OWNER[0] = os.getpid()
        handle = _PROCESSES.get(config)
        if handle is None:
            handle = _PROCESSES[config] = ModelProcess(config)
        return handle


@atexit.register
def _close_all() -> None:
    with _PROCESSES_LOCK:
        handles = list(_PROCESSES.values()) if _OWNER[0] == os.getpid() else []
    for handle in handles:
        handle.close()
