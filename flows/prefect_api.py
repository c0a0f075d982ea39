"""The Prefect API of `iconicity run`: the one configured (`PREFECT_API_URL`, or the active
Prefect profile's), else a temporary one on loopback that this process starts.

Prefect starts a temporary server by itself when no API is configured, but its client imports
the whole server (about 3 s of CPU on the 2-core machines measured) only to launch it in a
subprocess, and that server records every task run's states as the benchmark runs.
`PrefectAPI` launches the same application (`prefect.server.api.server:create_app` under
uvicorn, the UI off) without importing it here, without the services that a server gone at
the end of the run has no use for (`SERVICES_OFF` says which and why), and points this
process's Prefect settings at it. Like Prefect's own temporary server it keeps its flow runs
in `PREFECT_HOME`'s database and stops when this process exits.

>>> PrefectAPI(log_file=None).url is None  # nothing is started before `start()`
True
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

# Background services that a temporary server, gone when the run ends, has no use for: those
# of schedules and work pools (the scheduler, late runs, the foreman, lease repossession,
# pause expiry, cancellation clean-up and its reconciler), automations (triggers and their
# actions), and the recording of each task run's states and of every event into PREFECT_HOME's
# database: that costs the server about 3 s of CPU per default benchmark (72 task runs) on
# 2 cores, and the run's results and failures are kept by iconicity's store and MLflow. The
# flow runs are still recorded. A variable set in the environment wins over these; for a
# recording server, point PREFECT_API_URL at one (`prefect server start`).
SERVICES_OFF = {
    f"PREFECT_SERVER_SERVICES_{name}_ENABLED": "false"
    for name in ("SCHEDULER", "LATE_RUNS", "FOREMAN", "REPOSSESSOR", "PAUSE_EXPIRATIONS", "CANCELLATION_CLEANUP",
                 "CLEANUP_RECONCILER", "TRIGGERS", "TASK_RUN_RECORDER", "EVENT_PERSISTER")
}

# A flow run's heartbeats let a server's automations mark a crashed run; a temporary server
# runs none (SERVICES_OFF), and each flow waits at its end for the heartbeat thread, which
# checks for the stop once a second (measured: 0.4-0.9 s a flow). None turns them off; no
# environment variable can say None.
FLOW_SETTINGS_OFF = {"flows.heartbeat_frequency": None}

_PORT_IN_USE = 3  # uvicorn's exit status when it cannot bind (another process took the port)


class PrefectAPI:
    """`start()` uses the configured Prefect API or launches a temporary one; `wait_ready()`
    waits for its health check; the temporary server stops at `close()` or at exit."""

    def __init__(self, log_file: str | Path | None, startup_timeout: float = 180.0, host: str = "127.0.0.1") -> None:
        self.log_file = Path(log_file) if log_file else None
        self.startup_timeout = startup_timeout
        self.host = host
        self.url: str | None = None  # the API's URL (".../api")
        self.process: subprocess.Popen | None = None  # the temporary server, where one was started
        self._previous_url: str | None = None
        self._starting: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self) -> PrefectAPI:
        """The configured API, else a temporary server launched now (not waited for)."""
        # Importing Prefect to read its settings takes seconds, and a server takes longer
        # still to come up: where no variable names an API, the server is launched first and
        # stopped again if the active profile names one.
        if not os.environ.get("PREFECT_API_URL"):
            self._launch()
        from prefect.settings import PREFECT_API_URL

        configured = PREFECT_API_URL.value()
        if configured:
            self._stop_process()
            self.url = str(configured).rstrip("/")
            return self
        if self.process is None:  # a variable Prefect does not read as a URL
            self._launch()
        self._previous_url = os.environ.get("PREFECT_API_URL")
        _point_prefect_at(self.url)
        # After Prefect's own exit hooks, which flush logs and events to this server: atexit
        # runs them in reverse order of registration, and theirs come once the flow starts.
        atexit.register(self.close)
        return self

    def wait_ready(self) -> str:
        """The API's URL once its health check answers; RuntimeError (with the server's last
        words) if it exits or does not answer in `startup_timeout` seconds."""
        if self.process is None:
            return self.url or ""
        deadline = time.monotonic() + self.startup_timeout
        while True:
            status = self.process.poll()
            if status == _PORT_IN_USE:
                self._launch()
                _point_prefect_at(self.url)
                continue
            if status is not None:
                raise RuntimeError(f"Prefect's temporary API exited ({status}): {self._last_words()}")
            if _healthy(self.url):
                return self.url
            if time.monotonic() > deadline:
                raise RuntimeError(f"Prefect's temporary API did not answer in {self.startup_timeout:.0f} s "
                                   f"({self._last_words()})")
            time.sleep(0.1)

    def start_in_background(self) -> None:
        """`start()` then `wait_ready()` on a thread; `ready()` waits for it."""
        def run() -> None:
            try:
                self.start().wait_ready()
            except BaseException as error:  # noqa: BLE001 - raised again by ready()
                self._error = error

        self._starting = threading.Thread(target=run, name="prefect-api", daemon=True)
        self._starting.start()

    def ready(self) -> str:
        """The API's URL once `start_in_background`'s thread is done; its error, if any."""
        if self._starting is not None:
            self._starting.join()
        if self._error is not None:
            raise self._error
        return self.url or ""

    def flow_settings(self) -> contextlib.AbstractContextManager:
        """The settings this process's flows run under: against the temporary server, those of
        `FLOW_SETTINGS_OFF`; against a configured API, Prefect's own."""
        if self.process is None:
            return contextlib.nullcontext()
        from prefect.settings import temporary_settings

        return temporary_settings(updates=FLOW_SETTINGS_OFF)

    def close(self) -> None:
        """Stops the temporary server (if one was started) and restores the settings."""
        if self.process is None:
            return
        atexit.unregister(self.close)
        self._stop_process()
        if self._previous_url is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = self._previous_url
        with contextlib.suppress(Exception):  # at interpreter exit, Prefect may be half torn down
            from prefect.context import refresh_global_settings_context

            refresh_global_settings_context()

    def __enter__(self) -> PrefectAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _stop_process(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _launch(self) -> None:
        port = _free_port(self.host)
        self.url = f"http://{self.host}:{port}/api"
        log = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115 - the child owns it
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app",
                 "--host", self.host, "--port", str(port), "--log-level", "error", "--lifespan", "on"],
                env={"PREFECT_UI_ENABLED": "false", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **SERVICES_OFF,
                     **os.environ},
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        finally:
            if log is not subprocess.DEVNULL:
                log.close()

    def _last_words(self) -> str:
        if self.log_file is None or not self.log_file.exists():
            return "no log"
        lines = [line for line in self.log_file.read_text(errors="replace").splitlines() if line.strip()]
        return lines[-1].strip() if lines else f"nothing in {self.log_file}"


def _point_prefect_at(url: str) -> None:
    """This process's Prefect settings read the environment once, when Prefect is imported:
    set the variable, then have Prefect read it again."""
    from prefect.context import refresh_global_settings_context

    os.environ["PREFECT_API_URL"] = url
    refresh_global_settings_context()


def _free_port(host: str) -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


__all__ = ["FLOW_SETTINGS_OFF", "SERVICES_OFF", "PrefectAPI"]
