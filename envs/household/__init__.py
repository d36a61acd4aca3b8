"""A household text MDP whose true advantages are known exactly.

- :mod:`envs.household.mdp`: tasks, the latent MDP, its epsilon-greedy rollout policy with exact
  ``V`` and ``Q``, and the rendering of observations with lexical noise;
- :mod:`envs.household.rollouts`: batches of rollouts flattened to step columns with their exact
  values (``benchmarks/credit_assignment.py``, the synthetic rollouts of
  ``tuned_examples/psa_similarity_search.py``);
- :mod:`envs.household.env`: the same tasks as a Gymnasium text env that an LLM agent plays
  (``Household-v0``).
"""
