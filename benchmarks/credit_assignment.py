"""How well does each advantage estimator recover the true advantage? A testbed with exact values.

The environment is the household text MDP of :mod:`envs.household.mdp`: a finite latent MDP
(room x what is held) rendered as ALFWorld-like text with a tunable amount of lexical noise, and a
known epsilon-greedy rollout policy pi whose ``Q_t(s, a)`` and ``V_t(s)`` are computed exactly by
finite-horizon dynamic programming. The target every estimator is scored against is the true
advantage ``A_t = Q_t(s_t, a_t) - V_t(s_t)`` of each visited step.

Protocol, for each seed:

1. Draw ``--tasks`` K tasks (task groups), each with its own exploration rate epsilon drawn
   uniformly from ``--epsilon-range`` so that group success rates vary, and roll out ``--episodes``
   N episodes of each with the horizon ``--horizon`` H.
2. Render the same trajectories at each noise level of ``--noise`` (``none``: identical latent
   states read identically; ``heavy``: every observation is unique text).
3. Compute every estimator's advantages with ``rllib_proxmo.advantages`` (the one-pass
   ``compute_advantages_with_diagnostics``; paper hyperparameters unless ``--tau``/``--omega`` say
   otherwise; ``--gamma`` is used both there and for the exact values) on the rendered
   observation texts, and score them against the true advantage:

   - ``pearson``, ``spearman``: correlation with the true advantage over all steps of the batch
     (0 for an estimate that is constant over the batch, e.g. GiGPO's step term when every step is
     a singleton);
   - ``sign``: fraction of steps with ``|A| > --sign-threshold`` whose estimate has A's sign (an
     estimate of exactly 0 counts as a disagreement);
   - ``variance``: variance of the estimates over the batch (scale differs between estimators:
     GRPO/GiGPO terms are z-scores, PSA's term is in units of return);
   - ``zeros``: fraction of estimates that are exactly 0 (no learning signal).

Rows ``step term: ...`` isolate the step-level credit by difference of two estimators that share
the episode term (``gigpo - grpo`` is GiGPO's ``omega * A_S``, ``proxmo - proxmo_no_psa`` is PSA's),
since a combined estimator's correlation also mixes in the episode term. Per noise level the header
also prints the fraction of distinct observation texts, the fraction of steps in singleton
exact-match step groups (GiGPO's degeneracy, ``gigpo_singleton_fraction`` of the diagnostics),
PSA's mean effective number of neighbours ``1 / sum_j w_ij^2`` (same-step scope) and the success
rate.

Two more views calibrate the figures:

- ``reference``: the Monte-Carlo return with the exact baseline, ``R_t - V_t(s_t)``, the best a
  return-minus-baseline estimator can do; its gap to 1 is the noise of the sampled futures;
- ``latent id``: every estimator fed the latent state's id instead of the text, i.e. with a
  perfect state recogniser (GiGPO then groups exact latent states, PSA puts ``e^(1/tau)`` times
  more weight on a same-state candidate than on any other).

A last table gives paired per-seed differences of the Pearson correlation for the comparisons the
paper's claims are about (PSA's step term against GiGPO's, ProxMO against GiGPO and GRPO, PSC on
and off, the two PSA scopes). Results are mean +- std over ``--seeds`` seeds ``--seed``,
``--seed + 1``, ...; the run is deterministic given its arguments. ``--json PATH`` also writes
every per-seed figure.

Run: ``python benchmarks/credit_assignment.py`` (defaults: 20 seeds x 16 tasks x 8 episodes,
H = 15, 6 rooms, epsilon ~ U(0.3, 0.9); noise 0 / 0.07 / 0.25 / 1, where 0.07 gives about the
30-36 % singleton steps the paper reports for ALFWorld in its Table 2). A few seconds on one core.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy import stats

from envs.household.mdp import ROOM_NAMES
from envs.household.rollouts import DEFAULT_EPSILON_RANGE, DEFAULT_ROOMS, roll_out
from rllib_proxmo.advantages import AdvantageConfig, compute_advantages_with_diagnostics

PAPER = AdvantageConfig()

# label -> keyword arguments of compute_advantages
ESTIMATORS: dict[str, dict[str, str]] = {
    "grpo": {"estimator": "grpo"},
    "gigpo": {"estimator": "gigpo"},
    "proxmo": {"estimator": "proxmo", "psa_scope": "same_step"},
    "proxmo|scope=group": {"estimator": "proxmo", "psa_scope": "group"},
    "proxmo_no_psc": {"estimator": "proxmo_no_psc"},
    "proxmo_no_psa": {"estimator": "proxmo_no_psa"},
    "proxmo_official": {"estimator": "proxmo_official"},
}
# label -> (estimator with a step term, estimator with the same episode term and none)
STEP_TERMS: dict[str, tuple[str, str]] = {
    "step term: gigpo": ("gigpo", "grpo"),
    "step term: psa": ("proxmo", "proxmo_no_psa"),
    "step term: psa|scope=group": ("proxmo|scope=group", "proxmo_no_psa"),
}
LATENT_VIEW = "latent id"
# (a, b): paired per-seed differences a - b of the Pearson correlation, the claims under test
COMPARISONS = (
    ("step term: psa", "step term: gigpo"),
    ("step term: psa|scope=group", "step term: gigpo"),
    ("proxmo", "gigpo"),
    ("proxmo", "grpo"),
    ("proxmo", "proxmo_no_psc"),
    ("proxmo|scope=group", "proxmo"),
)
METRICS = ("pearson", "spearman", "sign", "variance", "zeros")
HEADER_STATS = ("gigpo_singleton_fraction", "psa_effective_neighbours", "success_rate")


def score(estimate: np.ndarray, truth: np.ndarray, sign_threshold: float) -> dict[str, float]:
    """The metrics of one estimator's (n,) advantages against the (n,) true advantages."""
    informative = np.abs(truth) > sign_threshold
    if not informative.any():
        raise ValueError(f"no step has |true advantage| > {sign_threshold:g}; lower --sign-threshold")
    constant = np.ptp(estimate) == 0.0
    return {
        "pearson": 0.0 if constant else float(stats.pearsonr(estimate, truth).statistic),
        "spearman": 0.0 if constant else float(stats.spearmanr(estimate, truth).statistic),
        "sign": float(np.mean(np.sign(estimate[informative]) == np.sign(truth[informative]))),
        "variance": float(np.var(estimate)),
        "zeros": float(np.mean(estimate == 0.0)),
    }


