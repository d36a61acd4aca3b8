"""A household text MDP whose true advantages are known exactly (:mod:`envs.household.mdp`):
the testbed of the credit-assignment tests, ``benchmarks/credit_assignment.py`` and the
synthetic rollouts of ``tuned_examples/psa_similarity_search.py``."""
