#!/usr/bin/env python3
"""Asks a server one real protocol question; exit 0 only on a well-formed answer.

Standard library only, so the stack script can use it before any virtualenv exists.

    probe.py kafka HOST PORT    ApiVersions request, expects error_code 0
    probe.py cql HOST PORT      native-protocol OPTIONS, expects SUPPORTED
    probe.py http URL           GET, expects a 2xx status
"""
import socket
import struct
import sys
import urllib.request


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed mid-answer")
        buf += chunk
    return buf


def kafka(host: str, port: int) -> None:
    client_id = b"stack-probe"
    body = struct.pack(">hhih", 18, 0, 7, len(client_id)) + client_id
    with socket.create_connection((host, port), timeout=3) as s:
        s.sendall(struct.pack(">i", len(body)) + body)
        (size,) = struct.unpack(">i", _recv_exact(s, 4))
        answer = _recv_exact(s, size)
    correlation, error = struct.unpack(">ih", answer[:6])
    if correlation != 7 or error != 0:
        raise RuntimeError(f"ApiVersions answered error {error}")


def cql(host: str, port: int) -> None:
    with socket.create_connection((host, port), timeout=3) as s:
        s.sendall(struct.pack(">BBhBi", 0x04, 0, 1, 0x05, 0))
        version, _flags, _stream, opcode, length = struct.unpack(">BBhBi", _recv_exact(s, 9))
        _recv_exact(s, length)
    if opcode != 0x06:
        raise RuntimeError(f"OPTIONS answered opcode {opcode:#x}, not SUPPORTED")


def http(url: str) -> None:
    with urllib.request.urlopen(url, timeout=3) as resp:
        if not 200 <= resp.status < 300:
            raise RuntimeError(f"HTTP {resp.status}")


def main(argv: list[str]) -> int:
    try:
        if argv[:1] == ["http"] and len(argv) == 2:
            http(argv[1])
        elif len(argv) == 3 and argv[0] in ("kafka", "cql"):
            {"kafka": kafka, "cql": cql}[argv[0]](argv[1], int(argv[2]))
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except (OSError, RuntimeError, struct.error) as exc:
        print(f"{argv[0]}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
