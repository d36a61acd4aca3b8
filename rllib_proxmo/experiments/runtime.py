"""Start-up of a job, the same way for the main job, the Tune runner and the benchmarks.

:func:`quiet_framework_output` is the one place where framework output is tuned:

- Hugging Face progress bars are off (``HF_HUB_DISABLE_PROGRESS_BARS=1`` unless the
  caller set the variable; every model load in every process drew one bar);
- the framework notices of :data:`FRAMEWORK_NOTICES` are dropped: each is matched by
  its logger and the start of its message, and only at level WARNING or below, so
  errors always come through; so are the Python warnings of :data:`FRAMEWORK_WARNINGS`.

:func:`start_ray` runs it in the driver and, through Ray's
``worker_process_setup_hook``, in every worker; workers also get the variable
through ``runtime_env["env_vars"]`` before they import anything.

Not filtered: Ray's own one-line start-up notice, vLLM's CPU build's C++ line on NUMA
memory binding (once per vLLM env runner), and the driver's
"Actor ... has constructor arguments in the object store and max_restarts > 0" line,
which Ray's C++ core worker writes straight to stderr once per process when env
runners can be restarted (RLlib's default, and ProxMO's retry of lost groups needs
restarts).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from collections.abc import Mapping

#: Environment variable that turns the Hugging Face progress bars off.
PROGRESS_BARS_VARIABLE = "HF_HUB_DISABLE_PROGRESS_BARS"
#: Runs in every Ray worker process at start-up.
WORKER_SETUP_HOOK = f"{__name__}.quiet_framework_output"

#: Logger -> message patterns (matched at the start) of notices that tell a user of
#: this project nothing to act on.
FRAMEWORK_NOTICES: Mapping[str, tuple[str, ...]] = {
    # Ray 2.60 turns token authentication on for every new local cluster and says so.
    "ray._private.authentication.authentication_token_setup": (
        r"Token authentication is enabled for this Ray cluster\. ",
    ),
    # RLModule.__init__ itself builds the deprecated RLModuleConfig, however the module is constructed.
    "ray._common.deprecation": (r"DeprecationWarning: `RLModule\(config=\[RLModuleConfig object\]\)` ",),
    "ray.rllib.algorithms.algorithm_config": (
        # Every config validation on the new API stack, which ProxMO needs.
        r"You are running ProxMO on the new API stack! ",
        # The main job with --eval-every 0 evaluates only before and after RL, calling Algorithm.evaluate() itself.
        r"You have specified \d+ evaluation workers, but your `evaluation_interval` is 0 or None! ",
    ),
    # System-usage metrics are logged without GPUtil; GPU jobs have RLlib's own GPU figures.
    "ray.tune.utils.util": (r"Install gputil for GPU system monitoring\.$",),
    # Advice for Tune trials that are fast to build; LLM trials load a different model each.
    "ray.tune.trainable.trainable": (r"Trainable\.setup took [0-9.]+ seconds\. ",),
    # vLLM's CPU build at import, before VLLM_LOGGING_LEVEL applies: it runs without Triton.
    "vllm.triton_utils.importing": (r"Triton is installed, but doesn't include CPU backend\.",),
}
#: (category, message pattern) of Python warnings that tell a user of this project nothing to act on.
FRAMEWORK_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    # vLLM 0.32's CPU start-up reads every module attribute, torch.distributed's deprecated alias included.
    (FutureWarning, r"`torch\.distributed\.reduce_op` is deprecated"),
)


class NoticeFilter(logging.Filter):
    """Drops records at WARNING or below whose message matches one of ``patterns``."""

    def __init__(self, patterns: tuple[str, ...]) -> None:
        super().__init__()
        self.patterns = tuple(re.compile(pattern) for pattern in patterns)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.WARNING:
            return True
        message = record.getMessage()
        return not any(pattern.match(message) for pattern in self.patterns)


def _is_true(value: str) -> bool:
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def quiet_framework_output() -> None:
    """Turn progress bars off and install the notice filters in this process (idempotent)."""
    if _is_true(os.environ.setdefault(PROGRESS_BARS_VARIABLE, "1")):
        # Libraries imported before the variable was set read it already; tell them directly.
        if "huggingface_hub" in sys.modules:
            from huggingface_hub.utils import disable_progress_bars

            disable_progress_bars()
        if "transformers" in sys.modules:
            from transformers.utils.logging import disable_progress_bar

            disable_progress_bar()
    for name, patterns in FRAMEWORK_NOTICES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(existing, NoticeFilter) for existing in logger.filters):
            logger.addFilter(NoticeFilter(patterns))
    for category, pattern in FRAMEWORK_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=category)


def start_ray(*, address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None) -> bool:
    """Connect to ``address`` or start a local Ray; return True when this call started it.

    Runs :func:`quiet_framework_output` here and in every worker. Workers get the
    current directory on their ``PYTHONPATH`` so that env ids of the form
    ``module:Class`` that live beside the user's script resolve in every actor. A Ray
    that is already running is left as it is (and False is returned).
    """
    import ray

    quiet_framework_output()
    if ray.is_initialized():
        return False
    python_path = os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))
    runtime_env = {
        "env_vars": {"PYTHONPATH": python_path, PROGRESS_BARS_VARIABLE: os.environ[PROGRESS_BARS_VARIABLE]},
        "worker_process_setup_hook": WORKER_SETUP_HOOK,
    }
    if address:
        ray.init(address=address, runtime_env=runtime_env)
    else:
        ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, runtime_env=runtime_env)
    return True
