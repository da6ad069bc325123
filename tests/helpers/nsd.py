"""A real authoritative DNS server for the tests: NSD with its own config on a free loopback port.

`start(folder, zones)` writes one zone file per {zone: records} entry (records in zone-file
syntax, relative names allowed), starts `nsd -d` (foreground, no chroot, no privilege drop, no
control socket) and returns once it answers the first zone's SOA over UDP and TCP.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype

NSD = shutil.which("nsd") or "/usr/sbin/nsd"

CONF = """server:
    ip-address: {ip}
    port: {port}
    username: ""
    chroot: ""
    zonesdir: "{d}"
    pidfile: "{d}/nsd.pid"
    database: ""
    zonelistfile: "{d}/zone.list"
    xfrdfile: "{d}/xfrd.state"
    xfrdir: "{d}"
    logfile: "{d}/nsd.log"
    server-count: 1
    do-ip6: no
    verbosity: 1
remote-control:
    control-enable: no
"""

SOA = """$TTL 60
@ IN SOA ns.{zone}. hostmaster.{zone}. (1 3600 600 86400 60)
@ IN NS ns.{zone}.
ns IN A 127.0.0.1
"""


def available() -> bool:
    return os.path.exists(NSD)


def _free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (NSD listens on both)."""
    for _ in range(50):
        with socket.socket() as t:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port for both UDP and TCP")


@dataclass
class Nsd:
    folder: Path
    port: int
    proc: subprocess.Popen
    ip: str = "127.0.0.1"

    @property
    def address(self) -> str:
        """As `newsletter doctor --nameserver` takes it."""
        return f"{self.ip}:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def zone_text(zone: str, records: str) -> str:
    return SOA.format(zone=zone) + "\n".join(line.strip() for line in records.strip().splitlines()) + "\n"


def start(folder: Path, zones: dict[str, str], *, ip: str = "127.0.0.1", port: int | None = None) -> Nsd:
    """port None: a free one. A resolver that cannot take a port (libresolv's, as opendkim-testmsg
    uses) needs port 53: give a loopback address of its own, e.g. 127.53.x.y."""
    folder.mkdir(parents=True, exist_ok=True)
    port = _free_port() if port is None else port
    conf = CONF.format(ip=ip, port=port, d=folder)
    for zone, records in zones.items():
        (folder / f"{zone}.zone").write_text(zone_text(zone, records), encoding="utf-8")
        conf += f'zone:\n    name: "{zone}"\n    zonefile: "{zone}.zone"\n'
    (folder / "nsd.conf").write_text(conf, encoding="utf-8")
    check = subprocess.run([NSD + "-checkconf", str(folder / "nsd.conf")], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"nsd.conf refused: {check.stdout}{check.stderr}")
    proc = subprocess.Popen([NSD, "-d", "-c", str(folder / "nsd.conf")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    server = Nsd(folder, port, proc, ip)
    first = next(iter(zones))
    query = dns.message.make_query(first + ".", dns.rdatatype.SOA)
    for _ in range(200):
        if proc.poll() is not None:
            log = (folder / "nsd.log").read_text() if (folder / "nsd.log").exists() else ""
            raise RuntimeError(f"nsd exited: {proc.stdout.read().decode()} {log}")
        try:
            if dns.query.udp(query, ip, port=port, timeout=0.5).answer and \
                    dns.query.tcp(query, ip, port=port, timeout=0.5).answer:
                return server
        except (OSError, dns.exception.Timeout):
            pass
        time.sleep(0.05)
    server.stop()
    raise RuntimeError("nsd did not answer: " + ((folder / "nsd.log").read_text() if (folder / "nsd.log").exists() else ""))