def evaluate_seed(seed: int, args: argparse.Namespace) -> dict:
    """All figures of one seed: the oracle's scores and, per state view, header statistics and scores.

    The state views are the noise levels of ``args.noise`` and ``LATENT_VIEW``, where every state
    text is the latent state's id (a perfect state recogniser).
    """
    batch = roll_out(
        seed,
        tasks=args.tasks,
        episodes=args.episodes,
        horizon=args.horizon,
        rooms=args.rooms,
        epsilon_range=tuple(args.epsilon_range),
        gamma=args.gamma,
    )
    views = {level: batch.texts(noise, np.random.default_rng([seed, 2])) for level, noise in args.noise}
    views[LATENT_VIEW] = [f"latent{s}" for s in batch.latent]
    per_view = {}
    for view, texts in views.items():
        estimates, header = {}, {"distinct_text_fraction": len(set(texts)) / len(texts)}
        for label, config in ESTIMATORS.items():
            estimates[label], diagnostics = compute_advantages_with_diagnostics(
                batch.group_id,
                batch.episode_id,
                batch.t,
                batch.reward,
                texts,
                batch.success,
                gamma=args.gamma,
                tau=args.tau,
                omega=args.omega,
                **config,
            )
            if label == "proxmo":
                header.update({key: diagnostics[key] for key in HEADER_STATS})
        for label, (with_step, without_step) in STEP_TERMS.items():
            estimates[label] = estimates[with_step] - estimates[without_step]
        per_view[view] = {
            "header": header,
            "scores": {
                label: score(estimate, batch.true_advantage, args.sign_threshold)
                for label, estimate in estimates.items()
            },
        }
    return {
        "seed": seed,
        "num_steps": int(batch.t.size),
        "oracle": score(batch.oracle, batch.true_advantage, args.sign_threshold),
        "views": per_view,
    }


def mean_std(values: list[float]) -> str:
    """``"0.123±0.045"``: mean and population std over seeds."""
    return f"{np.mean(values):.3f}±{np.std(values):.3f}"


def print_table(title: str, rows: dict[str, list[dict[str, float]]]) -> None:
    """Print one table: a row per estimator, mean ± std over seeds of each metric."""
    print(title)
    print(f"  {'estimator':<28}" + "".join(f"{metric:>14}" for metric in METRICS))
    for label, per_seed in rows.items():
        cells = "".join(f"{mean_std([s[metric] for s in per_seed]):>14}" for metric in METRICS)
        print(f"  {label:<28}{cells}")
    print()


def report(results: list[dict], args: argparse.Namespace) -> None:
    """Print the reference table, then one table per state view."""
    print_table(
        "reference: Monte-Carlo return with the exact baseline (independent of the text)",
        {"oracle R_t - V_t(s_t)": [r["oracle"] for r in results]},
    )
    titles = {level: f"noise = {level} ({noise:g})" for level, noise in args.noise}
    titles[LATENT_VIEW] = "state text = latent state id (a perfect state recogniser)"
    for view, title in titles.items():
        headers = [r["views"][view]["header"] for r in results]
        summary = ", ".join(
            f"{key} {mean_std([h[key] for h in headers])}" for key in ("distinct_text_fraction", *HEADER_STATS)
        )
        rows = {label: [r["views"][view]["scores"][label] for r in results] for label in [*ESTIMATORS, *STEP_TERMS]}
        print_table(f"{title}: {summary}", rows)
    print_comparisons(results, list(titles))


