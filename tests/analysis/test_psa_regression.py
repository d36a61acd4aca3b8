"""Tests of PSA's baseline as a regressor (rllib_proxmo.analysis.psa_regression) and of its Tune search."""

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.model_selection import GridSearchCV
from sklearn.utils.estimator_checks import (
    check_get_params_invariance,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
    check_set_params,
)

from rllib_proxmo.advantages.step_term import SoftBaseline, fit_tfidf, soft_baseline, tfidf_features
from rllib_proxmo.analysis.psa_regression import (
    FROM_CANDIDATES,
    FROM_GLOBAL_MEAN,
    FROM_GROUP_MEAN,
    CrossValidation,
    ExactMatchRegressor,
    PSABaselineRegressor,
    episode_folds,
    evaluate_folds,
    step_returns,
)

WORDS = ("apple", "mug", "kitchen", "table", "fridge", "towel")


def steps(rows) -> pd.DataFrame:
    """A step table from ``(group_id, episode_id, t, state)`` tuples."""
    return pd.DataFrame(rows, columns=["group_id", "episode_id", "t", "state"])


def random_steps(seed: int, groups: int = 3, episodes: int = 5, length: int = 4) -> tuple[pd.DataFrame, np.ndarray]:
    """Steps whose states are random 3-word sets of :data:`WORDS` (so texts repeat) and random returns.

    Distinct word sets have TF-IDF cosine well below 1, identical ones exactly 1.
    """
    rng = np.random.default_rng(seed)
    rows = [
        (g, g * episodes + e, t, " ".join(sorted(rng.choice(WORDS, size=3, replace=False))))
        for g in range(groups)
        for e in range(episodes)
        for t in range(length)
    ]
    return steps(rows), rng.uniform(0.0, 1.0, size=len(rows))


# Training steps of one group; the held-out step is "apple" at t = 0. Over the three training texts
# "apple" and "banana" both have document frequency 2, so the TF-IDF row of "apple banana" is
# (1, 1) / sqrt(2): cos("apple", "apple banana") = 1/sqrt(2), cos("apple", "banana") = 0, and the
# identical text "apple" has similarity 1.
HAND_TRAIN = steps([(0, 0, 0, "banana"), (0, 1, 0, "apple banana"), (0, 1, 1, "apple")])
HAND_RETURNS = np.array([0.0, 1.0, 0.5])
HAND_TEST = steps([(0, 2, 0, "apple")])


def test_same_step_prediction_matches_hand_computation():
    report = PSABaselineRegressor(tau=0.5).fit(HAND_TRAIN, HAND_RETURNS).predict_report(HAND_TEST)
    # Candidates at t = 0: similarities (0, 1/sqrt 2) / 0.5 -> logits (0, sqrt 2).
    weight = math.exp(math.sqrt(2)) / (1.0 + math.exp(math.sqrt(2)))
    assert report.prediction[0] == pytest.approx(weight * 1.0, rel=1e-12)
    assert report.num_candidates[0] == 2 and report.source[0] == FROM_CANDIDATES
    assert report.effective_neighbours[0] == pytest.approx(1.0 / (weight**2 + (1 - weight) ** 2), rel=1e-12)


def test_group_scope_prediction_matches_hand_computation():
    prediction = PSABaselineRegressor(tau=0.5, psa_scope="group").fit(HAND_TRAIN, HAND_RETURNS).predict(HAND_TEST)
    # All three candidates: logits (0, sqrt 2, 2) over returns (0, 1, 0.5).
    logits = np.array([0.0, math.sqrt(2), 2.0])
    expected = np.exp(logits) @ HAND_RETURNS / np.exp(logits).sum()
    assert prediction[0] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("tau", [math.inf, 1e9])
def test_large_tau_gives_the_group_mean(tau):
    X, y = random_steps(seed=1)
    train, test = np.arange(len(X)) % 5 != 0, np.arange(len(X)) % 5 == 0
    prediction = PSABaselineRegressor(tau=tau, psa_scope="group").fit(X[train], y[train]).predict(X[test])
    group_mean = pd.Series(y[train]).groupby(X["group_id"][train].to_numpy()).mean()
    np.testing.assert_allclose(prediction, group_mean[X["group_id"][test]].to_numpy(), rtol=1e-9)


def test_large_tau_same_step_gives_the_mean_at_the_same_step():
    X, y = random_steps(seed=2)
    train, test = X["episode_id"] % 5 != 0, X["episode_id"] % 5 == 0
    prediction = PSABaselineRegressor(tau=math.inf).fit(X[train], y[train]).predict(X[test])
    mean = pd.Series(y[train.to_numpy()]).groupby([X["group_id"][train].to_numpy(), X["t"][train].to_numpy()]).mean()
    expected = [mean[(g, t)] for g, t in zip(X["group_id"][test], X["t"][test])]
    np.testing.assert_allclose(prediction, expected, rtol=1e-9)


