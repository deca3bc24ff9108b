"""The program that runs llama.cpp for the runtime: `python -m threadline.models.local_child`.

Started by `local_process.ModelProcess`, which owns its lifetime: the child serves frames
from stdin until stdin ends, then exits (so it never outlives the runtime's process by more
than the generation in flight). The protocol is in `local_process`'s docstring.

Generations run one at a time on a worker thread; token counts are answered on the main
thread meanwhile (tokenizing only reads the model's vocabulary, as llama.cpp's own server
does beside decoding). The protocol uses a private copy of stdout; file descriptor 1 is
pointed at stderr so that anything native code prints cannot corrupt a frame.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import signal
import sys
import threading
import time
from typing import IO, Any

from ..errors import ConfigError
from .local_grammar import grammar_text
from .local_process import read_frame, write_frame

__all__ = ["main"]


class _Server:
    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._write_lock = threading.Lock()
        self._llm: Any = None
        self._grammars: dict[str, Any] = {}

    def answer(self, request_id: Any, result: dict[str, Any] | None, error: Any = None) -> None:
        if error is None:
            frame: dict[str, Any] = {"id": request_id, "ok": True, "result": result}
        else:
            kind, message = error
            frame = {"id": request_id, "ok": False, "error": {"kind": kind, "message": message}}
        with self._write_lock:
            write_frame(self._out, frame)

    def load(self, req: dict[str, Any]) -> dict[str, Any]:
        import llama_cpp
        from llama_cpp import llama_cpp as capi

        # `Llama(...)` does not take `use_extra_bufts`; it builds its model parameters from
        # `llama_model_default_params()`, so the default is adjusted while it loads.
        repack = bool(req.get("repack", False))
        defaults = capi.llama_model_default_params

        def model_params() -> Any:
            params = defaults()
            params.use_extra_bufts = repack
            return params

        started = time.perf_counter()
        capi.llama_model_default_params = model_params
        try:
            llm = llama_cpp.Llama(
                model_path=str(req["path"]),
                n_ctx=int(req["n_ctx"]),
                n_threads=req.get("n_threads") or os.cpu_count(),
                seed=int(req.get("seed", 0)),
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ConfigError(f"cannot load GGUF model {req['path']}: {exc}") from None
        finally:
            capi.llama_model_default_params = defaults
        self._llm = llm
        return {
            "pid": os.getpid(),
            "use_extra_bufts": bool(llm.model_params.use_extra_bufts),
            "n_ctx": llm.n_ctx(),
            "n_threads": llm.n_threads,
            "llama_cpp": llama_cpp.__version__,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "load_ms": round((time.perf_counter() - started) * 1000, 3),
        }

    def tokenize(self, req: dict[str, Any]) -> dict[str, Any]:
        text = str(req.get("text", ""))
        tokens = self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        return {"tokens": len(tokens)}

    def chat(self, req: dict[str, Any]) -> dict[str, Any]:
        schema = req.get("schema")
        grammar = self._grammar(schema) if schema else None
        started = time.perf_counter()
        result = self._llm.create_chat_completion(
            messages=req["messages"],
            grammar=grammar,
            max_tokens=int(req["max_tokens"]),
            temperature=float(req.get("temperature", 0.0)),
            seed=int(req.get("seed", 0)),
        )
        latency = (time.perf_counter() - started) * 1000
        usage = result.get("usage") or {}
        return {
            "text": result["choices"][0]["message"].get("content") or "",
            "input_tokens": int(usage.get("prompt_tokens", 0)),
            "output_tokens": int(usage.get("completion_tokens", 0)),
            "latency_ms": round(latency, 3),
        }

    def _grammar(self, schema: dict[str, Any]) -> Any:
        key = hashlib.sha256(json.dumps(schema, sort_keys=True).encode()).hexdigest()
        if key not in self._grammars:
            from llama_cpp import llama_grammar

            text = grammar_text(schema)
            try:
                self._grammars[key] = llama_grammar.LlamaGrammar.from_string(text, verbose=False)
            except Exception as exc:
                raise ConfigError(f"llama.cpp rejected the intent grammar: {exc}") from None
        return self._grammars[key]

    def run(self, op: str, req: dict[str, Any]) -> None:
        """Answer one request (never raises: every failure is an error frame)."""
        try:
            if op == "load":
                result = self.load(req)
            elif self._llm is None:
                raise ConfigError("the model is not loaded (the first request must be load)")
            elif op == "chat":
                result = self.chat(req)
            elif op == "tokenize":
                result = self.tokenize(req)
            else:
                raise ConfigError(f"unknown op {op!r}")
        except ImportError:
            self.answer(req.get("id"), None, ("missing_extra", "llama_cpp is not installed"))
        except ConfigError as exc:
            self.answer(req.get("id"), None, ("config", str(exc)))
        except ValueError as exc:  # llama.cpp: the prompt does not fit the context window
            self.answer(req.get("id"), None, ("invalid_request", str(exc)))
        except Exception as exc:
            self.answer(req.get("id"), None, ("failed", f"{type(exc).__name__}: {exc}"))
        else:
            self.answer(req.get("id"), result)


def main() -> None:
    """Serve frames from stdin until it ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when the child stops
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # native prints land on stderr, never inside a frame
    sys.stdout = sys.stderr
    server = _Server(out)
    generations: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()

    def generate() -> None:
        while (req := generations.get()) is not None:
            server.run("chat", req)

    worker = threading.Thread(target=generate, name="generate", daemon=True)
    worker.start()
    stdin = sys.stdin.buffer
    while (req := read_frame(stdin)) is not None:
        op = str(req.get("op", ""))
        if op == "chat":
            generations.put(req)
        else:
            server.run(op, req)
    generations.put(None)
    worker.join()


if __name__ == "__main__":
    main()
