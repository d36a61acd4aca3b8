"""Result tables of a run: the per-iteration history row and the evaluation table (CSV, Markdown).

The main job and every Tune trial (:mod:`rllib_proxmo.experiments.tune_runner`) write
the same files with these functions.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from envs import ALFWORLD, ALFWORLD_TASK_TYPES, WEBSHOP

#: Keys of a training result's ``env_runners`` kept per iteration for the progress line and the plot.
HISTORY_KEYS = ("success_rate", "format_valid_rate", "score_mean")
#: History-row keys of the held-out evaluation an iteration ran: success rate, its 95 % Wilson
#: interval and the episodes played (:func:`held_out_figures`).
EVAL_SUCCESS, EVAL_LOW, EVAL_HIGH, EVAL_EPISODES = (
    "eval_success_rate",
    "eval_success_low",
    "eval_success_high",
    "eval_num_episodes",
)
#: Those keys, in that order (what :func:`held_out_figures` returns).
HELD_OUT_KEYS = (EVAL_SUCCESS, EVAL_LOW, EVAL_HIGH, EVAL_EPISODES)


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub Markdown table (no trailing newline)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def history_row(iteration: int, result: Mapping[str, Any]) -> dict[str, float]:
    """The per-iteration figures shown in the progress line and the learning curve.

    The training rollouts' :data:`HISTORY_KEYS`; throughput: ``generated_tokens_per_s`` (per
    second of generation), ``prompt_tokens_per_s`` and ``turns_per_s`` (per second of sampling);
    ``time_iteration_s``; the :func:`held_out_figures` of the evaluation the iteration ran, if it
    ran one (``result["evaluation"]``, RLlib's ``evaluation_interval``); ``sampler_logp_gap_max``
    where the learner compared its log-probs with the sampler's.
    """
    runners, proxmo = result["env_runners"], result["proxmo"]
    row = {"iteration": float(iteration), **{key: float(runners[key]) for key in HISTORY_KEYS}}
    row["generated_tokens_per_s"] = float(proxmo["generated_tokens_per_s"])
    sampling_s = proxmo["time_sampling_s"]
    row["prompt_tokens_per_s"] = float(proxmo["prompt_tokens"] / sampling_s) if sampling_s > 0 else 0.0
    row["turns_per_s"] = float(proxmo["turns_per_s"])
    row["time_iteration_s"] = float(proxmo["time_iteration_s"])
    row.update(held_out_figures(result.get("evaluation", {}).get("env_runners", {})))
    # Sampler vs learner log-probs, where the learner compared them (old_logp_source="sampler").
    from ray.rllib.core import DEFAULT_MODULE_ID

    from rllib_proxmo.algorithm.torch.proxmo_torch_learner import SAMPLER_LOGP_GAP_MAX

    gap = result.get("learners", {}).get(DEFAULT_MODULE_ID, {}).get(SAMPLER_LOGP_GAP_MAX)
    if gap is not None:
        row[SAMPLER_LOGP_GAP_MAX] = float(gap)
    return row


#: z of a two-sided 95 % interval.
Z_95 = 1.959964


def wilson_interval(rate: float, n: float, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a success rate measured on ``n`` episodes (95 % by default).

    Unlike the normal approximation it stays inside [0, 1] and is not empty at 0 or 1
    (0 successes of 12 episodes: 0 to 0.24).
    """
    if n <= 0:
        raise ValueError(f"an interval needs at least one episode, got n={n}")
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def held_out_figures(metrics: Mapping[str, float]) -> dict[str, float]:
    """An evaluation's success rate with its 95 % Wilson interval and episode count, as history-row keys.

    ``{EVAL_SUCCESS: rate, EVAL_LOW: low, EVAL_HIGH: high, EVAL_EPISODES: n}`` from the
    evaluation's ``success_rate`` and ``num_episodes``; empty when it played no episode.
    """
    episodes = float(metrics.get("num_episodes", 0.0))
    if "success_rate" not in metrics or episodes <= 0:
        return {}
    rate = float(metrics["success_rate"])
    low, high = wilson_interval(rate, episodes)
    return {EVAL_SUCCESS: rate, EVAL_LOW: low, EVAL_HIGH: high, EVAL_EPISODES: episodes}


def held_out_points(
    history: Sequence[Mapping[str, float]], start: Mapping[str, float]
) -> list[tuple[int, dict[str, float]]]:
    """(iteration, :data:`HELD_OUT_KEYS` figures) of a run's evaluations: ``start`` (the starting policy's
    :func:`held_out_figures`) at 0 unless empty, then every history row that carries an evaluation."""
    evaluated = [
        (int(row["iteration"]), {key: row[key] for key in HELD_OUT_KEYS}) for row in history if EVAL_SUCCESS in row
    ]
    return [(0, dict(start)), *evaluated] if start else evaluated


def evaluation_table(env: str, metrics: Mapping[str, float]) -> dict[str, str]:
    """Evaluation as one table row of percentages (column -> text; "-" = type not played).

    ALFWorld: the paper's Table 1 columns pick look clean heat cool pick2 all. WebShop:
    score and success. Other envs: their task types (if any), then all. A success rate
    whose episode count the metrics carry (``num_episodes``, ``num_episodes/<type>``) is
    followed by its 95 % Wilson interval, e.g. ``25.0 (9-53)``.
    """

    def percent(key: str, count_key: str | None = None) -> str:
        if key not in metrics:
            return "-"
        text = f"{100 * metrics[key]:.1f}"
        if count_key is None or not metrics.get(count_key):
            return text
        low, high = wilson_interval(metrics[key], metrics[count_key])
        return f"{text} ({100 * low:.0f}-{100 * high:.0f})"

    if env == WEBSHOP:
        return {"score": percent("score_mean"), "success": percent("success_rate", "num_episodes")}
    if env == ALFWORLD:
        task_types: Sequence[str] = ALFWORLD_TASK_TYPES
    else:
        task_types = sorted(key.split("/", 1)[1] for key in metrics if key.startswith("success_rate/"))
    return {
        **{t: percent(f"success_rate/{t}", f"num_episodes/{t}") for t in task_types},
        "all": percent("success_rate", "num_episodes"),
    }


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
    note = "Success rates in %; in brackets the 95 % Wilson interval over the episodes played."
    md_path.write_text(markdown_table(columns, values) + "\n\n" + note + "\n")
    return csv_path, md_path
