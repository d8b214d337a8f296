#!/usr/bin/env python3
"""Keep-alive connections from many addresses, then a newcomer.

usage: many.py PORT PER BLOCKS ADDRESSES NEWCOMER NEW

For each third octet in BLOCKS (comma-separated: 127.0.B.0/24) and each of
ADDRESSES hosts in it (127.0.B.2, .3, ...), opens up to PER connections,
each sending one `GET /healthz`, reading the answer and staying open; an
address stops at its first refusal (429, closed) or timeout (3 s: the
server stopped accepting). Then NEWCOMER (an address) opens NEW
connections the same way. Prints what each got. Start the server with
`--keep-alive-secs 600` so the first connections outlast the run, and
raise this shell's open-file limit (`ulimit -n 20000`).
"""
import collections
import resource
import socket
import sys
import time

port, per = int(sys.argv[1]), int(sys.argv[2])
blocks = [int(b) for b in sys.argv[3].split(",")]
hosts = range(2, 2 + int(sys.argv[4]))
newcomer, new = sys.argv[5], int(sys.argv[6])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
held = []


def connect(source):
    """One connection from `source`: its answer's status (kept open on 200)."""
    sock = socket.socket()
    sock.settimeout(3)
    try:
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        status = data.split(b" ")[1].decode() if data else "closed"
    except socket.timeout:
        status = "timeout"
    except OSError as e:
        status = "error:" + e.__class__.__name__
    if status == "200":
        held.append(sock)
    else:
        sock.close()
    return status


started = time.time()
per_block, outcomes = collections.Counter(), collections.Counter()
for block in blocks:
    for host in hosts:
        for _ in range(per):
            status = connect(f"127.0.{block}.{host}")
            outcomes[status] += 1
            if status != "200":
                break
            per_block[block] += 1
print(f"attacker: {len(held)} held; per block {dict(per_block)}; "
      f"outcomes {dict(outcomes)}; {time.time() - started:.0f}s", flush=True)
print(f"newcomer {newcomer}: {dict(collections.Counter(connect(newcomer) for _ in range(new)))}")
