"""The README's grpcurl examples, run as written against a real server.

grpcurl itself is a Go binary that this project's machines cannot install, so the
test carries a small stand-in that does what grpcurl does for these commands: it
resolves services and messages through server reflection only (no generated code),
converts the ``-d`` JSON with protobuf's JSON mapping, and makes the call.
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from skillsvc.server import App

README_ADDRESS = "127.0.0.1:50051"


def readme_commands(repo_root: Path) -> list[list[str]]:
    text = (repo_root / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.S)
    return [
        shlex.split(line)
        for block in blocks
        for line in block.splitlines()
        if line.startswith("grpcurl ")
    ]


class MiniGrpcurl:
    """Enough of grpcurl for list, describe and unary calls with -d, via reflection."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self.pool = descriptor_pool.DescriptorPool()
        self.loaded: set[str] = set()

    async def _reflect(self, request: reflection_pb2.ServerReflectionRequest) -> Any:
        call = reflection_pb2_grpc.ServerReflectionStub(self.channel).ServerReflectionInfo()
        await call.write(request)
        response = await call.read()
        await call.done_writing()
        assert not response.HasField("error_response"), response.error_response
        return response

    async def _load_symbol(self, symbol: str) -> None:
        response = await self._reflect(
            reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol)
        )
        files = [
            descriptor_pb2.FileDescriptorProto.FromString(raw)
            for raw in response.file_descriptor_response.file_descriptor_proto
        ]
        # Dependencies first, so each file's imports are already in the pool.
        pending = {f.name: f for f in files if f.name not in self.loaded}
        while pending:
            for name, proto in list(pending.items()):
                if all(dep in self.loaded or dep not in pending for dep in proto.dependency):
                    # A file may already be known through another symbol.
                    with contextlib.suppress(TypeError):
                        self.pool.Add(proto)
                    self.loaded.add(name)
                    del pending[name]

    async def run(self, argv: list[str]) -> str:
        assert argv[:2] == ["grpcurl", "-plaintext"], argv
        args = argv[2:]
        data = None
        if args[0] == "-d":
            data, args = args[1], args[2:]
        assert args[0] == README_ADDRESS, "examples must target the default address"
        verb = args[1:]
        if verb == ["list"]:
            response = await self._reflect(reflection_pb2.ServerReflectionRequest(list_services=""))
            return "\n".join(s.name for s in response.list_services_response.service)
        if verb[0] == "describe":
            await self._load_symbol(verb[1])
            service = self.pool.FindServiceByName(verb[1])
            return "\n".join(m.name for m in service.methods)
        service_name, method_name = verb[0].rsplit("/", 1)
        await self._load_symbol(service_name)
        method = self.pool.FindServiceByName(service_name).methods_by_name[method_name]
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        request = json_format.Parse(data or "{}", request_class())
        call = self.channel.unary_unary(
            f"/{service_name}/{method_name}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_class.FromString,
        )
        return json_format.MessageToJson(await call(request))


async def test_readme_grpcurl_examples_work_as_written(app: App, repo_root: Path) -> None:
    commands = readme_commands(repo_root)
    assert len(commands) >= 6
    async with grpc.aio.insecure_channel(app.address) as channel:
        grpcurl = MiniGrpcurl(channel)
        outputs = [await grpcurl.run(argv) for argv in commands]
    by_verb = dict(zip([" ".join(c[2:]) for c in commands], outputs, strict=True))
    listed = next(v for k, v in by_verb.items() if k.endswith(" list"))
    assert "skillsvc.v1.SkillService" in listed.splitlines()
    assert "grpc.health.v1.Health" in listed.splitlines()
    described = next(v for k, v in by_verb.items() if " describe " in k)
    assert "Install" in described.splitlines()
    assert len(described.splitlines()) == 16
    health = next(json.loads(v) for k, v in by_verb.items() if "Health/Check" in k)
    assert health == {"status": "SERVING"}
    got = next(json.loads(v) for k, v in by_verb.items() if "GetSkillDefinition" in k)
    assert got["skillId"] == "pdf-tools"
    updated = next(json.loads(v) for k, v in by_verb.items() if "UpdateSkillDefinition" in k)
    assert updated["description"] == "PDF text, tables and forms"


async def test_readme_python_install_example_works(
    app: App, repo_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from skillsvc.v1 import resources_pb2, skill_service_pb2, skill_service_pb2_grpc
    from tests.packages import skill_archive

    text = (repo_root / "README.md").read_text()
    # The first Python block is the raw-stub example; the Clients section has its own test.
    code = re.findall(r"```python\n(.*?)```", text, flags=re.S)[0]
    namespace: dict[str, Any] = {}
    exec(compile(code.replace(README_ADDRESS, app.address), "README.md", "exec"), namespace)
    archive = tmp_path / "pdf-tools.tgz"
    archive.write_bytes(skill_archive("pdf-tools", "1.0.0"))
    async with grpc.aio.insecure_channel(app.address) as channel:
        stub = skill_service_pb2_grpc.SkillServiceStub(channel)
        await stub.CreateSkillDefinition(
            skill_service_pb2.CreateSkillDefinitionRequest(
                definition=resources_pb2.SkillDefinition(skill_id="pdf-tools")
            )
        )
        await namespace["install"](str(archive))
        package = await stub.GetPackage(skill_service_pb2.GetPackageRequest(skill_id="pdf-tools"))
    assert package.state == resources_pb2.PACKAGE_STATE_READY
    printed = capsys.readouterr().out.split("\n")
    assert printed[-2].endswith("installed and current")
