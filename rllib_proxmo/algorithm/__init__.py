"""The RLlib algorithm, laid out like RLlib's ``algorithms/ppo/``.

- :mod:`~rllib_proxmo.algorithm.proxmo`: ``ProxMOConfig`` and ``ProxMO`` (training step,
  evaluation, checkpoints; registered with Tune as ``"ProxMO"``);
- :mod:`~rllib_proxmo.algorithm.group_advantages`: the driver-side step that writes each
  turn's advantage from the framework-free core (:mod:`rllib_proxmo.advantages`);
- :mod:`~rllib_proxmo.algorithm.sharding`: whole task groups per learner;
- :mod:`~rllib_proxmo.algorithm.task_sampling`: which training tasks an iteration draws;
- :mod:`~rllib_proxmo.algorithm.token_batch`: the learner connector (episodes -> padded tokens);
- :mod:`~rllib_proxmo.algorithm.torch`: the LLM RLModule, the learner and model loading.
"""
