"""The control plane: one authenticated TCP connection per worker to the global scheduler.

Messages are dicts with an "op" key, pickled by `multiprocessing.connection` (HMAC
handshake with a per-run random key, so a stray client cannot join). The scheduler binds
port 0, so no port is fixed; workers on other hosts connect to its advertised address.
Worker timestamps are their own `time.monotonic()`; the scheduler measures each worker's
clock offset at start-up (NTP-style ping) and converts.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from multiprocessing.connection import Client, Connection

AUTHKEY_ENV = "TESTBED_AUTHKEY"


class Channel:
    """A Connection with a send lock (sends may come from more than one thread)."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self._lock = threading.Lock()
        self.last_sent = time.monotonic()

    def send(self, msg: dict) -> None:
        with self._lock:
            self.conn.send(msg)
            self.last_sent = time.monotonic()

    def poll(self, timeout_s: float = 0.0) -> bool:
        return self.conn.poll(timeout_s)

    def recv(self) -> dict:
        return self.conn.recv()

    def fileno(self) -> int:
        return self.conn.fileno()

    def close(self) -> None:
        try:
            self.conn.close()
        except OSError:
            pass


def no_delay(conn: Connection) -> Connection:
    """Turn off Nagle's algorithm: small control messages must not wait for ACKs (40 ms)."""
    s = socket.fromfd(conn.fileno(), socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    finally:
        s.close()
    return conn


def parse_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"scheduler address {text!r} must be HOST:PORT")
    return host.strip("[]"), int(port)


def connect(address: str, authkey_hex: str | None = None) -> Channel:
    key = authkey_hex or os.environ.get(AUTHKEY_ENV)
    if not key:
        raise ValueError(f"no authkey: set {AUTHKEY_ENV} (the launcher prints it for remote workers)")
    return Channel(no_delay(Client(parse_address(address), family="AF_INET", authkey=bytes.fromhex(key))))


def clock_offset(samples: list[tuple[float, float, float]]) -> float:
    """Worker clock minus scheduler clock from (sent, worker_time, received) samples:
    the sample with the shortest round trip, assuming symmetric delays."""
    sent, worker, received = min(samples, key=lambda s: s[2] - s[0])
    return worker - (sent + received) / 2.0
