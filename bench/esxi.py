"""ESXi depots at real size: import a 400 MB bundle, then serve its modules to 32 hosts at once.

    python -m bench.esxi [--size 400] [--clients 32] [--runs 1] [--hostprofile-hosts 32] [--json out.json]

1. A synthetic offline bundle of ``--size`` MB is written in the real layout (index.xml,
   vendor-index.xml, metadata.zip, vib20/…) by a streaming writer here: one base VIB with a
   kernel and large vgz payloads plus driver VIBs, payload data compressible about 1.3x like
   real vmtar payloads (so verifying the gunzip checksums costs real inflate work). Nothing about it is held in memory.
2. ``bootbox serve`` (a separate process, entry-point plugins as in production) imports it
   through ``POST /api/v1/esxi/depots``; the figures are wall time, MB/s and the server's peak
   RSS (VmHWM) before and after: the import must stream, so the peak must not grow by anything
   like the bundle's size.
3. ``--clients`` hosts (distinct MACs) each fetch their script and then every module of their
   boot.cfg from bootbox's per-host tree, all at once, one curl per host; then nginx (sendfile)
   serves the same files to the same number of curls. Aggregate MB/s and CPU seconds are
   reported side by side, with the ratio.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    positive_int,
    Row,
    Server,
    Table,
    cpu_seconds,
    free_port,
    peak_rss_mib,
    print_table,
    rss_mib,
    start_bootbox,
    start_nginx,
    write_json,
)

CHUNK = 1 << 20
ALPHABET = bytes(range(0, 256, 4)) * 4  # 64 symbols: gzip -1 packs it to ~0.78, like real vmtar payloads


@dataclass
class BuiltPayload:
    name: str
    type: str
    path: Path
    size: int
    sha256: str
    sha1_raw: str
    vfatname: str


def _payload(work: Path, name: str, kind: str, packed_target: int, vfatname: str) -> BuiltPayload:
    """Generate a gzip payload of about ``packed_target`` bytes, streaming, hashing both sides."""
    path = work / f"{name}.gz"
    raw_hash = hashlib.sha1()
    raw_target = int(packed_target / 0.78)
    with gzip.GzipFile(path, "wb", compresslevel=1, mtime=0) as out:
        left = raw_target
        while left > 0:
            chunk = os.urandom(min(CHUNK, left)).translate(ALPHABET)
            raw_hash.update(chunk)
            out.write(chunk)
            left -= len(chunk)
    packed = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            packed.update(chunk)
    return BuiltPayload(name, kind, path, path.stat().st_size, packed.hexdigest(), raw_hash.hexdigest(), vfatname)


def _descriptor(name: str, vendor: str, level: str, payloads: list[BuiltPayload]) -> bytes:
    items = "".join(
        f'<payload name="{p.name}" type="{p.type}" size="{p.size}" vfatname="{p.vfatname}">'
        f'<checksum checksum-type="sha-256">{p.sha256}</checksum>'
        f'<checksum checksum-type="sha-1" verify-process="gunzip">{p.sha1_raw}</checksum></payload>'
        for p in payloads
    )
    return (f'<vib version="5.0"><type>bootbank</type><name>{name}</name><version>8.0.3-0.0.1</version>'
            f"<vendor>{vendor}</vendor><summary>bench {name}</summary><relationships><depends/><conflicts/>"
            f"<replaces/><provides/></relationships><software-tags/><acceptance-level>{level}</acceptance-level>"
            f"<stateless-ready>true</stateless-ready><payloads>{items}</payloads></vib>").encode()


def _header(name: str, size: int) -> bytes:
    return f"{name:<16}{0:<12}{0:<6}{0:<6}{0:<8}{size:<10}".encode() + b"`\n"


def _write_vib(zf: zipfile.ZipFile, rel: str, descriptor: bytes, payloads: list[BuiltPayload]) -> tuple[str, int]:
    """Stream one VIB into the bundle; return its sha-256 and size."""
    digest, size = hashlib.sha256(), 0
    info = zipfile.ZipInfo(rel, date_time=(2024, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    with zf.open(info, "w", force_zip64=True) as out:
        def put(data: bytes) -> None:
            nonlocal size
            digest.update(data)
            out.write(data)
            size += len(data)

        put(b"!<arch>\n")
        for name, data in (("descriptor.xml", descriptor), ("sig.pkcs7", b"")):
            put(_header(name, len(data)) + data + (b"\n" if len(data) % 2 else b""))
        for p in payloads:
            put(_header(p.name, p.size))
            with p.path.open("rb") as stream:
                while chunk := stream.read(CHUNK):
                    put(chunk)
            if p.size % 2:
                put(b"\n")
            p.path.unlink()
    return digest.hexdigest(), size


def build_bundle(work: Path, size_mb: int) -> tuple[Path, int]:
    """The synthetic bundle (real layout) and its number of modules."""
    target = size_mb * 1_000_000
    big = max(1, min(8, size_mb // 25))
    vibs: list[tuple[str, str, str, list[BuiltPayload]]] = []
    base = [_payload(work, "b", "boot", 2_000_000, "b.b00"), _payload(work, "k", "boot", 1_000_000, "k.b00")]
    base += [_payload(work, f"s{i}", "vgz", int((target * 0.8 - 3_000_000) / big), f"s{i}.v00") for i in range(big)]
    vibs.append(("esx-base", "VMware", "certified", base))
    for i in range(8):
        name = f"drv-{i}"
        vibs.append((name, "Bench", "partner", [_payload(work, f"drv{i}", "vgz", int(target * 0.2 / 8),
                                                          f"drv{i}.v00")]))
    bundle = work / "bench-depot.zip"
    vib_meta = []
    with zipfile.ZipFile(bundle, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
        for name, vendor, level, payloads in vibs:
            descriptor = _descriptor(name, vendor, level, payloads)
            vib_id = f"{vendor}_bootbank_{name}_8.0.3-0.0.1"
            rel = f"vib20/{name}/{vib_id}.vib"
            sha, size = _write_vib(zf, rel, descriptor, payloads)
            vib_meta.append((name, descriptor, rel, sha, size))
        meta_path = work / "metadata.zip"
        with zipfile.ZipFile(meta_path, "w", zipfile.ZIP_DEFLATED) as meta:
            for name, descriptor, rel, sha, size in vib_meta:
                extra = (f"<relative-path>{rel}</relative-path><packed-size>{size}</packed-size>"
                         f'<checksum checksum-type="sha-256">{sha}</checksum>').encode()
                with_location = descriptor.replace(b"<software-tags/>", b"<software-tags/>" + extra)
                meta.writestr(f"vibs/{name}-1.xml", with_location)
        zf.write(meta_path, "metadata.zip")
        meta_path.unlink()
        zf.writestr("vendor-index.xml", "<metaList><metadata><productId>embeddedEsx</productId>"
                                        "<url>metadata.zip</url></metadata></metaList>")
        zf.writestr("index.xml", "<vendorList><vendor><name>Bench</name><indexfile>vendor-index.xml</indexfile>"
                                 "<relativePath></relativePath></vendor></vendorList>")
    return bundle, sum(len(v[3]) for v in vibs) + 1


def _api(url: str, token: str, method: str, path: str, body: Any = None) -> Any:
    request = urllib.request.Request(f"{url}/api/v1{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _fetch_all(url_lists: list[list[str]], out: Path) -> tuple[float, int]:
    """One curl per client, each fetching its whole list; wall seconds and bytes moved."""
    procs = []
    start = time.perf_counter()
    for urls in url_lists:
        argv = ["curl", "-sS", "--fail", "-w", "%{size_download}\n"]
        for u in urls:
            argv += ["-o", "/dev/null", u]
        procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, text=True))
    total = 0
    for proc in procs:
        stdout, _ = proc.communicate(timeout=3600)
        if proc.returncode != 0:
            raise RuntimeError(f"a client failed (curl exit {proc.returncode})")
        total += sum(int(x) for x in stdout.split())
    return time.perf_counter() - start, total


def measure(size_mb: int, clients: int, runs: int) -> tuple[list[Row], dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="bootbox-esxi-bench-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)  # nginx's worker may run unprivileged
        t0 = time.perf_counter()
        bundle, module_count = build_bundle(work, size_mb)
        bundle_bytes = bundle.stat().st_size
        build_seconds = time.perf_counter() - t0
        loader = work / "mboot.efi"
        loader.write_bytes(os.urandom(200_000))
        tftp = work / "tftp"
        tftp.mkdir()
        port = free_port()
        server = start_bootbox(work, tftp_root=tftp, http_port=port, tftp_port=free_port(),
                               extra_toml=f'[plugins.esxi.loaders]\nefi = "{loader}"\n')
        nginx: Server | None = None
        try:
            url = f"http://127.0.0.1:{port}"
            token = (work / "state" / "api-token").read_text().strip()
            rss_before, hwm_before = rss_mib(server.pid), peak_rss_mib(server.pid)
            cpu0 = cpu_seconds(server.pid)
            start = time.perf_counter()
            job = _api(url, token, "POST", "/esxi/depots", {"source": str(bundle)})
            while job["state"] == "running":
                time.sleep(0.2)
                job = _api(url, token, "GET", f"/esxi/jobs/{job['id']}")
            import_seconds = time.perf_counter() - start
            if job["state"] != "done":
                raise RuntimeError(job["error"])
            import_cpu = cpu_seconds(server.pid) - cpu0
            hwm_after = peak_rss_mib(server.pid)
            _api(url, token, "POST", "/profiles", {"name": "bench", "kind": "esxi",
                                                   "spec": {"vibs": [v for v in job["result"]["vibs"]]}})
            _api(url, token, "POST", "/rules", {"name": "bench", "all_hosts": True, "items": {"image": "bench"}})
            macs = [f"52:54:00:be:{i // 256:02x}:{i % 256:02x}" for i in range(clients)]
            for mac in macs:
                urllib.request.urlopen(f"{url}/boot/hosts/{mac}/script.ipxe?platform=efi", timeout=30).read()
            image = _api(url, token, "GET", f"/esxi/hosts/{macs[0]}/image")
            names = [m["name"] for m in image["modules"]] + ["imgdb.tgz"]
            root = work / "www"
            root.mkdir()
            blobs = work / "state" / "plugins" / "esxi" / "blobs"
            for m in image["modules"]:  # hard links: the same files, outside the 0700 state dir
                os.link(blobs / m["sha256"][:2] / m["sha256"], root / m["name"])
            urllib.request.urlretrieve(f"{url}/boot/hosts/{macs[0].replace(':', '')}/assets/imgdb.tgz",
                                       root / "imgdb.tgz")
            nginx_port = free_port()
            nginx = start_nginx(work, root, nginx_port)
            ours_runs, theirs_runs, cpu_ours, cpu_theirs = [], [], 0.0, 0.0
            for _ in range(runs):
                lists = [[f"{url}/boot/hosts/{mac.replace(':', '')}/assets/{n}" for n in names] for mac in macs]
                c0 = cpu_seconds(server.pid)
                seconds, moved = _fetch_all(lists, work)
                cpu_ours += cpu_seconds(server.pid) - c0
                ours_runs.append(moved / seconds / 1e6)
                lists = [[f"http://127.0.0.1:{nginx_port}/{n}" for n in names] for _ in macs]
                c0 = cpu_seconds(nginx.pid)
                seconds, moved_ref = _fetch_all(lists, work)
                cpu_theirs += cpu_seconds(nginx.pid) - c0
                theirs_runs.append(moved_ref / seconds / 1e6)
                if moved_ref != moved:
                    raise RuntimeError(f"bootbox served {moved} bytes, nginx {moved_ref}: the sets differ")
        finally:
            if nginx is not None:
                nginx.stop()
            server.stop()
    mb = bundle_bytes / 1e6
    rows = [
        Row("import: wall time", "s", import_seconds, float("nan"), "", higher_is_better=False),
        Row("import: throughput", "MB/s", mb / import_seconds, float("nan"), ""),
        Row("import: server CPU", "s", import_cpu, float("nan"), "", higher_is_better=False),
        Row("import: server peak RSS", "MiB", hwm_after, hwm_before, "before import", higher_is_better=False,
            target=f"grows << {mb:.0f} MB (streams)"),
        Row(f"serve {clients} hosts x {module_count} modules", "MB/s", statistics.median(ours_runs),
            statistics.median(theirs_runs), "nginx"),
        Row("serve: server CPU", "s", cpu_ours / runs, cpu_theirs / runs, "nginx", higher_is_better=False),
    ]
    meta = {"bundle_mb": round(mb, 1), "modules": module_count, "clients": clients, "runs": runs,
            "build_seconds": round(build_seconds, 1), "rss_before_import_mib": round(rss_before, 1),
            "module_set_mb": round(sum(m["size"] for m in image["modules"]) / 1e6, 1)}
    return rows, meta


def requirements() -> str | None:
    for tool in ("curl", "nginx"):
        if not any(Path(d, tool).exists() for d in os.environ.get("PATH", "").split(":") + ["/usr/sbin"]):
            return f"needs {tool} (apt-get install curl nginx-light)"
    if not Path("/usr/share/gocode/src/github.com/vmware/govmomi/simulator").is_dir() or not any(
            Path(d, "go").exists() for d in os.environ.get("PATH", "").split(":")):
        return "needs the ESXi simulator's sources (apt-get install golang-go golang-github-vmware-govmomi-dev)"
    return None


def tables(quick: bool = False, runs: int | None = None) -> list[Table]:
    """For ``python -m bench``: full size 400 MB / 32 clients, quick 20 MB / 8 clients."""
    size, clients = (20, 8) if quick else (400, 32)
    rows, meta = measure(size, clients, runs or 1)
    from bench import esxi_hostprofile  # apply a host profile to as many simulated hosts

    return [Table("esxi", f"ESXi: import a {meta['bundle_mb']:.0f} MB bundle, serve its {meta['modules']} modules "
                          f"to {clients} hosts at once (loopback, curl)", rows, meta=meta),
            esxi_hostprofile.table(clients)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.esxi", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=positive_int, default=400, help="bundle size in MB (default 400)")
    parser.add_argument("--clients", type=positive_int, default=32, help="concurrent hosts (default 32)")
    parser.add_argument("--runs", type=positive_int, default=1, help="serving runs; the median is reported")
    parser.add_argument("--json", type=Path, help="write the table as JSON")
    parser.add_argument("--hostprofile-hosts", type=int, default=32,
                        help="simulated hosts for 'apply a host profile at once' (default 32; 0 skips it)")
    args = parser.parse_args(argv)
    if args.size < 5 or args.clients < 1 or args.runs < 1:
        parser.error("--size must be at least 5 (MB), --clients and --runs at least 1")
    reason = requirements()
    if reason:
        print(f"skipped: {reason}", file=sys.stderr)
        return 1
    rows, meta = measure(args.size, args.clients, args.runs)
    print_table(f"ESXi: import a {meta['bundle_mb']:.0f} MB bundle ({meta['modules']} modules, "
                f"{meta['module_set_mb']} MB module set), serve it to {args.clients} hosts at once", rows)
    print(f"  bundle written in {meta['build_seconds']} s; "
          f"server RSS before import {meta['rss_before_import_mib']} MiB")
    write_json(args.json, "esxi", rows, meta)
    if args.hostprofile_hosts > 0:
        from bench import esxi_hostprofile

        hp_rows, hp_meta = esxi_hostprofile.measure(args.hostprofile_hosts)
        print_table(f"ESXi: apply a host profile ({hp_meta['settings_per_host']} settings) to "
                    f"{args.hostprofile_hosts} hosts at once, report-in to configured", hp_rows)
        if args.json:
            write_json(args.json.with_name(args.json.stem + "-hostprofile.json"), "esxi-hostprofile", hp_rows, hp_meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
