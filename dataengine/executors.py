"""Executors: the same pure stages run in a local process pool or on a Ray cluster.

A stage does not know which executor runs it. `analyze_video(path, video_id, opts)` is pure: it
reads one video and returns a `VideoResult` (rows plus keyframe JPEG bytes); it never touches the
catalog or its folder. An executor maps it over videos and yields results as they complete; the
driver (`ingest_paths`) stays the only catalog writer.

- `LocalPool`: a spawn-context process pool with crash isolation (a decoder that kills its worker
  gets its video retried alone, then recorded as failed).
- `RayCluster`: one Ray task per video on `--ray local|auto|ADDRESS`. A worker process that dies
  mid-task is retried by Ray (`max_retries`); a bad video is a failed *result*, not an exception,
  so it is never retried forever. A node that cannot read a path returns a failed row naming it.
Ray is imported only here, and only when asked.
"""

from __future__ import annotations

import os
import socket
from abc import ABC, abstractmethod
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Iterator

from .analyze import IngestOptions, VideoResult, analyze_video
from .faults import exit_once

class RayUnavailable(Exception):
    """--ray was asked for but no cluster could be started or reached; the message says which."""


def _crashed(path: str, vid: str, opts: IngestOptions) -> VideoResult:
    return VideoResult(video_id=vid, path=path, size_bytes=os.path.getsize(path), status="failed",
                       error="the decoder crashed on this file", error_kind="decoder crash", split_key=opts.split_key)


def worker_memory_budget(workers: int) -> int:
    """Bytes of data memory each of `workers` analysis processes may use: their sum stays within
    80% of the memory available now, so --workers cannot multiply a hostile file's peak past the
    machine (at least 2 GiB each; $DE_WORKER_MEMORY_MB sets it)."""
    env = os.environ.get("DE_WORKER_MEMORY_MB")
    if env:
        try:
            return max(256, int(env)) * 2**20
        except ValueError:
            pass
    avail = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return 0  # unknown: no limit
    return max(2 * 2**30, int(0.8 * avail / max(1, workers))) if avail else 0


def _limit_memory(budget: int) -> None:
    """Worker initializer: cap the process's data segment (heap and private mappings: what
    decoded frames live in). An allocation past it fails inside this worker; the video is
    recorded as failed and the others go on."""
    if not budget:
        return
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_DATA, (budget, budget))
    except (ImportError, ValueError, OSError):
        pass


def _warm() -> int:
    """Runs in each new worker while the driver opens the catalog and hashes the files: the
    imports a first analysis would otherwise pay after it was handed its video."""
    import cv2  # noqa: F401
    import scenedetect  # noqa: F401

    from . import analyze  # noqa: F401

    return os.getpid()


class Executor(ABC):
    """What ingest asks of a place to analyse videos: `map_videos` yields one VideoResult per
    (path, video id), in any order; `warm` may start workers early (it overlaps with hashing and
    opening the catalog) and `close` ends them. Both default to doing nothing."""

    name = "executor"

    def warm(self, n_videos: int) -> None:
        pass

    def close(self) -> None:
        pass

    @abstractmethod
    def map_videos(self, todo: list[tuple[str, str]], opts: IngestOptions) -> Iterator[VideoResult]:
        """One VideoResult per (path, video id) of `todo`, in any order."""


