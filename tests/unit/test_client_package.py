"""The slim client: ``registry.client`` imports nothing of the server, and
``clients/python`` builds a ``carbon-registry-client`` wheel holding only the client,
the ``registry.v1`` stubs and their ``py.typed`` markers."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Offline: the build uses this venv's setuptools and grpcio-tools (the test extras).
PIP_WHEEL = (sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation")
SERVER_ONLY = ("sqlalchemy", "alembic", "psycopg", "psycopg_pool", "eventsourcing", "msgspec")
SERVER_ONLY += ("cryptography", "prometheus_client", "services", "migrations")

BLOCKED_IMPORT = f"""
import sys

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {SERVER_ONLY!r}:
            raise ImportError(f"server-only package imported by the client: {{name}}")
        return None

sys.meta_path.insert(0, Refuse())
import registry.client
from registry.client import RegistryClient
client = RegistryClient("127.0.0.1:1", "token")
client.close()
loaded = sorted(m for m in sys.modules if m.split(".")[0] == "registry")
print(" ".join(loaded))
"""


def test_the_client_imports_without_any_server_package() -> None:
    done = subprocess.run(
        [sys.executable, "-c", BLOCKED_IMPORT],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    loaded = done.stdout.split()
    # Only the (namespace in the client wheel) top package, the client and the stubs.
    assert all(m == "registry" or m.startswith(("registry.client", "registry.v1")) for m in loaded)


def test_the_client_wheel_holds_only_the_client_and_the_stubs(tmp_path: Path) -> None:
    subprocess.run(
        [*PIP_WHEEL, str(ROOT / "clients" / "python"), "-w", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [wheel] = tmp_path.glob("carbon_registry_client-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    files = {n for n in names if ".dist-info/" not in n}
    client = {
        f"registry/client/{n}"
        for n in ("__init__.py", "registry_client.py", "service_config.json", "py.typed")
    }
    assert client <= files
    assert {"registry/v1/__init__.py", "registry/v1/py.typed"} <= files
    stubs = files - client - {"registry/v1/__init__.py", "registry/v1/py.typed"}
    assert stubs, "no registry.v1 stubs in the wheel"
    assert all(re.fullmatch(r"registry/v1/\w+_pb2(_grpc)?\.pyi?", n) for n in stubs), stubs
    protos = {p.stem for p in (ROOT / "protos" / "registry" / "v1").glob("*.proto")}
    assert {f"registry/v1/{p}_pb2.py" for p in protos} <= stubs
    # No registry/__init__.py: the server's wheel owns it; here registry is a namespace.
    assert "registry/__init__.py" not in names


def test_the_client_depends_on_grpc_and_protobuf_only_at_the_servers_bounds() -> None:
    client = tomllib.loads((ROOT / "clients" / "python" / "pyproject.toml").read_text())
    server = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = set(client["project"]["dependencies"])
    assert {re.split(r"[<>=\[]", d)[0] for d in wanted} == {"grpcio", "grpcio-status", "protobuf"}
    assert wanted <= set(server["project"]["dependencies"])
    assert client["project"]["version"] == server["project"]["version"]
    assert client["build-system"]["requires"] == server["build-system"]["requires"], (
        "the client's stubs must come from the same protoc as the server's"
    )
