"""The swarm's own aria2c: BitTorrent on (private torrents, a tracker or LPD), DHT and peer
exchange off, JSON-RPC on loopback with a random secret kept in a private config file (never
on the command line), dying with this process. Separate from the aria2 engine's aria2c, whose
command line keeps BitTorrent off for ordinary pulls; this one only ever gets torrents.

aria2 options (research note cluster.md §3): ``seed-ratio=0.0`` (seed until removed),
``bt-detach-seed-only`` (a seeding download does not hold a download slot),
``bt-max-peers=0`` (no cap), ``bt-tracker-interval`` (opentracker hands out ~30 min),
``rpc-save-upload-metadata=false`` (no copy of each torrent in the data directory), and a
complete file is seeded with ``bt-seed-unverified`` + ``check-integrity``."""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from modelget.engines.aria2.rpc import Aria2RPC, RPCError
from modelget.errors import EngineUnavailableError
from modelget.swarm.policy import TRACKER_INTERVAL_S

READY_TIMEOUT_S = 10.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class SwarmNode:
    """``start()`` the aria2c, ``add_torrent``/``seed``/``status``/``add_uris``/``remove``,
    ``stop()``. ``data_dir``: where a blob's bytes live while aria2 has them, as
    ``data_dir/<sha256>`` (the torrent's name)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        lpd: bool,
        interface: str | None,
        port: int | None,
        verify_tls: bool = True,
        max_rate_bps: int | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.lpd = lpd
        self.interface = interface
        self.listen_port = port or _free_port()
        self.verify_tls = verify_tls
        self.max_rate_bps = max_rate_bps
        self.proc: subprocess.Popen[bytes] | None = None
        self.tmp: Path | None = None
        self.rpc_port = 0
        self._secret = ""
        self._rpc: Aria2RPC | None = None

    def command_line(self, exe: str, conf: Path) -> list[str]:
        cmd = [
            exe,
            f"--conf-path={conf}",
            "--enable-rpc=true",
            "--rpc-listen-all=false",
            f"--rpc-listen-port={self.rpc_port}",
            "--rpc-allow-origin-all=false",
            "--rpc-save-upload-metadata=false",
            "--daemon=false",
            f"--stop-with-process={os.getpid()}",
            f"--dir={self.data_dir}",
            "--file-allocation=none",
            "--auto-file-renaming=false",
            "--allow-overwrite=false",
            "--max-concurrent-downloads=1000",
            f"--check-certificate={'true' if self.verify_tls else 'false'}",
            "--follow-torrent=false",
            "--follow-metalink=false",
            "--enable-dht=false",
            "--enable-dht6=false",
            "--enable-peer-exchange=false",
            f"--bt-enable-lpd={'true' if self.lpd else 'false'}",
            f"--listen-port={self.listen_port}",
            "--seed-ratio=0.0",
            "--bt-detach-seed-only=true",
            "--bt-max-peers=0",
            f"--bt-tracker-interval={TRACKER_INTERVAL_S}",
            "--bt-request-peer-speed-limit=100M",
            "--bt-save-metadata=false",
            "--bt-stop-timeout=0",
            "--http-accept-gzip=false",
            "--no-netrc=true",
            "--remote-time=false",
            "--console-log-level=warn",
            "--summary-interval=0",
            "--show-console-readout=false",
            "--user-agent=modelget-aria2",
        ]
        if self.interface:
            cmd.append(f"--interface={self.interface}")
            if self.lpd:
                cmd.append(f"--bt-lpd-interface={self.interface}")
        if self.max_rate_bps:
            cmd.append(f"--max-overall-download-limit={int(self.max_rate_bps)}")
        return cmd

    def start(self) -> SwarmNode:
        from modelget import settings
        from modelget.engines import aria2c_missing, aria2c_path

        exe = aria2c_path()
        if exe is None:
            raise aria2c_missing()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix="modelget-swarm-"))
        self._secret = secrets.token_hex(16)
        conf = self.tmp / "aria2.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"rpc-secret={self._secret}\n")
        self.rpc_port = _free_port()
        log = (self.tmp / "aria2c.out").open("wb")
        try:
            self.proc = subprocess.Popen(
                self.command_line(exe, conf),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=settings.child_env(),
                start_new_session=True,
            )
        finally:
            log.close()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out = (self.tmp / "aria2c.out").read_text(errors="replace").strip()
                self.stop()
                raise EngineUnavailableError(
                    f"the swarm's aria2c exited at once: {out.splitlines()[-1] if out else '?'}",
                    hint="check --swarm-interface and --swarm-port (is the port in use?)",
                )
            try:
                self.call("aria2.getVersion")
                return self
            except RPCError:
                time.sleep(0.05)
        self.stop()
        raise EngineUnavailableError("the swarm's aria2c did not answer on its RPC port")

    # --- RPC -----------------------------------------------------------------------------------

    def call(self, method: str, *params: Any) -> Any:
        """One JSON-RPC call to this node's aria2c (:class:`~modelget.engines.aria2.rpc.RPCError`
        when refused or unreachable)."""
        rpc = self._rpc
        if rpc is None or (rpc.port, rpc.secret) != (self.rpc_port, self._secret):
            rpc = self._rpc = Aria2RPC(self.rpc_port, self._secret)
        return rpc.call(method, params)

    def add_torrent(
        self, torrent: bytes, web_seeds: Sequence[str] = (), *, seed_only: bool = False
    ) -> str:
        """Start (or, ``seed_only``, seed a complete ``data_dir/<name>`` without re-hashing it)
        a torrent; ``web_seeds`` are complete URLs of the file. Returns the gid."""
        options = {"bt-seed-unverified": "true", "check-integrity": "true"} if seed_only else {}
        gid: str = self.call(
            "aria2.addTorrent", base64.b64encode(torrent).decode(), list(web_seeds), options
        )
        return gid

    def add_uris(self, gid: str, uris: Sequence[str]) -> None:
        """Add web seeds to a running download (``changeUri`` on its one file)."""
        self.call("aria2.changeUri", gid, 1, [], list(uris))

    def status(self, gid: str) -> dict[str, Any]:
        keys = [
            "status",
            "completedLength",
            "totalLength",
            "uploadLength",
            "errorCode",
            "errorMessage",
            "infoHash",
            "seeder",
            "connections",
        ]
        result: dict[str, Any] = self.call("aria2.tellStatus", gid, keys)
        return result

    def web_seed_speed(self, gid: str) -> int:
        """Bytes/s the download gets from its web seeds now (0 where aria2 says nothing)."""
        try:
            servers = self.call("aria2.getServers", gid)
        except RPCError:
            return 0
        total = 0
        for f in servers or []:
            for s in f.get("servers", []):
                with contextlib.suppress(TypeError, ValueError):
                    total += int(s.get("downloadSpeed", 0))
        return total

    def peer_speed(self, gid: str) -> int:
        """Bytes/s the download gets from BitTorrent peers now."""
        try:
            peers = self.call("aria2.getPeers", gid)
        except RPCError:
            return 0
        total = 0
        for p in peers or []:
            with contextlib.suppress(TypeError, ValueError):
                total += int(p.get("downloadSpeed", 0))
        return total

    def remove(self, gid: str) -> None:
        with contextlib.suppress(RPCError):
            self.call("aria2.forceRemove", gid)

    def seeding(self) -> list[dict[str, Any]]:
        """Every download aria2c still has (active ones: seeding or downloading)."""
        try:
            active: list[dict[str, Any]] = self.call(
                "aria2.tellActive", ["gid", "infoHash", "seeder", "uploadLength"]
            )
        except RPCError:
            return []
        return active

    # --- shutdown ------------------------------------------------------------------------------

    def stop(self, graceful_s: float = 0.0) -> None:
        """Stop aria2c and remove its private directory. Idempotent. ``graceful_s``: first
        remove every download (aria2 tells the tracker ``stopped``, so a seeder's scrape stops
        counting this node) and wait up to this long for them to go; then SIGTERM, SIGKILL."""
        if graceful_s > 0 and self.alive:
            with contextlib.suppress(RPCError):
                for d in self.seeding():
                    self.call("aria2.remove", d["gid"])
                deadline = time.monotonic() + graceful_s
                while time.monotonic() < deadline and self.call("aria2.tellActive", ["gid"]):
                    time.sleep(0.05)
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, sig)
                try:
                    proc.wait(3)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self._rpc is not None:
            self._rpc.close()
            self._rpc = None
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None
