"""Builds ``carbon-registry-client`` from the repository's own sources, built from a
checkout (``pip wheel clients/python``; ``make client-wheel``): no copy is committed.

The wheel holds ``registry/client`` (with its ``service_config.json``), the
``registry/v1`` stubs generated from ``protos/`` (``.py`` and, with mypy-protobuf,
``.pyi``) and a ``py.typed`` in each. It ships no ``registry/__init__.py``: ``registry``
is then a namespace package, so this wheel and the server's ``carbon-registry`` own no
file in common.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PROTOS = ROOT / "protos"
CLIENT_FILES = ("__init__.py", "registry_client.py", "service_config.json")


def _plugin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else None


def generate_stubs(out: Path) -> None:
    from grpc_tools import protoc  # only present in the build environment

    include = Path(protoc.__file__).parent / "_proto"
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    args = ["grpc_tools.protoc", f"-I{PROTOS}", f"-I{include}"]
    args += [f"--python_out={out}", f"--grpc_python_out={out}"]
    mypy, mypy_grpc = _plugin("protoc-gen-mypy"), _plugin("protoc-gen-mypy_grpc")
    if mypy and mypy_grpc:
        args += [f"--plugin=protoc-gen-mypy={mypy}", f"--mypy_out={out}"]
        args += [f"--plugin=protoc-gen-mypy_grpc={mypy_grpc}", f"--mypy_grpc_out={out}"]
    if protoc.main([*args, *sources]) != 0:
        raise SystemExit("protoc failed to generate the registry.v1 stubs")


class BuildClient(build_py):
    def run(self) -> None:
        super().run()
        lib = Path(self.build_lib).resolve()
        (lib / "registry" / "v1").mkdir(parents=True, exist_ok=True)
        generate_stubs(lib)
        shutil.copy(ROOT / "registry" / "v1" / "__init__.py", lib / "registry" / "v1")
        client = lib / "registry" / "client"
        client.mkdir(parents=True, exist_ok=True)
        for name in CLIENT_FILES:
            shutil.copy(ROOT / "registry" / "client" / name, client / name)
        for package in (client, lib / "registry" / "v1"):
            (package / "py.typed").write_text("")


class ClientDistribution(Distribution):
    """Its modules come from the checkout at build time, not from ``packages``: say
    there are some, or setuptools skips ``build_py`` and builds an empty wheel."""

    def has_pure_modules(self) -> bool:
        return True


setup(packages=[], distclass=ClientDistribution, cmdclass={"build_py": BuildClient})
