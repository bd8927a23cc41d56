"""``bootbox serve``: run proxyDHCP, TFTP and HTTP in this process until SIGINT/SIGTERM."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from bootbox.cli.common import state


def serve(
    ctx: typer.Context,
    http_port: Annotated[Optional[int], typer.Option(help="HTTP port (default 8080).")] = None,
    tftp_port: Annotated[Optional[int], typer.Option(help="TFTP port (default 69).")] = None,
    dhcp_port: Annotated[Optional[int], typer.Option(help="proxyDHCP port (default 67).")] = None,
    boot_server_port: Annotated[Optional[int], typer.Option(help="PXE boot-server port (default 4011).")] = None,
    interface: Annotated[Optional[str], typer.Option(help="Answer DHCP only on this interface.")] = None,
    address: Annotated[Optional[str], typer.Option(help="The IPv4 address clients reach bootbox at (default: the one each request arrived on).")] = None,
    loaders: Annotated[Optional[Path], typer.Option(help="Directory of iPXE loaders served by TFTP (default /usr/lib/ipxe).")] = None,
    no_dhcp: Annotated[bool, typer.Option("--no-dhcp", help="Do not run the proxyDHCP server.")] = False,
    no_tftp: Annotated[bool, typer.Option("--no-tftp", help="Do not run the TFTP server.")] = False,
    no_demo: Annotated[bool, typer.Option("--no-demo", help="Do not build the demo profile.")] = False,
    log_level: Annotated[Optional[str], typer.Option(help="debug, info, warning or error.")] = None,
) -> None:
    """Run the appliance: proxyDHCP (udp/67, udp/4011), TFTP (udp/69) and HTTP, in one process.

    Needs root (or CAP_NET_BIND_SERVICE) for ports below 1024. Stops cleanly on SIGINT/SIGTERM.
    """
    overrides: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {"http": {}, "tftp": {}, "dhcp": {}, "demo": {}}
    for section, key, value in (
        ("http", "port", http_port),
        ("tftp", "port", tftp_port),
        ("tftp", "root", str(loaders) if loaders else None),
        ("dhcp", "port", dhcp_port),
        ("dhcp", "boot_server_port", boot_server_port),
        ("dhcp", "interface", interface),
    ):
        if value is not None:
            sections[section][key] = value
    if no_dhcp:
        sections["dhcp"]["enabled"] = False
    if no_tftp:
        sections["tftp"]["enabled"] = False
    if no_demo:
        sections["demo"]["enabled"] = False
    overrides.update({k: v for k, v in sections.items() if v})
    if address is not None:
        overrides["server_address"] = address
    if log_level is not None:
        overrides["log_level"] = log_level
    from bootbox.appliance import Appliance, configure_logging  # servers load only when serving

    settings = state(ctx).settings(**overrides)
    listener = configure_logging(settings.log_level)
    try:
        Appliance(settings).serve_forever()
    finally:
        listener.stop()
