"""Benchmark of the rules engine at homelab-fleet-and-beyond scale.

``python -m bench.rules`` builds 10,000 rules and 100,000 hosts (seeded, so runs are
comparable), compiles the set, and measures:

* compile time;
* one decision (``evaluate`` on the compiled set) for 20,000 random hosts, p50/p99/max;
* one decision on the uncompiled set (the linear definition) for a few hosts, for contrast;
* a full compliance run over every host, with random stored associations so nearly every host
  drifts (the worst case: every drift record is built);
* peak RSS of the process (hosts included).

Targets: decision p99 < 1 ms; compliance over 100,000 hosts < 5 s on a 2-core machine. Use
``--rules``/``--hosts``/``--sample`` to scale down, ``--json PATH`` to keep the figures, and
``--strict`` to exit 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import resource
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from bench.common import positive_int
from bootbox.core.rules import Rule, RuleSet, compile_ruleset, compliance, evaluate, make_rule

VENDORS = ("Dell Inc.", "HPE", "Supermicro", "Lenovo", "Cisco Systems Inc", "Fujitsu", "Intel Corporation", "QEMU")
DOMAINS = ("lab.example", "rack1.example", "rack2.example", "edge.example", "dmz.example")
IMAGES = tuple(f"esxi-{v}" for v in ("7.0u3", "8.0", "8.0u1", "8.0u2", "8.0u3"))
HOST_PROFILES = tuple(f"hp-{i:03d}" for i in range(200))
GROUPS = tuple(f"group-{i:03d}" for i in range(100))
ITEM_VALUES = {"image": IMAGES, "host_profile": HOST_PROFILES, "group": GROUPS}
NET_BASE = 10 << 24  # hosts live in 10.0.0.0/12
NET_SIZE = 1 << 20


def _ipv4(value: int) -> str:
    return ".".join(str((value >> s) & 255) for s in (24, 16, 8, 0))


def _vary_case(rng: random.Random, text: str) -> str:
    return rng.choice((text, text.upper(), text.lower()))


def _mac_spelling(rng: random.Random, mac: str) -> str:
    """Mostly the DHCP spelling; sometimes what a human or a BMC would type."""
    roll = rng.random()
    if roll < 0.85:
        return mac
    if roll < 0.95:
        return mac.upper().replace(":", "-")
    return mac.replace(":", "")


def make_hosts(rng: random.Random, count: int) -> list[dict[str, Any]]:
    """Hosts with every built-in attribute, vendor strings in varying case, MACs in varying spelling."""
    hosts = []
    for n in range(count):
        vendor = rng.choice(VENDORS)
        mac = ":".join(f"{b:02x}" for b in rng.randbytes(6))
        hosts.append(
            {
                "mac": _mac_spelling(rng, mac),
                "uuid": str(uuid.UUID(bytes=rng.randbytes(16))),
                "serial": f"SN{rng.getrandbits(40):010X}",
                "asset": f"AT-{n:07d}",
                "vendor": _vary_case(rng, vendor),
                "model": f"{vendor.split()[0]} model {rng.randrange(40)}",
                "ipv4": _ipv4(NET_BASE + rng.randrange(NET_SIZE)),
                "hostname": f"esx-{n:06d}",
                "domain": rng.choice(DOMAINS),
                "arch": rng.choice(("x86_64", "x86_64", "x86_64", "arm64")),
                "platform": rng.choice(("efi", "efi", "bios")),
                "oemstring": [f"{vendor} System", f"slot {rng.randrange(16)}"],
            }
        )
    return hosts


def _items(rng: random.Random, weights: Sequence[float]) -> dict[str, str]:
    """One or two item types drawn with ``weights`` over (image, host_profile, group)."""
    types = ("image", "host_profile", "group")
    chosen = set(rng.choices(types, weights=weights, k=rng.choice((1, 1, 2))))
    return {t: rng.choice(ITEM_VALUES[t]) for t in sorted(chosen)}


def _unseen_value(rng: random.Random, attr: str) -> str:
    """A MAC, serial or asset tag of a host that has not booted yet."""
    if attr == "mac":
        return ":".join(f"{b:02x}" for b in rng.randbytes(6))
    return f"SN{rng.getrandbits(40):010X}" if attr == "serial" else f"AT-9{rng.randrange(10**6):06d}"


def _exact_rule(rng: random.Random, name: str, hosts: list[dict[str, Any]]) -> Rule:
    attr = rng.choices(("mac", "serial", "asset"), weights=(50, 32, 18))[0]
    values = [
        str(rng.choice(hosts)[attr]) if rng.random() < 0.8 else _unseen_value(rng, attr)
        for _ in range(rng.choice((1, 1, 1, 2, 3)))
    ]
    return make_rule(name, [f"{attr}={','.join(values)}"], _items(rng, (1, 6, 3)))


def _hardware_rule(rng: random.Random, name: str) -> Rule:
    vendor = rng.choice(VENDORS)
    patterns = [f"vendor={_vary_case(rng, vendor)}"]
    if rng.random() < 0.7:
        models = {f"{vendor.split()[0]} model {rng.randrange(40)}" for _ in range(rng.randint(1, 4))}
        patterns.append(f"model={','.join(sorted(models))}")
    return make_rule(name, patterns, _items(rng, (6, 3, 1)))


def _network_spec(rng: random.Random) -> str:
    start = NET_BASE + rng.randrange(NET_SIZE)
    roll = rng.random()
    if roll < 0.4:
        prefix = rng.choice((20, 22, 24, 24, 26, 28))
        network = start & ~((1 << (32 - prefix)) - 1)
        return f"{_ipv4(network)}/{prefix}"
    if roll < 0.8:
        end = min(start + rng.randrange(1, 2000), NET_BASE + NET_SIZE - 1)
        return f"{_ipv4(start)}-{_ipv4(end)}"
    return _ipv4(start)


def _network_rule(rng: random.Random, name: str) -> Rule:
    specs = ",".join(_network_spec(rng) for _ in range(rng.choice((1, 1, 2, 3))))
    return make_rule(name, [f"ipv4={specs}"], _items(rng, (2, 2, 6)))


def make_rules(rng: random.Random, count: int, hosts: list[dict[str, Any]]) -> RuleSet:
    """~78% exact mac/serial/asset, ~15% vendor/model, ~7% IPv4 ranges/CIDRs, then a few all_hosts.

    Everything but the defaults is shuffled, which is harder on the engine than the tidy
    "narrow first, broad last" order operators write.
    """
    defaults = min(10, max(1, count // 1000))
    rules = []
    for i in range(count - defaults):
        roll, name = rng.random(), f"r{i:05d}"
        if roll < 0.78:
            rules.append(_exact_rule(rng, name, hosts))
        elif roll < 0.93:
            rules.append(_hardware_rule(rng, name))
        else:
            rules.append(_network_rule(rng, name))
    rng.shuffle(rules)
    for i in range(defaults):
        rules.append(make_rule(f"default-{i}", [], _items(rng, (1, 1, 1)) | {"image": IMAGES[0]}, all_hosts=True))
    return RuleSet(tuple(rules))


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    unit: str
    target: float | None = None
    decimals: int = 1

    @property
    def passed(self) -> bool | None:
        return None if self.target is None else self.value < self.target


def _percentile(sorted_values: Sequence[int], fraction: float) -> int:
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


def _time_decisions(evaluate_one: Callable[[dict[str, Any]], object], hosts: Sequence[dict[str, Any]]) -> list[int]:
    timings = []
    for host in hosts:
        start = time.perf_counter_ns()
        evaluate_one(host)
        timings.append(time.perf_counter_ns() - start)
    return sorted(timings)


def run(rules: int, hosts: int, sample: int, seed: int) -> list[Figure]:
    """Build, compile and measure; returns the figures in table order."""
    rng = random.Random(seed)
    host_attrs = make_hosts(rng, hosts)
    ruleset = make_rules(rng, rules, host_attrs)

    start = time.perf_counter()
    compiled = compile_ruleset(ruleset)
    compile_s = time.perf_counter() - start

    picks = [rng.choice(host_attrs) for _ in range(sample)]
    gc.collect()  # start each timed section without the setup's pending collector work
    _time_decisions(lambda h: evaluate(compiled, h), picks[: min(500, sample)])  # warm-up
    fast = _time_decisions(lambda h: evaluate(compiled, h), picks)
    slow = _time_decisions(lambda h: evaluate(ruleset, h), picks[: min(200, sample)])

    stored = [{t: rng.choice(v) for t, v in ITEM_VALUES.items() if rng.random() < 0.9} for _ in host_attrs]
    triples = [(f"h{i}", attrs, stored[i]) for i, attrs in enumerate(host_attrs)]
    gc.collect()
    start = time.perf_counter()
    drifted = compliance(compiled, triples)
    compliance_s = time.perf_counter() - start

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return [
        Figure(f"compile {rules} rules", compile_s * 1000, "ms"),
        Figure("decision p50", fast[len(fast) // 2] / 1000, "us"),
        Figure("decision p99", _percentile(fast, 0.99) / 1000, "us", 1000.0),
        Figure("decision max", fast[-1] / 1000, "us"),
        Figure("decision p50, uncompiled", slow[len(slow) // 2] / 1000, "us"),
        Figure(f"compliance, {hosts} hosts", compliance_s, "s", 5.0 * hosts / 100_000),
        Figure("hosts drifted", len(drifted), "hosts", decimals=0),
        Figure("peak RSS", peak_mb, "MB"),
    ]


def format_table(figures: Sequence[Figure]) -> str:
    rows = [("figure", "value", "target", "result")]
    for f in figures:
        target = f"< {f.target:g} {f.unit}" if f.target is not None else "-"
        result = {None: "-", True: "pass", False: "FAIL"}[f.passed]
        rows.append((f.name, f"{f.value:,.{f.decimals}f} {f.unit}", target, result))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rules", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rules", type=positive_int, default=10_000, help="rules in the set (default 10000)")
    parser.add_argument("--hosts", type=positive_int, default=100_000, help="hosts for compliance (default 100000)")
    parser.add_argument("--sample", type=positive_int, default=20_000, help="timed single decisions (default 20000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args(argv)
    if args.rules < 1 or args.hosts < 1 or args.sample < 1:
        parser.error("--rules, --hosts and --sample must be positive")

    figures = run(args.rules, args.hosts, args.sample, args.seed)
    print(f"rules engine: {args.rules} rules, {args.hosts} hosts, {args.sample} timed decisions, seed {args.seed}")
    print(format_table(figures))
    if args.json:
        doc = {
            "benchmark": "rules",
            "parameters": {"rules": args.rules, "hosts": args.hosts, "sample": args.sample, "seed": args.seed},
            "python": sys.version.split()[0],
            "figures": [
                {"figure": f.name, "value": f.value, "unit": f.unit, "target": f.target, "pass": f.passed}
                for f in figures
            ],
        }
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(doc, out, indent=2)
            out.write("\n")
    missed = [f for f in figures if f.passed is False]
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
