"""Running the platform in the foreground until a signal says stop."""

from __future__ import annotations

import asyncio
import signal
import sys

from fogline import __version__
from fogline.app.platform import Platform
from fogline.app.settings import Settings


def banner(platform: Platform) -> str:
    s = platform.settings
    info = platform.system_info()
    lines = [
        f"Fogline {__version__} is up",
        f"  HTTP API   {platform.http_url}/api/v1   (docs: {platform.http_url}/api/v1/docs)",
        f"  MQTT       {platform.mqtt_url or 'none (no MQTT listener and no bridge)'}",
        f"  NATS       {platform.nats_url}",
        f"  Database   {info['database']}"
        + (f" at {s.data_dir / 'fogline.db'}" if not s.database_url else ""),
        f"  Data dir   {s.data_dir}",
    ]
    if s.tls_cert_file is not None:
        devices = (
            f"; devices show a certificate signed by {s.tls_client_ca_file}"
            if s.tls_client_ca_file
            else ""
        )
        lines.append(f"  TLS        {s.tls_cert_file} (HTTPS and MQTT over TLS{devices})")
    key = platform.bootstrap
    if key.admin_key:
        made = "made by an earlier start that did not finish; " if key.carried_over else ""
        lines.append(
            f"  API key    {key.admin_key}   "
            f"(admin; {made}shown once, saved for the CLI in {s.client_file})"
        )
    else:
        lines.append(
            f"  API key    the admin key is in {s.client_file} (shown at the first start; "
            "the CLI here uses it)"
        )
    if not info["device_auth_enforced"]:
        lines.append("  Note       external NATS: its operator manages device credentials")
    lines.append("Press Ctrl-C to stop.")
    return "\n".join(lines)


async def serve(settings: Settings) -> None:
    platform = Platform(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await platform.start()
    try:
        sys.stdout.write(banner(platform) + "\n")
        sys.stdout.flush()
        platform.admin_key_shown()
        await stop.wait()
        sys.stdout.write("stopping...\n")
        sys.stdout.flush()
    finally:
        await platform.stop()
    sys.stdout.write("stopped\n")
    sys.stdout.flush()
