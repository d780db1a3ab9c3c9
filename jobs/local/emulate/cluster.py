#!/usr/bin/env python3
"""An emulated multi-host cluster on one Linux machine: network namespaces, a bridge, shaped links.

Each "host" is a network namespace with one interface (``eth0``, a veth pair whose other end is
on a bridge) and an address in 10.77.<net>.0/24; its egress is shaped by the ``tbf`` qdisc to a
given rate in both directions (egress on eth0, ingress on the bridge's end of the pair), so every
byte that leaves or enters a host crosses a link of that rate (ranks on the same host talk over
the namespace's loopback, unshaped, like ranks sharing a node). MPI ranks run inside
the namespaces: MPICH (the PyPI wheel) with shared memory off (``MPIR_CVAR_NOLOCAL=1``) and its
OFI device's TCP provider on ``eth0``; hydra starts each host's ranks with ``ip netns exec``
(MPMD, ``-n R ip netns exec HOST cmd : -n R ...``), and PMI travels over inherited descriptors.

Propagation delay cannot come from ``tc`` here (no ``netem`` in this kernel): it is injected by
decomp itself (``[network] delay_ms``, :mod:`decomp.comm.delay`), documented as emulation.

Needs root, ``ip`` and ``tc``. Everything it creates is named with a prefix (default ``dce``) and
removed by ``down`` -- also when the job fails or is interrupted (``run`` tears down in a
``finally``); ``down`` is idempotent and removes leftovers of an earlier crashed run::

    python jobs/local/emulate/cluster.py run --hosts 2 --ranks-per-host 2 --rate 100mbit \\
        -- decomp run jobs/configs/ef21_a9a.toml
    python jobs/local/emulate/cluster.py up --hosts 2 --rate 1gbit     # then `shape`, `exec`
    python jobs/local/emulate/cluster.py shape --rate 10gbit           # change the rate in place
    python jobs/local/emulate/cluster.py down

``--rate`` takes tc's units (``100mbit``, ``1gbit``, ``10gbit``) or ``none`` (unshaped veth).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

PREFIX = os.environ.get("DECOMP_EMU_PREFIX", "dce")
MAX_HOSTS = 250
REPO = Path(__file__).resolve().parents[3]

_UNITS = {"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "tbit": 1e12}


def rate_bits(rate: str) -> float:
    """Bits per second of a tc rate string (``100mbit`` -> 1e8). ValueError for anything else."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?bit)\s*", rate.lower())
    if not m:
        raise ValueError(f"rate {rate!r}: expected a number and a unit, e.g. 100mbit, 1gbit, "
                         "10gbit (or 'none')")
    return float(m.group(1)) * _UNITS[m.group(2)]


def host_name(h: int) -> str:
    """Namespace of host h (1-based)."""
    return f"{PREFIX}h{h}"


def host_addr(h: int) -> str:
    return f"10.77.{_net()}.{h}"


def _net() -> int:
    net = int(os.environ.get("DECOMP_EMU_SUBNET", "0"))
    if not 0 <= net <= 255:
        raise ValueError("DECOMP_EMU_SUBNET must be 0..255")
    return net


