"""What on this machine stands in a process's way before it starts: a port another process
listens on. The message names the setting and the process holding it, read from /proc, so
a second `make run`, a forgotten worker or another service is found without `ss` or `lsof`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from pathlib import Path

PROC = Path("/proc")
COMMAND_CHARS = 80
"""How much of a holder's command line a message shows."""
LISTEN = "0A"
"""The TCP state LISTEN in /proc/net/tcp."""


def port_problem(setting: str, host: str, port: int) -> str | None:
    """Why this process cannot listen on `host:port`, naming `setting` and the holder; None
    when it can (or when the address cannot be tried here: the server reports that itself)."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:
        return None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    return None
                pid = port_holder(port)
                by = f" by {describe_process(pid)}" if pid is not None else ""
                return f"{setting} ({host}:{port}) is in use{by}; stop it or choose another port"
    return None


def port_holder(port: int) -> int | None:
    """The process listening on TCP `port` (any address), if this user may see it."""
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    for pid_dir in PROC.iterdir():
        if not pid_dir.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (pid_dir / "fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:[") and target[8:-1] in inodes:
                        return int(pid_dir.name)
    return None


def describe_process(pid: int) -> str:
    """`pid 123 (python -m pipeline.cli worker)`: the process id and its command, shortened."""
    try:
        argv = (PROC / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return f"pid {pid}"
    words = [a.decode(errors="replace") for a in argv if a]
    if not words:
        return f"pid {pid}"
    words[0] = Path(words[0]).name
    command = " ".join(words)
    if len(command) > COMMAND_CHARS:
        command = command[: COMMAND_CHARS - 3] + "..."
    return f"pid {pid} ({command})"


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            lines = (PROC / "net" / table).read_text().splitlines()[1:]
            for line in lines:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == LISTEN and int(local.rsplit(":", 1)[1], 16) == port:
                    inodes.add(inode)
    return inodes
