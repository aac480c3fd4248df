"""Real stream servers on 127.0.0.1 for the live-source tests, each bounded in time and frame count.

- :class:`MjpegServer`: an HTTP server (stdlib) sending ``multipart/x-mixed-replace`` JPEG frames, as IP
  cameras do; it can be stopped and started again on the same port (reconnect tests).
- :func:`ffmpeg_mpegts`: ffmpeg (the Debian package; a missing binary fails the test) encoding a test
  pattern and sending MPEG-TS over UDP, or serving it over TCP.
- :class:`RtspServer`: a minimal RTSP server (RFC 2326: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN) sending an
  ffmpeg-made MPEG-TS file as RTP/MP2T (RFC 2250), interleaved over the RTSP connection or over UDP.
- :class:`SilentServer`: accepts TCP connections and never sends a byte (a peer that never answers).
- :func:`moving_shapes`: the synthetic frames, shapes moving on known paths.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np

BOUNDARY = "ndframe"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 free at the time of asking."""
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def moving_shapes(index: int, size: tuple[int, int] = (320, 240)) -> np.ndarray:
    """Frame ``index`` (BGR uint8 ``[H, W, 3]``): a filled circle moving right (2 px a frame, back to the left
    edge every 120 frames at 320x240) and a rectangle moving down (1 px a frame, back every 150 frames) on a grey
    background; the frame index is also drawn as text (each frame differs)."""
    width, height = size
    image = np.full((height, width, 3), 200, np.uint8)
    x = 40 + (2 * index) % (width - 80)
    cv2.circle(image, (x, height // 3), 22, (30, 30, 200), -1)
    y = 30 + index % (height - 90)
    cv2.rectangle(image, (width - 90, y), (width - 40, y + 50), (200, 60, 30), -1)
    cv2.putText(image, str(index), (5, height - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    return image


class MjpegServer:
    """``http://127.0.0.1:PORT/stream.mjpg``: ``frames`` JPEG frames at ``fps`` per connection (``None``: until
    stopped), then the response ends. ``stop()`` / ``start()`` close and reopen the same port."""

    def __init__(self, fps: float = 30.0, frames: int | None = None, port: int | None = None) -> None:
        self.fps, self.frames = fps, frames
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/stream.mjpg"
        self.on_send: Callable[[int], None] | None = None  # called with each frame index as it is sent
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> MjpegServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                self.end_headers()
                start, index = time.monotonic(), 0
                try:
                    while owner._server is not None and (owner.frames is None or index < owner.frames):
                        ok, jpeg = cv2.imencode(".jpg", moving_shapes(index))
                        assert ok
                        if owner.on_send is not None:
                            owner.on_send(index)
                        self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                                         f"Content-Length: {len(jpeg)}\r\n\r\n".encode() + jpeg.tobytes() + b"\r\n")
                        index += 1
                        time.sleep(max(0.0, start + index / owner.fps - time.monotonic()))
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._server.allow_reuse_address = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def __enter__(self) -> MjpegServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class RtspServer:
    """``rtsp://127.0.0.1:PORT/live``: serves ``seconds`` of ffmpeg's 160x120 test pattern at ``fps`` (mpeg2video in
    MPEG-TS, made once into ``folder``) as RTP payload type 33, paced in real time, to one client at a time.

    Transport as the client asks: ``RTP/AVP/TCP;interleaved=a-b`` (RTP framed with ``$`` on the RTSP connection)
    or ``RTP/AVP;unicast;client_port=a-b`` (RTP datagrams to the client's port). ``transports`` records each
    SETUP's choice. The stream ends after the file; every socket closes on :meth:`stop`.
    """

    PACKET = 7 * 188  # MPEG-TS packets per RTP packet: 1316 bytes, under a 1500-byte MTU

    def __init__(self, folder, seconds: float = 6.0, fps: int = 30) -> None:
        path = folder / "rtsp-source.ts"
        if not path.exists():  # made once per folder
            subprocess.run([ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-nostdin", "-f", "lavfi", "-i",
                            f"testsrc=size=160x120:rate={fps}", "-t", str(seconds), "-c:v", "mpeg2video", "-g", "10",
                            "-f", "mpegts", str(path)], check=True, timeout=60)
        data = path.read_bytes()
        self._chunks = [data[i : i + self.PACKET] for i in range(0, len(data), self.PACKET)]
        self._seconds = seconds
        self.transports: list[str] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(4)
        self.port = self._listener.getsockname()[1]
        self.url = f"rtsp://127.0.0.1:{self.port}/live"
        self._stopped = threading.Event()
        self._sockets: list[socket.socket] = [self._listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                connection = self._listener.accept()[0]
            except OSError:
                return
            self._sockets.append(connection)
            threading.Thread(target=self._session, args=(connection,), daemon=True).start()

    def _session(self, connection: socket.socket) -> None:
        lock = threading.Lock()  # RTSP replies and interleaved RTP share the connection
        reader = connection.makefile("rb")
        send: Callable[[bytes], None] | None = None

        def reply(cseq: str, *headers: str, body: bytes = b"") -> None:
            lines = ["RTSP/1.0 200 OK", f"CSeq: {cseq}", *headers]
            if body:
                lines.append(f"Content-Length: {len(body)}")
            with lock:
                connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

        try:
            while not self._stopped.is_set():
                first = reader.read(1)
                if not first:
                    return
                if first == b"$":  # the client's interleaved RTCP: skip it
                    header = reader.read(3)
                    reader.read(int.from_bytes(header[1:3], "big"))
                    continue
                request = [(first + reader.readline()).decode().strip()]
                while line := reader.readline().decode().strip():
                    request.append(line)
                method = request[0].split()[0]
                headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in request[1:])}
                cseq = headers.get("cseq", "0")
                if method == "OPTIONS":
                    reply(cseq, "Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER")
                elif method == "DESCRIBE":
                    sdp = (b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=test pattern\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                           b"m=video 0 RTP/AVP 33\r\na=rtpmap:33 MP2T/90000\r\na=control:track1\r\n")
                    reply(cseq, "Content-Type: application/sdp", f"Content-Base: {self.url}/", body=sdp)
                elif method == "SETUP":
                    transport = headers.get("transport", "")
                    if "TCP" in transport:
                        channel = int(transport.split("interleaved=")[1].split("-")[0])

                        def send(packet: bytes, channel: int = channel) -> None:
                            with lock:
                                connection.sendall(b"$" + bytes([channel]) + len(packet).to_bytes(2, "big") + packet)

                        answer = f"RTP/AVP/TCP;unicast;interleaved={channel}-{channel + 1}"
                        self.transports.append("tcp")
                    else:
                        client = int(transport.split("client_port=")[1].split("-")[0])
                        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                        rtp.bind(("127.0.0.1", 0))
                        self._sockets.append(rtp)

                        def send(packet: bytes, client: int = client, rtp: socket.socket = rtp) -> None:
                            rtp.sendto(packet, ("127.0.0.1", client))

                        port = rtp.getsockname()[1]
                        answer = f"RTP/AVP;unicast;client_port={client}-{client + 1};server_port={port}-{port + 1}"
                        self.transports.append("udp")
                    reply(cseq, f"Transport: {answer}", "Session: 12345678;timeout=60")
                elif method == "PLAY":
                    reply(cseq, "Session: 12345678", "Range: npt=0.000-")
                    if send is not None:
                        threading.Thread(target=self._play, args=(send,), daemon=True).start()
                else:  # TEARDOWN, GET_PARAMETER (keep-alive)
                    reply(cseq, "Session: 12345678")
        except (OSError, ValueError, IndexError):
            return

    def _play(self, send: Callable[[bytes], None]) -> None:
        start = time.monotonic()
        step = self._seconds / len(self._chunks)
        for index, chunk in enumerate(self._chunks):
            if self._stopped.is_set():
                return
            timestamp = int(index * step * 90000) & 0xFFFFFFFF
            header = bytes([0x80, 33]) + (index & 0xFFFF).to_bytes(2, "big") + timestamp.to_bytes(4, "big")
            try:
                send(header + b"\x4e\x44\x49\x31" + chunk)  # SSRC "NDI1"
            except OSError:
                return
            time.sleep(max(0.0, start + (index + 1) * step - time.monotonic()))

    def stop(self) -> None:
        self._stopped.set()
        for sock in self._sockets:
            sock.close()

    def __enter__(self) -> RtspServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class SilentServer:
    """A TCP listener on 127.0.0.1 that accepts connections and never sends anything."""

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(8)
        self.port = self._socket.getsockname()[1]
        self._accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        try:
            while True:
                self._accepted.append(self._socket.accept()[0])
        except OSError:
            return

    def __enter__(self) -> SilentServer:
        return self

    def __exit__(self, *exc) -> None:
        self._socket.close()
        for connection in self._accepted:
            connection.close()


def ffmpeg_binary() -> str:
    """The ffmpeg executable; fails (never skips) when it is missing: ``.ci/run`` installs it."""
    found = shutil.which("ffmpeg")
    assert found is not None, "ffmpeg is not installed (apt-get install -y ffmpeg; .ci/run does)"
    return found


def ffmpeg_mpegts(url: str, seconds: float, fps: int = 30) -> subprocess.Popen:
    """Start ffmpeg sending a 160x120 test pattern at ``fps`` (real time) as MPEG-TS to ``url`` for ``seconds``
    (``udp://127.0.0.1:P`` sends; ``tcp://127.0.0.1:P?listen=1`` waits for the reader). Stop it with :func:`stop`."""
    return subprocess.Popen(
        [ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-f", "lavfi",
         "-i", f"testsrc=size=160x120:rate={fps}", "-t", str(seconds), "-c:v", "mpeg2video", "-g", "10",
         "-f", "mpegts", url],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def stop(process: subprocess.Popen) -> None:
    """End a helper process (terminate, then kill after 3 s)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(3)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(3)
