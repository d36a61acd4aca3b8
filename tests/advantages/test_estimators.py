"""The credit-assignment core against hand computations, the paper's identities and a literal reference."""

from __future__ import annotations

import math
import re
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.feature_extraction.text import TfidfVectorizer

from rllib_proxmo.advantages import (
    ESTIMATORS,
    advantage_diagnostics,
    compute_advantages,
    psc_weight,
    returns_to_go,
    tfidf_features,
)
from tests.advantages.reference import reference_advantages, reference_official

PAPER_ESTIMATORS = [e for e in ESTIMATORS if not e.endswith("_official")]
WORDS = ["cabinet", "drawer", "mug", "apple", "you", "see", "arrive", "at", "nothing", "happens", "1", "2"]


def random_batch(rng: np.random.Generator, num_groups=3, group_size=4, max_len=5, vocab=WORDS):
    """A batch of binary-success episodes with ALFWorld-like repeated states and some penalised steps, rows shuffled."""
    columns = {k: [] for k in ("group_id", "episode_id", "t", "reward", "state", "success", "penalty")}
    episode = 0
    for g in range(num_groups):
        for _ in range(group_size):
            length = int(rng.integers(1, max_len + 1))
            won = bool(rng.random() < 0.5)
            for k in range(length):
                columns["group_id"].append(10 * g + 7)
                columns["episode_id"].append(100 + episode)
                columns["t"].append(k)
                columns["reward"].append(1.0 if (won and k == length - 1) else float(rng.choice([0.0, 0.0, 0.3])))
                columns["penalty"].append(float(rng.choice([0.0, 0.0, 0.1])))
                words = rng.choice(vocab, size=int(rng.integers(0, 4)))
                columns["state"].append(" ".join(words) if rng.random() < 0.9 else "...")
                columns["success"].append(won)
            episode += 1
    order = rng.permutation(len(columns["t"]))
    return {k: (np.asarray(v)[order] if k != "state" else [v[i] for i in order]) for k, v in columns.items()}


def call(batch, **kwargs):
    return compute_advantages(
        batch["group_id"],
        batch["episode_id"],
        batch["t"],
        batch["reward"],
        batch["state"],
        batch["success"],
        penalty=batch["penalty"],
        **kwargs,
    )


# ---------------------------------------------------------------- hand-computed cases


def test_returns_to_go_by_hand():
    # Episode 5 (rows in shuffled order): rewards 0, 0, 1 at t = 0, 1, 2; episode 9: one step, reward 0.5.
    out = returns_to_go([5, 9, 5, 5], [2, 0, 0, 1], [1.0, 0.5, 0.0, 0.0], gamma=0.5)
    np.testing.assert_allclose(out, [1.0, 0.5, 0.25, 0.5])


def test_grpo_two_episode_group_by_hand():
    # One success (return 1) and one failure (return 0): mu = 0.5, unbiased sigma = sqrt(0.5).
    adv = compute_advantages([0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 0], ["a", "b", "a"], [1, 1, 0], estimator="grpo")
    expected = 0.5 / (math.sqrt(0.5) + 1e-6)
    np.testing.assert_allclose(adv, [expected, expected, -expected], atol=1e-12)


def test_proxmo_by_hand_same_step_identical_states():
    # Group of two single-step episodes with identical state text: PSA weights are 1/2 each.
    adv = compute_advantages([0, 0], [0, 1], [0, 0], [1.0, 0.0], ["room", "room"], [True, False])
    # PSC at p = 0.5 (Eq. 6, powers): sigmoid(0.5**4) for the success, sigmoid(-(0.5**4)) for the failure.
    z = 0.5 / (math.sqrt(0.5) + 1e-6)
    w_succ = 1 + 0.1 * (1 / (1 + math.exp(-(0.5**4))) - 0.5)
    w_fail = 1 + 0.1 * (1 / (1 + math.exp(0.5**4)) - 0.5)
    np.testing.assert_allclose(adv, [w_succ * z + 0.5, -w_fail * z - 0.5], atol=1e-12)


