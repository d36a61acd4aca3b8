"""Choose PSA's similarity (tau, TF-IDF options, scope) by cross-validation on logged rollouts.

PSA's baseline is a kernel regression of step returns on state text
(:class:`rllib_proxmo.analysis.psa_regression.PSABaselineRegressor`), so its
hyperparameters can be scored by how well it predicts the returns-to-go of
held-out episodes from the other episodes of their task group: a Ray Tune
search whose trials are minutes of CPU, not RL runs. (``tune-sklearn``, which
wrapped scikit-learn searches in Ray Tune, does not import with Ray 2.60; this
calls Ray Tune directly.)

Every trial uses the same folds (:func:`~rllib_proxmo.analysis.psa_regression.episode_folds`,
whole episodes held out), so trials are compared fold by fold. Printed:

- references on the same folds: the group mean (tau -> inf over the group), the
  same-step mean (tau -> inf at the same t), GiGPO's exact-match grouping and,
  for synthetic rollouts, the true value ``V_t(s_t)`` of the rollout policy
  (the noise floor: no predictor of ``R_t`` from ``s_t`` does better in
  expectation);
- the best configuration; CV-MSE against tau per scope (best over the TF-IDF
  options); and whether the best tau agrees with the paper's tau = 0.1: the
  best configuration is re-scored with tau = 0.1 and the paired per-fold
  difference is given with its standard error.

Input: ``--rollouts PATH`` (a file or directory written by
:func:`rllib_proxmo.analysis.rollout_files.save_rollouts`) or ``--synthetic``: rollouts of
the household text MDP of :mod:`envs.household` (ALFWorld-like text with
lexical noise ``--noise``; 0.07 gives about the singleton rate the paper
reports for ALFWorld), saved under ``--storage-path`` (or a temporary
directory) and read back like logged ones.

Run::

    python tuned_examples/psa_similarity_search.py --synthetic --storage-path /tmp/psa_search
    python tuned_examples/psa_similarity_search.py --rollouts runs/rollouts --search random --num-samples 60
"""

from __future__ import annotations

import argparse
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from envs.household.rollouts import roll_out
from rllib_proxmo.analysis.psa_regression import (
    PAPER,
    CrossValidation,
    ExactMatchRegressor,
    PSABaselineRegressor,
    episode_folds,
    evaluate_folds,
    step_returns,
)
from rllib_proxmo.analysis.rollout_files import load_rollouts, save_rollouts

PAPER_TAU = PAPER.tau
TAU_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
TAU_RANGE = (1e-3, 10.0)
VALUE_COLUMN = "true_value"  # V_t(s_t) of the synthetic rollouts' policy
GROUP_MEAN = "group mean (tau=inf, group)"
NOISE_FLOOR = "true V_t(s_t) (noise floor)"


@dataclass(frozen=True)
class SearchData:
    """What every trial needs: the steps, their returns and the shared folds."""

    steps: pd.DataFrame
    returns: np.ndarray
    folds: list[tuple[np.ndarray, np.ndarray]]


def synthetic_rollouts(
    iterations: int, tasks: int, episodes: int, horizon: int, noise: float, gamma: float, seed: int
) -> pd.DataFrame:
    """Rollout columns of the household text MDP, ``iterations`` batches of ``tasks`` x ``episodes``.

    Each batch draws new tasks (:func:`envs.household.rollouts.roll_out`: rollout
    policies with epsilon ~ U(0.3, 0.9), 6 rooms, as ``benchmarks/credit_assignment.py``);
    the extra column :data:`VALUE_COLUMN` holds the exact ``V_t(s_t)`` under discount ``gamma``.
    """
    batches = []
    for iteration in range(iterations):
        batch_seed = int(np.random.SeedSequence([seed, iteration]).generate_state(1)[0])
        batch = roll_out(batch_seed, tasks=tasks, episodes=episodes, horizon=horizon, gamma=gamma)
        task_of_step = [batch.mdps[group].task for group in batch.group_id]
        batches.append(
            pd.DataFrame(
                {
                    "group_id": batch.group_id,
                    "episode_id": batch.episode_id,
                    "t": batch.t,
                    "reward": batch.reward,
                    "state": batch.texts(noise, np.random.default_rng([seed, iteration, 2])),
                    "success": batch.success,
                    "task_id": [f"{iteration}:{task.description}" for task in task_of_step],
                    "task_type": [task.process or "pick" for task in task_of_step],
                    "iteration": iteration,
                    VALUE_COLUMN: batch.value,
                }
            )
        )
    return pd.concat(batches, ignore_index=True)


