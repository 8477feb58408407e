#!/usr/bin/env python3
"""Idle HTTP/1.1 keep-alive clients for the load benchmark's memory figure.

Usage: idle-clients.py HOST PORT COUNT

Opens COUNT connections to HOST:PORT one after another; on each it sends one keep-alive GET /,
reads the whole response (which must be 200) and then leaves the connection open and idle.
When all are open it prints "open COUNT" and waits for a line on standard input. It then counts
the connections the server has not closed meanwhile, prints "still-open N", closes them all
and exits. Any failure is printed to standard error and exits non-zero.
"""

import resource
import select
import socket
import sys

TIMEOUT = 10.0


def read_response(sock, buf):
    """Reads one response from sock (buf holds bytes already read); returns the status and the
    bytes read past the response."""

    def fill():
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed before the response ended")
        return chunk

    while b"\r\n\r\n" not in buf:
        buf += fill()
    head, _, buf = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()

    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            while b"\r\n" not in buf:
                buf += fill()
            size_line, _, buf = buf.partition(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                # Trailer section: lines up to an empty one.
                while True:
                    while b"\r\n" not in buf:
                        buf += fill()
                    line, _, buf = buf.partition(b"\r\n")
                    if not line:
                        return status, buf
            while len(buf) < size + 2:
                buf += fill()
            buf = buf[size + 2 :]
    length = int(headers.get("content-length", "0"))
    while len(buf) < length:
        buf += fill()
    return status, buf[length:]


def main():
    host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = count + 64
    if soft != resource.RLIM_INFINITY and soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            sys.exit(f"idle-clients: {count} connections need {want} descriptors, the limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    request = (
        f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: farmgate-load-idle\r\n"
        "Accept: */*\r\nConnection: keep-alive\r\n\r\n"
    ).encode()
    socks = []
    try:
        for i in range(count):
            sock = socket.create_connection((host, port), timeout=TIMEOUT)
            socks.append(sock)
            sock.sendall(request)
            status, rest = read_response(sock, b"")
            if status != 200:
                raise RuntimeError(f"connection {i + 1}: status {status}")
            if rest:
                raise RuntimeError(f"connection {i + 1}: {len(rest)} bytes after the response")
        print(f"open {len(socks)}", flush=True)
        sys.stdin.readline()

        # A connection the server closed is readable (end of file); an idle open one is not.
        poller = select.poll()
        for sock in socks:
            poller.register(sock, select.POLLIN)
        closed = {fd for fd, _ in poller.poll(0)}
        print(f"still-open {len(socks) - len(closed)}", flush=True)
    except Exception as e:  # noqa: BLE001 - any failure ends the run with its reason
        print(f"idle-clients: {e}", file=sys.stderr, flush=True)
        return 1
    finally:
        for sock in socks:
            sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
