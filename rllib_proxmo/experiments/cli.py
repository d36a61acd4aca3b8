"""Command-line pieces shared by the main job and the tools: typed argument parsers and the
credit-assignment flags, derived from :class:`~rllib_proxmo.advantages.AdvantageConfig`."""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import fields
from typing import Any

from rllib_proxmo.advantages import AdvantageConfig


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
