"""Wire compatibility with the last release: ``protos/releases/vX.Y.Z.binpb`` (the newest
compared) is the ``registry.v1`` descriptor set as released (``make proto-release``).

Two checks: buf's own ``buf breaking`` (FILE rules, buf.yaml) against that image, and a
small check of our own on the descriptors that needs no buf: no service, method,
message, field or enum value of the release may go away unless its number is reserved,
and a kept field keeps its number, type and cardinality, a method its types and
streaming. Changing the API incompatibly means a registry.v2, not an edit here.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from google.protobuf import descriptor_pb2

import registry.v1.access_service_pb2
import registry.v1.account_service_pb2
import registry.v1.administration_service_pb2
import registry.v1.audit_service_pb2
import registry.v1.common_pb2
import registry.v1.settlement_service_pb2
from tests.unit.test_api_contract import buf

ROOT = Path(__file__).resolve().parents[2]
RELEASE = max(
    (ROOT / "protos" / "releases").glob("v*.binpb"),
    key=lambda p: tuple(int(n) for n in p.name[1:].removesuffix(".binpb").split(".")),
)
MODULES = (
    registry.v1.access_service_pb2,
    registry.v1.account_service_pb2,
    registry.v1.administration_service_pb2,
    registry.v1.audit_service_pb2,
    registry.v1.common_pb2,
    registry.v1.settlement_service_pb2,
)

Proto = descriptor_pb2.DescriptorProto | descriptor_pb2.EnumDescriptorProto


def released() -> dict[str, descriptor_pb2.FileDescriptorProto]:
    image = descriptor_pb2.FileDescriptorSet.FromString(RELEASE.read_bytes())
    return {f.name: f for f in image.file if f.package == "registry.v1"}


def current() -> dict[str, descriptor_pb2.FileDescriptorProto]:
    files: dict[str, descriptor_pb2.FileDescriptorProto] = {}
    for module in MODULES:
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        files[proto.name] = proto
    return files


def types(files: dict[str, descriptor_pb2.FileDescriptorProto]) -> dict[str, Proto]:
    """Every message and enum by full name, nested ones too."""
    found: dict[str, Proto] = {}

    def walk(prefix: str, message: descriptor_pb2.DescriptorProto) -> None:
        name = f"{prefix}.{message.name}"
        found[name] = message
        for enum in message.enum_type:
            found[f"{name}.{enum.name}"] = enum
        for nested in message.nested_type:
            walk(name, nested)

    for file in files.values():
        for message in file.message_type:
            walk(file.package, message)
        for enum in file.enum_type:
            found[f"{file.package}.{enum.name}"] = enum
    return found


def reserved(proto: Proto, number: int) -> bool:
    """Message reserved ranges end exclusive, enum ones inclusive."""
    inclusive = isinstance(proto, descriptor_pb2.EnumDescriptorProto)
    return any(r.start <= number < r.end + inclusive for r in proto.reserved_range)


def breaking_changes(
    old: dict[str, descriptor_pb2.FileDescriptorProto],
    new: dict[str, descriptor_pb2.FileDescriptorProto],
) -> list[str]:
    problems: list[str] = []
    new_services = {
        f"{f.package}.{s.name}": {m.name: m for m in s.method}
        for f in new.values()
        for s in f.service
    }
    for file in old.values():
        for service in file.service:
            name = f"{file.package}.{service.name}"
            if name not in new_services:
                problems.append(f"service {name} removed")
                continue
            for method in service.method:
                now = new_services[name].get(method.name)
                if now is None:
                    problems.append(f"method {name}.{method.name} removed")
                elif (now.input_type, now.output_type) != (method.input_type, method.output_type):
                    problems.append(f"method {name}.{method.name} changed its types")
                elif (now.client_streaming, now.server_streaming) != (
                    method.client_streaming,
                    method.server_streaming,
                ):
                    problems.append(f"method {name}.{method.name} changed its streaming")
    old_types, new_types = types(old), types(new)
    for name, before in old_types.items():
        after = new_types.get(name)
        if after is None or type(after) is not type(before):
            problems.append(f"{name} removed")
        elif isinstance(before, descriptor_pb2.DescriptorProto):
            assert isinstance(after, descriptor_pb2.DescriptorProto)
            fields = {f.number: f for f in after.field}
            for field in before.field:
                kept = fields.get(field.number)
                if kept is None:
                    if not reserved(after, field.number):
                        problems.append(f"{name}.{field.name} ({field.number}) removed")
                elif (kept.type, kept.type_name, kept.label) != (
                    field.type,
                    field.type_name,
                    field.label,
                ):
                    problems.append(f"{name}.{field.name} ({field.number}) changed its type")
                elif kept.HasField("oneof_index") != field.HasField("oneof_index"):
                    problems.append(f"{name}.{field.name} ({field.number}) moved in/out a oneof")
        else:
            assert isinstance(after, descriptor_pb2.EnumDescriptorProto)
            numbers = {v.number for v in after.value}
            for value in before.value:
                if value.number not in numbers and not reserved(after, value.number):
                    problems.append(f"{name}.{value.name} ({value.number}) removed")
    return problems


def test_the_api_keeps_every_wire_contract_of_the_last_release() -> None:
    assert breaking_changes(released(), current()) == []


def test_the_check_sees_a_removed_field_a_retyped_one_and_a_removed_method() -> None:
    """The check itself: the release against an edited copy of itself."""
    old = released()
    new = {
        name: descriptor_pb2.FileDescriptorProto.FromString(f.SerializeToString())
        for name, f in old.items()
    }
    settlement = new["registry/v1/settlement_service.proto"]
    del settlement.service[0].method[0]
    trade = next(m for m in settlement.message_type if m.name == "GetTradeRequest")
    trade.field[0].type = descriptor_pb2.FieldDescriptorProto.TYPE_INT64
    hold = next(m for m in settlement.message_type if m.name == "GetHoldRequest")
    removed = hold.field[0].number
    del hold.field[0]
    problems = breaking_changes(old, new)
    assert len(problems) == 3, problems
    hold.reserved_range.add(start=removed, end=removed + 1)  # reserved: a legitimate removal
    assert len(breaking_changes(old, new)) == 2


def test_buf_breaking_against_the_release_image() -> None:
    done = subprocess.run(
        [str(buf()), "breaking", ".", "--against", str(RELEASE)],
        cwd=ROOT / "protos",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
