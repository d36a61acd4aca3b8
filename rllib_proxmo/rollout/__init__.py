"""The sampling side: the grouped env runner, text-episode containers, env factory,
episode metrics and the inference engines (:mod:`rllib_proxmo.rollout.engines`)."""
