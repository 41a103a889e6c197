"""Generates the gRPC stubs from ``protos/`` whenever the package is built or installed.

Generated code carries a runtime version check, so it is made by the pinned
``grpcio-tools`` of ``build-system.requires`` at install time rather than committed:
``pip install .`` and ``pip install -e .`` on a fresh machine yield importable stubs.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
PROTOS = ROOT / "protos"


def generate_stubs() -> None:
    from grpc_tools import protoc  # only present in the build environment

    include = Path(protoc.__file__).parent / "_proto"
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    args = [
        "grpc_tools.protoc",
        f"-I{PROTOS}",
        f"-I{include}",
        f"--python_out={ROOT}",
        f"--grpc_python_out={ROOT}",
    ]
    mypy_plugin = shutil.which("protoc-gen-mypy") or _beside_python("protoc-gen-mypy")
    mypy_grpc_plugin = shutil.which("protoc-gen-mypy_grpc") or _beside_python(
        "protoc-gen-mypy_grpc"
    )
    if mypy_plugin and mypy_grpc_plugin:
        args += [
            f"--plugin=protoc-gen-mypy={mypy_plugin}",
            f"--mypy_out={ROOT}",
            f"--plugin=protoc-gen-mypy_grpc={mypy_grpc_plugin}",
            f"--mypy_grpc_out={ROOT}",
        ]
    if protoc.main([*args, *sources]) != 0:
        raise SystemExit("protoc failed to generate the registry.v1 stubs")


def _beside_python(name: str) -> str | None:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else None


class BuildWithStubs(build_py):
    def run(self) -> None:
        generate_stubs()
        super().run()


setup(cmdclass={"build_py": BuildWithStubs})