def test_psa_similarity_weights_by_hand():
    # Two states with cosine similarity s: weights softmax([1, s] / tau).
    states = ["apple mug", "apple cabinet"]
    v = TfidfVectorizer().fit_transform(states).toarray()
    s = float(v[0] @ v[1])
    adv = compute_advantages(
        [0, 0], [0, 1], [0, 0], [1.0, 0.0], states, [1, 0], estimator="proxmo_no_psc", tau=0.5, omega=2.0
    )
    w_self = 1 / (1 + math.exp((s - 1) / 0.5))
    baseline_0 = w_self * 1.0
    baseline_1 = (1 - w_self) * 1.0
    z = 0.5 / (math.sqrt(0.5) + 1e-6)
    np.testing.assert_allclose(adv, [z + 2 * (1 - baseline_0), -z + 2 * (0 - baseline_1)], atol=1e-12)


def test_gigpo_by_hand():
    # Three episodes reach "hall" (at different t); returns-to-go there are 1, gamma, 0.
    group = [0] * 6
    episode = [0, 0, 1, 1, 1, 2]
    t = [0, 1, 0, 1, 2, 0]
    reward = [0, 1, 0, 0, 1, 0]
    state = ["start", "hall", "start", "x", "hall", "hall"]
    success = [1, 1, 1, 1, 1, 0]
    adv = compute_advantages(group, episode, t, reward, state, success, estimator="gigpo", gamma=0.9)
    # mu = 2/3, unbiased sigma = sqrt(1/3): z = (1 - 2/3) / sqrt(1/3) = 1/sqrt(3); failure -2/sqrt(3).
    episode_z = np.array([1, 1, 1, 1, 1, -2]) / 3 / (math.sqrt(1 / 3) + 1e-6)
    hall = np.array([1.0, 1.0, 0.0])  # R_t at the three "hall" rows (rows 1, 4, 5)
    hall_z = (hall - hall.mean()) / (np.std(hall, ddof=1) + 1e-6)
    start = np.array([0.9, 0.81])  # R_0 of episodes 0 and 1
    start_z = (start - start.mean()) / (np.std(start, ddof=1) + 1e-6)
    step = np.array([start_z[0], hall_z[0], start_z[1], 0.0, hall_z[1], hall_z[2]])
    np.testing.assert_allclose(adv, episode_z + step, atol=1e-9)


# ---------------------------------------------------------------- the invalid-action penalty


@pytest.mark.parametrize("estimator", PAPER_ESTIMATORS)
def test_penalty_hits_only_the_invalid_turn_of_an_all_fail_group(estimator):
    # Four failed two-step episodes; episode 2's second turn was invalid. Had the 0.1 been part of the
    # reward, the z-score would give every step of episode 2 about -1.73 and the others +0.58.
    group, episode, t = [0] * 8, [0, 0, 1, 1, 2, 2, 3, 3], [0, 1] * 4
    state = ["kitchen", "fridge"] * 4
    penalty = [0, 0, 0, 0, 0, 0.1, 0, 0]
    adv = compute_advantages(group, episode, t, [0.0] * 8, state, [0] * 8, estimator=estimator, penalty=penalty)
    np.testing.assert_array_equal(adv, [0, 0, 0, 0, 0, -0.1, 0, 0])


@given(seed=st.integers(0, 10_000), estimator=st.sampled_from(PAPER_ESTIMATORS))
@settings(max_examples=30, deadline=None)
def test_penalty_is_subtracted_from_its_own_step_only(seed, estimator):
    batch = random_batch(np.random.default_rng(seed))
    without = call({**batch, "penalty": np.zeros(len(batch["t"]))}, estimator=estimator)
    np.testing.assert_allclose(call(batch, estimator=estimator), without - batch["penalty"], atol=1e-12, rtol=0)


