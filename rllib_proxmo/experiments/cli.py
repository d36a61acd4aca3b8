"""Command-line pieces shared by the main job and the tools: typed argument parsers, the
credit-assignment flags (derived from :class:`~rllib_proxmo.advantages.AdvantageConfig`), the
inference-engine flag and the MLflow tracking flags."""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import fields
from typing import Any

from rllib_proxmo.advantages import AdvantageConfig
from rllib_proxmo.algorithm.sharding import DEFAULT_SHARDING, SHARDINGS
from rllib_proxmo.rollout.engine_choice import DEFAULT_ENGINE, ENGINES

#: Default of ``--checkpoint-artifact-max-mb``: larger checkpoints are tagged, not copied into MLflow.
CHECKPOINT_ARTIFACT_MAX_MB = 100.0


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"is not valid JSON ({error}): {text}") from error
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object, got {text}")
    return value


def add_advantage_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """One flag per :class:`AdvantageConfig` field (``--estimator``, ``--alpha``, ..., ``--psa-scope``).

    Defaults and help texts are the dataclass's; values are checked when the config is built.
    """
    for setting in fields(AdvantageConfig):
        parser.add_argument(
            f"--{setting.name.replace('_', '-')}",
            type=type(setting.default),
            default=setting.default,
            help=f"{setting.metadata['help']} (default {setting.default})",
        )


def advantage_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`AdvantageConfig` fields parsed by :func:`add_advantage_arguments`."""
    return {setting.name: getattr(args, setting.name) for setting in fields(AdvantageConfig)}


def add_engine_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--engine hf|vllm``: ``model_config["engine"]`` of the env runners (any other value is a usage error)."""
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default=DEFAULT_ENGINE,
        help="inference engine of the env runners: hf (Hugging Face generate) or vllm (remote env runners: "
        "vLLM's CPU build on their CPU cores, as make install sets up without CUDA, or its CUDA build with "
        f"a GPU each, pip install 'rllib-proxmo[vllm]') (default {DEFAULT_ENGINE})",
    )


def add_sharding_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup, default: str | None) -> None:
    """``--sharding ddp|fsdp``: how the learners hold the model (``ProxMOConfig.learners(sharding=...)``)."""
    parser.add_argument(
        "--sharding",
        choices=SHARDINGS,
        default=default,
        help="ddp: every learner holds the whole model; fsdp: FSDP2 shards weights, gradients and optimizer state "
        f"over the learners (--num-learners >= 2, full fine-tuning) (default {DEFAULT_SHARDING})",
    )


def add_tracking_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup, experiment_name: str) -> None:
    """``--no-mlflow``, ``--tracking-uri``, ``--experiment-name`` and ``--checkpoint-artifact-max-mb``.

    ``--tracking-uri`` stays None when not given (resolved by
    :func:`rllib_proxmo.experiments.tracking.default_tracking_uri` when the run starts).
    """
    parser.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    parser.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else ./mlruns/mlflow.db)"
    )
    parser.add_argument(
        "--experiment-name", default=experiment_name, help=f"MLflow experiment name (default {experiment_name})"
    )
    parser.add_argument(
        "--checkpoint-artifact-max-mb",
        type=float,
        default=CHECKPOINT_ARTIFACT_MAX_MB,
        help="copy a checkpoint into MLflow when at most this size, else only tag its path "
        f"(default {CHECKPOINT_ARTIFACT_MAX_MB:g})",
    )
