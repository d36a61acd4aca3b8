"""Starting Ray for a job, the same way for the main job, the Tune runner and the benchmarks."""

from __future__ import annotations

import os

import ray


def start_ray(*, address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None) -> bool:
    """Connect to ``address`` or start a local Ray; return True when this call started it.

    Workers get the current directory on their ``PYTHONPATH`` so that env ids of the form
    ``module:Class`` that live beside the user's script resolve in every actor. A Ray
    that is already running is left as it is (and False is returned).
    """
    if ray.is_initialized():
        return False
    python_path = os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))
    runtime_env = {"env_vars": {"PYTHONPATH": python_path}}
    if address:
        ray.init(address=address, runtime_env=runtime_env)
    else:
        ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, runtime_env=runtime_env)
    return True