class LocalPool(Executor):
    name = "local"

    def __init__(self, workers: int | None = None):
        self.workers = workers
        self._ex: ProcessPoolExecutor | None = None
        self._ex_workers = 0

    def _new_pool(self, workers: int) -> ProcessPoolExecutor:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # fork + decoder threads is unsafe; spawn is portable
        return ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_limit_memory,
                                   initargs=(worker_memory_budget(workers),))

    def warm(self, n_videos: int) -> None:
        """Start the worker processes now (interpreter start and imports overlap with the
        driver's own work); map_videos uses them."""
        if n_videos < 1 or self._ex is not None:
            return
        self._ex_workers = max(1, min(self.workers or os.cpu_count() or 1, n_videos))
        self._ex = self._new_pool(self._ex_workers)
        for _ in range(self._ex_workers):
            self._ex.submit(_warm)

    def close(self) -> None:
        if self._ex is not None:
            self._ex.shutdown(wait=False, cancel_futures=True)
            self._ex = None

    def map_videos(self, todo: list[tuple[str, str]], opts: IngestOptions) -> Iterator[VideoResult]:
        from dataclasses import replace

        if not todo:
            self.close()
            return
        workers = max(1, min(self.workers or os.cpu_count() or 1, len(todo)))
        if opts.decode_threads <= 1:  # fewer videos than cores: let each decoder use the spare cores
            opts = replace(opts, decode_threads=max(1, (os.cpu_count() or 1) // workers))
        pending = list(todo)
        while pending:
            crashed: list[tuple[str, str]] = []
            warm = self._ex if self._ex is not None and self._ex_workers >= workers else None
            if warm is None:
                self.close()
            self._ex = None
            with (warm or self._new_pool(workers)) as ex:
                futs = {ex.submit(analyze_video, path, vid, opts): (path, vid) for path, vid in pending}
                for fut in as_completed(futs):
                    try:
                        yield fut.result()
                    except BrokenProcessPool:
                        crashed.append(futs[fut])
            # A decoder can crash a worker outright (segfault on a hostile file). The pool is then
            # broken; the videos in flight are retried one at a time so the culprit is isolated.
            pending = []
            for path, vid in crashed:
                if len(crashed) == 1 or workers == 1:
                    yield _crashed(path, vid, opts)
                else:
                    pending.append((path, vid))
            workers = 1


def _analyze_on_node(path: str, vid: str, opts: IngestOptions) -> VideoResult:
    """The Ray task body: the same pure stage, plus where it ran."""
    import ray

    node = f"{ray.get_runtime_context().get_node_id()[:12]}@{socket.gethostname()}"
    exit_once(node)  # test hook: a worker process dying mid-task, once (dataengine.faults)
    if not os.access(path, os.R_OK):
        return VideoResult(video_id=vid, path=path, size_bytes=0, status="failed", error_kind="unreadable on node",
                           error=f"node {node} cannot read {path} (is the video folder on shared storage?)",
                           split_key=opts.split_key, node=node)
    res = analyze_video(path, vid, opts)
    res.node = node
    return res


MISSING_RAY = ("--ray needs Ray, an optional part of this tool: pip install 'cartoon-dataengine[ray]' "
               "(or pip install 'ray[data]>=2.40')")


def require_ray() -> None:
    """Ray is an optional part (the `ray` extra): say so in one line before any work."""
    import importlib.util

    try:
        found = importlib.util.find_spec("ray") is not None
    except (ValueError, ImportError):  # a module blocked in sys.modules
        found = False
    if not found:
        raise RayUnavailable(MISSING_RAY)


def ray_init(address: str | None, *, num_cpus: int | None = None) -> None:
    """`local` starts a cluster in this process's machine; `auto` joins the running one; anything
    else is a cluster address (ray://host:10001 or host:6379)."""
    try:
        import ray
    except ImportError as e:
        raise RayUnavailable(MISSING_RAY) from e

    if ray.is_initialized():
        return
    env = {k: v for k, v in os.environ.items() if k.startswith("DE_") or k in ("HF_HUB_OFFLINE", "HF_HOME",
                                                                               "HF_HUB_CACHE", "TRANSFORMERS_OFFLINE")}
    kw = dict(include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env},
              configure_logging=True, logging_level="ERROR")
    try:
        if address in (None, "", "local"):
            # "local" always starts a cluster of its own, even if another runs on this machine
            ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), **kw)
        else:
            ray.init(address=address, **kw)
    except Exception as e:  # noqa: BLE001 - ray raises ConnectionError, ValueError, RuntimeError...
        where = "a local Ray cluster" if address in (None, "", "local") else f"the Ray cluster at {address}"
        raise RayUnavailable(f"cannot start or reach {where}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
                             " (check `ray status`, the address, and that this machine can reach the head node)") from e


class RayCluster(Executor):
    name = "ray"

    def __init__(self, address: str = "local", workers: int | None = None, max_retries: int = 3):
        require_ray()
        self.address, self.workers, self.max_retries = address, workers, max_retries

    def map_videos(self, todo: list[tuple[str, str]], opts: IngestOptions) -> Iterator[VideoResult]:
        import ray

        if not todo:
            return
        ray_init(self.address, num_cpus=self.workers)
        task = ray.remote(num_cpus=1, max_retries=self.max_retries, retry_exceptions=False,
                          scheduling_strategy="SPREAD")(_analyze_on_node)
        refs = {task.remote(path, vid, opts): (path, vid) for path, vid in todo}
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            for ref in done:
                path, vid = refs.pop(ref)
                try:
                    yield ray.get(ref)
                except ray.exceptions.RayError as e:
                    # retries exhausted (the node died each time, or the task raised): a failed row
                    yield VideoResult(video_id=vid, path=path, size_bytes=0, status="failed",
                                      error_kind="worker lost", error=f"Ray task failed: {str(e).splitlines()[0]}",
                                      split_key=opts.split_key)


def make_executor(ray_address: str | None, workers: int | None):
    return RayCluster(ray_address, workers) if ray_address else LocalPool(workers)
