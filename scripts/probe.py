#!/usr/bin/env python3
"""Asks a server one real protocol question; exit 0 only on a well-formed answer.

Standard library only, so the stack script can use it before any virtualenv exists.

    probe.py kafka HOST PORT    ApiVersions, expects error_code 0; then Metadata (all topics),
                                expects a controller and a leader for every partition (after
                                a restart a broker answers before its partitions are led)
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


def _kafka_request(sock: socket.socket, api_key: int, version: int, correlation: int, payload: bytes) -> bytes:
    client_id = b"stack-probe"
    body = struct.pack(">hhih", api_key, version, correlation, len(client_id)) + client_id + payload
    sock.sendall(struct.pack(">i", len(body)) + body)
    (size,) = struct.unpack(">i", _recv_exact(sock, 4))
    answer = _recv_exact(sock, size)
    if struct.unpack(">i", answer[:4])[0] != correlation:
        raise RuntimeError("answer to another request")
    return answer[4:]


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, fmt: str) -> tuple:
        values = struct.unpack_from(fmt, self.data, self.at)
        self.at += struct.calcsize(fmt)
        return values

    def string(self) -> str:
        (n,) = self.take(">h")
        if n < 0:
            return ""
        self.at += n
        return self.data[self.at - n:self.at].decode()


def kafka(host: str, port: int) -> None:
    with socket.create_connection((host, port), timeout=3) as s:
        (error,) = struct.unpack(">h", _kafka_request(s, 18, 0, 7, b"")[:2])      # ApiVersions v0
        if error != 0:
            raise RuntimeError(f"ApiVersions answered error {error}")
        r = _Reader(_kafka_request(s, 3, 1, 8, struct.pack(">i", -1)))          # Metadata v1, all topics
    (brokers,) = r.take(">i")
    for _ in range(brokers):
        r.take(">i"), r.string(), r.take(">i"), r.string()                     # id, host, port, rack
    (controller,) = r.take(">i")
    if brokers == 0 or controller < 0:
        raise RuntimeError("no controller yet")
    waiting = []
    (topics,) = r.take(">i")
    for _ in range(topics):
        (topic_error,) = r.take(">h")
        name = r.string()
        r.take(">?")
        (partitions,) = r.take(">i")
        for _ in range(partitions):
            part_error, index, leader = r.take(">hii")
            for _ in range(2):                                                  # replicas, isr
                (n,) = r.take(">i")
                r.take(f">{max(n, 0)}i")
            if part_error != 0 or leader < 0:
                waiting.append(f"{name}/{index}")
        if topic_error != 0 and partitions == 0:
            waiting.append(name)
    if r.at != len(r.data):
        raise RuntimeError("malformed Metadata answer")
    if waiting:
        raise RuntimeError(f"{len(waiting)} partitions without a leader yet, e.g. {waiting[0]}")


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
