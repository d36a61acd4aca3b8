"""Gymnasium text environments for multi-turn LLM agents.

Importing this package registers:

- ``ALFWorld-v0``: ALFWorld households on the real TextWorld/PDDL engine
  (:mod:`envs.alfworld`).
- ``WebShop-v0``: a WebShop-compatible shopping site (:mod:`envs.webshop`).
- ``Household-v0``: small household tasks whose exact values are known
  (:mod:`envs.household`).

All speak plain text: ``reset`` and ``step`` return the environment's raw
observation string, ``step`` takes a command string, and ``info`` carries
``admissible_actions``, ``state``, ``won``, ``task_id`` and ``task``. The
wrappers in :mod:`envs.llm_wrappers` turn them into LLM-facing environments
(prompt rendering, ``<action>`` parsing and invalid-action penalties).
"""

import gymnasium as gym

ALFWORLD = "ALFWorld-v0"
WEBSHOP = "WebShop-v0"
HOUSEHOLD = "Household-v0"
#: ALFWorld's short task types in the column order of the paper's Table 1.
ALFWORLD_TASK_TYPES = ("pick", "look", "clean", "heat", "cool", "pick2")

_REGISTRATIONS = {
    ALFWORLD: "envs.alfworld.env:ALFWorldEnv",
    WEBSHOP: "envs.webshop.env:WebShopEnv",
    HOUSEHOLD: "envs.household.env:HouseholdEnv",
}

for _env_id, _entry_point in _REGISTRATIONS.items():
    if _env_id not in gym.registry:
        gym.register(id=_env_id, entry_point=_entry_point)