def test_small_tau_gives_the_exact_match_mean_where_one_exists():
    X, y = random_steps(seed=3, episodes=6)
    train, test = X["episode_id"] % 3 != 0, X["episode_id"] % 3 == 0
    exact = ExactMatchRegressor().fit(X[train], y[train]).predict_report(X[test])
    psa = PSABaselineRegressor(tau=1e-4, psa_scope="group").fit(X[train], y[train]).predict(X[test])
    matched = exact.source == FROM_CANDIDATES
    assert 0 < matched.sum() < len(matched)  # the comparison covers matched steps, and some are unmatched
    np.testing.assert_allclose(psa[matched], exact.prediction[matched], rtol=1e-12, atol=1e-12)
    # Unmatched steps still get a TF-IDF neighbour's return, not the exact-match fallback.
    assert not np.allclose(psa[~matched], exact.prediction[~matched])


def test_missing_candidates_fall_back_to_group_then_global_mean(caplog):
    model = PSABaselineRegressor().fit(HAND_TRAIN, HAND_RETURNS)
    test = steps([(0, 5, 7, "apple"), (9, 6, 0, "apple"), (0, 5, 0, "apple")])
    with caplog.at_level(logging.INFO, logger="rllib_proxmo.analysis.psa_regression"):
        report = model.predict_report(test)
        prediction = model.predict(test)
    np.testing.assert_array_equal(report.source, [FROM_GROUP_MEAN, FROM_GLOBAL_MEAN, FROM_CANDIDATES])
    assert prediction[0] == pytest.approx(HAND_RETURNS.mean()) and prediction[1] == pytest.approx(HAND_RETURNS.mean())
    assert report.fallbacks == {"group_mean": 1, "global_mean": 1}
    assert "2 of 3 steps had no candidate" in caplog.text


def test_groups_are_told_apart_by_iteration():
    X = pd.concat([HAND_TRAIN.assign(iteration=0), HAND_TRAIN.assign(iteration=1)], ignore_index=True)
    y = np.concatenate([HAND_RETURNS, HAND_RETURNS + 10.0])
    prediction = (
        PSABaselineRegressor(tau=math.inf, psa_scope="group").fit(X, y).predict(HAND_TEST.assign(iteration=[1]))
    )
    assert prediction[0] == pytest.approx(HAND_RETURNS.mean() + 10.0)


def test_unseen_words_and_termless_texts_give_uniform_weights():
    model = PSABaselineRegressor(tau=0.01).fit(HAND_TRAIN, HAND_RETURNS)
    unseen = model.predict_report(steps([(0, 3, 0, "zebra"), (0, 3, 1, "...")]))
    assert unseen.prediction[0] == pytest.approx(0.5)  # uniform over the t = 0 candidates (0, 1)
    assert unseen.effective_neighbours[0] == pytest.approx(2.0)
    # A text without a term has similarity 0 with every text, an identical one included (as in
    # training, where only a step's similarity with itself is 1).
    termless = steps([(0, 0, 0, "..."), (0, 1, 0, "apple")])
    model = PSABaselineRegressor(tau=0.01).fit(termless, np.array([1.0, 0.0]))
    assert model.predict(steps([(0, 2, 0, "...")]))[0] == pytest.approx(0.5)


# --- the regressor is training's PSA baseline (rllib_proxmo.advantages.step_term) ----------------


def core_baseline(X: pd.DataFrame, y: np.ndarray, tau: float, scope: str) -> SoftBaseline:
    """Training's soft baseline of the steps of ``X`` (one iteration), with ``y`` as the returns."""
    features, feature_index = tfidf_features(X["state"].tolist())
    group_index = np.unique(X["group_id"], return_inverse=True)[1]
    return soft_baseline(group_index, X["t"].to_numpy(), y, features, feature_index, tau, scope)


@pytest.mark.parametrize("scope", ["same_step", "group"])
@pytest.mark.parametrize("tau", [0.05, 0.3, 2.0])
def test_predicting_the_training_steps_gives_the_training_baseline(scope, tau):
    # Leave-one-in: a training step is its own candidate with similarity 1 in both (non-empty texts).
    X, y = random_steps(seed=11, groups=3, episodes=6, length=5)
    X = X[~((X["episode_id"] % 4 == 1) & (X["t"] >= 3))]  # some shorter episodes: blocks of unequal size
    y = y[X.index]
    report = PSABaselineRegressor(tau=tau, psa_scope=scope).fit(X, y).predict_report(X)
    core = core_baseline(X, y, tau, scope)
    np.testing.assert_allclose(report.prediction, core.baseline, rtol=0, atol=1e-12)
    np.testing.assert_allclose(report.effective_neighbours, core.effective_neighbours, rtol=1e-12)
    np.testing.assert_array_equal(report.num_candidates, core.num_candidates)


