"""The worker's operational HTTP endpoints: ``/metrics``, ``/healthz`` and ``/readyz``.

Orchestrators restart a process whose liveness fails and stop routing work to one whose
readiness fails; Prometheus scrapes ``/metrics``. Dependency checks (database ``SELECT 1``,
Kafka cluster metadata) run in a background thread on a fixed interval, each bounded by a
timeout, so an HTTP probe only reads the last result and never blocks on a dead dependency.
Every check result is also exported as ``unmask_dependency_up{dependency}``.

The server is the standard library's ``wsgiref`` (threaded) around prometheus_client's WSGI
exposition app; the review app mounts :func:`metrics_asgi_app` instead.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, CollectorRegistry, make_asgi_app, make_wsgi_app

from pipeline import metrics

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

    from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

Check = Callable[[], object]
"""A dependency check: returns when the dependency answered, raises (anything) when it did not."""


@dataclass(frozen=True)
class DependencyStatus:
    up: bool
    detail: str
    checked_at: float
    """``time.time()`` when the result was recorded."""


class HealthMonitor:
    """Runs dependency checks and periodic tasks in a daemon thread; answers probes from memory.

    ``checks`` decide readiness: the process is ready only when every check passed on its most
    recent run (nothing has passed before the first run). ``tasks`` (for example the consumer
    lag refresh) run on the same schedule and never affect readiness. Each check or task runs in
    its own worker thread bounded by ``timeout_s``; a check that overruns counts as down, and is
    not started again until the overrunning call has returned.

    Liveness: once :meth:`beat` has been called (by the worker's event loop), the process is live
    only while the last beat is younger than ``stall_after_s``; before the first beat it is live.
    """

    def __init__(self, checks: Mapping[str, Check], tasks: Mapping[str, Callable[[], object]]
                 | None = None, interval_s: float = 5.0, timeout_s: float = 3.0,
                 stall_after_s: float = 60.0) -> None:
        self.checks = dict(checks)
        self.tasks = dict(tasks or {})
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.stall_after_s = stall_after_s
        self._status: dict[str, DependencyStatus] = {}
        self._inflight: dict[str, Future[object]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_beat: float | None = None
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(self.checks) + len(self.tasks)),
                                        thread_name_prefix="unmask-health")

    def start(self) -> None:
        """Start the background thread (first run immediately). Non-blocking."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="unmask-health", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_s + 1)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def beat(self) -> None:
        """Record that the event loop is making progress (called periodically from it)."""
        self._last_beat = time.monotonic()

    def run_once(self) -> dict[str, DependencyStatus]:
        """Run every check and task once (blocking, at most about ``timeout_s``)."""
        started = {name: self._submit(name, fn) for name, fn in
                   [*self.checks.items(), *self.tasks.items()]}
        deadline = time.monotonic() + self.timeout_s
        for name, future in started.items():
            error = self._wait(future, deadline)
            if name in self.checks:
                self._record(name, error)
            elif error is not None:
                log.warning("health task %s failed: %s", name, error)
        return self.status()

    def status(self) -> dict[str, DependencyStatus]:
        with self._lock:
            return dict(self._status)

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """``(ready, body)``; body lists each dependency with ``up`` and ``detail``."""
        status = self.status()
        deps = {name: {"up": s.up, "detail": s.detail, "checked_at": s.checked_at}
                for name, s in status.items()}
        for name in self.checks:
            deps.setdefault(name, {"up": False, "detail": "not checked yet", "checked_at": None})
        down = sorted(name for name, d in deps.items() if not d["up"])
        return not down, {"status": "ready" if not down else "not ready", "down": down,
                          "dependencies": deps}

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        if self._last_beat is None:
            return True, {"status": "alive"}
        age = time.monotonic() - self._last_beat
        alive = age < self.stall_after_s
        return alive, {"status": "alive" if alive else "stalled",
                       "seconds_since_event_loop_beat": round(age, 3)}

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - the monitor thread must survive anything
                log.exception("health check round failed")
            self._stop.wait(self.interval_s)

    def _submit(self, name: str, fn: Callable[[], object]) -> Future[object] | None:
        previous = self._inflight.get(name)
        if previous is not None and not previous.done():
            return None
        future = self._pool.submit(fn)
        self._inflight[name] = future
        return future

    def _wait(self, future: Future[object] | None, deadline: float) -> str | None:
        if future is None:
            return f"previous check still running after {self.timeout_s:g}s"
        try:
            future.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            return f"timed out after {self.timeout_s:g}s"
        except Exception as exc:  # noqa: BLE001 - any failure means the dependency is down
            return (f"{type(exc).__name__}: {exc}".splitlines() or [type(exc).__name__])[0][:300]
        return None

    def _record(self, name: str, error: str | None) -> None:
        status = DependencyStatus(up=error is None, detail=error or "ok", checked_at=time.time())
        with self._lock:
            before = self._status.get(name)
            self._status[name] = status
        metrics.DEPENDENCY_UP.labels(name).set(1 if status.up else 0)
        if before is None or before.up != status.up:
            level = logging.INFO if status.up else logging.WARNING
            log.log(level, "dependency %s is %s", name, "up" if status.up else "down",
                    extra={"dependency": name, "detail": status.detail})


def database_check(engine: Engine) -> Check:
    """``SELECT 1`` on a pooled connection of ``engine``."""
    from sqlalchemy import text

    def check() -> None:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1")).scalar_one()

    return check


def health_wsgi_app(monitor: HealthMonitor,
                    registry: CollectorRegistry = REGISTRY) -> WSGIApplication:
    """WSGI app: ``/healthz`` (liveness), ``/readyz`` (readiness, 503 when a dependency is
    down), ``/metrics`` (Prometheus exposition, text or OpenMetrics, gzip when asked)."""
    exposition = make_wsgi_app(registry)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path == "/metrics":
            exposed: Iterable[bytes] = exposition(environ, start_response)
            return exposed
        if path in ("/healthz", "/readyz"):
            ok, body = monitor.liveness() if path == "/healthz" else monitor.readiness()
            payload = json.dumps(body).encode()
            status = "200 OK" if ok else "503 Service Unavailable"
            start_response(status, [("Content-Type", "application/json"),
                                    ("Content-Length", str(len(payload))),
                                    ("Cache-Control", "no-store")])
            return [payload]
        payload = b"not found: try /metrics, /healthz or /readyz\n"
        start_response("404 Not Found", [("Content-Type", "text/plain"),
                                         ("Content-Length", str(len(payload)))])
        return [payload]

    return app


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return None


class HealthServer:
    """The endpoints of :func:`health_wsgi_app` served from a daemon thread."""

    def __init__(self, monitor: HealthMonitor, port: int, addr: str = "0.0.0.0",  # noqa: S104
                 registry: CollectorRegistry = REGISTRY) -> None:
        self._server = make_server(addr, port, health_wsgi_app(monitor, registry),
                                   server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
        self.port: int = self._server.server_port
        """The bound port (useful when ``port`` was 0)."""
        self._thread = threading.Thread(target=self._server.serve_forever, name="unmask-http",
                                        daemon=True)

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def metrics_asgi_app(registry: CollectorRegistry = REGISTRY) -> Any:
    """ASGI app serving the Prometheus exposition; mount it in the review app:
    ``app.mount("/metrics", metrics_asgi_app())``."""
    return make_asgi_app(registry)