def print_comparisons(results: list[dict], views: list[str]) -> None:
    """Per state view, the paired per-seed differences of Pearson correlations of ``COMPARISONS``."""
    print("paired differences of pearson, mean±std over seeds (seeds where the first is higher)")
    print(f"  {'comparison':<50}" + "".join(f"{view:>22}" for view in views))
    for first, second in COMPARISONS:
        cells = []
        for view in views:
            scores = [r["views"][view]["scores"] for r in results]
            delta = [s[first]["pearson"] - s[second]["pearson"] for s in scores]
            wins = sum(d > 0 for d in delta)
            cells.append(f"{np.mean(delta):+.3f}±{np.std(delta):.3f} ({wins}/{len(delta)})")
        print(f"  {first + ' - ' + second:<50}" + "".join(f"{cell:>22}" for cell in cells))
    print()


def parse_noise(spec: str) -> tuple[str, float]:
    """``"mild=0.07"`` -> ``("mild", 0.07)``."""
    label, _, value = spec.partition("=")
    try:
        noise = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"noise level must look like label=value, got {spec!r}") from None
    if not label or not 0.0 <= noise <= 1.0:
        raise argparse.ArgumentTypeError(f"noise level needs a label and a value in [0, 1], got {spec!r}")
    return label, noise


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument("--seeds", type=int, default=20, help="number of seeds (mean ± std over them)")
    parser.add_argument("--tasks", type=int, default=16, help="task groups K per batch")
    parser.add_argument("--episodes", type=int, default=8, help="episodes N per task group")
    parser.add_argument("--horizon", type=int, default=15, help="step limit H of an episode")
    parser.add_argument("--rooms", type=int, default=DEFAULT_ROOMS, help="rooms per house")
    parser.add_argument(
        "--epsilon-range",
        type=float,
        nargs=2,
        default=DEFAULT_EPSILON_RANGE,
        metavar=("LOW", "HIGH"),
        help="each task's exploration rate is drawn uniformly from [LOW, HIGH]",
    )
    parser.add_argument("--gamma", type=float, default=PAPER.gamma, help="discount of returns and exact values")
    parser.add_argument("--tau", type=float, default=PAPER.tau, help="PSA softmax temperature (default: the paper's)")
    parser.add_argument("--omega", type=float, default=PAPER.omega, help="weight of the step-level term (paper's)")
    parser.add_argument(
        "--noise",
        type=parse_noise,
        nargs="+",
        default=[("none", 0.0), ("mild", 0.07), ("strong", 0.25), ("heavy", 1.0)],
        metavar="LABEL=P",
        help="lexical noise levels: probability of each surface perturbation",
    )
    parser.add_argument(
        "--sign-threshold",
        type=float,
        default=0.005,
        help="sign agreement counts steps with |true advantage| above this",
    )
    parser.add_argument("--json", type=Path, help="also write all per-seed figures to this file")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.tasks < 1 or args.episodes < 2 or args.horizon < 1:
        parser.error("--seeds, --tasks and --horizon must be >= 1 and --episodes >= 2")
    low, high = args.epsilon_range
    if not 0.0 <= low <= high <= 1.0:
        parser.error(f"--epsilon-range needs 0 <= LOW <= HIGH <= 1, got {low} {high}")
    if not 3 <= args.rooms <= len(ROOM_NAMES):
        parser.error(f"--rooms must be in [3, {len(ROOM_NAMES)}], got {args.rooms}")
    if args.sign_threshold < 0:
        parser.error(f"--sign-threshold must be >= 0, got {args.sign_threshold}")
    if not 0.0 < args.gamma <= 1.0:
        parser.error(f"--gamma must be in (0, 1], got {args.gamma}")
    if args.tau <= 0:
        parser.error(f"--tau must be > 0, got {args.tau}")
    if len({label for label, _ in args.noise}) != len(args.noise):
        parser.error("--noise labels must be distinct")
    if any(label == LATENT_VIEW for label, _ in args.noise):
        parser.error(f"--noise label {LATENT_VIEW!r} is reserved for the latent-id view")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    results = [evaluate_seed(seed, args) for seed in range(args.seed, args.seed + args.seeds)]
    steps = np.mean([r["num_steps"] for r in results])
    print(
        f"credit assignment on the household text MDP: {args.seeds} seeds x {args.tasks} tasks x "
        f"{args.episodes} episodes, H={args.horizon}, {args.rooms} rooms, "
        f"epsilon ~ U{tuple(args.epsilon_range)}, gamma={args.gamma}, tau={args.tau}, omega={args.omega}, "
        f"{steps:.0f} steps per batch"
    )
    print(
        "metrics: correlation with the exact A = Q - V, sign agreement on |A| > "
        f"{args.sign_threshold:g}, variance and zero fraction of the estimates; mean±std over seeds\n"
    )
    report(results, args)
    print(f"wall time {time.perf_counter() - started:.1f} s")
    if args.json:
        args.json.write_text(
            json.dumps({"config": {k: v for k, v in vars(args).items() if k != "json"}, "results": results}, indent=1)
        )
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