def test_held_out_prediction_is_the_training_baseline_without_the_step_itself():
    # Same-step scope: the candidates of step i in training are i and one step of every other
    # episode of its group at its t, exactly the regressor's candidates when i's episode is held out.
    # One-word states have TF-IDF vectors independent of the idf, so both see the same cosines
    # (1 for the same word, else 0) and B_i = (e^(1/tau) y_i + Z_i P_i) / (e^(1/tau) + Z_i), with
    # Z_i = sum over the other candidates of e^(cos/tau) and P_i the held-out prediction.
    rng = np.random.default_rng(12)
    tau = 0.4
    X = steps([(g, 6 * g + e, t, str(rng.choice(WORDS[:3]))) for g in range(2) for e in range(6) for t in range(3)])
    X = X[~((X["episode_id"] % 6 == 0) & (X["t"] == 2))].reset_index(drop=True)  # t = 2 of episode 0 missing
    X.loc[(X["episode_id"] == 1) & (X["t"] == 2), "state"] = "zebra"  # a word no other episode has
    y = rng.uniform(0.0, 1.0, size=len(X))
    core = core_baseline(X, y, tau, "same_step").baseline
    for episode in X["episode_id"].unique():
        held_out = (X["episode_id"] == episode).to_numpy()
        report = PSABaselineRegressor(tau=tau).fit(X[~held_out], y[~held_out]).predict_report(X[held_out])
        assert np.all(report.source == FROM_CANDIDATES)
        for row, prediction in zip(np.flatnonzero(held_out), report.prediction):
            others = np.flatnonzero((X["group_id"] == X["group_id"][row]) & (X["t"] == X["t"][row]) & ~held_out)
            weight = np.exp((X["state"][others] == X["state"][row]).to_numpy() / tau).sum()
            expected = (math.exp(1 / tau) * y[row] + weight * prediction) / (math.exp(1 / tau) + weight)
            assert core[row] == pytest.approx(expected, rel=1e-12), row


# Repeated texts (each repetition is a document) and one without a term; no two terms tie at the
# max_features cuts below.
TFIDF_TEXTS = [
    "red mug on the table",
    "red mug",
    "red mug",
    "blue mug on the shelf",
    "red apple",
    "the red apple on the table",
    "kitchen",
    "...",
]
UNSEEN_TEXTS = ["a red shelf in the kitchen", "zebra", "red mug"]


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"ngram_range": (1, 2)},
        {"sublinear_tf": True},
        {"min_df": 2},
        {"max_df": 0.5},
        {"min_df": 0.3, "max_df": 4},
        {"max_features": 4},
        {"ngram_range": (1, 2), "max_features": 3, "sublinear_tf": True},
    ],
)
def test_tfidf_equals_scikit_learns_vectorizer_on_training_and_unseen_texts(options):
    model, features, index = fit_tfidf(TFIDF_TEXTS, **options)
    vectorizer = TfidfVectorizer(**options).fit(TFIDF_TEXTS)
    assert model.terms == tuple(vectorizer.get_feature_names_out())
    np.testing.assert_allclose(features.toarray()[index], vectorizer.transform(TFIDF_TEXTS).toarray(), atol=1e-12)
    unseen, unseen_index = model.transform(UNSEEN_TEXTS)
    np.testing.assert_allclose(unseen.toarray()[unseen_index], vectorizer.transform(UNSEEN_TEXTS).toarray(), atol=1e-12)


def test_max_features_keeps_the_alphabetically_first_of_equally_frequent_terms():
    assert fit_tfidf(["mug apple", "cup"], max_features=2)[0].terms == ("apple", "cup")


def test_tfidf_options_change_the_similarity():
    X = steps([(0, 0, 0, "red mug on table"), (0, 1, 0, "mug on red table")])
    test = steps([(0, 2, 0, "red mug")])
    y = np.array([1.0, 0.0])
    unigram = PSABaselineRegressor(tau=0.05).fit(X, y).predict(test)[0]
    bigram = PSABaselineRegressor(tau=0.05, ngram_range=(1, 2)).fit(X, y).predict(test)[0]
    assert unigram == pytest.approx(0.5)  # same bag of words
    assert bigram > 0.9  # only the first shares the bigram "red mug"