def test_official_subtracts_the_penalty_from_the_row_score_and_return():
    # Success (reward 1) and a failed, invalid single step (penalty 0.1), same state: on the x10 scale the
    # rows score 10 and -0.1, mu = 4.95, p = clip(mu) = 1; PSA weights are 1/2, baseline 4.95.
    adv = compute_advantages(
        [0, 0], [0, 1], [0, 0], [1.0, 0.0], ["room", "room"], [1, 0], estimator="proxmo_official", penalty=[0, 0.1]
    )
    beta = 0.05 / (_sigmoid(1) - 0.5)
    w_fail = 1 + beta * (_sigmoid(-1) - 0.5)  # the success's weight is 1 + beta * (sigmoid(0**4) - 0.5) = 1
    np.testing.assert_allclose(adv, [5.05 + 5.05, -5.05 * w_fail - 5.05], atol=1e-12)


def test_diagnostics_report_penalised_steps():
    diag = advantage_diagnostics(
        [0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 0], ["a", "b", "a"], [1, 1, 0], penalty=[0, 0.1, 0]
    )
    assert diag["invalid_penalty_step_fraction"] == pytest.approx(1 / 3)
    assert diag["invalid_penalty_mean"] == pytest.approx(0.1 / 3)
    assert advantage_diagnostics([0], [0], [0], [1.0], ["a"], [1])["invalid_penalty_step_fraction"] == 0.0


# ---------------------------------------------------------------- the paper's identities


@pytest.mark.parametrize("p_successes", [1, 2, 4, 6, 7])
def test_zscore_identities_appendix_a1(p_successes):
    n = 8
    success = [1] * p_successes + [0] * (n - p_successes)
    adv = compute_advantages([0] * n, list(range(n)), [0] * n, success, ["s"] * n, success, estimator="grpo")
    p = p_successes / n
    # The unbiased sigma is sqrt(N / (N - 1)) times the population sqrt(p (1 - p)) of the appendix's identities.
    sigma = math.sqrt(p * (1 - p) * n / (n - 1))
    scale = sigma / (sigma + 1e-6) * math.sqrt((n - 1) / n)  # the epsilon of Eq. 5 and the N/(N-1) correction
    assert adv[0] == pytest.approx(math.sqrt((1 - p) / p) * scale, abs=1e-9)
    assert adv[-1] == pytest.approx(-math.sqrt(p / (1 - p)) * scale, abs=1e-9)
    # zfail(p) = -1 / zsucc(p): the inversion symmetry of Eq. 20, up to the same constant factor.
    assert adv[0] * adv[-1] == pytest.approx(-(scale**2), abs=1e-9)


def _sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_psc_weight_is_the_power_form_of_eq6():
    # p -> 0 success: d = 1, so d**alpha = 1 for every alpha; p -> 1 failure: p**alpha = 1.
    assert psc_weight([True], [0.0], 4.0, 0.1)[0] == pytest.approx(1 + 0.1 * (_sigmoid(1) - 0.5), abs=1e-12)
    assert psc_weight([False], [1.0], 4.0, 0.1)[0] == pytest.approx(1 + 0.1 * (_sigmoid(-1) - 0.5), abs=1e-12)
    assert psc_weight([True, False], [0.0, 1.0], 4.0, 0.1) == pytest.approx([1.0231, 0.9769], abs=1e-4)
    # p = 0.5 is "minimal modulation": 1 +- 0.1 * (sigmoid(0.0625) - 0.5) = 1 +- 0.0016.
    half = psc_weight([True, False], [0.5, 0.5], 4.0, 0.1)
    assert np.all(np.abs(half - 1) < 0.01)
    np.testing.assert_allclose(half, [1 + 0.1 * (_sigmoid(0.5**4) - 0.5), 1 + 0.1 * (_sigmoid(-(0.5**4)) - 0.5)])
    # A product sigmoid(alpha * d) would give 1 + 0.1 * (sigmoid(2) - 0.5) = 1.038 here.
    assert psc_weight([True], [0.5], 4.0, 0.1)[0] < 1.002


def test_psc_weight_extremes_and_monotonicity():
    p = np.linspace(0, 1, 11)
    success_w = psc_weight(np.ones(11, bool), p, 4.0, 0.1)
    failure_w = psc_weight(np.zeros(11, bool), p, 4.0, 0.1)
    assert np.all(np.diff(success_w) < 0) and np.all(success_w >= 1.0)  # rarer success, more credit
    assert np.all(np.diff(failure_w) < 0) and np.all(failure_w <= 1.0)  # commoner success, softer penalty
    assert success_w[-1] == pytest.approx(1.0) and failure_w[0] == pytest.approx(1.0)


