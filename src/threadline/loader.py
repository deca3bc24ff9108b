"""Find an agent from a reference: `path/to/file.py:name` or `package.module:name`."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from .agent import Agent
from .errors import ConfigError

__all__ = ["load_agent", "note_refs", "portable_ref"]


def load_agent(ref: str) -> Agent:
    """Import the module named by `ref` and return its `Agent` attribute.

    Raises ConfigError with one clear line when the file, module or attribute is missing
    or is not an `Agent`.
    """
    module_ref, sep, attr = ref.rpartition(":")
    if not sep or not module_ref or not attr:
        raise ConfigError(
            f"agent reference {ref!r} must look like path/to/file.py:name or package.module:name"
        )
    if _is_file(module_ref):
        path = Path(module_ref)
        if not path.is_file():
            raise ConfigError(f"agent file {module_ref!r} does not exist")
        name = f"threadline_agent_{abs(hash(path.resolve()))}"
        module = sys.modules.get(name)
        if module is None:
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise ConfigError(f"cannot import {module_ref!r}")
            module = importlib.util.module_from_spec(spec)
            sys.path.insert(0, str(path.resolve().parent))
            try:
                sys.modules[name] = module
                spec.loader.exec_module(module)
            except Exception as exc:
                sys.modules.pop(name, None)
                raise ConfigError(
                    f"importing {module_ref} failed: {type(exc).__name__}: {exc}"
                ) from exc
            finally:
                sys.path.remove(str(path.resolve().parent))
    else:
        try:
            module = importlib.import_module(module_ref)
        except ImportError as exc:
            raise ConfigError(f"cannot import module {module_ref!r}: {exc}") from exc
    agent = getattr(module, attr, None)
    if agent is None:
        raise ConfigError(f"{module_ref} has no attribute {attr!r}")
    if not isinstance(agent, Agent):
        raise ConfigError(f"{ref} is a {type(agent).__name__}, not a threadline Agent")
    return agent


def portable_ref(ref: str) -> str:
    """`ref` as a reference to the same agent from any working directory, for a thread to
    record: a file reference with its path made absolute; a module reference as given (it
    is found on the import path, not from the working directory)."""
    module_ref, sep, attr = ref.rpartition(":")
    if sep and module_ref and _is_file(module_ref):
        return f"{Path(module_ref).resolve()}:{attr}"
    return ref


def note_refs(refs: dict[str, str], agent: Agent, ref: str) -> None:
    """Record in `refs` (agent name -> reference) that `agent` and its sub-agents, at any
    depth, are found by loading `ref` (made portable), keeping those already recorded: a
    sub-agent's child thread records its root's reference (`Runtime.add_agent`)."""
    portable, todo = portable_ref(ref), [agent]
    while todo:
        one = todo.pop()
        if one.name not in refs:
            refs[one.name] = portable
            todo += one.sub_agents()


def _is_file(module_ref: str) -> bool:
    """Whether a reference's part before the colon names a file (else a module)."""
    return module_ref.endswith(".py") or "/" in module_ref
