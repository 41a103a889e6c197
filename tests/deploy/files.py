"""Reading deploy/: the Dockerfile's instructions, the compose file as compose itself
would see it (YAML merge keys resolved), the Kubernetes manifests, and the REGISTRY_*
settings the registry knows. Shared by the deploy tests."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE_DIR = DEPLOY / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
K8S = DEPLOY / "k8s"
SCHEMAS = K8S / "schemas"
KUBERNETES_VERSION = "1.33.0"
"""The one Kubernetes version the manifests are checked against (native gRPC probes
are GA from 1.27; kubernetes-validate bundles its schemas)."""


@dataclass(frozen=True)
class Instruction:
    stage: str
    keyword: str
    arguments: str

    def exec_form(self) -> list[str]:
        """A JSON-array argument (ENTRYPOINT ["registry"]) as a list."""
        value = json.loads(self.arguments)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value), self
        return value


@cache
def dockerfile() -> tuple[Instruction, ...]:
    """Instructions with continuation lines joined and comments dropped, each tagged
    with its stage's name."""
    text = DOCKERFILE.read_text()
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stage = ""
    out = []
    for line in logical:
        keyword, _, arguments = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = arguments.split()
            stage = words[2] if len(words) == 3 and words[1].upper() == "AS" else ""
        out.append(Instruction(stage, keyword, arguments.strip()))
    return tuple(out)


def runtime_stage() -> list[Instruction]:
    """The last stage: what the image is."""
    last = dockerfile()[-1].stage
    return [i for i in dockerfile() if i.stage == last]


def image_environment() -> dict[str, str]:
    """The runtime stage's ENV (KEY=VALUE form)."""
    env = {}
    for instruction in runtime_stage():
        if instruction.keyword == "ENV":
            for word in shlex.split(instruction.arguments):
                key, _, value = word.partition("=")
                env[key] = value
    return env


def image_command(keyword: str) -> list[str]:
    """ENTRYPOINT or CMD of the image, exec form."""
    found = [i for i in runtime_stage() if i.keyword == keyword]
    assert len(found) == 1, f"{keyword} should be given once in the runtime stage"
    return found[0].exec_form()


def healthcheck_command() -> list[str]:
    """The HEALTHCHECK's CMD, exec form."""
    found = [i for i in runtime_stage() if i.keyword == "HEALTHCHECK"]
    assert len(found) == 1, "the runtime stage should have one HEALTHCHECK"
    _, _, command = found[0].arguments.partition("CMD ")
    return json.loads(command)


@cache
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def services() -> dict[str, dict[str, Any]]:
    return dict(compose()["services"])


def built_here(service: dict[str, Any]) -> bool:
    """A service running the image of deploy/Dockerfile."""
    build = service.get("build")
    return isinstance(build, dict) and build.get("dockerfile") == "deploy/Dockerfile"


def command_options(service: dict[str, Any]) -> dict[str, str]:
    """The ``-c NAME=VALUE`` options of a postgres command."""
    words = argv(service)
    return dict(words[i + 1].split("=", 1) for i, word in enumerate(words[:-1]) if word == "-c")


def argv(service: dict[str, Any]) -> list[str]:
    """What the container runs: the entrypoint (the service's, else the image's) and the
    command (the service's, else the image's, unless the service sets an entrypoint,
    which resets the image's CMD as docker does)."""
    entrypoint = service.get("entrypoint")
    command = service.get("command")
    if entrypoint is None:
        entrypoint = image_command("ENTRYPOINT") if built_here(service) else []
        if command is None and built_here(service):
            command = image_command("CMD")
    for value in (entrypoint, command):
        assert value is None or isinstance(value, list), "use the exec (list) form"
    return [*(entrypoint or []), *(command or [])]


def unescape(value: str) -> str:
    """Compose interpolation: ``$$`` is a literal ``$``; anything else must not need it."""
    assert not re.search(r"\$(?!\$)\{?[A-Za-z_]", value.replace("$$", "")), (
        f"{value!r} would be interpolated by compose from the host's environment"
    )
    return value.replace("$$", "$")


def k8s_documents(*, examples: bool = True) -> list[tuple[Path, dict[str, Any]]]:
    """Every YAML document under deploy/k8s (kustomization.yaml aside), with its file."""
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml" or (not examples and ".example." in path.name):
            continue
        for document in yaml.safe_load_all(path.read_text()):
            if document is not None:
                found.append((path, document))
    return found


def kustomization() -> dict[str, Any]:
    loaded = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


@cache
def known_settings() -> frozenset[str]:
    """Every REGISTRY_* name the registry's own code reads or names."""
    names: set[str] = set()
    for package in ("registry", "services"):
        for path in (ROOT / package).rglob("*.py"):
            names.update(re.findall(r"\bREGISTRY_[A-Z0-9_]*[A-Z0-9]\b", path.read_text()))
    return frozenset(names)
