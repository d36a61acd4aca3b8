"""Checks of a command line that run before Ray, MLflow or a model start.

:func:`validate_args` (the main job) and :func:`validate_tune_args` (the tuned examples)
raise :class:`ValueError` with a message that names the flag and what it accepts; the
command lines turn it into argparse's usage error (exit status 2). Every check is cheap
(no Ray, torch or transformers import, no game generation, no model load) so that a typo
is refused in about a second:

- the credit-assignment flags, one :class:`~rllib_proxmo.advantages.AdvantageConfig`
  field at a time (then together), and ``--task-sampling`` with ``--group-size``;
- ``--env``: a registered Gymnasium id, or ``module:Id`` whose module imports and
  registers ``Id``; ``--env-config``: keys the env's constructor takes (checked against
  its signature, read from the entry point's source when it tells, so that ALFWorld's
  TextWorld is not imported; nothing is built); ``--llm-env-config``: the wrappers' settings;
- ``--model``: :func:`~rllib_proxmo.algorithm.torch.model_loading.check_model_available`
  (an uncached hub id on an offline machine fails at once);
- GPUs asked for on a machine that has none (unless a cluster ``--address`` is given);
- ``--address`` / ``$RAY_ADDRESS``: a gRPC server must answer at the address within
  :data:`ADDRESS_PROBE_TIMEOUT_S` (``auto``: a cluster started on this machine) and, unless it
  is a ``ray://`` address, answer a Ray GCS request within :data:`GCS_PROBE_TIMEOUT_S` (made by
  a child process, which imports Ray so that this one does not): a proxy may answer HTTP/2 for
  any outside address.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import inspect
import os
import socket
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from rllib_proxmo.advantages import ESTIMATORS, AdvantageConfig
from rllib_proxmo.algorithm.task_sampling import sampling_problem

#: Seconds to wait for a gRPC server at ``--address`` before refusing it.
ADDRESS_PROBE_TIMEOUT_S = 2.0
#: Seconds the child process of :func:`gcs_problem` may take (it imports Ray's core, about 0.5 s idle).
GCS_PROBE_TIMEOUT_S = 5.0
#: Where a Ray started with ``ray start`` on this machine writes its address (read by ``--address auto``).
RAY_CURRENT_CLUSTER_FILE = Path(os.environ.get("RAY_TMPDIR", "/tmp")) / "ray" / "ray_current_cluster"


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def check_advantage_settings(settings: Mapping[str, Any]) -> None:
    """Each :class:`AdvantageConfig` field alone (the error names its flag), then all together."""
    for setting in fields(AdvantageConfig):
        try:
            AdvantageConfig(**{setting.name: settings[setting.name]})
        except ValueError as error:
            raise ValueError(f"{_flag(setting.name)}: {error}") from None
    try:
        AdvantageConfig(**settings)
    except ValueError as error:
        raise ValueError(f"credit-assignment flags: {error}") from None


def _parameters(arguments: ast.arguments) -> list[inspect.Parameter]:
    """The parameters (names and kinds, no defaults) of a ``def``'s ``arguments``."""
    kind = inspect.Parameter
    parameters = [kind(a.arg, kind.POSITIONAL_ONLY) for a in arguments.posonlyargs]
    parameters += [kind(a.arg, kind.POSITIONAL_OR_KEYWORD) for a in arguments.args]
    if arguments.vararg is not None:
        parameters.append(kind(arguments.vararg.arg, kind.VAR_POSITIONAL))
    parameters += [kind(a.arg, kind.KEYWORD_ONLY) for a in arguments.kwonlyargs]
    if arguments.kwarg is not None:
        parameters.append(kind(arguments.kwarg.arg, kind.VAR_KEYWORD))
    return parameters


def source_signature(entry_point: str) -> inspect.Signature | None:
    """The signature of the ``module:Name`` entry point read from the module's source, which is not run.

    Only the module's parent packages are imported (to find the file). None where the
    source does not tell: no Python source, ``Name`` not a plain top-level ``class`` or
    ``def`` (decorated, assigned or imported), or a class without its own ``__init__`` or
    with a ``__new__`` or a metaclass. For a class, ``self`` is left out, as
    :func:`inspect.signature` of a class does.
    """
    module_name, _, name = entry_point.partition(":")
    module = importlib.util.find_spec(module_name)
    if module is None or module.origin is None or not module.origin.endswith(".py"):
        return None
    tree = ast.parse(Path(module.origin).read_text(encoding="utf-8"))
    definitions = [n for n in tree.body if isinstance(n, ast.ClassDef | ast.FunctionDef) and n.name == name]
    if not definitions or definitions[-1].decorator_list:
        return None
    definition = definitions[-1]
    if isinstance(definition, ast.FunctionDef):
        return inspect.Signature(_parameters(definition.args))
    methods = {n.name: n for n in definition.body if isinstance(n, ast.FunctionDef)}
    if "__init__" not in methods or "__new__" in methods or definition.keywords:
        return None
    return inspect.Signature(_parameters(methods["__init__"].args)[1:])


