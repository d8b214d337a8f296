#!/usr/bin/env python3
"""Requests without a valid key from one address, as a flood sends them.

usage: flood.py PORT TOTAL CONNECTIONS [SOURCE_ADDRESS=127.0.0.2]

TOTAL requests `GET /api/acsp/threads` with a made-up login key, spread
over CONNECTIONS keep-alive connections from SOURCE_ADDRESS (any of
127.0.0.0/8 binds on Linux), 16 pipelined at a time. Prints the statuses
seen. Compare the server's log size before and after (docs/operations.md,
"Floods").
"""
import collections
import socket
import sys
import threading

port, total, conns = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
source = sys.argv[4] if len(sys.argv) > 4 else "127.0.0.2"
request = (b"GET /api/acsp/threads HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nk_"
           + b"F" * 43 + b"\r\n\r\n")
counts = collections.Counter()
lock = threading.Lock()


def answers(sock, expected):
    """Reads `expected` answers (head and Content-Length body); their statuses."""
    buf, seen = b"", collections.Counter()
    while sum(seen.values()) < expected:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
        while (end := buf.find(b"\r\n\r\n")) >= 0:
            head = buf[:end].decode()
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            if len(buf) < end + 4 + length:
                break
            seen[head.split(" ")[1]] += 1
            buf = buf[end + 4 + length:]
    return seen


def worker(n):
    sock, done = None, 0
    while done < n:
        if sock is None:
            sock = socket.socket()
            sock.bind((source, 0))
            sock.connect(("127.0.0.1", port))
        batch = min(16, n - done)
        sock.sendall(request * batch)
        seen = answers(sock, batch)
        with lock:
            counts.update(seen)
        got = sum(seen.values())
        done += got
        if got < batch:  # the server closed the connection: open another
            sock.close()
            sock = None


threads = [threading.Thread(target=worker, args=(total // conns,)) for _ in range(conns)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(dict(counts))
