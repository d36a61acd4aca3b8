"""Result tables of a run: the per-iteration history row and the evaluation table (CSV, Markdown).

The main job and every Tune trial (:mod:`rllib_proxmo.experiments.tune_runner`) write
the same files with these functions.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from envs import ALFWORLD, ALFWORLD_TASK_TYPES, WEBSHOP

#: Keys of a training result's ``env_runners`` kept per iteration for the progress line and the plot.
HISTORY_KEYS = ("success_rate", "format_valid_rate", "score_mean")


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub Markdown table (no trailing newline)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def history_row(iteration: int, result: Mapping[str, Any]) -> dict[str, float]:
    """The per-iteration figures shown in the progress line and the learning curve."""
    runners, proxmo = result["env_runners"], result["proxmo"]
    row = {"iteration": float(iteration), **{key: float(runners[key]) for key in HISTORY_KEYS}}
    row["generated_tokens_per_s"] = float(proxmo["generated_tokens_per_s"])
    row["time_iteration_s"] = float(proxmo["time_iteration_s"])
    # Sampler vs learner log-probs, where the learner compared them (old_logp_source="sampler").
    from ray.rllib.core import DEFAULT_MODULE_ID

    from rllib_proxmo.algorithm.torch.proxmo_torch_learner import SAMPLER_LOGP_GAP_MAX

    gap = result.get("learners", {}).get(DEFAULT_MODULE_ID, {}).get(SAMPLER_LOGP_GAP_MAX)
    if gap is not None:
        row[SAMPLER_LOGP_GAP_MAX] = float(gap)
    return row


def evaluation_table(env: str, metrics: Mapping[str, float]) -> dict[str, str]:
    """Evaluation as one table row of percentages (column -> text; "-" = type not played).

    ALFWorld: the paper's Table 1 columns pick look clean heat cool pick2 all. WebShop:
    score and success. Other envs: their task types (if any), then all.
    """

    def percent(key: str) -> str:
        return f"{100 * metrics[key]:.1f}" if key in metrics else "-"

    if env == WEBSHOP:
        return {"score": percent("score_mean"), "success": percent("success_rate")}
    if env == ALFWORLD:
        task_types: Sequence[str] = ALFWORLD_TASK_TYPES
    else:
        task_types = sorted(key.split("/", 1)[1] for key in metrics if key.startswith("success_rate/"))
    return {**{t: percent(f"success_rate/{t}") for t in task_types}, "all": percent("success_rate")}


def write_evaluation_table(rows: Mapping[str, Mapping[str, str]], directory: Path) -> tuple[Path, Path]:
    """Write ``evaluation.csv`` and ``evaluation.md``, one row per method (name -> row); return their paths.

    Raises:
        ValueError: without a row, or for rows with different columns.
    """
    if not rows:
        raise ValueError("write_evaluation_table needs at least one row")
    first = list(next(iter(rows.values())))
    if any(list(row) != first for row in rows.values()):
        raise ValueError(f"evaluation rows have different columns: {[list(row) for row in rows.values()]}")
    columns = ["method", *first]
    values = [[method, *row.values()] for method, row in rows.items()]
    csv_path, md_path = directory / "evaluation.csv", directory / "evaluation.md"
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(values)
    md_path.write_text(markdown_table(columns, values) + "\n")
    return csv_path, md_path