def check_env(env: str, env_configs: Iterable[Mapping[str, Any]]) -> None:
    """``env`` resolves to a registered id whose constructor takes every key of ``env_configs``."""
    import gymnasium as gym
    from gymnasium.envs.registration import load_env_creator

    import envs

    env_id = env
    if ":" in env:
        module, env_id = env.split(":", 1)
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ValueError(f"--env {env!r}: cannot import module {module!r} ({error})") from None
    try:
        spec = gym.spec(env_id)
    except gym.error.Error as error:
        raise ValueError(
            f"--env {env!r} is not a registered Gymnasium id ({error}); this project registers "
            f"{', '.join(envs._REGISTRATIONS)}, or give module:Id for an env your module registers"
        ) from None
    signature = source_signature(spec.entry_point) if isinstance(spec.entry_point, str) else None
    if signature is None:
        creator = load_env_creator(spec.entry_point) if isinstance(spec.entry_point, str) else spec.entry_point
        signature = inspect.signature(creator)
    parameters = signature.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    accepted = [name for name, p in parameters.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    for env_config in env_configs:
        unknown = sorted(set(env_config) - set(accepted))
        if unknown:
            raise ValueError(f"--env-config: {env_id} takes no setting {unknown}; its settings are {accepted}")


def local_gpu_count() -> int:
    """NVIDIA GPUs this process may use, without importing torch.

    The larger of the driver's device list (``/proc/driver/nvidia/gpus``) and the
    ``/dev/nvidia<k>`` device files (a container may have only these), narrowed by
    ``CUDA_VISIBLE_DEVICES``.
    """
    gpus_dir = Path("/proc/driver/nvidia/gpus")
    listed = len(list(gpus_dir.iterdir())) if gpus_dir.is_dir() else 0
    devices = len([path for path in Path("/dev").glob("nvidia*") if path.name[len("nvidia") :].isdigit()])
    count = max(listed, devices)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        count = min(count, len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"]))
    return count


def check_gpus(flag: str, requested: float, address: str | None) -> None:
    """GPUs asked for must exist on this machine unless the job runs on a cluster at ``address``."""
    if requested and not address:
        found = local_gpu_count()
        if found == 0:
            raise ValueError(
                f"{flag} {requested:g} asks for a GPU but this machine has none visible; use {flag} 0 "
                "(CPU) or run on a cluster with GPUs (--address / $RAY_ADDRESS)"
            )


def _host_port(address: str) -> tuple[str, int]:
    text = address.split("://", 1)[-1].rstrip("/")
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"{address!r} is not host:port (e.g. 10.0.0.1:6379, ray://10.0.0.1:10001 or auto)")
    return host, int(port)


#: An HTTP/2 client's connection preface and an empty SETTINGS frame (RFC 9113 §3.4, §6.5).
_HTTP2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_HTTP2_SETTINGS = 4


def grpc_server_problem(host: str, port: int, timeout_s: float) -> str | None:
    """Why no gRPC server (a Ray GCS or Ray Client server) answers at ``host:port``, or None.

    A TCP connection alone proves little (a firewall or proxy may accept any), so the
    probe speaks the first bytes of HTTP/2, which gRPC runs on: a server replies to the
    client preface with a SETTINGS frame.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as connection:
            connection.settimeout(timeout_s)
            connection.sendall(_HTTP2_HELLO)
            reply = connection.recv(9)
    except OSError as error:
        return f"{type(error).__name__}: {error}"
    if len(reply) < 9 or reply[3] != _HTTP2_SETTINGS:
        return f"the server there does not speak gRPC (replied {reply[:16]!r})"
    return None


#: What the child process of :func:`gcs_problem` runs: a Ray GCS client fetches the cluster id of ``argv[1]``.
_GCS_PROBE = """
import sys
from ray._raylet import GcsClient
try:
    GcsClient(address=sys.argv[1])
except Exception as error:
    sys.exit(f"{type(error).__name__}: {error}")
"""


def gcs_problem(address: str, timeout_s: float) -> str | None:
    """Why no Ray GCS that a driver can join answers at ``address`` (``host:port``), or None.

    Asks for the cluster id, the first request of ``ray.init(address=...)``, with the
    environment this process has (so with its ``RAY_AUTH_MODE`` and token). The request
    runs in a child process that is killed after ``timeout_s``: Ray's client retries a
    silent address for tens of seconds and cannot be cancelled in-process.
    """
    try:
        probe = subprocess.run(
            [sys.executable, "-c", _GCS_PROBE, address],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        return f"no reply within {timeout_s:g} s"
    if probe.returncode == 0:
        return None
    lines = probe.stderr.strip().splitlines()
    return lines[-1] if lines else f"the probe exited with status {probe.returncode}"


def check_address(flag: str, address: str | None) -> None:
    """A Ray cluster answers at ``address`` (``auto``: the cluster ``ray start`` left on this machine)."""
    if not address or address == "local":
        return
    if address == "auto":
        if not RAY_CURRENT_CLUSTER_FILE.is_file():
            raise ValueError(
                f"{flag} auto: no Ray cluster was started on this machine ({RAY_CURRENT_CLUSTER_FILE} is missing); "
                "run `ray start --head` first, give the head's host:port, or drop the flag to start a local Ray"
            )
        target = RAY_CURRENT_CLUSTER_FILE.read_text().strip()
    else:
        target = address
    try:
        host, port = _host_port(target)
    except ValueError as error:
        raise ValueError(f"{flag}: {error}") from None
    problem = grpc_server_problem(host, port, ADDRESS_PROBE_TIMEOUT_S)
    if problem is not None:
        raise ValueError(
            f"{flag} {address}: no Ray cluster answers at {host}:{port} within {ADDRESS_PROBE_TIMEOUT_S:g} s "
            f"({problem}); is the cluster up (`ray start --head`) and the port open?"
        )
    if target.startswith("ray://"):
        return  # A Ray Client server, which answers no GCS request; the gRPC check above is all.
    problem = gcs_problem(f"{host}:{port}", GCS_PROBE_TIMEOUT_S)
    if problem is not None:
        raise ValueError(
            f"{flag} {address}: {host}:{port} answers, but not as a Ray GCS this job can join (asked it for the "
            f"cluster id: {problem}); give the head's GCS address (`ray start --head` prints it) and, for a "
            "cluster with token authentication, RAY_AUTH_MODE=token and its token"
        )


def check_model(model: str) -> None:
    from rllib_proxmo.algorithm.torch.model_loading import check_model_available

    try:
        check_model_available(model)
    except (ValueError, FileNotFoundError) as error:
        raise ValueError(f"--model: {error}") from None


def validate_args(args: argparse.Namespace, env_configs: Iterable[Mapping[str, Any]]) -> None:
    """Every check of the module docstring for the main job's ``args``.

    Args:
        args: :func:`rllib_proxmo.experiments.main_job.parse_args`'s namespace.
        env_configs: The env configs the job will build (training and evaluation split).

    Raises:
        ValueError: naming the first bad flag and what it accepts.
    """
    from envs.llm_wrappers import check_llm_env_settings
    from rllib_proxmo.experiments.cli import advantage_settings

    # Cheapest first: the env check imports the env's module.
    check_advantage_settings(advantage_settings(args))
    problem = sampling_problem(args.task_sampling, args.group_size)
    if problem:
        raise ValueError(f"--task-sampling: {problem}")
    try:
        check_llm_env_settings(args.llm_env_config)
    except ValueError as error:
        raise ValueError(f"--llm-env-config: {error}") from None
    check_gpus("--num-gpus-per-learner", args.num_gpus_per_learner, args.address)
    check_address("--address", args.address)
    check_model(args.model)
    check_env(args.env, env_configs)


def validate_tune_args(args: argparse.Namespace) -> None:
    """The checks that apply to a tuned example's ``args`` (:mod:`rllib_proxmo.experiments.tune_cli`).

    The cluster is ``$RAY_ADDRESS`` (the tuned examples have no ``--address``).

    Raises:
        ValueError: naming the first bad flag and what it accepts.
    """
    unknown = [name for name in args.estimators if name not in ESTIMATORS]
    if unknown:
        raise ValueError(f"--estimators: unknown {unknown}; choose from {', '.join(ESTIMATORS)}")
    negative = [seed for seed in args.seeds if seed < 0]
    if negative:
        raise ValueError(f"--seeds must be ints >= 0, got {negative}")
    if args.stop_iters < 1:
        raise ValueError(f"--stop-iters must be >= 1, got {args.stop_iters}")
    for flag in ("num_env_runners", "num_learners", "num_cpus", "checkpoint_freq"):
        value = getattr(args, flag)
        if value is not None and value < 0:
            raise ValueError(f"{_flag(flag)} must be >= 0, got {value}")
    check_model(args.model)
    address = os.environ.get("RAY_ADDRESS")
    for flag in ("num_gpus_per_learner", "num_gpus_per_env_runner"):
        value = getattr(args, flag)
        if value is not None and value < 0:
            raise ValueError(f"{_flag(flag)} must be >= 0, got {value}")
        check_gpus(_flag(flag), value or 0, address)
    check_address("$RAY_ADDRESS", address)