# ---------------------------------------------------------------- against the literal reference


@pytest.mark.parametrize("estimator", PAPER_ESTIMATORS)
@pytest.mark.parametrize("psa_scope", ["same_step", "group"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_reference(estimator, psa_scope, seed):
    batch = random_batch(np.random.default_rng(seed))
    kwargs = dict(estimator=estimator, alpha=3.0, beta=0.3, tau=0.2, gamma=0.9, omega=0.7, psa_scope=psa_scope)
    np.testing.assert_allclose(call(batch, **kwargs), reference_advantages(**batch, **kwargs), atol=1e-6, rtol=0)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_official_matches_release_description(seed):
    batch = random_batch(np.random.default_rng(seed), num_groups=4, group_size=3)
    kwargs = dict(alpha=4.0, tau=0.1, gamma=0.95)
    out = call(batch, estimator="proxmo_official", **kwargs)
    expected = reference_official(
        batch["group_id"],
        batch["episode_id"],
        batch["t"],
        batch["reward"],
        batch["state"],
        penalty=batch["penalty"],
        **kwargs,
    )
    np.testing.assert_allclose(out, expected, atol=5e-6, rtol=0)


def test_official_differs_from_paper():
    batch = random_batch(np.random.default_rng(7))
    assert not np.allclose(call(batch, estimator="proxmo_official"), call(batch, estimator="proxmo"))


@given(st.lists(st.text(alphabet="ab c.!é", max_size=12), min_size=1, max_size=30))
@settings(max_examples=60, deadline=None)
def test_tfidf_features_equal_default_vectorizer(texts):
    features, index = tfidf_features(texts)
    try:
        expected = TfidfVectorizer().fit_transform(texts).toarray()
    except ValueError:  # empty vocabulary
        expected = np.zeros((len(texts), 0))
    np.testing.assert_allclose(features.toarray()[index], expected, atol=1e-12)


# ---------------------------------------------------------------- properties


@given(
    seed=st.integers(0, 10_000), estimator=st.sampled_from(ESTIMATORS), scope=st.sampled_from(["same_step", "group"])
)
@settings(max_examples=40, deadline=None)
def test_permutation_invariance(seed, estimator, scope):
    rng = np.random.default_rng(seed)
    batch = random_batch(rng)
    out = call(batch, estimator=estimator, psa_scope=scope)
    perm = rng.permutation(len(out))
    shuffled = {k: (v[perm] if k != "state" else [v[i] for i in perm]) for k, v in batch.items()}
    np.testing.assert_allclose(call(shuffled, estimator=estimator, psa_scope=scope), out[perm], atol=1e-10)


def _step_terms(batch, tau, scope):
    """A_S alone: proxmo_no_psc minus its episode term (grpo)."""
    return call(batch, estimator="proxmo_no_psc", tau=tau, psa_scope=scope) - call(batch, estimator="grpo")


def _candidates(batch, i, scope):
    n = len(batch["t"])
    return [
        j
        for j in range(n)
        if batch["group_id"][j] == batch["group_id"][i] and (scope == "group" or batch["t"][j] == batch["t"][i])
    ]


@given(seed=st.integers(0, 10_000), scope=st.sampled_from(["same_step", "group"]))
@settings(max_examples=30, deadline=None)
def test_tau_to_zero_is_exact_vector_match_mean(seed, scope):
    rng = np.random.default_rng(seed)
    batch = random_batch(rng, vocab=WORDS[:5])
    batch["state"] = [s if s.strip(". ") else "cabinet" for s in batch["state"]]  # every vector non-empty
    batch["state"] = [s if any(len(w) > 1 for w in s.split()) else s + " mug" for s in batch["state"]]
    vectors = TfidfVectorizer().fit_transform(batch["state"]).toarray()
    rtg = returns_to_go(batch["episode_id"], batch["t"], batch["reward"], gamma=0.95)
    expected = np.empty(len(rtg))
    for i in range(len(rtg)):
        same = [j for j in _candidates(batch, i, scope) if np.allclose(vectors[j], vectors[i], atol=1e-12)]
        expected[i] = rtg[i] - rtg[same].mean()
    np.testing.assert_allclose(_step_terms(batch, 1e-4, scope), expected, atol=1e-6)


@given(seed=st.integers(0, 10_000), scope=st.sampled_from(["same_step", "group"]))
@settings(max_examples=30, deadline=None)
def test_tau_to_infinity_is_plain_mean(seed, scope):
    batch = random_batch(np.random.default_rng(seed))
    rtg = returns_to_go(batch["episode_id"], batch["t"], batch["reward"], gamma=0.95)
    expected = np.array([rtg[i] - rtg[_candidates(batch, i, scope)].mean() for i in range(len(rtg))])
    np.testing.assert_allclose(_step_terms(batch, 1e9, scope), expected, atol=1e-6)


# ---------------------------------------------------------------- degenerate but legal input


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_degenerate_inputs_are_finite(estimator):
    cases = [
        # one episode in the group, single step, empty state
        ([0], [0], [0], [1.0], [""], [True]),
        # all-success group
        ([0, 0], [0, 1], [0, 0], [1.0, 1.0], ["a b", "a b"], [1, 1]),
        # all-fail group, punctuation-only states
        ([0, 0, 0], [0, 1, 1], [0, 0, 1], [0.0, 0.0, 0.0], ["...", "!!", "?"], [0, 0, 0]),
    ]
    for case in cases:
        out = compute_advantages(*case, estimator=estimator)
        assert out.shape == (len(case[0]),) and np.all(np.isfinite(out))
    assert compute_advantages([], [], [], [], [], [], estimator=estimator).shape == (0,)


def test_single_episode_and_uniform_groups_have_zero_episode_term():
    np.testing.assert_array_equal(compute_advantages([0], [0], [0], [1.0], ["s"], [1], estimator="grpo"), [0.0])
    all_success = compute_advantages([0, 0], [0, 1], [0, 0], [1.0, 1.0], ["a", "b"], [1, 1], estimator="proxmo")
    np.testing.assert_array_equal(all_success, [0.0, 0.0])


def test_empty_state_has_similarity_zero_with_others():
    # Row 0 has no token: similarity 1 with itself, 0 with "mug" (and so does row 1 with it).
    args = ([0, 0], [0, 1], [0, 0], [1.0, 0.0], ["", "mug"], [1, 0])
    step = compute_advantages(*args, estimator="proxmo_no_psc") - compute_advantages(*args, estimator="grpo")
    w_self = 1 / (1 + math.exp(-1 / 0.1))
    np.testing.assert_allclose(step, [1.0 - w_self, 0.0 - (1 - w_self)], atol=1e-12)


# ---------------------------------------------------------------- bad input


GOOD = dict(group_id=[0, 0], episode_id=[0, 1], t=[0, 0], reward=[1.0, 0.0], state=["a", "b"], success=[1, 0])


@pytest.mark.parametrize(
    "override, kwargs, message",
    [
        (dict(reward=[1.0]), {}, "length mismatch"),
        (dict(state=["a"]), {}, "length mismatch"),
        (dict(reward=[np.nan, 0.0]), {}, "NaN"),
        (dict(reward=[np.inf, 0.0]), {}, "NaN or infinite"),
        (dict(group_id=[0, 1], episode_id=[0, 0], t=[0, 1]), {}, "more than one group"),
        (dict(success=[2, 0]), {}, "binary"),
        (dict(success=[0.5, 0]), {}, "binary"),
        (dict(episode_id=[0, 0], t=[0, 0], success=[1, 1]), {}, "same (episode_id, t)"),
        (dict(episode_id=[0, 0], t=[0, 2], success=[1, 1]), {}, "t=0..T-1"),
        (dict(episode_id=[0, 0], t=[0, 1], success=[1, 0]), {}, "different success"),
        (dict(state=["a", None]), {}, "strings"),
        (dict(group_id=[0.5, 0.0]), {}, "integers"),
        ({}, dict(tau=0.0), "tau must be >= 2.23e-308"),
        ({}, dict(tau=-1.0), "tau must be >= 2.23e-308"),
        ({}, dict(tau=1e-310), "tau must be >= 2.23e-308"),
        (dict(reward=[1 + 1j, 0.0]), {}, "reward must hold real numbers"),
        ({}, dict(gamma=1.5), "gamma"),
        ({}, dict(alpha=float("nan")), "alpha"),
        ({}, dict(estimator="ppo"), "unknown estimator"),
        ({}, dict(psa_scope="batch"), "psa_scope"),
        ({}, dict(alpha=0.0), "alpha must be > 0"),
        ({}, dict(penalty=[0.1]), "length mismatch: penalty"),
        ({}, dict(penalty=[-0.1, 0.0]), "penalty must be finite and >= 0"),
        ({}, dict(penalty=[np.nan, 0.0]), "penalty holds 1 NaN or infinite"),
        ({}, dict(penalty=[0.1j, 0.0]), "penalty must hold real numbers"),
        ({}, dict(penalty=["x", "y"]), "penalty must be numeric"),
        ({}, dict(estimator="proxmo_official", beta=0.3), "fixed strength"),
        ({}, dict(estimator="gigpo_official", gigpo_norm="std_norm"), "gigpo_norm must be one of"),
    ],
)
def test_bad_input_raises_clear_error(override, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        compute_advantages(**{**GOOD, **override}, **kwargs)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_finite_rewards_that_overflow_raise_instead_of_nan(estimator):
    reward = [1e308, 1e308, 0.0, 0.0]  # the first episode's return overflows
    with np.errstate(all="ignore"), pytest.raises(ValueError, match="advantages overflow float64.*rescale the rewards"):
        compute_advantages(
            [0] * 4, [0, 0, 1, 1], [0, 1, 0, 1], reward, ["a", "b", "a", "c"], [1, 1, 0, 0], estimator=estimator
        )


def test_smallest_normal_tau_gives_finite_advantages():
    adv = compute_advantages(
        [0] * 4, [0, 0, 1, 1], [0, 1, 0, 1], [1, 0, 0, 0], ["a b", "b", "a", "c"], [1, 1, 0, 0], tau=2.3e-308
    )
    assert np.all(np.isfinite(adv))


# ---------------------------------------------------------------- diagnostics


def test_diagnostics_table2_histogram_and_psa_stats():
    group = [0] * 6
    episode = [0, 0, 1, 1, 2, 2]
    t = [0, 1, 0, 1, 0, 1]
    state = ["start", "hall", "start", "kitchen", "start", "hall"]
    diag = advantage_diagnostics(group, episode, t, [0, 1, 0, 0, 0, 1], state, [1, 1, 0, 0, 1, 1])
    # "start" x3 (size 3), "hall" x2 (size 2), "kitchen" x1 (singleton).
    assert diag["gigpo_singleton_fraction"] == pytest.approx(1 / 6)
    assert diag["gigpo_step_group_size_2"] == pytest.approx(2 / 6)
    assert diag["gigpo_step_group_size_3"] == pytest.approx(3 / 6)
    assert diag["gigpo_step_group_size_gt3"] == 0.0
    assert diag["success_rate"] == pytest.approx(2 / 3)
    assert diag["num_groups"] == 1 and diag["num_episodes"] == 3 and diag["num_steps"] == 6
    assert 1.0 <= diag["psa_effective_neighbours"] <= diag["psa_num_candidates"] == 3.0
    assert diag["psc_weight_min"] < 1.0 < diag["psc_weight_max"]
    assert set(advantage_diagnostics(group, episode, t, [0] * 6, state, [0] * 6, estimator="grpo")).isdisjoint(
        {"psa_weight_entropy", "psc_weight_min"}
    )


def test_core_does_not_import_ray():
    code = "import sys, rllib_proxmo.advantages; assert 'ray' not in sys.modules and 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
