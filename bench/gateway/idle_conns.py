#!/usr/bin/env python3
"""idle_conns.py PORT N - open N keep-alive connections to 127.0.0.1:PORT,
send one GET /hello on each, read each answer, then keep them all open and
idle.  Prints "ready OK FAILED" on stdout when done, then waits until stdin
is closed (the benchmark reads the proxy's memory meanwhile)."""
import selectors
import socket
import sys

PORT, N = int(sys.argv[1]), int(sys.argv[2])
REQ = b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: idle-bench\r\n\r\n"
BATCH = 500                     # connections in flight at once

sel = selectors.DefaultSelector()
kept, failed, pending = [], 0, {}


def finish_some(block):
    """Read answers; a connection is kept once a whole head has arrived."""
    global failed
    for key, _ in sel.select(timeout=5 if block else 0):
        s = key.fileobj
        try:
            data = s.recv(65536)
        except OSError:
            data = b""
        if not data:
            failed += 1
            sel.unregister(s)
            del pending[s]
            s.close()
            continue
        pending[s] += data
        if b"\r\n\r\n" in pending[s]:
            sel.unregister(s)
            del pending[s]
            kept.append(s)


for i in range(N):
    try:
        s = socket.create_connection(("127.0.0.1", PORT), timeout=10)
        s.sendall(REQ)
        s.setblocking(False)
        pending[s] = b""
        sel.register(s, selectors.EVENT_READ)
    except OSError:
        failed += 1
    while len(pending) >= BATCH:
        finish_some(True)
while pending:
    before = len(pending)
    finish_some(True)
    if len(pending) == before:   # nothing in 5 s: give up on the rest
        failed += len(pending)
        break
print("ready", len(kept), failed, flush=True)
sys.stdin.read()
