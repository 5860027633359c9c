"""An HTTP/2 flood (Python's hyperframe and hpack, which come with h2; not our code): on one
plain connection (prior knowledge) it opens `streams` POST /tlsrpt streams at once, whatever
the server allows, none ending its body; then a new connection GETs the MTA-STS policy for
`authority`. Prints JSON: the server's SETTINGS_MAX_CONCURRENT_STREAMS, how many streams it
reset, and the GET's status."""

import json
import socket
import sys

import hpack
from hyperframe.frame import (DataFrame, Frame, GoAwayFrame, HeadersFrame, RstStreamFrame,
                              SettingsFrame)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
host, port, authority, streams = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])


def frames(sock):
    """Frames from `sock` until it closes or falls silent for 5 s."""
    buf = b""
    while True:
        while len(buf) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(buf[:9]))
            if len(buf) < 9 + length:
                break
            frame.parse_body(memoryview(buf[9:9 + length]))
            buf = buf[9 + length:]
            yield frame
        try:
            data = sock.recv(65536)
        except socket.timeout:
            return
        if not data:
            return
        buf += data


def connect():
    sock = socket.create_connection((host, port), timeout=5)
    sock.sendall(PREFACE + SettingsFrame(0).serialize())
    return sock


def headers(sid, fields, end_stream):
    f = HeadersFrame(sid)
    f.data = hpack.Encoder().encode(fields)
    f.flags.add("END_HEADERS")
    if end_stream:
        f.flags.add("END_STREAM")
    return f.serialize()


summary = {"max_concurrent_streams": None, "reset": 0, "get_status": None}
sock = connect()
flood = b"".join(
    headers(1 + 2 * i, [(":method", "POST"), (":path", "/tlsrpt"), (":scheme", "http"),
                        (":authority", authority), ("content-type", "application/tlsrpt+json"),
                        ("content-length", "100000")], False)
    for i in range(streams))
sock.sendall(flood)
for frame in frames(sock):
    if isinstance(frame, SettingsFrame) and "ACK" not in frame.flags:
        summary["max_concurrent_streams"] = frame.settings.get(SettingsFrame.MAX_CONCURRENT_STREAMS)
        sock.sendall(SettingsFrame(0, flags=["ACK"]).serialize())
    elif isinstance(frame, RstStreamFrame):
        summary["reset"] += 1
        if summary["reset"] >= streams - (summary["max_concurrent_streams"] or 0):
            break
    elif isinstance(frame, GoAwayFrame):
        break
sock.close()

sock = connect()
sock.sendall(headers(1, [(":method", "GET"), (":path", "/.well-known/mta-sts.txt"),
                         (":scheme", "http"), (":authority", authority)], True))
decoder = hpack.Decoder()
for frame in frames(sock):
    if isinstance(frame, SettingsFrame) and "ACK" not in frame.flags:
        sock.sendall(SettingsFrame(0, flags=["ACK"]).serialize())
    elif isinstance(frame, HeadersFrame) and frame.stream_id == 1:
        fields = dict(decoder.decode(frame.data))
        summary["get_status"] = int(fields[":status"])
        break
print(json.dumps(summary))
