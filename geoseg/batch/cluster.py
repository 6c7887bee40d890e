"""The dask side of a batch: a local cluster sized to the machine, or an existing scheduler.

A local cluster has one single-threaded worker process per GPU (each pinned to its GPU with
``CUDA_VISIBLE_DEVICES``, so its ``cuda`` device, and ``device="auto"``, is that GPU), else one
per CPU core; each worker gets its share of the cores for torch/BLAS threads and of the memory.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import socket
from collections.abc import Iterator
from typing import Any

from geoseg.errors import ConfigError

__all__ = [
    "connect",
    "dashboard_link",
    "dask_setup",
    "gpu_count",
    "start_local_cluster",
    "worker_name",
    "worker_specs",
]

logger = logging.getLogger(__name__)


def gpu_count() -> int:
    """Number of CUDA devices visible to this process (0 without CUDA)."""
    try:
        import torch

        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except Exception:  # pragma: no cover - a broken CUDA install counts as none
        return 0


def worker_specs(n_workers: int, *, gpus: int, cpus: int, memory: int) -> dict[str, Any]:
    """Per-worker settings of the local cluster (pure; the ``Nanny`` options of each worker).

    Each worker is one process with one task thread, ``cpus // n_workers`` torch/BLAS threads
    and ``memory // n_workers`` bytes of memory; with GPUs, worker ``i`` sees only GPU
    ``i % gpus`` (``CUDA_VISIBLE_DEVICES``), so its ``cuda`` device is that GPU.
    """
    threads = str(max(1, cpus // n_workers))
    specs = {}
    for i in range(n_workers):
        env = {
            "OMP_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
            "OPENBLAS_NUM_THREADS": threads,
        }
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(i % gpus)
        specs[f"geoseg-{i}"] = {
            "nthreads": 1,
            "env": env,
            "memory_limit": max(1, memory // n_workers),
            "host": "127.0.0.1",
        }
    return specs


def dask_setup(worker: Any) -> None:
    """Preload of the local cluster's worker processes: leave Ctrl-C to the command.

    A terminal's Ctrl-C reaches every process of the group; the workers ignore it, and the
    command closes its cluster (and so its workers) as it ends: no worker dies half-way
    through a write, nor prints its own traceback.
    """
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def start_local_cluster(n_workers: int | None, *, cap: int | None = None) -> Any:
    """A local cluster of single-threaded worker processes sized to this machine.

    One worker per GPU (pinned, see :func:`worker_specs`), else one per CPU core; never more
    than ``cap``. Use it as a context manager.
    """
    from distributed import Nanny, Scheduler, SpecCluster
    from distributed.system import MEMORY_LIMIT

    gpus = gpu_count()
    cpus = os.cpu_count() or 1
    n = n_workers if n_workers is not None else (gpus or cpus)
    n = max(1, min(n, cap) if cap is not None else n)
    specs = worker_specs(n, gpus=gpus, cpus=cpus, memory=int(MEMORY_LIMIT))
    logger.info("starting a local dask cluster of %d worker process(es), %d GPU(s)", n, gpus)
    return SpecCluster(
        workers={
            name: {
                "cls": Nanny,
                "options": {**opts, "silence_logs": logging.ERROR, "preload": [__name__]},
            }
            for name, opts in specs.items()
        },
        scheduler={
            "cls": Scheduler,
            "options": {"host": "127.0.0.1", "dashboard_address": ":8787"},
        },
        silence_logs=logging.ERROR,
        name="geoseg-batch",
    )


@contextlib.contextmanager
def connect(
    scheduler: str | None, *, n_workers: int | None = None, cap: int | None = None
) -> Iterator[Any]:
    """A :class:`distributed.Client` of ``scheduler``, or of a new local cluster when ``None``.

    The local cluster (see :func:`start_local_cluster`) is closed on exit, also on an
    interrupt (``KeyboardInterrupt``, which :func:`geoseg.cli.main` also raises on
    ``SIGTERM``): its worker processes end with the command, quietly.

    Raises:
        ConfigError: the scheduler cannot be reached.
    """
    from distributed import Client

    with contextlib.ExitStack() as stack:
        if scheduler is not None:
            try:
                client = stack.enter_context(Client(scheduler, timeout="30s"))
            except OSError as err:
                raise ConfigError(
                    f"cannot reach the dask scheduler at {scheduler!r} ({err}); check --scheduler"
                ) from err
        else:
            cluster = stack.enter_context(start_local_cluster(n_workers, cap=cap))
            client = stack.enter_context(Client(cluster))
        try:
            yield client
        except KeyboardInterrupt:
            # Ctrl-C reached the workers too: the cluster still closes (the stack below), but
            # their half-finished shutdown is not the user's business: no tracebacks from it
            for name in ("distributed", "tornado", "asyncio"):
                logging.getLogger(name).setLevel(logging.CRITICAL)
            raise


def dashboard_link(client: Any) -> str | None:
    """The dask dashboard address of ``client`` (noting when bokeh is missing to serve it)."""
    link = getattr(client, "dashboard_link", None)
    if not link:
        return None
    if importlib.util.find_spec("bokeh") is None:
        return f"{link} (not served: install bokeh>=3.1 for the dashboard)"
    return str(link)


def worker_name() -> str:
    """Address of the dask worker running this code (``host:pid`` outside a worker)."""
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return f"{socket.gethostname()}:{os.getpid()}"