def search_space(search: str) -> dict[str, object]:
    """Ray Tune's param space: a grid over :data:`TAU_GRID` or log-uniform tau in :data:`TAU_RANGE`."""
    from ray import tune

    if search == "grid":
        return {
            "tau": tune.grid_search(list(TAU_GRID)),
            "psa_scope": tune.grid_search(["same_step", "group"]),
            "ngram_range": tune.grid_search([(1, 1), (1, 2)]),
            "sublinear_tf": tune.grid_search([False, True]),
        }
    return {
        "tau": tune.loguniform(*TAU_RANGE),
        "psa_scope": tune.choice(["same_step", "group"]),
        "ngram_range": tune.choice([(1, 1), (1, 2)]),
        "sublinear_tf": tune.choice([False, True]),
    }


def regressor(config: dict) -> PSABaselineRegressor:
    """The regressor of a trial's config (an ``ngram_range`` list becomes a tuple)."""
    params = dict(config)
    if "ngram_range" in params:
        params["ngram_range"] = tuple(params["ngram_range"])
    return PSABaselineRegressor(**params)


def cv_trial(config: dict, data: SearchData) -> None:
    """Ray Tune function trainable: one cross-validated score of one configuration."""
    from ray import tune

    result = evaluate_folds(regressor(config), data.steps, data.returns, data.folds)
    tune.report(
        {
            "cv_mse": result.mse,
            "fold_mse": {str(k): float(mse) for k, mse in enumerate(result.fold_mse)},
            "fallback_fraction": result.fallback_fraction,
            "effective_neighbours": result.effective_neighbours,
        }
    )


def run_search(
    data: SearchData,
    param_space: dict,
    *,
    num_samples: int,
    storage_path: str | None,
    name: str = "psa_similarity_search",
):
    """Run the Tune search (Ray must be initialised) and return its ``ResultGrid``.

    Raises:
        RuntimeError: a trial failed (its error is chained).
    """
    from ray import tune

    tuner = tune.Tuner(
        tune.with_parameters(cv_trial, data=data),
        param_space=param_space,
        tune_config=tune.TuneConfig(metric="cv_mse", mode="min", num_samples=num_samples),
        run_config=tune.RunConfig(name=name, storage_path=storage_path, verbose=0),
    )
    results = tuner.fit()
    if results.errors:
        raise RuntimeError(f"{len(results.errors)} Tune trial(s) failed") from results.errors[0]
    return results


def trial_table(results) -> pd.DataFrame:
    """One row per trial: its config and scores, with per-fold MSEs as an (k,) array."""
    rows = []
    for result in results:
        folds = result.metrics["fold_mse"]
        rows.append(
            {
                **{key: result.config[key] for key in ("tau", "psa_scope", "ngram_range", "sublinear_tf")},
                "cv_mse": result.metrics["cv_mse"],
                "fold_mse": np.array([folds[str(k)] for k in range(len(folds))]),
                "effective_neighbours": result.metrics["effective_neighbours"],
                "fallback_fraction": result.metrics["fallback_fraction"],
            }
        )
    table = pd.DataFrame(rows)
    table["ngram_range"] = table["ngram_range"].map(tuple)
    return table.sort_values("cv_mse", ignore_index=True)


