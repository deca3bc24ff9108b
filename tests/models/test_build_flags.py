"""The installed llama.cpp CPU backend is the portable build the Makefile asks for.

A `-march=native` build on a Xeon with AMX compiles the AMX repacking kernel, whose first
decode crashes with a general protection fault on `ldtilecfg` (docs/models.md). The
Makefile builds with AVX2/FMA/F16C and AVX-512 and AMX off; this test reads the machine
code of the installed `libggml-cpu` and fails if an AMX tile instruction or an AVX-512
register appears, so a wheel built with other flags (pip's cache of a native build, say)
cannot slip into the venv unnoticed.
"""

from __future__ import annotations

import importlib.util
import platform
import shutil
import subprocess
from pathlib import Path

import pytest


def _ggml_cpu() -> Path:
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.origin is None:
        pytest.fail("llama-cpp-python is not installed: run `make install`")
    libs = sorted((Path(spec.origin).parent / "lib").glob("libggml-cpu*.so*"))
    if not libs:
        pytest.fail("no libggml-cpu library inside the llama_cpp package")
    return libs[0]


def _disassembly(lib: Path) -> str:
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.fail("objdump (binutils) is needed to check the llama.cpp build")
    out = subprocess.run(
        [objdump, "-d", "--no-show-raw-insn", str(lib)],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout


@pytest.mark.slow
@pytest.mark.skipif(platform.machine() != "x86_64", reason="x86-64 build flags")
def test_llama_cpp_has_no_amx_or_avx512_code() -> None:
    code = _disassembly(_ggml_cpu())
    assert "ldtilecfg" not in code, "AMX kernel compiled in: build with the Makefile's flags"
    assert "tdpbssd" not in code
    assert "%zmm" not in code, "AVX-512 code compiled in: not portable to every x86-64 CPU"
    # The portable build does use AVX2: an empty or foreign disassembly must not pass.
    assert "%ymm" in code
