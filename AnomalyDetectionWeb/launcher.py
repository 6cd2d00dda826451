"""A class at one URL: each visit to the launcher gets a server process of its own.

``GET /`` hands the visitor a ready session server (one is kept warm, so nobody waits for a
start) and redirects the browser to it; at ``max_sessions`` live sessions the page says the class
is full. Each session server stops itself after ``idle_timeout_s`` without a connected page, and
the launcher forgets it. ``GET /sessions`` lists the live ones (JSON), for a teacher or a test.
Standard library only: the launcher itself holds no scene and no model.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, List, Optional

__all__ = ["ClassFull", "Launcher", "SessionFailed", "SessionProcess"]

#: Seconds a session server may take to start (imports, the scene, the views) before it counts as failed.
START_TIMEOUT_S = 120


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class ClassFull(RuntimeError):
    """Every session slot is taken."""


class SessionFailed(RuntimeError):
    """A session server exited or did not become ready in time."""


@dataclass
class SessionProcess:
    """One session server: its port, its process and when it was handed to a visitor."""

    port: int
    process: subprocess.Popen
    started: float = field(default_factory=time.time)
    assigned: Optional[float] = None
    ready: threading.Event = field(default_factory=threading.Event)

    def alive(self) -> bool:
        return self.process.poll() is None


class Launcher:
    """The class's front door; see the module docstring."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8080, max_sessions: int = 8,
                 idle_timeout_s: float = 1800, model_paths: Optional[List[Path]] = None, device: str = "auto",
                 max_upload_mb: float = 300, warm_spares: int = 1) -> None:
        if max_sessions < 1:
            raise ValueError(f"--max-sessions must be at least 1, not {max_sessions}")
        self.host, self.port = host, port
        self.max_sessions, self.idle_timeout_s, self.warm_spares = max_sessions, idle_timeout_s, warm_spares
        self.session_args = ["--device", device, "--idle-timeout", str(idle_timeout_s),
                             "--max-upload-mb", str(max_upload_mb)]
        if model_paths:
            self.session_args += ["--model", *[str(p) for p in model_paths]]
        self._lock = threading.Lock()
        self._sessions: List[SessionProcess] = []
        self._httpd: Optional[ThreadingHTTPServer] = None

    # ----------------------------------------------------------------------------- sessions

    def _start_session(self) -> SessionProcess:
        port = free_port(self.host)
        command = [sys.executable, "-m", "AnomalyDetectionWeb.server", "--port", str(port), "--host", self.host,
                   *self.session_args]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=None, text=True,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
        session = SessionProcess(port, process)

        def watch() -> None:  # READY on stdout; the rest of its output is drained so it never blocks
            for line in process.stdout:
                if line.startswith("READY"):
                    session.ready.set()

        threading.Thread(target=watch, daemon=True).start()
        return session

    def _reap(self) -> None:
        with self._lock:
            self._sessions = [s for s in self._sessions if s.alive()]
            spares = [s for s in self._sessions if s.assigned is None]
            while len(spares) < self.warm_spares and len(self._sessions) < self.max_sessions:
                session = self._start_session()
                self._sessions.append(session)
                spares.append(session)

    def assign(self) -> SessionProcess:
        """A ready session server for a new visitor.

        Raises :class:`ClassFull` at ``max_sessions`` and :class:`SessionFailed` when the server
        does not start (its error is on the launcher's terminal).
        """
        self._reap()
        with self._lock:
            spares = [s for s in self._sessions if s.assigned is None]
            if not spares:
                if len(self._sessions) >= self.max_sessions:
                    raise ClassFull(f"the class is full ({self.max_sessions} sessions); try again when someone leaves")
                spares = [self._start_session()]
                self._sessions.append(spares[0])
            session = spares[0]
            session.assigned = time.time()
        if not session.ready.wait(START_TIMEOUT_S) or not session.alive():
            session.process.kill()
            raise SessionFailed("the session server did not start; its error is in the launcher's terminal "
                                "(scripts/install_browser.sh lists the system packages it needs)")
        threading.Thread(target=self._reap, daemon=True).start()  # warm the next spare
        return session

    def sessions(self) -> List[Dict[str, object]]:
        self._reap()
        with self._lock:
            return [{"port": s.port, "pid": s.process.pid, "assigned": s.assigned is not None,
                     "ready": s.ready.is_set(), "started": s.started} for s in self._sessions]

    # ---------------------------------------------------------------------------------- HTTP

    def serve_forever(self) -> None:
        launcher = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path.startswith("/sessions"):
                    body = json.dumps(launcher.sessions()).encode()
                    self._reply(200, body, "application/json")
                    return
                if self.path not in ("/", "/index.html"):
                    self._reply(404, b"not found", "text/plain")
                    return
                try:
                    session = launcher.assign()
                except (ClassFull, SessionFailed) as exc:
                    code = 503 if isinstance(exc, ClassFull) else 500
                    self._reply(code, f"<html><body><h3>AnomalyDetection: {exc}</h3></body></html>".encode(),
                                "text/html")
                    return
                host = (self.headers.get("Host") or f"{launcher.host}:{launcher.port}").rsplit(":", 1)[0]
                self.send_response(302)
                self.send_header("Location", f"http://{host}:{session.port}/")
                self.end_headers()

            def _reply(self, code: int, body: bytes, kind: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:  # quiet: the URL line is what the teacher needs
                pass

        self._httpd = ThreadingHTTPServer((self.host, self.port), Handler)

        def terminate(*_) -> None:  # a service manager's stop: end the sessions too, not only this process
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, terminate)
        self._reap()  # the first spare starts now
        print(f"AnomalyDetection web app: http://{self.host}:{self._httpd.server_address[1]}/ "
              f"(one session per visit, at most {self.max_sessions}; Ctrl-C stops)", flush=True)
        try:
            self._httpd.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        with self._lock:
            for session in self._sessions:
                session.process.terminate()
            for session in self._sessions:
                try:
                    session.process.wait(10)
                except subprocess.TimeoutExpired:
                    session.process.kill()
            self._sessions = []
        if self._httpd is not None:
            self._httpd.server_close()
