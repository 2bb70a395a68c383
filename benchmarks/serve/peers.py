"""The servers `bench_serve.py` compares `procpool serve` with, each an upper-casing
line server: ``python3 peers.py NAME PORT_FILE [WORKERS]``. Each binds 127.0.0.1:0,
writes its port to PORT_FILE once it listens, and serves until SIGTERM.

- ``forking``: ``socketserver.ForkingTCPServer``, a process forked per connection.
- ``threading``: ``socketserver.ThreadingTCPServer``, a thread per connection.
- ``minimal``: a hand-written prefork server, the least a prefork server can do:
  WORKERS processes forked after ``listen``, each ``accept``ing in a loop and serving
  one connection at a time with ``recv`` and ``sendall(data.upper())`` (it does not
  even split lines: upper-casing is the same on any cut of the stream).
"""

from __future__ import annotations

import os
import signal
import socket
import socketserver
import sys


class Upper(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        for line in self.rfile:
            self.wfile.write(line.upper())


def _announce(port_file: str, port: int) -> None:
    tmp = port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(port))
    os.rename(tmp, port_file)


def socketserver_peer(kind: type[socketserver.TCPServer], port_file: str) -> None:
    kind.allow_reuse_address = True
    kind.request_queue_size = 1024
    with kind(("127.0.0.1", 0), Upper) as server:
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
        _announce(port_file, server.server_address[1])
        server.serve_forever()


def minimal(port_file: str, workers: int) -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    pids = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            while True:
                conn, _ = listener.accept()
                while data := conn.recv(65536):
                    conn.sendall(data.upper())
                conn.close()
        pids.append(pid)
    _announce(port_file, listener.getsockname()[1])
    signal.sigwait({signal.SIGTERM})
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM}) if sys.argv[1] == "minimal" else None
    name, port_file = sys.argv[1], sys.argv[2]
    if name == "forking":
        socketserver_peer(socketserver.ForkingTCPServer, port_file)
    elif name == "threading":
        socketserver_peer(socketserver.ThreadingTCPServer, port_file)
    else:
        minimal(port_file, int(sys.argv[3]))