def paper_tau_verdict(best: pd.Series, at_paper_tau: CrossValidation) -> str:
    """Whether the best tau agrees with the paper's, from the paired per-fold MSE difference."""
    difference = at_paper_tau.fold_mse - best["fold_mse"]
    stderr = difference.std(ddof=1) / math.sqrt(len(difference)) if len(difference) > 1 else math.inf
    relative = difference.mean() / best["cv_mse"] if best["cv_mse"] > 0 else math.inf
    detail = (
        f"CV-MSE at tau={PAPER_TAU} (other options as the best) is {at_paper_tau.mse:.5f}, "
        f"{difference.mean():+.5f} +- {stderr:.5f} (paired over folds, {relative:+.1%}) vs the best"
    )
    decades = abs(math.log10(best["tau"] / PAPER_TAU))
    measurably_worse = difference.mean() > 2 * stderr
    if decades <= 0.5 and not measurably_worse:
        return f"AGREES: best tau = {best['tau']:.3g} is within half a decade of {PAPER_TAU}. {detail}."
    if decades <= 0.5:
        return (
            f"NEAR: best tau = {best['tau']:.3g} is within half a decade of {PAPER_TAU}, but "
            f"tau = {PAPER_TAU} is more than 2 standard errors worse. {detail}."
        )
    if not measurably_worse:
        return (
            f"INCONCLUSIVE: best tau = {best['tau']:.3g} is {decades:.1f} decades from {PAPER_TAU}, "
            f"but tau = {PAPER_TAU} is within 2 standard errors of it. {detail}."
        )
    return (
        f"DISAGREES: best tau = {best['tau']:.3g} is {decades:.1f} decades from {PAPER_TAU} and "
        f"tau = {PAPER_TAU} is more than 2 standard errors worse. {detail}."
    )


def print_report(table: pd.DataFrame, references: dict[str, float], verdict: str, data: SearchData) -> None:
    steps = data.steps
    distinct = len(set(steps["state"])) / len(steps)
    print(
        f"\n{len(steps)} steps, {steps.groupby(['iteration', 'episode_id']).ngroups} episodes, "
        f"{steps.groupby(['iteration', 'group_id']).ngroups} task groups, {len(data.folds)} folds; "
        f"distinct state texts {distinct:.1%}; mean return-to-go {data.returns.mean():.4f}, "
        f"variance {data.returns.var():.5f}"
    )
    print("\nReferences (CV-MSE of the returns-to-go of held-out episodes):")
    for label, mse in references.items():
        print(f"  {label:<34} {mse:.5f}")
    best = table.iloc[0]
    print("\nBest configuration:")
    for key in ("tau", "psa_scope", "ngram_range", "sublinear_tf"):
        print(f"  {key:<14} {best[key]}")
    print(
        f"  CV-MSE {best['cv_mse']:.5f} (folds: {', '.join(f'{m:.5f}' for m in best['fold_mse'])}); "
        f"effective neighbours {best['effective_neighbours']:.2f}; fallbacks {best['fallback_fraction']:.2%}"
    )
    group_mean = references[GROUP_MEAN]
    if group_mean > 0:
        print(f"  {1 - best['cv_mse'] / group_mean:+.1%} lower CV-MSE than the group mean", end="")
        if NOISE_FLOOR in references and group_mean > references[NOISE_FLOOR]:
            closed = (group_mean - best["cv_mse"]) / (group_mean - references[NOISE_FLOOR])
            print(f"; closes {closed:.1%} of its gap to the noise floor", end="")
        print()

    print("\nCV-MSE vs tau (best over ngram_range x sublinear_tf; effective neighbours in brackets):")
    cells = table.loc[table.groupby(["tau", "psa_scope"])["cv_mse"].idxmin()]
    scopes = sorted(cells["psa_scope"].unique())
    print(f"  {'tau':>9}  " + "  ".join(f"{scope:>22}" for scope in scopes))
    for tau, rows in cells.groupby("tau"):
        by_scope = {row.psa_scope: f"{row.cv_mse:.5f} [{row.effective_neighbours:5.2f}]" for row in rows.itertuples()}
        print(f"  {tau:>9.4g}  " + "  ".join(f"{by_scope.get(scope, '-'):>22}" for scope in scopes))
    print(f"\nPaper's tau: {verdict}")


