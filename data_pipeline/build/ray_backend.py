"""Optional Ray backend for the shard writer: the same per-item function as the process pool,
run as Ray tasks (a local Ray runtime, or a cluster when RAY_ADDRESS is set).

Each task writes its item result under the build folder itself, so on a cluster that folder
must be on storage every node sees (NFS, a mounted bucket). Packing and the manifest stay on
the driver. Install with `pip install 'magma-stack[ray]'`.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Iterator, Sequence


def _ray():
    try:
        import ray
    except ImportError:
        raise RuntimeError("the Ray backend needs the 'ray' package (pip install 'ray>=2.40'); "
                           "or use the default --backend pool") from None
    return ray


def run_with_ray(init_fn: Callable[..., None], process_fn: Callable[[Any], Any],
                 init_args: tuple, tasks: Sequence[Any], workers: int) -> Iterator[Any]:
    """Yields process_fn(task) results as Ray tasks finish (order not guaranteed)."""
    ray = _ray()
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), num_cpus=None if os.environ.get("RAY_ADDRESS")
                 else max(1, workers), include_dashboard=False, log_to_driver=False,
                 configure_logging=False)

    @ray.remote
    def run_task(args: tuple, task: Any) -> Any:
        init_fn(*args)  # cheap: looks up the source type and parses its config
        return process_fn(task)

    args_ref = ray.put(init_args)
    pending = [run_task.remote(args_ref, t) for t in tasks]
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        yield ray.get(done[0])
