#!/usr/bin/env python3
"""Write golden.json from the captures, or check it against tcpdump's own decoder.

``golden.py write`` records what bootbox's codec reads from every ``NAME.bin`` listed in
captures.tsv. That output is only trustworthy after ``golden.py check``, which decodes the
same packets in pcap/ with ``tcpdump -vvv`` (an independent implementation) and compares the
option codes and lengths in wire order, xid, flags, option 60 and option 93. Packets between
two 4011 ports are re-addressed to 68→67 first, because tcpdump decodes BOOTP by port only.
Run both after every new capture and read the diff of golden.json before committing it.
"""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))  # the repository root, for bootbox

from bootbox.net.dhcp import packet as dp  # noqa: E402


def captures() -> dict[str, dict[str, object]]:
    rows = {}
    for line in (HERE / "captures.tsv").read_text().splitlines():
        name, mac, sip, sport, dip, dport = line.split("\t")
        rows[name] = {"src_mac": mac, "src_ip": sip, "src_port": int(sport), "dst_ip": dip, "dst_port": int(dport)}
    return rows


def describe(data: bytes) -> dict[str, object]:
    p = dp.parse(data)
    return {
        "size": len(data),
        "header": {
            "op": p.op, "htype": p.htype, "hlen": p.hlen, "hops": p.hops, "xid": f"0x{p.xid:08x}",
            "secs": p.secs, "flags": f"0x{p.flags:04x}", "ciaddr": p.ciaddr, "yiaddr": p.yiaddr,
            "siaddr": p.siaddr, "giaddr": p.giaddr, "chaddr": p.chaddr.hex(":"),
            "sname": p.sname.decode("latin-1"), "file": p.file.decode("latin-1"),
        },
        "options": [f"{code}:{value.hex()}" for code, value in p.options.items()],
        "message_type": dp.message_type(p),
        "vendor_class": dp.vendor_class(p),
        "user_classes": list(dp.user_classes(p)),
        "ipxe_options": dp.has_ipxe_options(p),
        "is_ipxe": dp.is_ipxe(p),
        "arch": dp.client_arch(p),
        "uuid": dp.client_uuid(p),
        "pxe_suboptions": {str(k): v.hex() for k, v in dp.pxe_suboptions(p).items()},
        "boot_item": (dp.pxe_boot_item(p) or b"").hex() or None,
    }  # fmt: skip


def write() -> None:
    golden = {name: {"wire": wire, **describe((HERE / f"{name}.bin").read_bytes())}
              for name, wire in sorted(captures().items())}  # fmt: skip
    (HERE / "golden.json").write_text(json.dumps(golden, indent=1) + "\n")


def readdressed(pcap: Path) -> bytes:
    """The pcap with 4011→4011 datagrams relabelled 68→67 so tcpdump decodes them as BOOTP."""
    raw, off = bytearray(pcap.read_bytes()), 24
    while off + 16 <= len(raw):
        caplen = struct.unpack_from("<I", raw, off + 8)[0]
        frame = off + 16
        if raw[frame + 12 : frame + 14] == b"\x08\x00" and raw[frame + 23] == 17:
            udp = frame + 14 + (raw[frame + 14] & 0x0F) * 4
            if struct.unpack_from("!HH", raw, udp) == (4011, 4011):
                struct.pack_into("!HH", raw, udp, 68, 67)
        off += 16 + caplen
    return bytes(raw)


def tcpdump_view(block: str) -> dict[str, object]:
    options = [(int(c), int(n)) for c, n in re.findall(r"^\s+[\w-]+ \((\d+)\), length (\d+)", block, re.M)]
    xid = re.search(r"xid (0x[0-9a-f]+)", block)  # tcpdump omits xid 0
    flags = re.search(r"Flags \[[^\]]*\] \((0x[0-9a-f]+)\)", block)
    vendor = re.search(r'Vendor-Class \(60\), length \d+: "([^"]*)"', block)
    arch = re.search(r"ARCH \(93\), length 2: (\d+)", block)
    return {
        "options": [o for o in options if o[0] not in (0, 255)],
        "xid": int(xid.group(1), 16) if xid else 0,
        "flags": int(flags.group(1), 16) if flags else 0,
        "vendor_class": vendor.group(1) if vendor else "",
        "arch": int(arch.group(1)) if arch else None,
    }


def golden_view(entry: dict) -> dict[str, object]:
    return {
        "options": [(int(o.split(":")[0]), len(o.split(":")[1]) // 2) for o in entry["options"]],
        "xid": int(entry["header"]["xid"], 16),
        "flags": int(entry["header"]["flags"], 16),
        "vendor_class": entry["vendor_class"],
        "arch": entry["arch"] if any(o.startswith("93:") for o in entry["options"]) else None,
    }


def check() -> int:
    sys.path.insert(0, str(HERE))
    from capture import read_pcap

    golden = json.loads((HERE / "golden.json").read_text())
    payloads = {(HERE / f"{name}.bin").read_bytes(): name for name in golden}
    seen, bad = set(), 0
    for pcap in sorted((HERE / "pcap").glob("*.pcap")):
        with tempfile.NamedTemporaryFile(suffix=".pcap") as tmp:
            tmp.write(readdressed(pcap))
            tmp.flush()
            text = subprocess.run(["tcpdump", "-vvv", "-nn", "-r", tmp.name], capture_output=True, text=True).stdout
        blocks = re.split(r"\n(?=\d\d:\d\d:\d\d\.)", text.strip())
        for frame, block in zip(read_pcap(pcap), blocks, strict=True):
            name = payloads.get(frame.payload)
            if name is None or name in seen:
                continue
            seen.add(name)
            mine, theirs = golden_view(golden[name]), tcpdump_view(block)
            ok = mine == theirs
            bad += not ok
            print(f"{'ok ' if ok else 'BAD'} {name}" + ("" if ok else f"\n  golden  {mine}\n  tcpdump {theirs}"))
    missing = sorted(set(golden) - seen)
    if missing:
        print(f"BAD not found in any pcap: {missing}")
    return 1 if bad or missing else 0


if __name__ == "__main__":
    if sys.argv[1:] == ["write"]:
        write()
    elif sys.argv[1:] == ["check"]:
        sys.exit(check())
    else:
        sys.exit("usage: golden.py write|check")