def reference_scores(data: SearchData) -> dict[str, float]:
    """CV-MSE of the references on the search's folds (see the module docstring)."""
    references = {
        GROUP_MEAN: PSABaselineRegressor(tau=math.inf, psa_scope="group"),
        "same-step mean (tau=inf, same_step)": PSABaselineRegressor(tau=math.inf, psa_scope="same_step"),
        "exact-match (GiGPO) mean": ExactMatchRegressor(),
    }
    scores = {
        label: evaluate_folds(model, data.steps, data.returns, data.folds).mse for label, model in references.items()
    }
    if VALUE_COLUMN in data.steps:
        truth = data.steps[VALUE_COLUMN].to_numpy()
        scores[NOISE_FLOOR] = float(
            np.mean([np.mean((truth[test] - data.returns[test]) ** 2) for _, test in data.folds])
        )
    return scores


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--rollouts", type=Path, help="Parquet file or directory of logged rollouts")
    source.add_argument("--synthetic", action="store_true", help="generate household-MDP rollouts")
    parser.add_argument(
        "--search",
        choices=("grid", "random"),
        default="grid",
        help=f"grid: tau in {TAU_GRID} x scope x ngram x sublinear (72 trials); "
        f"random: log-uniform tau in {TAU_RANGE} (default: grid)",
    )
    parser.add_argument(
        "--num-samples",
        type=int,
        default=None,
        help="trials of the random search (default 40); the grid runs each point once",
    )
    parser.add_argument("--cv-folds", type=int, default=5, help="folds over episodes (default 5)")
    parser.add_argument(
        "--gamma", type=float, default=PAPER.gamma, help=f"discount of the returns-to-go (paper: {PAPER.gamma})"
    )
    parser.add_argument(
        "--storage-path",
        type=str,
        default=None,
        help="local directory for Tune results and synthetic rollouts (default: Ray's)",
    )
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs Ray may use (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the folds and of synthetic rollouts")
    synthetic = parser.add_argument_group("synthetic rollouts")
    synthetic.add_argument("--iterations", type=int, default=4, help="batches of tasks (default 4)")
    synthetic.add_argument("--tasks", type=int, default=16, help="task groups per batch (default 16)")
    synthetic.add_argument("--episodes", type=int, default=8, help="rollouts per task (default 8)")
    synthetic.add_argument("--horizon", type=int, default=15, help="step limit (default 15)")
    synthetic.add_argument("--noise", type=float, default=0.07, help="lexical noise in [0, 1] (default 0.07)")
    args = parser.parse_args(argv)
    if args.search == "grid" and args.num_samples not in (None, 1):
        parser.error("the grid search is deterministic; --num-samples applies to --search random")
    args.num_samples = args.num_samples or (40 if args.search == "random" else 1)
    if args.num_samples < 1 or args.cv_folds < 2:
        parser.error("--num-samples must be >= 1 and --cv-folds >= 2")
    return args


def load_data(args: argparse.Namespace) -> SearchData:
    """Steps, returns-to-go and folds from ``--rollouts`` or freshly saved synthetic rollouts."""
    path = args.rollouts
    if args.synthetic:
        directory = Path(args.storage_path) if args.storage_path else Path(tempfile.mkdtemp(prefix="psa_search_"))
        path = directory / f"synthetic_rollouts_noise{args.noise}_seed{args.seed}.parquet"
        rollouts = synthetic_rollouts(
            args.iterations, args.tasks, args.episodes, args.horizon, args.noise, args.gamma, args.seed
        )
        save_rollouts(path, rollouts.to_dict("series"))
        print(f"synthetic rollouts written to {path}")
    steps = pd.DataFrame(load_rollouts(path))
    return SearchData(steps, step_returns(steps, args.gamma), episode_folds(steps, args.cv_folds, args.seed))


def search(args: argparse.Namespace) -> tuple[SearchData, pd.DataFrame]:
    """Load the data and run the search; returns the data and :func:`trial_table` of the trials.

    Starts Ray with ``--num-cpus`` unless it is already running (then it is left running).
    """
    import ray

    data = load_data(args)
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=args.num_cpus, include_dashboard=False)
    try:
        results = run_search(
            data,
            search_space(args.search),
            num_samples=args.num_samples,
            storage_path=str(Path(args.storage_path).resolve()) if args.storage_path else None,
        )
    finally:
        if started:
            ray.shutdown()
    return data, trial_table(results)


def main(argv: list[str] | None = None) -> None:
    data, table = search(parse_args(argv))
    best = table.iloc[0]
    paper_config = {**best[["psa_scope", "ngram_range", "sublinear_tf"]].to_dict(), "tau": PAPER_TAU}
    at_paper_tau = evaluate_folds(regressor(paper_config), data.steps, data.returns, data.folds)
    print_report(table, reference_scores(data), paper_tau_verdict(best, at_paper_tau), data)


if __name__ == "__main__":
    main()