def test_step_returns_are_discounted_per_episode():
    X = steps([(0, 0, 0, "a"), (0, 0, 1, "b"), (0, 1, 0, "a")]).assign(reward=[0.0, 1.0, 2.0])
    np.testing.assert_allclose(step_returns(X, gamma=0.5), [0.5, 1.0, 2.0])
    with pytest.raises(ValueError, match="'reward' column"):
        step_returns(X.drop(columns="reward"))


def test_folds_never_split_an_episode_and_cover_every_step_once():
    X, _ = random_steps(seed=4, groups=4, episodes=8)
    X["iteration"] = X["group_id"] % 2
    X["episode_id"] = X["episode_id"] % 16  # episode ids repeat across iterations
    folds = episode_folds(X, n_splits=4, seed=0)
    assert len(folds) == 4
    episode = list(zip(X["iteration"], X["episode_id"]))
    held_out = np.concatenate([test for _, test in folds])
    assert sorted(held_out) == list(range(len(X)))
    for train, test in folds:
        assert not {episode[i] for i in train} & {episode[i] for i in test}
        # Stratified by task group: every group keeps training episodes in every fold.
        assert set(X["group_id"][train]) == set(X["group_id"])


def test_evaluate_folds_agrees_with_scikit_learn_grid_search():
    X, y = random_steps(seed=5, episodes=6)
    folds = episode_folds(X, n_splits=3, seed=1)
    search = GridSearchCV(
        PSABaselineRegressor(), {"tau": [0.05, 1.0]}, cv=folds, scoring="neg_mean_squared_error", error_score="raise"
    ).fit(X, y)
    mse = {tau: evaluate_folds(PSABaselineRegressor(tau=tau), X, y, folds).mse for tau in (0.05, 1.0)}
    for tau, score in zip(search.cv_results_["param_tau"], search.cv_results_["mean_test_score"]):
        assert -score == pytest.approx(mse[tau], rel=1e-12)
    best = min(mse, key=mse.get)
    assert search.best_params_ == {"tau": best}  # refitted on all rows with the best tau
    np.testing.assert_array_equal(search.predict(X), PSABaselineRegressor(tau=best).fit(X, y).predict(X))


def test_scikit_learn_estimator_conventions():
    for estimator in (PSABaselineRegressor(tau=0.3, ngram_range=(1, 2)), ExactMatchRegressor()):
        name = type(estimator).__name__
        check_no_attributes_set_in_init(name, estimator)
        check_parameters_default_constructible(name, estimator)
        check_get_params_invariance(name, estimator)
        check_set_params(name, estimator)
        with pytest.raises(NotFittedError):
            estimator.predict(HAND_TEST)
        assert estimator.fit(HAND_TRAIN, HAND_RETURNS) is estimator
        assert clone(estimator).get_params() == estimator.get_params()
    # set_params reaches the fit: tau = inf over the group predicts the group mean.
    model = PSABaselineRegressor().set_params(tau=math.inf, psa_scope="group").fit(HAND_TRAIN, HAND_RETURNS)
    assert model.predict(HAND_TEST)[0] == pytest.approx(HAND_RETURNS.mean())


@pytest.mark.parametrize(
    ("model", "X", "y", "message"),
    [
        (PSABaselineRegressor(tau=0.0), HAND_TRAIN, HAND_RETURNS, "tau must be a number > 0"),
        (PSABaselineRegressor(tau=float("nan")), HAND_TRAIN, HAND_RETURNS, "tau must be a number > 0"),
        (PSABaselineRegressor(psa_scope="episode"), HAND_TRAIN, HAND_RETURNS, "psa_scope must be one of"),
        (PSABaselineRegressor(min_df=5), HAND_TRAIN, HAND_RETURNS, "prune every term of the 3 texts"),
        (PSABaselineRegressor(ngram_range=(2, 1)), HAND_TRAIN, HAND_RETURNS, "ngram_range must be two ints"),
        (PSABaselineRegressor(max_df=1.5), HAND_TRAIN, HAND_RETURNS, "max_df must be an int >= 1"),
        (PSABaselineRegressor(max_features=0), HAND_TRAIN, HAND_RETURNS, "max_features must be None or an int"),
        (PSABaselineRegressor(), HAND_TRAIN.drop(columns=["t"]), HAND_RETURNS, r"lacks the step column\(s\) \['t'\]"),
        (PSABaselineRegressor(), HAND_TRAIN.assign(state=["a", None, "b"]), HAND_RETURNS, "strings; row 1 is"),
        (PSABaselineRegressor(), HAND_TRAIN.assign(t=[0.0, 0.0, 1.0]), HAND_RETURNS, "'t' of X must hold integers"),
        (PSABaselineRegressor(), HAND_TRAIN, HAND_RETURNS[:2], r"shape \(3,\)"),
        (ExactMatchRegressor(), HAND_TRAIN, np.array([0.0, np.nan, 1.0]), "NaN or infinite"),
        (ExactMatchRegressor(), HAND_TRAIN.iloc[:0], np.zeros(0), "zero steps"),
        (ExactMatchRegressor(), "not a table", HAND_RETURNS, "must be a pandas DataFrame"),
    ],
)
def test_bad_input_is_refused_with_a_clear_error(model, X, y, message):
    with pytest.raises(ValueError, match=message):
        model.fit(X, y)


