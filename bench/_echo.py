"""The bare grpc.aio echo server of scenario 4's baseline, run as a separate process.

``python -m bench._echo PORT METHOD=FILE ...`` serves ``/bench.Echo/METHOD`` for each
pair: a unary method with no (de)serialisation on the server that answers every
request with the bytes in FILE (a serialised response of the real service, so the
message size is the same). It prints ``ready`` once it listens and stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

import grpc

SERVICE = "bench.Echo"


def _handler(payload: bytes) -> grpc.RpcMethodHandler:
    async def echo(_request: bytes, _context: Any) -> bytes:
        return payload

    return grpc.unary_unary_rpc_method_handler(echo)


async def serve(port: int, payloads: dict[str, bytes]) -> None:
    server = grpc.aio.server()
    handlers = {name: _handler(data) for name, data in payloads.items()}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await server.stop(1)


def main(argv: list[str]) -> None:
    port = int(argv[0])
    payloads = {}
    for pair in argv[1:]:
        name, _, path = pair.partition("=")
        payloads[name] = Path(path).read_bytes()
    asyncio.run(serve(port, payloads))


if __name__ == "__main__":
    main(sys.argv[1:])
