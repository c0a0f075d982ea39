"""Triton Inference Server serving the registry's diffusers pipelines.

`build_model_repository` writes a classic Triton model repository from the template in
`triton/` (one folder per model: `config.pbtxt` + `1/model.py`, Python backend, dynamic
batching). `TritonServer` runs the `tritonserver` binary that nvidia-pytriton ships as a
subprocess on that repository, waits until every model is ready (or loads them one after
another while the first ones serve, `load_in_order`), and stops it cleanly.
`iconicity serve triton` (`add_serve_triton_arguments`, `run_serve_triton`) runs one until
SIGTERM or SIGINT.

>>> import tempfile
>>> from services.generator.models import get_model
>>> repo = build_model_repository([get_model("tiny-sd")], tempfile.mkdtemp(), models_root=tempfile.mkdtemp())
>>> sorted(str(p.relative_to(repo)) for p in repo.rglob("*") if p.is_file())
['tiny-sd/1/model.py', 'tiny-sd/config.pbtxt']
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from string import Template

from services.common.machine import usable_cpus
from services.generator.client import RECONNECT_BACKOFF_MS
from services.generator.models import REGISTRY, ModelConfig, resolve_models

TEMPLATE_DIR = Path(__file__).resolve().parent / "triton"
DEFAULT_MAX_BATCH_SIZE = 16
DEFAULT_MAX_QUEUE_DELAY_US = 50_000
DEFAULT_GRPC_PORT = 8001
DEFAULT_HTTP_PORT = 8000


class TritonStartError(RuntimeError):
    """Triton did not start or its models did not become ready; the message ends with the
    tail of the server log."""


def _pbtxt_string(value: str) -> str:
    """`value` escaped for a double-quoted protobuf text-format string."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _cuda_available() -> bool:
    """torch's answer, without importing torch (seconds, before Triton is launched) where no
    GPU device node exists: on Linux CUDA needs /dev/nvidia* (or WSL's /dev/dxg)."""
    if "torch" not in sys.modules and sys.platform.startswith("linux") \
            and not (glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/dev/dxg")):
        return False
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def preferred_batch_sizes(max_batch_size: int) -> list[int]:
    """Batch sizes Triton dispatches at once instead of waiting out the queue delay: with 8
    requests in flight a batch of 8 goes as soon as it is queued, not after the delay spent
    hoping for 16. Nothing below 8: requests arrive one by one, and a preferred 4 was
    dispatched before the rest of the 8 came (mean batch 5, measured).

    >>> preferred_batch_sizes(16), preferred_batch_sizes(3)
    ([8, 16], [3])
    """
    sizes = [b for b in (8, 16, 32, 64, 128) if b < max_batch_size]
    return [*sizes, max_batch_size]


def _instance_kind(instance_kind: str) -> str:
    """KIND_GPU or KIND_CPU; `auto` is KIND_GPU where torch sees a GPU."""
    if instance_kind == "auto":
        instance_kind = "KIND_GPU" if _cuda_available() else "KIND_CPU"
    if instance_kind not in ("KIND_GPU", "KIND_CPU"):
        raise ValueError(f"instance_kind must be auto, KIND_GPU or KIND_CPU, got {instance_kind!r}")
    return instance_kind


def cpu_threads_per_instance(instances: int, cpus: int | None = None) -> int:
    """torch threads for each of `instances` CPU model instances sharing `cpus` (default:
    this process's usable CPUs): an equal share, at least one. torch gives every process
    a thread per core by default, so two model processes on two cores ran four threads
    for two cores: on the default benchmark (then 144 images) their processes took about 70 s
    of CPU, against 32-35 s with a thread each (measured on 2 cores; benchmarks/README).

    >>> cpu_threads_per_instance(2, cpus=2), cpu_threads_per_instance(3, cpus=16), cpu_threads_per_instance(4, cpus=2)
    (1, 5, 1)
    """
    if instances < 1:
        raise ValueError(f"instances must be at least 1, got {instances}")
    return max(1, (cpus or usable_cpus()) // instances)


def model_config_pbtxt(config: ModelConfig, pipeline: str, *, max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
                       max_queue_delay_microseconds: int = DEFAULT_MAX_QUEUE_DELAY_US, instance_kind: str = "auto",
                       instance_count: int = 1, device: str = "auto", generator_device: str = "cpu",
                       cpu_threads: int = 0) -> str:
    """The `config.pbtxt` of `config`, its pipeline read from `pipeline` (a folder or id).
    `cpu_threads`: torch threads of each instance that runs on the CPU (0: torch's
    default, a thread per core)."""
    instance_kind = _instance_kind(instance_kind)
    if cpu_threads < 0:
        raise ValueError(f"cpu_threads must be >= 0, got {cpu_threads}")
    if not 1 <= max_batch_size:
        raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
    if max_queue_delay_microseconds < 0:
        raise ValueError(f"max_queue_delay_microseconds must be >= 0, got {max_queue_delay_microseconds}")
    data = config.to_dict()
    data["pipeline"] = pipeline
    fields = {
        "name": config.name,
        "max_batch_size": str(int(max_batch_size)),
        "max_queue_delay_microseconds": str(int(max_queue_delay_microseconds)),
        "preferred_batch_sizes": ", ".join(str(b) for b in preferred_batch_sizes(max_batch_size)),
        "instance_kind": instance_kind,
        "instance_count": str(int(instance_count)),
        "pipeline": pipeline,
        "pipeline_class": config.pipeline_class or "",
        "dtype": config.dtype,
        "device": device,
        "scheduler": config.scheduler or "",
        "revision": config.revision or "",
        "generator_device": generator_device,
        "cpu_threads": str(int(cpu_threads)),
        "model_config": json.dumps(data, sort_keys=True),
    }
    escaped = {k: v if k in ("max_batch_size", "max_queue_delay_microseconds", "preferred_batch_sizes", "instance_kind",
                             "instance_count")
               else _pbtxt_string(v) for k, v in fields.items()}
    return Template((TEMPLATE_DIR / "config.pbtxt").read_text(encoding="utf-8")).substitute(escaped)


def build_model_repository(models: Sequence[ModelConfig], dest: str | os.PathLike[str], *,
                           models_root: str | os.PathLike[str] | None = None, instance_kind: str = "auto",
                           instance_count: int = 1, cpu_threads: int | str = "auto", **options) -> Path:
    """Write a Triton model repository with one model per config into `dest` and return it.

    Tiny pipelines (`tiny:<name>`) are built first (or reused) under `models_root` and the
    model reads them from that folder. `cpu_threads` is each CPU instance's torch thread
    count; `auto` shares the usable CPUs equally among the repository's CPU instances
    (`cpu_threads_per_instance`), and leaves GPU instances on torch's default. `options` go
    to `model_config_pbtxt` (max_batch_size, max_queue_delay_microseconds, device,
    generator_device). Existing folders of the same models are replaced; others are left.
    """
    from services.generator.pipelines import pipeline_source

    instance_kind = _instance_kind(instance_kind)
    if cpu_threads == "auto":
        cpu_threads = cpu_threads_per_instance(len(models) * instance_count) \
            if instance_kind == "KIND_CPU" and models else 0
    options.update(instance_kind=instance_kind, instance_count=instance_count, cpu_threads=int(cpu_threads))
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for config in models:
        pipeline = pipeline_source(config, models_root)
        folder = dest / config.name
        if folder.exists():
            shutil.rmtree(folder)
        (folder / "1").mkdir(parents=True)
        (folder / "config.pbtxt").write_text(model_config_pbtxt(config, pipeline, **options), encoding="utf-8")
        shutil.copy2(TEMPLATE_DIR / "1" / "model.py", folder / "1" / "model.py")
    return dest


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host if host not in ("0.0.0.0", "") else "127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the process that started it dies (Linux), so
    a killed test run or CLI leaves no server behind."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _startup_causes(log: str) -> list[str]:
    r"""The first line of each model load failure in a tritonserver log, else of its server
    creation error: the lines a person looks for first.

    >>> _startup_causes('E1] "failed to load ' + "'m'" + r' version 1: ValueError: \"x\" bad\n\nAt:\n  f.py"')
    ['failed to load \'m\' version 1: ValueError: "x" bad']
    """
    loads: list[str] = []
    others: list[str] = []
    for line in log.splitlines():
        for marker, found in (("failed to load '", loads), ("error: creating server: ", others)):
            at = line.find(marker)
            if at < 0 or (found is loads and " version " not in line):
                continue
            cause = line[at:].split("\\n")[0].rstrip('"').strip().replace('\\"', '"')
            if cause not in found:
                found.append(cause)
    return loads or others


def _pytriton_dist() -> Path:
    """nvidia-pytriton's package folder, found without importing it: its client pulls in
    tritonclient's HTTP client and aiohttp (~0.7 s) for nothing this module uses."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonStartError("nvidia-pytriton is not installed (pip install 'iconicity[generator]'): "
                               "it ships the tritonserver binary")
    return Path(next(iter(spec.submodule_search_locations))).resolve()


class TritonServer:
    """The bundled `tritonserver` serving `repository`, as a context manager.

    Ports of 0 are replaced by free ones at `start`; they are kept across `restart`.
    `grpc_url` (host:port, as tritonclient takes it) is what clients connect to. `models`
    are the repository's models to load (default: all); `env` adds to the environment of
    the server and its Python backends (e.g. HF_HUB_OFFLINE=1). The server runs in its own
    process group and, when started from the main thread, is sent SIGTERM if this process
    dies.
    """

    def __init__(self, repository: str | os.PathLike[str], models: Sequence[str] | None = None, *,
                 host: str = "127.0.0.1", grpc_port: int = 0, http_port: int = 0, metrics_port: int | None = None,
                 startup_timeout: float = 300.0, exit_timeout: int = 10, log_verbose: int = 0,
                 workdir: str | os.PathLike[str] | None = None, extra_args: Sequence[str] = (),
                 env: Mapping[str, str] | None = None):
        self.repository = Path(repository).resolve()
        if models is None:
            models = sorted(p.parent.name for p in self.repository.glob("*/config.pbtxt"))
        self.models = list(models)
        self.host = host
        self.grpc_port = grpc_port
        self.http_port = http_port
        self.metrics_port = metrics_port
        self.startup_timeout = startup_timeout
        self.exit_timeout = exit_timeout
        self.log_verbose = log_verbose
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        self._workdir_arg = Path(workdir) if workdir else None
        self._workdir: Path | None = None
        self._own_workdir = False
        self._process: subprocess.Popen | None = None
        self._log_file = None
        self._load_at_launch = True

    # -- addresses -------------------------------------------------------------------
    @property
    def _client_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host

    @property
    def grpc_url(self) -> str:
        """`host:port` of the gRPC endpoint (tritonclient.grpc's `url`)."""
        return f"{self._client_host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"{self._client_host}:{self.http_port}"

    @property
    def log_path(self) -> Path | None:
        return self._workdir / "tritonserver.log" if self._workdir else None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def is_alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        path = self.log_path
        if path is None or not path.exists():
            return ""
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
        return "\n".join(text[-lines:])

    # -- lifecycle -------------------------------------------------------------------
    def _prepare(self) -> tuple[list[str], dict[str, str]]:
        dist = _pytriton_dist() / "tritonserver"
        binary = dist / "bin" / "tritonserver"
        version = f"{sys.version_info[0]}.{sys.version_info[1]}"
        stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
        if not binary.exists():
            raise TritonStartError(f"no tritonserver binary at {binary}")
        if not stub.exists():
            raise TritonStartError(f"nvidia-pytriton ships no Python backend stub for Python {version} ({stub})")
        if self._workdir is None:
            if self._workdir_arg is not None:
                self._workdir = self._workdir_arg
                self._workdir.mkdir(parents=True, exist_ok=True)
            else:
                self._workdir = Path(tempfile.mkdtemp(prefix="iconicity-triton-"))
                self._own_workdir = True
        backends = self._workdir / "backends"
        python_backend = backends / "python"
        if not (python_backend / "triton_python_backend_stub").exists():
            shutil.rmtree(backends, ignore_errors=True)
            shutil.copytree(dist / "backends", backends, ignore=shutil.ignore_patterns("__pycache__"))
            shutil.copy2(stub, python_backend / "triton_python_backend_stub")
        env = {**os.environ, **self.env}
        # The stub embeds this interpreter: its libpython must come first, not the system's
        # (a pyenv Python otherwise fails at model load, see ENVIRONMENT.md).
        libs = [sysconfig.get_config_var("LIBDIR") or "", str(dist.parent.parent / "nvidia_pytriton.libs"),
                str(dist / "external_libs")]
        env["LD_LIBRARY_PATH"] = ":".join([p for p in libs if p and Path(p).is_dir()] +
                                          ([env["LD_LIBRARY_PATH"]] if env.get("LD_LIBRARY_PATH") else []))
        # The stub finds its Python (and this virtualenv's packages) through PATH, and our
        # package through PYTHONPATH even where it is not installed.
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
        project_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join([project_root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        env.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
        command = [
            str(binary),
            f"--model-repository={self.repository}",
            f"--backend-directory={backends}",
            "--model-control-mode=explicit",
            *[f"--load-model={name}" for name in (self.models if self._load_at_launch else [])],
            "--strict-readiness=true",
            "--exit-on-error=true",
            f"--exit-timeout-secs={int(self.exit_timeout)}",
            f"--log-verbose={int(self.log_verbose)}",
            "--allow-http=true",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            "--allow-grpc=true",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
        ]
        if self.metrics_port is None:
            command.append("--allow-metrics=false")
        else:
            command += ["--allow-metrics=true", f"--metrics-address={self.host}", f"--metrics-port={self.metrics_port}"]
        command += self.extra_args
        return command, env

    def start(self) -> TritonServer:
        """Start the server and wait until every model is ready; TritonStartError (with the
        log tail) if it exits or is not ready within `startup_timeout`."""
        self.launch()
        self.wait_ready()
        return self

    def launch(self, *, load: bool = True) -> TritonServer:
        """Start the server process without waiting for its models (`wait_ready` does); with
        `load=False` it starts with none of them loaded (`load_in_order` loads them)."""
        if self.is_alive():
            return self
        self._load_at_launch = load
        if not self.models:
            raise TritonStartError(f"no models to serve in {self.repository}")
        missing = [m for m in self.models if not (self.repository / m / "config.pbtxt").exists()]
        if missing:
            raise TritonStartError(f"models not in {self.repository}: {', '.join(missing)}")
        if self.grpc_port == 0:
            self.grpc_port = _free_port(self.host)
        if self.http_port == 0:
            self.http_port = _free_port(self.host)
        if self.metrics_port == 0:
            self.metrics_port = _free_port(self.host)
        command, env = self._prepare()
        assert self.log_path is not None
        self._log_file = open(self.log_path, "ab")  # closed in stop()
        self._process = subprocess.Popen(
            command, env=env, stdout=self._log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
            # The death signal follows the starting *thread*: only tie it to the main one.
            preexec_fn=_die_with_parent if threading.current_thread() is threading.main_thread() else None,
        )
        return self

    def wait_ready(self) -> TritonServer:
        """Wait until every model of the launched server is ready; stops it and raises
        TritonStartError (with the log tail) if it exits or is not ready in time."""
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _client(self):
        import tritonclient.grpc as grpcclient

        # gRPC backs off between reconnects (1 s, then 1.6 times longer each time, up to
        # 120 s): polled with the defaults, a server that took 15 s to load its models was
        # found ready 7 s after it was.
        return grpcclient.InferenceServerClient(self.grpc_url, channel_args=[
            ("grpc.initial_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[0]),
            ("grpc.min_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[0]),
            ("grpc.max_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[0])])

    def _wait_ready(self) -> None:
        client = self._client()
        try:
            self._wait_until(lambda: client.is_server_ready() and all(client.is_model_ready(m) for m in self.models),
                             time.monotonic() + self.startup_timeout, f"its models were ready ({', '.join(self.models)})")
        finally:
            client.close()

    def wait_up(self) -> TritonServer:
        """Wait until the launched server answers, its models loaded or not; stops it and
        raises TritonStartError if it exits or does not answer in `startup_timeout` s."""
        client = self._client()
        try:
            self._wait_until(client.is_server_live, time.monotonic() + self.startup_timeout, "it was up")
        except BaseException:
            self.stop()
            raise
        finally:
            client.close()
        return self

    def _wait_until(self, ready: Callable[[], bool], deadline: float, what: str) -> None:
        """Polls `ready()` until it is true; TritonStartError (with the causes found in the
        log, then its tail) if the server exits first or `deadline` passes."""
        while True:
            code = self._process.poll() if self._process else -1
            if code is not None:
                raise self._failure(f"tritonserver exited with code {code} before {what}")
            with contextlib.suppress(Exception):
                if ready():
                    return
            if time.monotonic() > deadline:
                raise self._failure(f"tritonserver not ready after {self.startup_timeout:g} s, before {what}")
            time.sleep(0.25)

    def _failure(self, summary: str, model: str | None = None) -> TritonStartError:
        causes = _startup_causes(self.log_tail(400))
        if model is not None:
            causes = [c for c in causes if f"'{model}'" in c]
        return TritonStartError(summary + "".join(f"; {c}" for c in causes) + f"; log tail:\n{self.log_tail()}")

    def load_in_order(self) -> dict[str, Future]:
        """Launches the server with no model loaded (unless it runs already) and loads the
        models one after another, in order, on a thread; returns each model's future, done
        once the model serves. The first model serves while the next one loads (on a GPU,
        while it is read from disk; on a CPU, without two models' imports competing for the
        cores), and a model that cannot load fails its own future (TritonStartError with
        the cause from the log) while the server goes on serving the others."""
        futures: dict[str, Future] = {}
        for name in self.models:
            futures[name] = Future()
            futures[name].set_running_or_notify_cancel()  # a load in progress cannot be called off
        self.launch(load=False)
        threading.Thread(target=self._load_each, args=(futures,), name="triton-load", daemon=True).start()
        return futures

    def _load_each(self, futures: Mapping[str, Future]) -> None:
        deadline = time.monotonic() + self.startup_timeout
        client = self._client()
        try:
            try:
                self._wait_until(client.is_server_live, deadline, "it was up")
            except TritonStartError as error:
                for future in futures.values():
                    future.set_exception(error)
                return
            for name, future in futures.items():
                try:
                    client.load_model(name, client_timeout=max(1.0, deadline - time.monotonic()))
                except Exception as error:  # noqa: BLE001 - the load's own failure, told to its waiters
                    message = getattr(error, "message", None)
                    reason = message() if callable(message) else str(error)
                    future.set_exception(self._failure(f"model {name!r} did not load: {reason}", model=name))
                else:
                    future.set_result(name)
        finally:
            client.close()

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM, wait (`exit_timeout` + 10 s by default), then SIGKILL the server's
        process group (the server and its Python backend stubs)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=self.exit_timeout + 10 if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if process is not None:
            # Stubs left behind by a killed server share its process group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def restart(self) -> TritonServer:
        """Stop and start again on the same ports."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop, and remove the working folder if this server made it."""
        self.stop()
        if self._own_workdir and self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
            self._own_workdir = False

    def __enter__(self) -> TritonServer:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc) -> None:
        self.close()


# -- iconicity serve triton -----------------------------------------------------------------
def add_serve_triton_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `iconicity serve triton`."""
    parser.add_argument("--models", default="tiny-sd,tiny-flux", metavar="NAMES",
                        help=f"comma-separated registry names (known: {', '.join(REGISTRY)}; default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--grpc-port", type=int, default=DEFAULT_GRPC_PORT,
                        help="gRPC port, 0 for a free one (default: %(default)s)")
    parser.add_argument("--http-port", type=int, default=DEFAULT_HTTP_PORT,
                        help="HTTP port, 0 for a free one (default: %(default)s)")
    parser.add_argument("--metrics-port", type=int, default=None,
                        help="Prometheus metrics port (default: metrics off)")
    parser.add_argument("--repository", type=Path, metavar="DIR",
                        help="write the model repository here (default: a temporary folder)")
    parser.add_argument("--models-root", type=Path, metavar="DIR",
                        help="where tiny pipelines are built (default: $ICONICITY_MODELS or ~/.cache/iconicity/models)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: by instance kind)")
    parser.add_argument("--instance-kind", default="auto", choices=["auto", "KIND_GPU", "KIND_CPU"],
                        help="Triton instance kind (default: KIND_GPU where torch sees a GPU)")
    parser.add_argument("--cpu-threads", type=_cpu_threads, default="auto", metavar="N",
                        help="torch threads of each model instance on the CPU; auto shares the usable CPUs "
                             "among the models (default: %(default)s)")
    parser.add_argument("--max-batch-size", type=int, default=DEFAULT_MAX_BATCH_SIZE,
                        help="largest server-side batch (default: %(default)s)")
    parser.add_argument("--max-queue-delay-us", type=int, default=DEFAULT_MAX_QUEUE_DELAY_US,
                        help="dynamic batching: longest wait for batch mates, microseconds (default: %(default)s)")
    parser.add_argument("--startup-timeout", type=float, default=600.0,
                        help="seconds to wait for the models to load (default: %(default)s)")


def _cpu_threads(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected auto or a whole number >= 1, got {text!r}")
    return value


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def run_serve_triton(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or SIGINT; prints the endpoints once the models are ready."""
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    configs = resolve_models(names)
    options = {"max_batch_size": args.max_batch_size, "max_queue_delay_microseconds": args.max_queue_delay_us,
               "instance_kind": args.instance_kind, "device": args.device, "cpu_threads": args.cpu_threads}
    with contextlib.ExitStack() as stack:
        repository = args.repository or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="iconicity-models-")))
        build_model_repository(configs, repository, models_root=args.models_root, **options)
        previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            server = stack.enter_context(TritonServer(
                repository, [c.name for c in configs], host=args.host, grpc_port=args.grpc_port,
                http_port=args.http_port, metrics_port=args.metrics_port, startup_timeout=args.startup_timeout))
            print(f"triton serving {', '.join(server.models)} on grpc {server.grpc_url} and http {server.http_url} "
                  f"(repository {repository}); SIGTERM or Ctrl-C stops", flush=True)
            while server.is_alive():
                time.sleep(0.5)
            raise RuntimeError(f"tritonserver exited; log tail:\n{server.log_tail()}")
        except KeyboardInterrupt:
            print("triton stopping", flush=True)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    return 0
