"""Slow, literal re-statements of the advantage math, one row at a time.

They follow docs/design.md §2 (paper) and §3 (the releases) word for word with Python
loops and no vectorisation, so the tests can check the library's vectorised,
block-diagonal implementation against an independent reading of the spec.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer


def _episodes(group_id, episode_id, t, reward):
    """{episode: (group, [rewards ordered by t])}."""
    steps: dict[int, dict[int, float]] = {}
    group_of: dict[int, int] = {}
    for g, e, k, r in zip(group_id, episode_id, t, reward):
        steps.setdefault(int(e), {})[int(k)] = float(r)
        group_of[int(e)] = int(g)
    return {e: (group_of[e], [rs[k] for k in sorted(rs)]) for e, rs in steps.items()}


def _return_to_go(rewards, k, gamma):
    return sum(gamma ** (j - k) * rewards[j] for j in range(k, len(rewards)))


def _unbiased_std(values):
    """sqrt(sum (x - mean)^2 / (n - 1)); 0 for a single value."""
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return math.sqrt(sum((x - mean) ** 2 for x in values) / (len(values) - 1))


def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def reference_advantages(
    group_id,
    episode_id,
    t,
    reward,
    state,
    success,
    *,
    estimator,
    alpha=4.0,
    beta=0.1,
    tau=0.1,
    gamma=0.95,
    omega=1.0,
    psa_scope="same_step",
    penalty=None,
):
    """The paper's estimators (docs/design.md §2), row by row; the penalty comes off its own row."""
    n = len(group_id)
    penalty = [0.0] * n if penalty is None else [float(c) for c in penalty]
    episodes = _episodes(group_id, episode_id, t, reward)
    ret = {e: sum(rs) for e, (_, rs) in episodes.items()}
    succ = {int(e): bool(s) for e, s in zip(episode_id, success)}
    rtg = np.array([_return_to_go(episodes[int(episode_id[i])][1], int(t[i]), gamma) for i in range(n)])

    episode_term = np.zeros(n)
    for i in range(n):
        g, e = int(group_id[i]), int(episode_id[i])
        members = [f for f, (h, _) in episodes.items() if h == g]
        returns = [ret[f] for f in members]
        mu = sum(returns) / len(returns)
        sigma = _unbiased_std(returns)
        z = 0.0 if sigma < 1e-8 else (ret[e] - mu) / (sigma + 1e-6)
        if estimator in ("proxmo", "proxmo_no_psa"):
            p = sum(succ[f] for f in members) / len(members)
            d = 1 - p
            f_rp = _sigmoid(d**alpha) - 0.5 if succ[e] else _sigmoid(-(p**alpha)) - 0.5
            z *= 1 + beta * f_rp
        episode_term[i] = z

    step_term = np.zeros(n)
    if estimator in ("proxmo", "proxmo_no_psc"):
        vectors = TfidfVectorizer().fit_transform(list(state)).toarray()
        for i in range(n):
            candidates = [j for j in range(n) if group_id[j] == group_id[i] and (psa_scope == "group" or t[j] == t[i])]
            sims = []
            for j in candidates:
                if j == i:
                    sims.append(1.0)
                elif not vectors[i].any() or not vectors[j].any():
                    sims.append(0.0)
                else:
                    sims.append(
                        float(vectors[i] @ vectors[j]) / (np.linalg.norm(vectors[i]) * np.linalg.norm(vectors[j]))
                    )
            top = max(sims)
            weights = [math.exp((s - top) / tau) for s in sims]
            total = sum(weights)
            step_term[i] = rtg[i] - sum(w / total * rtg[j] for w, j in zip(weights, candidates))
    elif estimator == "gigpo":
        for i in range(n):
            members = [j for j in range(n) if group_id[j] == group_id[i] and state[j] == state[i]]
            if len(members) < 2:
                continue
            values = [rtg[j] for j in members]
            std = _unbiased_std(values)
            if std >= 1e-8:
                step_term[i] = (rtg[i] - sum(values) / len(values)) / (std + 1e-6)
    return np.array([episode_term[i] + omega * step_term[i] - penalty[i] for i in range(n)])


def reference_official(group_id, episode_id, t, reward, state, *, alpha=4.0, tau=0.1, gamma=0.95, penalty=None):
    """The authors' release (docs/design.md §3.1): one B x B matrix, masked per group.

    The penalty is subtracted, unscaled, from the row's score and from its
    already discounted return (verl-agent's ``apply_invalid_action_penalty``).
    """
    n = len(group_id)
    penalty = np.zeros(n) if penalty is None else np.asarray(penalty, dtype=float)
    scaled = [10.0 * float(r) for r in reward]
    episodes = _episodes(group_id, episode_id, t, scaled)
    score = np.array([sum(episodes[int(e)][1]) for e in episode_id]) - penalty
    rtg = np.array([_return_to_go(episodes[int(episode_id[i])][1], int(t[i]), gamma) for i in range(n)]) - penalty
    beta = 0.05 / (_sigmoid(1.0) - 0.5)

    vectors = TfidfVectorizer(max_features=1024).fit_transform(list(state)).toarray()
    vectors = vectors / (np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-8)
    similarity = vectors @ vectors.T

    out = np.zeros(n)
    for i in range(n):
        rows = [j for j in range(n) if group_id[j] == group_id[i]]
        mu = float(np.mean(score[rows])) if len(rows) > 1 else 0.0
        p = min(max(mu, 0.0), 1.0)
        if score[i] > 0.5:
            w = 1 + beta * (_sigmoid((1 - p) ** alpha) - 0.5)
        else:
            w = 1 + beta * (_sigmoid(-(p**alpha)) - 0.5)
        logits = np.array([similarity[i, j] / tau for j in rows])
        weights = np.exp(logits - logits.max())
        weights /= weights.sum()
        out[i] = (score[i] - mu) * w + rtg[i] - float(weights @ rtg[rows])
    return out


def reference_shipped(group_id, episode_id, t, reward, state, *, estimator, norm, gamma=0.95, omega=1.0, penalty=None):
    """verl-agent's GRPO / GiGPO (docs/design.md §3.2), one row at a time, as its dictionaries of lists do.

    Every row carries its episode's x10 score minus its own penalty; a group's mean and
    unbiased std are over its rows (a lone row: 0 and 1); step groups are the rows of a
    group with the same state, compared on x10 returns-to-go minus the row's penalty (a
    lone row: its own value and 1). ``grpo_official`` always divides by the std.
    """
    n = len(group_id)
    penalty = [0.0] * n if penalty is None else [float(c) for c in penalty]
    episodes = _episodes(group_id, episode_id, t, [10.0 * float(r) for r in reward])
    score = [sum(episodes[int(episode_id[i])][1]) - penalty[i] for i in range(n)]
    rtg = [_return_to_go(episodes[int(episode_id[i])][1], int(t[i]), gamma) - penalty[i] for i in range(n)]
    divide = estimator == "grpo_official" or norm == "mean_std_norm"

    def normalised(i, values, key, lone_mean):
        members = [values[j] for j in range(n) if key(j) == key(i)]
        mean, std = (lone_mean, 1.0) if len(members) == 1 else (sum(members) / len(members), _unbiased_std(members))
        return (values[i] - mean) / (std + 1e-6) if divide else values[i] - mean

    out = []
    for i in range(n):
        advantage = normalised(i, score, lambda j: group_id[j], lone_mean=0.0)
        if estimator == "gigpo_official":
            advantage += omega * normalised(i, rtg, lambda j: (group_id[j], state[j]), lone_mean=rtg[i])
        out.append(advantage)
    return np.array(out)
