"""Inside a model's sandbox, for models that need to reach out: `python -I -m
fogline.models.runtimes.shim SPEC -- COMMAND...`.

The sandbox has no network of its own (only its loopback). For each place the manifest needs
(the AMQP broker, the platform's callback address) the shim listens on that port of the
sandbox's loopback and relays each connection to a Unix socket the platform put in the sandbox;
the platform's side connects on to the real address (runtimes/egress.py). So a model reaches
exactly those addresses and nothing else. The shim runs the model as its child, passes on
SIGTERM and SIGINT, and exits with the model's status.

It runs as the model's own uid: a model that kills it only cuts its own connections.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

from fogline.models.runtimes.egress import pipe


async def _relay_to(
    socket_path: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        up_reader, up_writer = await asyncio.open_unix_connection(socket_path)
    except OSError:
        writer.close()
        return
    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
    for w in (writer, up_writer):
        w.close()


async def run(forwards: list[dict[str, object]], command: list[str]) -> int:
    servers = []
    for forward in forwards:
        path = str(forward["socket"])

        async def handle(
            r: asyncio.StreamReader, w: asyncio.StreamWriter, path: str = path
        ) -> None:
            await _relay_to(path, r, w)

        servers.append(await asyncio.start_server(handle, "127.0.0.1", int(str(forward["port"]))))
    # The listening socket the platform handed over is the model's, not the shim's.
    handed = os.environ.get("FOGLINE_MODEL_SOCKET_FD")
    child = await asyncio.create_subprocess_exec(
        *command, pass_fds=(int(handed),) if handed else ()
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, child.send_signal, sig)
    code = await child.wait()
    for server in servers:
        server.close()
    return code if code >= 0 else 128 - code


def main(argv: list[str]) -> None:
    if len(argv) < 4 or argv[2] != "--":
        sys.exit("usage: shim SPEC_JSON -- COMMAND...")
    spec = json.loads(argv[1])
    try:
        code = asyncio.run(run(spec.get("forwards", []), argv[3:]))
    except OSError as exc:
        sys.exit(f"fogline sandbox: {exc}")
    os._exit(code)


if __name__ == "__main__":
    main(sys.argv)