def bridge_name() -> str:
    return f"{PREFIX}br"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def _in(host: int, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _ip("netns", "exec", host_name(host), *cmd, check=check)


def existing_hosts() -> list[int]:
    """Hosts of this prefix that exist now (left over or up)."""
    out = _ip("netns", "list", check=False).stdout
    hosts = []
    for line in out.splitlines():
        m = re.fullmatch(rf"{re.escape(PREFIX)}h(\d+)", line.split()[0]) if line.split() else None
        if m:
            hosts.append(int(m.group(1)))
    return sorted(hosts)


def check_prerequisites() -> None:
    """SystemExit with the reason when this machine cannot emulate a cluster."""
    if sys.platform != "linux":
        raise SystemExit("emulate: needs Linux network namespaces")
    if os.geteuid() != 0:
        raise SystemExit("emulate: needs root (network namespaces, veth, tc)")
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            raise SystemExit(f"emulate: `{tool}` not found (Debian: apt-get install iproute2)")


def shape(hosts: Sequence[int], rate: str) -> None:
    """Shape every host's link to ``rate`` in both directions with tbf (``none``: remove the
    qdiscs): its egress on eth0 inside the namespace, and its ingress as the egress of the
    bridge's end of its veth pair -- a full-duplex NIC, so a master's fan-in (several hosts
    sending to one) is limited by the master's link as on a real network.

    burst: 2 ms of traffic at the rate (tbf needs burst >= rate/HZ), at least one frame, and
    up to 5 ms or 64 KiB of it (a TSO segment's worth keeps TCP at the full rate at >= 100
    Mbit/s) -- small, so that at a few Mbit/s the bucket, refilled while a host's link idles
    between a step's phases, does not carry a small job's messages at line speed; latency
    (queue) 100 ms.
    """
    for h in hosts:
        if rate == "none":
            _in(h, "tc", "qdisc", "del", "dev", "eth0", "root", check=False)
            _tc_root("qdisc", "del", "dev", f"{PREFIX}v{h}", "root")
            continue
        bps = rate_bits(rate)
        burst = max(min(64 * 1024, int(bps / 8 * 0.005)), int(bps / 8 * 0.002), 1600)
        tbf = ("root", "tbf", "rate", rate, "burst", str(burst), "latency", "100ms")
        _in(h, "tc", "qdisc", "replace", "dev", "eth0", *tbf)
        _tc_root("qdisc", "replace", "dev", f"{PREFIX}v{h}", *tbf, check=True)


def _tc_root(*args: str, check: bool = False) -> None:
    """``tc`` in this (the root) namespace, where the bridge's ends of the veth pairs are."""
    subprocess.run(["tc", *args], check=check, capture_output=True, text=True)


def up(n_hosts: int, rate: str) -> list[int]:
    """Create the bridge and ``n_hosts`` namespaces with shaped links; returns the host ids."""
    if not 1 <= n_hosts <= MAX_HOSTS:
        raise SystemExit(f"emulate: --hosts must be 1..{MAX_HOSTS}, got {n_hosts}")
    if rate != "none":
        rate_bits(rate)  # a bad rate fails before anything is created
    if existing_hosts():
        down()
    br = bridge_name()
    _ip("link", "add", br, "type", "bridge")
    _ip("link", "set", br, "up")
    hosts = list(range(1, n_hosts + 1))
    for h in hosts:
        ns, veth = host_name(h), f"{PREFIX}v{h}"
        _ip("netns", "add", ns)
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _ip("link", "set", veth, "master", br)
        _ip("link", "set", veth, "up")
        _in(h, "ip", "addr", "add", f"{host_addr(h)}/24", "dev", "eth0")
        _in(h, "ip", "link", "set", "eth0", "up")
        _in(h, "ip", "link", "set", "lo", "up")
    shape(hosts, rate)
    return hosts


def down() -> None:
    """Remove every namespace, veth and the bridge of this prefix (idempotent)."""
    for h in existing_hosts():
        _ip("netns", "del", host_name(h), check=False)  # takes its end of the veth pair along
        _ip("link", "del", f"{PREFIX}v{h}", check=False)
    _ip("link", "del", bridge_name(), check=False)


def mpi_env() -> dict[str, str]:
    """The environment MPICH needs between namespaces: TCP over eth0, no shared memory."""
    return {"MPIR_CVAR_NOLOCAL": "1", "MPIR_CVAR_CH4_NETMOD": "ofi", "FI_PROVIDER": "tcp",
            "FI_TCP_IFACE": "eth0", "DECOMP_EMU_HOSTS": "1",
            # torch.distributed (DDP baselines): gloo over the same interface, rank 0's address
            "GLOO_SOCKET_IFNAME": "eth0", "DECOMP_DDP_ADDR": host_addr(1)}


def mpiexec_argv(mpiexec: str, hosts: Sequence[int], ranks_per_host: int,
                 cmd: Sequence[str]) -> list[str]:
    """``mpiexec -n R ip netns exec H1 cmd : -n R ip netns exec H2 cmd ...`` (ranks in host
    order: rank r lives on host r // R + 1)."""
    argv = [mpiexec]
    for i, h in enumerate(hosts):
        if i:
            argv.append(":")
        argv += ["-n", str(ranks_per_host), "ip", "netns", "exec", host_name(h), *cmd]
    return argv


def run(n_hosts: int, ranks_per_host: int, rate: str, cmd: Sequence[str],
        mpiexec: str | None = None, keep: bool = False) -> int:
    """Stand the cluster up, run ``cmd`` on every rank, tear down (always); the job's exit code."""
    if not cmd:
        raise SystemExit("emulate run: give the command after --, e.g. -- decomp run CONFIG")
    if ranks_per_host < 1:
        raise SystemExit("emulate: --ranks-per-host must be >= 1")
    mpiexec = mpiexec or str(Path(sys.executable).with_name("mpiexec"))
    if not Path(mpiexec).exists() and shutil.which(mpiexec) is None:
        raise SystemExit(f"emulate: mpiexec not found at {mpiexec} (make setup)")
    # SIGTERM (a SLURM/CI timeout) must also reach the finally below
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        hosts = up(n_hosts, rate)
        env = {**os.environ, **mpi_env(), "DECOMP_EMU_RATE": rate}
        argv = mpiexec_argv(mpiexec, hosts, ranks_per_host, cmd)
        print(f"emulate: {n_hosts} hosts x {ranks_per_host} ranks, link {rate}: "
              + " ".join(argv), flush=True)
        return subprocess.run(argv, env=env, check=False).returncode
    except KeyboardInterrupt:
        return 130
    finally:
        if not keep:
            down()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cluster.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    pu = sub.add_parser("up", help="create the hosts (namespaces) and shape their links")
    pu.add_argument("--hosts", type=int, default=2)
    pu.add_argument("--rate", default="100mbit")
    ps = sub.add_parser("shape", help="change the rate of the hosts that are up")
    ps.add_argument("--rate", required=True)
    sub.add_parser("down", help="remove everything this script created (idempotent)")
    sub.add_parser("status", help="the hosts that are up and their qdiscs")
    pr = sub.add_parser("run", help="up, mpiexec CMD on every rank, down")
    pr.add_argument("--hosts", type=int, default=2)
    pr.add_argument("--ranks-per-host", type=int, default=2)
    pr.add_argument("--rate", default="100mbit")
    pr.add_argument("--mpiexec", default=None, help="default: beside this Python (the venv's)")
    pr.add_argument("--keep", action="store_true", help="leave the hosts up afterwards")
    pr.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    check_prerequisites()
    if args.cmd == "up":
        hosts = up(args.hosts, args.rate)
        print(f"emulate: hosts {', '.join(host_name(h) for h in hosts)} up, link {args.rate}")
    elif args.cmd == "shape":
        hosts = existing_hosts()
        if not hosts:
            raise SystemExit("emulate shape: no hosts are up (run `up` first)")
        shape(hosts, args.rate)
    elif args.cmd == "down":
        down()
    elif args.cmd == "status":
        for h in existing_hosts():
            q = _in(h, "tc", "qdisc", "show", "dev", "eth0", check=False).stdout.strip()
            print(f"{host_name(h)} {host_addr(h)}: {q}")
    else:
        cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
        return run(args.hosts, args.ranks_per_host, args.rate, cmd, args.mpiexec, args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