# --- the Ray Tune search (tuned_examples/psa_similarity_search.py) ---------------------------------


@pytest.fixture
def ray_one_cpu():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=1, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_tune_search_runs_two_trials_end_to_end(ray_one_cpu, tmp_path, capsys):
    from tuned_examples import psa_similarity_search as script

    args = script.parse_args(
        [
            "--synthetic",
            "--search",
            "random",
            "--num-samples",
            "2",
            "--cv-folds",
            "3",
            "--seed",
            "3",
            "--iterations",
            "1",
            "--tasks",
            "4",
            "--episodes",
            "4",
            "--horizon",
            "12",
            "--storage-path",
            str(tmp_path),
        ]
    )
    data, table = script.search(args)
    assert data.returns.var() > 0  # some episodes succeed: the trials have something to predict

    assert len(table) == 2 and table["cv_mse"].is_monotonic_increasing
    assert (tmp_path / "psa_similarity_search").is_dir()
    assert list(tmp_path.glob("synthetic_rollouts_*.parquet"))
    for trial in table.itertuples():  # Tune's figures are the regressor's on the shared folds
        config = {
            "tau": trial.tau,
            "psa_scope": trial.psa_scope,
            "ngram_range": trial.ngram_range,
            "sublinear_tf": trial.sublinear_tf,
        }
        local = evaluate_folds(script.regressor(config), data.steps, data.returns, data.folds)
        np.testing.assert_allclose(trial.fold_mse, local.fold_mse, rtol=1e-12)
        assert 1e-3 <= trial.tau <= 10.0

    best = table.iloc[0]
    at_paper_tau = evaluate_folds(
        script.regressor({**best[["psa_scope", "ngram_range", "sublinear_tf"]].to_dict(), "tau": script.PAPER_TAU}),
        data.steps,
        data.returns,
        data.folds,
    )
    verdict = script.paper_tau_verdict(best, at_paper_tau)
    script.print_report(table, script.reference_scores(data), verdict, data)
    out = capsys.readouterr().out
    assert "true V_t(s_t) (noise floor)" in out and "Best configuration" in out
    assert verdict.split(":")[0] in {"AGREES", "NEAR", "INCONCLUSIVE", "DISAGREES"}


def test_paper_tau_verdict_reads_the_paired_difference():
    from tuned_examples import psa_similarity_search as script

    far = pd.Series({"tau": 3.0, "cv_mse": 0.10, "fold_mse": np.array([0.10, 0.11, 0.09])})
    near = pd.Series({**far, "tau": 0.2})
    worse = evaluate_result(np.array([0.20, 0.21, 0.19]))
    close = evaluate_result(np.array([0.101, 0.109, 0.091]))  # mean +0.00033, standard error 0.00067
    assert script.paper_tau_verdict(far, worse).startswith("DISAGREES")
    assert script.paper_tau_verdict(far, close).startswith("INCONCLUSIVE")
    assert script.paper_tau_verdict(near, close).startswith("AGREES")
    assert script.paper_tau_verdict(near, worse).startswith("NEAR")


def evaluate_result(fold_mse: np.ndarray) -> CrossValidation:
    return CrossValidation(fold_mse=fold_mse, fallback_fraction=0.0, effective_neighbours=1.0)


def test_cli_refuses_contradictory_options():
    from tuned_examples import psa_similarity_search as script

    with pytest.raises(SystemExit):
        script.parse_args(["--synthetic", "--num-samples", "5"])  # the grid runs each point once
    with pytest.raises(SystemExit):
        script.parse_args(["--synthetic", "--rollouts", "x.parquet"])
    grid = script.parse_args(["--rollouts", "x.parquet"])
    assert grid.rollouts == Path("x.parquet") and not grid.synthetic and grid.num_samples == 1
    assert script.parse_args(["--synthetic", "--search", "random"]).num_samples == 40
