"""A next hop that answers the first MAIL FROM it gets with a 450 of 200 lines of 2,000 bytes
of 0xFF (about 400 KB; each invalid byte becomes a 3-byte U+FFFD when made printable), then
accepts every message. Prints its port, then serves until killed. Not our code: a peer."""

import socket
import socketserver
import sys
import threading

first = threading.Event()


class Hop(socketserver.StreamRequestHandler):
    timeout = 30

    def reply(self, text: bytes) -> None:
        self.wfile.write(text)
        self.wfile.flush()

    def handle(self) -> None:
        self.reply(b"220 hop.test ESMTP\r\n")
        while True:
            line = self.rfile.readline(4096)
            if not line:
                return
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                self.reply(b"250 hop.test\r\n")
            elif verb == b"MAIL":
                if not first.is_set():
                    first.set()
                    junk = b"\xff" * 2000
                    lines = [b"450-" + junk + b"\r\n"] * 199 + [b"450 " + junk + b"\r\n"]
                    self.reply(b"".join(lines))
                else:
                    self.reply(b"250 2.1.0 Ok\r\n")
            elif verb == b"RCPT":
                self.reply(b"250 2.1.5 Ok\r\n")
            elif verb == b"DATA":
                self.reply(b"354 go\r\n")
                while True:
                    body = self.rfile.readline(65536)
                    if not body or body == b".\r\n":
                        break
                self.reply(b"250 2.0.0 Ok: queued\r\n")
            elif verb == b"RSET":
                self.reply(b"250 2.0.0 Ok\r\n")
            elif verb == b"QUIT":
                self.reply(b"221 2.0.0 Bye\r\n")
                return
            else:
                self.reply(b"502 5.5.2 Error: command not recognized\r\n")


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    address_family = socket.AF_INET


with Server(("127.0.0.1", 0), Hop) as server:
    print(server.server_address[1], flush=True)
    sys.stdout.close()
    server.serve_forever()
