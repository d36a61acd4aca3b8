"""ProxMO (proximity-based multi-turn optimisation) as an RLlib Algorithm.

One training iteration (:meth:`ProxMO.training_step`):

1. the driver draws ``tasks_per_iteration`` group requests (a reset seed each, and a
   task id when ``task_ids`` is configured: uniformly, or by each task's chance of a
   mixed group with ``task_sampling="informative"``) from its own seeded RNG;
2. whole groups are spread over the healthy env runners, which play each task
   ``group_size`` times with batched generation (:class:`GroupedEnvRunner`); groups
   of a runner that crashed are retried once on the restored runners, then dropped
   (``num_groups_dropped``);
3. :class:`GroupAdvantages` computes per-step advantages over the complete batch
   on the driver (timed on its own);
4. episodes are sharded by group across learners; the learner connector
   (:class:`TokenTrainBatch`) pads tokens and the learner runs token-level PPO;
5. new weights go to the env runners.

The ``estimator`` setting swaps ProxMO for GRPO, GiGPO or an ablation with every
other setting unchanged. Defaults are the paper's and its release's (``docs/design.md``).

Metrics in each ``train()`` result:

- ``env_runners``: :func:`rllib_proxmo.rollout.metrics.episode_metrics` of the iteration's
  episodes (success rate overall and per task type, score, episode length,
  format-valid, admissible-action and response-cut rates) and
  ``prompt_history_cut_count`` (prompts shortened to fit ``max_prompt_tokens``);
- ``learners/default_policy``: ``policy_loss``, ``kl`` (k3 to the reference),
  ``entropy``, ``clip_fraction``, ``ratio_mean``, ``ratio_max_deviation`` (after the
  first optimizer step; 0 with one step), ``grad_norm`` (before clipping),
  ``num_optimizer_steps``, ``num_response_tokens``, ``sampler_logp_gap_max`` /
  ``sampler_logp_gap_mean`` (see :mod:`~rllib_proxmo.algorithm.torch.proxmo_torch_learner`);
- ``proxmo/advantages``: the credit-assignment core's diagnostics (PSC weight range,
  PSA effective neighbours, GiGPO singleton fraction, ...);
- ``proxmo``: ``num_groups``, ``num_groups_dropped``, ``generated_tokens``,
  ``generated_tokens_per_s`` (per second of generation time, summed over env
  runners, i.e. the throughput of one runner), ``prompt_tokens``,
  ``shared_prefill_fraction`` (prompt tokens a shared prefill of identical prompts did
  not recompute), ``turns_per_s`` (turns per second of sampling), and the time split ``time_*_s``
  (sampling = generation + env resets + env steps + prompt tokenisation,
  advantages, learning, weight sync, iteration)
  with ``advantage_time_fraction`` = advantages / iteration; with ``task_sampling="informative"``
  also ``expected_mixed_group_fraction`` (the drawn tasks' mean chance of a group holding a win
  and a loss, :mod:`~rllib_proxmo.algorithm.task_sampling`) and ``tasks_played``.
"""

from __future__ import annotations

import functools
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import ray
from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.connectors.learner.learner_connector_pipeline import LearnerConnectorPipeline
from ray.rllib.core import (
    ALL_MODULES,
    COMPONENT_ENV_RUNNER,
    COMPONENT_EVAL_ENV_RUNNER,
    COMPONENT_LEARNER,
    COMPONENT_LEARNER_GROUP,
    COMPONENT_RL_MODULE,
)
from ray.rllib.core.learner.learner_group import LearnerGroup
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.metrics import (
    ENV_RUNNER_RESULTS,
    LEARNER_RESULTS,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    NUM_EPISODES_LIFETIME,
    NUM_MODULE_STEPS_TRAINED_LIFETIME,
    WEIGHTS_SEQ_NO,
)
from ray.tune.registry import register_trainable

from envs.llm_wrappers import check_llm_env_settings
from rllib_proxmo.advantages import AdvantageConfig
from rllib_proxmo.algorithm.group_advantages import GroupAdvantages
from rllib_proxmo.algorithm.sharded_learner_group import ShardedLearnerGroup
from rllib_proxmo.algorithm.sharding import DEFAULT_SHARDING, SHARDINGS, group_episodes, shard_by_group
from rllib_proxmo.algorithm.task_sampling import (
    DEFAULT_TASK_SAMPLING,
    TaskOutcomes,
    sampling_problem,
    task_ids_problem,
    uniform_tasks,
)
from rllib_proxmo.algorithm.token_batch import TokenTrainBatch
from rllib_proxmo.algorithm.torch.llm_rl_module import LLMRLModule
from rllib_proxmo.algorithm.torch.model_loading import check_model_available
from rllib_proxmo.algorithm.torch.proxmo_torch_learner import ProxMOTorchLearner
from rllib_proxmo.analysis.rollout_files import iteration_file, save_rollouts
from rllib_proxmo.rollout.engines.vllm_engine import config_problems as vllm_config_problems
from rllib_proxmo.rollout.env_runner import (
    ENV_RESET_S,
    ENV_STEP_S,
    GENERATED_TOKENS,
    GENERATION_S,
    PROMPT_HISTORY_CUTS,
    PROMPT_TOKENS,
    RUNNER_STATS,
    SHARED_PREFILL_TOKENS,
    TEXT_SPACE,
    WEIGHTS_ID,
    GroupedEnvRunner,
    SamplerSettings,
)
from rllib_proxmo.rollout.episodes import GroupRequest, TextEpisode, step_columns
from rllib_proxmo.rollout.metrics import episode_metrics

PROXMO_RESULTS = "proxmo"


@dataclass(frozen=True)
class RunnerError:
    """An exception raised inside an env runner's ``sample``, carried back to the driver.

    Attributes:
        error: The exception (Python exceptions pickle by type and arguments).
        traceback: Its traceback in the runner, as text.
        worker_index: The runner's index (0: the local runner).
    """

    error: BaseException
    traceback: str
    worker_index: int

    @classmethod
    def of(cls, error: BaseException, worker_index: int) -> RunnerError:
        return cls(error, "".join(traceback.format_exception(error)), worker_index)

    def reraise(self) -> None:
        """Raise the runner's exception with its type and message, the runner's traceback as a note."""
        self.error.add_note(f"raised in env runner {self.worker_index}:\n{self.traceback}")
        raise self.error


#: Prefixes of the per-task-type metrics of :func:`episode_metrics` (success rate, episodes played).
TASK_TYPE_PREFIXES = ("success_rate/", "num_episodes/")
ADVANTAGE_RESULTS = "advantages"
SAMPLER_STATE = "proxmo_group_sampler"
#: Key of the training tasks' recorded outcomes in the sampler state (``task_sampling="informative"``).
TASK_OUTCOMES = "task_outcomes"
#: ``proxmo`` result keys of ``task_sampling="informative"``: the drawn tasks' mean chance of a group
#: holding a win and a loss, and how many listed tasks have been played so far.
EXPECTED_MIXED_GROUPS = "expected_mixed_group_fraction"
TASKS_PLAYED = "tasks_played"


#: Values of ``old_logp_source`` (see :meth:`ProxMOConfig.training`).
OLD_LOGP_SOURCES = ("recompute", "sampler")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


class ProxMOConfig(AlgorithmConfig):
    """Configuration of :class:`ProxMO` (see :meth:`training` for its own settings)."""

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or ProxMO)
        # Credit assignment (paper §4): estimator, alpha, beta, tau, gamma, omega,
        # psa_scope, with the defaults written once, in AdvantageConfig.
        for setting in fields(AdvantageConfig):
            setattr(self, setting.name, setting.default)
        # Grouped rollouts: 16 tasks x 8 rollouts per iteration (release).
        self.group_size = 8
        self.tasks_per_iteration = 16
        self.task_ids: list[Any] | None = None
        self.task_sampling = DEFAULT_TASK_SAMPLING
        self.max_turns: int | None = None
        self.sample_retries = 1
        self.llm_env_config: dict[str, Any] | None = {}
        # Where each iteration's steps are written (Parquet, rllib_proxmo.analysis.rollout_files); None: not kept.
        self.rollouts_dir: str | None = None
        # Optimisation (release: lr 1e-6, clip 0.2, KL 0.01, entropy 0.001, grad clip 1, 1 epoch,
        # ppo_mini_batch_size 256 rows per optimizer step).
        self.lr = 1e-6
        self.clip_param = 0.2
        self.kl_coeff = 0.01
        self.entropy_coeff = 0.001
        self.grad_clip = 1.0
        self.num_epochs = 1
        self.minibatch_size = 256
        self.micro_batch_size = 4
        self.old_logp_source = "recompute"
        # Evaluation: each sampled task once, greedy unless model_config says otherwise.
        self.evaluation_num_tasks = 16
        self.evaluation_group_size = 1
        self.env_runner_cls = GroupedEnvRunner
        self.num_env_runners = 0
        # Every learner holds the whole model (RLlib's DDP); "fsdp" shards it over the learners.
        self.sharding = DEFAULT_SHARDING
        # GroupedEnvRunner's spaces are fixed. Given here, RLlib does not ask the first remote
        # runner for them (a runner that failed to build answered with an IndexError) and builds
        # the local runner, whose construction error is then raised as it is.
        self.observation_space = TEXT_SPACE
        self.action_space = TEXT_SPACE

    def training(
        self,
        *,
        estimator: str = NotProvided,
        group_size: int = NotProvided,
        tasks_per_iteration: int = NotProvided,
        task_ids: Sequence[Any] | None = NotProvided,
        task_sampling: str = NotProvided,
        alpha: float = NotProvided,
        beta: float = NotProvided,
        tau: float = NotProvided,
        omega: float = NotProvided,
        psa_scope: str = NotProvided,
        gigpo_norm: str = NotProvided,
        clip_param: float = NotProvided,
        kl_coeff: float = NotProvided,
        entropy_coeff: float = NotProvided,
        num_epochs: int = NotProvided,
        minibatch_size: int = NotProvided,
        micro_batch_size: int = NotProvided,
        old_logp_source: str = NotProvided,
        max_turns: int | None = NotProvided,
        sample_retries: int = NotProvided,
        llm_env_config: dict[str, Any] | None = NotProvided,
        rollouts_dir: str | None = NotProvided,
        **kwargs: Any,
    ) -> ProxMOConfig:
        """ProxMO settings; other keywords (``lr``, ``gamma``, ``grad_clip``, ...) go to RLlib.

        Args:
            estimator: "proxmo", "grpo", "gigpo", "proxmo_no_psc", "proxmo_no_psa",
                "proxmo_official", "grpo_official", "gigpo_official".
            group_size: Rollouts per task (N).
            tasks_per_iteration: Task groups per iteration.
            task_ids: Tasks to draw from (as ``task_sampling`` says; an iteration's tasks are
                distinct while ``tasks_per_iteration`` does not exceed their number); None lets each env
                pick its task from the group's reset seed, so two groups may play one task.
            task_sampling: How an iteration draws from ``task_ids``: "uniform", or
                "informative" (each task weighted by the chance that a group of it holds a win
                and a loss, from its recorded outcomes;
                :mod:`~rllib_proxmo.algorithm.task_sampling`; needs distinct ``task_ids`` and
                ``group_size`` >= 2).
            alpha, beta, tau, omega, psa_scope, gigpo_norm (and ``gamma``): the credit
                assignment's hyperparameters, documented on
                :class:`~rllib_proxmo.advantages.AdvantageConfig` (alpha: PSC
                steepness, beta: PSC strength, tau: PSA temperature).
            clip_param: PPO clip range epsilon.
            kl_coeff: Weight of the k3 KL to the reference policy.
            entropy_coeff: Entropy bonus weight.
            num_epochs: PPO epochs (passes over the iteration's turns).
            minibatch_size: Turns per optimizer step, over all learners: each epoch
                takes ceil(turns / minibatch_size) steps on shuffled, near-equal
                mini-batches (the release's ppo_mini_batch_size).
            micro_batch_size: Turns per micro-batch for gradient accumulation
                inside a mini-batch (per learner).
            old_logp_source: Where the PPO ratio's old log-probs come from when an
                iteration takes several optimizer steps: "recompute" (a no-grad
                forward pass before the first step, as verl) or "sampler" (the env
                runner's per-token log-probs, one pass fewer; exact only when the
                sampler computes in the learner's dtype, as the HF engine on CPU does;
                the learner reports the gap as ``sampler_logp_gap_max``).
            max_turns: Cut episodes after this many turns (None: env's own limit).
            sample_retries: Times the groups of a crashed env runner are re-played.
            llm_env_config: Keywords of ``envs.llm_wrappers.make_llm_env`` (prompt
                template, history, invalid-action penalty, require_think); None when
                the env already takes raw LLM outputs and returns prompts.
            rollouts_dir: Write every iteration's steps (state text, rewards, success,
                task) to ``<dir>/iteration_<k>.parquet`` for offline analysis such as
                ``tuned_examples/psa_similarity_search.py --rollouts <dir>``.
        """
        super().training(**kwargs)
        settings = dict(
            estimator=estimator,
            group_size=group_size,
            tasks_per_iteration=tasks_per_iteration,
            task_ids=task_ids,
            task_sampling=task_sampling,
            alpha=alpha,
            beta=beta,
            tau=tau,
            omega=omega,
            psa_scope=psa_scope,
            gigpo_norm=gigpo_norm,
            clip_param=clip_param,
            kl_coeff=kl_coeff,
            entropy_coeff=entropy_coeff,
            num_epochs=num_epochs,
            minibatch_size=minibatch_size,
            micro_batch_size=micro_batch_size,
            old_logp_source=old_logp_source,
            max_turns=max_turns,
            sample_retries=sample_retries,
            llm_env_config=llm_env_config,
            rollouts_dir=rollouts_dir,
        )
        for name, value in settings.items():
            if value is not NotProvided:
                setattr(self, name, list(value) if name == "task_ids" and value is not None else value)
        return self

    def learners(self, *, sharding: str = NotProvided, **kwargs: Any) -> ProxMOConfig:
        """RLlib's learner settings plus how the learners split the model.

        Args:
            sharding: "ddp" (every learner holds the whole model, gradients all-reduced) or
                "fsdp" (FSDP2: weights, gradients and AdamW moments sharded over the learners,
                :mod:`rllib_proxmo.algorithm.torch.fsdp`; needs ``num_learners >= 2`` and full
                fine-tuning, no ``lora`` or ``trainable_layers``). Memory per GPU of each:
                docs/design.md, "Sharded learners".
        """
        super().learners(**kwargs)
        if sharding is not NotProvided:
            self.sharding = sharding
        return self

    def build_learner_group(
        self, *, env: Any = None, spaces: Any = None, rl_module_spec: Any = None, placement_group: Any = None
    ) -> LearnerGroup:
        """RLlib's learner group; with ``sharding="fsdp"`` a :class:`ShardedLearnerGroup`."""
        if self.sharding != "fsdp":
            return super().build_learner_group(
                env=env, spaces=spaces, rl_module_spec=rl_module_spec, placement_group=placement_group
            )
        spec = rl_module_spec or self.get_multi_rl_module_spec(env=env, spaces=spaces)
        return ShardedLearnerGroup(config=self.copy(), module_spec=spec, placement_group=placement_group)

    def evaluation(
        self, *, evaluation_num_tasks: int = NotProvided, evaluation_group_size: int = NotProvided, **kwargs: Any
    ) -> ProxMOConfig:
        """RLlib evaluation settings plus the number of tasks and rollouts per task."""
        super().evaluation(**kwargs)
        if evaluation_num_tasks is not NotProvided:
            self.evaluation_num_tasks = evaluation_num_tasks
        if evaluation_group_size is not NotProvided:
            self.evaluation_group_size = evaluation_group_size
        return self

    def get_default_rl_module_spec(self) -> RLModuleSpec:
        return RLModuleSpec(module_class=LLMRLModule)

    def get_default_learner_class(self) -> type:
        return ProxMOTorchLearner

    def build_learner_connector(self, input_observation_space: Any, input_action_space: Any, device: Any = None):
        return LearnerConnectorPipeline(
            connectors=[TokenTrainBatch()],
            input_observation_space=input_observation_space,
            input_action_space=input_action_space,
        )

    def get_state(self) -> dict[str, Any]:
        """RLlib's state of this config, keeping every setting that equals -1.

        ``AlgorithmConfig.get_state`` drops every attribute equal to its deprecated-value
        marker (-1), and ``Algorithm`` rebuilds its config from that state, so a user's
        ``group_size=-1`` would come back as the default 8 and a legal ``omega=-1`` as 1.0.
        The attributes it dropped are put back: validation sees the value the user gave.
        """
        state = super().get_state()
        internal = {"algo_class", "_is_frozen"}
        for name, value in self.__dict__.items():
            if name not in state and name not in internal:
                state[name] = value
        return state

    @property
    def advantage_config(self) -> AdvantageConfig:
        """The credit-assignment settings of this config, typed and validated (``gigpo_norm="recipe"``: the env's)."""
        settings = {setting.name: getattr(self, setting.name) for setting in fields(AdvantageConfig)}
        return AdvantageConfig(**settings).for_env(self.env)

    def validate(self) -> None:
        super().validate()
        try:
            _ = self.advantage_config
            sampler = SamplerSettings.from_model_config(self.model_config)
            if self.llm_env_config is not None:
                check_llm_env_settings(self.llm_env_config)
        except ValueError as error:
            self._value_error(str(error))
            sampler = None  # validation errors suppressed: nothing more to check here
        if sampler is not None and sampler.constrain_to_admissible:
            evaluation_llm = (self.evaluation_config or {}).get("llm_env_config", self.llm_env_config)
            if any(llm is None or llm.get("require_think", True) for llm in (self.llm_env_config, evaluation_llm)):
                self._value_error(
                    "model_config constrain_to_admissible needs the LLM wrappers' prompt without a think block: "
                    "set llm_env_config require_think=False"
                )
        if sampler is not None and sampler.engine == "vllm":
            problems = vllm_config_problems(
                self.model_config,
                num_env_runners=self.num_env_runners,
                num_gpus_per_env_runner=self.num_gpus_per_env_runner,
                max_prompt_tokens=sampler.max_prompt_tokens,
                max_new_tokens=sampler.max_new_tokens,
                in_evaluation=self.in_evaluation,
            )
            if problems:
                self._value_error("model_config engine='vllm' cannot run: " + "; ".join(problems))
        checks = [
            (
                self.seed is None or (_is_int(self.seed) and self.seed >= 0),
                f"seed must be None or an int >= 0, got {self.seed!r}",
            ),
            (self.group_size >= 1, f"group_size must be >= 1, got {self.group_size}"),
            (self.tasks_per_iteration >= 1, f"tasks_per_iteration must be >= 1, got {self.tasks_per_iteration}"),
            (self.micro_batch_size >= 1, f"micro_batch_size must be >= 1, got {self.micro_batch_size}"),
            (
                isinstance(self.minibatch_size, int) and self.minibatch_size >= 1,
                f"minibatch_size (turns per optimizer step) must be an int >= 1, got {self.minibatch_size!r}",
            ),
            (self.num_epochs >= 1, f"num_epochs must be >= 1, got {self.num_epochs}"),
            (
                self.old_logp_source in OLD_LOGP_SOURCES,
                f"old_logp_source must be one of {list(OLD_LOGP_SOURCES)}, got {self.old_logp_source!r}",
            ),
            (
                self.max_turns is None or (_is_int(self.max_turns) and self.max_turns >= 1),
                f"max_turns must be None (the env's own limit) or an int >= 1, got {self.max_turns!r}",
            ),
            (
                _is_int(self.sample_retries) and self.sample_retries >= 0,
                f"sample_retries (re-plays of a crashed env runner's groups) must be an int >= 0, "
                f"got {self.sample_retries!r}",
            ),
            (self.clip_param > 0, f"clip_param must be > 0, got {self.clip_param}"),
            (self.kl_coeff >= 0 and self.entropy_coeff >= 0, "kl_coeff and entropy_coeff must be >= 0"),
            (self.task_ids is None or len(self.task_ids) > 0, "task_ids must be None or non-empty"),
            (
                self.tasks_per_iteration >= max(self.num_learners, 1),
                f"tasks_per_iteration ({self.tasks_per_iteration}) must be >= num_learners "
                f"({self.num_learners}): learners receive whole task groups",
            ),
            ("model_name_or_path" in self.model_config, "rl_module(model_config=...) must set model_name_or_path"),
            (self.sharding in SHARDINGS, f"sharding must be one of {list(SHARDINGS)}, got {self.sharding!r}"),
            *self._sharding_checks(),
            *self._task_sampling_checks(),
        ]
        for ok, message in checks:
            if not ok:
                self._value_error(message)

    def _task_sampling_checks(self) -> list[tuple[bool, str]]:
        """``task_sampling`` is known; "informative" has distinct ``task_ids`` and groups of 2 or more.

        Not checked on the evaluation config: :meth:`ProxMO.evaluate` draws its tasks uniformly, from
        its own ``task_ids`` or from each group's seed.
        """
        if self.in_evaluation:
            return []
        problem = sampling_problem(self.task_sampling, self.group_size)
        if problem is None and self.task_sampling == "informative":
            problem = task_ids_problem(self.task_ids)
        return [(problem is None, problem)]

    def _sharding_checks(self) -> list[tuple[bool, str]]:
        """Conditions of ``sharding="fsdp"`` (none for "ddp")."""
        if self.sharding != "fsdp":
            return []
        subset = [key for key in ("lora", "trainable_layers") if self.model_config.get(key) is not None]
        return [
            (
                self.num_learners >= 2,
                f"sharding='fsdp' shards the model over remote learners: set learners(num_learners=N) with N >= 2 "
                f"(got {self.num_learners}); one learner holds the whole model anyway (sharding='ddp')",
            ),
            (
                not subset,
                f"sharding='fsdp' is for full fine-tuning, but model_config sets {subset}: a LoRA adapter or a "
                "few top layers train few weights, and their memory fits without sharding (sharding='ddp')",
            ),
        ]


class ProxMO(Algorithm):
    """Grouped LLM rollouts -> ProxMO/GRPO/GiGPO advantages -> token-level PPO."""

    @classmethod
    def get_default_config(cls) -> ProxMOConfig:
        return ProxMOConfig()

    def setup(self, config: ProxMOConfig) -> None:
        # A model that cannot load here fails now, before any env runner is built.
        check_model_available(config.model_config["model_name_or_path"])
        super().setup(config)
        self._advantages = GroupAdvantages(self.config.advantage_config)
        self._group_rng = np.random.default_rng(self.config.seed)
        self._groups_drawn = 0
        informative = self.config.task_sampling == "informative"
        self._task_outcomes = TaskOutcomes(self.config.task_ids) if informative else None
        # RLlib's build-time push of the weights is fire-and-forget; this one is checked.
        self._weights_id = new_weights_id()
        self.sync_env_runner_weights(self.env_runner_group)

    # ------------------------------------------------------------ weights
    def sync_env_runner_weights(self, runner_group: Any, runner_ids: Sequence[int] | None = None) -> None:
        """Load the learner's inference-only weights into env runners and check that they hold them.

        RLlib's ``EnvRunnerGroup.sync_weights`` sends ``set_state`` asynchronously and
        drops the call for a runner that still has an earlier ``set_state`` in flight
        (``max_requests_in_flight_per_env_runner``), so after a restore a runner could
        keep sampling with the weights it was built with. Here every runner of
        ``runner_group`` (its healthy remote runners, or ``runner_ids`` of them, and
        its local runner) loads the weights in a blocking call, tagged with the current
        weights id, and reports the id it then holds; one that differs raises. Ray runs
        an actor's calls from one caller in submission order, so an earlier RLlib push
        still queued cannot overwrite these weights.

        Raises:
            RuntimeError: when a runner does not hold the pushed weights afterwards.
        """
        state = self.learner_group.get_state(
            components=f"{COMPONENT_LEARNER}/{COMPONENT_RL_MODULE}", inference_only=True
        )[COMPONENT_LEARNER]
        weights = {
            COMPONENT_RL_MODULE: state[COMPONENT_RL_MODULE],
            WEIGHTS_SEQ_NO: state[WEIGHTS_SEQ_NO],
            WEIGHTS_ID: self._weights_id,
        }
        held = []
        if runner_group.num_remote_env_runners():
            weights_ref = ray.put(weights)
            held = runner_group.foreach_env_runner(
                functools.partial(_load_weights, weights_ref=weights_ref),
                local_env_runner=False,
                remote_worker_ids=list(runner_ids) if runner_ids is not None else None,
                timeout_seconds=None,
            )
        local = runner_group.local_env_runner
        if local is not None:
            local.set_state(weights)
            held.append((local.worker_index, local.weights_id))
        check_weights_ids(held, self._weights_id)

    def restore_env_runners(self, env_runner_group: Any) -> list[int]:
        """RLlib's restart of failed runners, then the checked weight push to the restarted ones."""
        restored = super().restore_env_runners(env_runner_group)
        if restored:
            self.sync_env_runner_weights(env_runner_group, restored)
        return restored

    # ------------------------------------------------------------ sampling
    def _group_requests(
        self, rng: np.random.Generator, tasks: Sequence[Any], size: int, prefix: str
    ) -> tuple[list[GroupRequest], int]:
        """A group request of ``size`` rollouts per task (a reset seed each from ``rng``) and a base sampling seed."""
        requests = []
        for task_id in tasks:
            seed = int(rng.integers(2**31 - 1))
            requests.append(GroupRequest(f"{prefix}{self._groups_drawn}", seed, size, task_id))
            self._groups_drawn += 1
        return requests, int(rng.integers(2**31 - 1))

    @staticmethod
    def _play(
        runner_group: Any,
        groups: list[GroupRequest],
        explore: bool,
        seed: int,
        max_turns: int | None,
        weights_id: str,
    ) -> tuple[list[TextEpisode], dict[str, float]]:
        """Spread whole groups over the healthy runners (or the local one) and play them.

        An exception raised inside a runner's ``sample`` (a bad env config, a prompt over
        ``max_prompt_tokens``, ...) is deterministic: it is raised here with its message and
        the runner's traceback instead of taking the runner out of service, and the lost
        groups are not retried. Retries (``sample_retries``) are for runners that died.

        Every runner reports the id of the weights it sampled with; one that is not
        ``weights_id`` (the learner's weights as last pushed) fails the call.
        """
        healthy = runner_group.healthy_env_runner_ids() if runner_group.num_remote_env_runners() else []
        if not healthy:
            runner = runner_group.local_env_runner
            if runner is None:
                raise RuntimeError("no healthy env runner left to sample from")
            chunks = [(runner, groups)]
        else:
            chunks = [(rid, groups[i :: len(healthy)]) for i, rid in enumerate(healthy)]
            chunks = [(rid, part) for rid, part in chunks if part]

        def job(part: list[GroupRequest], job_seed: int) -> Callable:
            def play(runner: GroupedEnvRunner) -> tuple | RunnerError:
                try:
                    episodes = runner.sample(groups=part, explore=explore, seed=job_seed, max_turns=max_turns)
                except Exception as error:  # noqa: BLE001 - handed to the driver, which raises it
                    return RunnerError.of(error, runner.worker_index)
                return (runner.worker_index, runner.weights_id), episodes, runner.get_metrics()

            return play

        jobs = [job(part, seed + 7919 * k) for k, (_, part) in enumerate(chunks)]
        if not healthy:
            results = [jobs[0](chunks[0][0])]
        else:
            results = runner_group.foreach_env_runner(
                jobs, local_env_runner=False, remote_worker_ids=[rid for rid, _ in chunks]
            )
        for result in results:
            if isinstance(result, RunnerError):
                result.reraise()
        episodes: list[TextEpisode] = []
        stats = dict.fromkeys(RUNNER_STATS, 0.0)
        check_weights_ids([held for held, _, _ in results], weights_id)
        for _, runner_episodes, runner_stats in results:
            episodes.extend(runner_episodes)
            for key in stats:
                stats[key] += runner_stats[key]
        return episodes, stats

    def _sample_complete_groups(
        self, runner_group: Any, groups: list[GroupRequest], explore: bool, seed: int
    ) -> tuple[list[TextEpisode], dict[str, float]]:
        """Play the groups, retrying lost ones; keep complete groups only."""
        pending, complete = list(groups), {}
        totals = dict.fromkeys(RUNNER_STATS, 0.0)
        for attempt in range(self.config.sample_retries + 1):
            if attempt:
                self.restore_env_runners(runner_group)
            episodes, stats = self._play(
                runner_group, pending, explore, seed + attempt, self.config.max_turns, self._weights_id
            )
            for key in totals:
                totals[key] += stats[key]
            by_group = group_episodes(episodes)
            for request in pending:
                members = by_group.get(request.group_id, [])
                if len(members) == request.size:
                    complete[request.group_id] = members
            pending = [g for g in pending if g.group_id not in complete]
            if not pending:
                break
        totals["num_groups_dropped"] = float(len(pending))
        ordered = [e for g in groups if g.group_id in complete for e in complete[g.group_id]]
        return ordered, totals

    # ------------------------------------------------------------ training
    def training_step(self) -> None:
        config = self.config
        start = time.perf_counter()
        draw_stats: dict[str, float] = {}
        if self._task_outcomes is None:
            tasks = uniform_tasks(self._group_rng, config.task_ids, config.tasks_per_iteration)
        else:
            tasks, draw_stats[EXPECTED_MIXED_GROUPS] = self._task_outcomes.draw(
                self._group_rng, config.tasks_per_iteration, config.group_size
            )
        groups, seed = self._group_requests(self._group_rng, tasks, config.group_size, "train-")
        t0 = time.perf_counter()
        episodes, stats = self._sample_complete_groups(self.env_runner_group, groups, True, seed)
        sampling_s = time.perf_counter() - t0
        if not episodes:
            raise RuntimeError(f"all {len(groups)} task groups were lost: no env runner delivered episodes")
        if self._task_outcomes is not None:
            task_of = {group.group_id: group.task_id for group in groups}
            self._task_outcomes.record((task_of[episode.group_id], episode.won) for episode in episodes)
            draw_stats[TASKS_PLAYED] = float(np.count_nonzero(self._task_outcomes.plays))
        t0 = time.perf_counter()
        diagnostics = self._advantages.annotate(episodes)
        advantage_s = time.perf_counter() - t0
        if config.rollouts_dir:
            columns = step_columns(episodes)
            columns["iteration"] = np.full(len(columns["t"]), self.iteration, dtype=np.int64)
            save_rollouts(iteration_file(config.rollouts_dir, self.iteration), columns)

        t0 = time.perf_counter()
        # As RLlib's PPO: the lifetime counts (this iteration's turns included) drive lr schedules.
        timesteps = {
            NUM_ENV_STEPS_SAMPLED_LIFETIME: self.metrics.peek(
                (ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), default=0
            )
            + sum(len(episode) for episode in episodes),
            NUM_MODULE_STEPS_TRAINED_LIFETIME: self.metrics.peek(
                (LEARNER_RESULTS, ALL_MODULES, NUM_MODULE_STEPS_TRAINED_LIFETIME), default=0
            ),
        }
        # The learner runs num_epochs and its mini-batches itself (minibatch_size).
        if self.learner_group.is_local:
            learner_results = self.learner_group.update(episodes=episodes, timesteps=timesteps, num_epochs=1)
        else:
            # One object ref per remote learner: RLlib hands ref lists out evenly and
            # never re-cuts them, unlike plain episode lists (sharded by length).
            shards = shard_by_group(episodes, config.num_learners)
            learner_results = self.learner_group.update(
                episodes_refs=[ray.put(shard) for shard in shards], timesteps=timesteps, num_epochs=1
            )
        learning_s = time.perf_counter() - t0
        self.metrics.aggregate(learner_results, key=LEARNER_RESULTS)

        t0 = time.perf_counter()
        self._weights_id = new_weights_id()
        self.sync_env_runner_weights(self.env_runner_group)
        sync_s = time.perf_counter() - t0
        iteration_s = time.perf_counter() - start

        ep_metrics = {**episode_metrics(episodes), PROMPT_HISTORY_CUTS: stats[PROMPT_HISTORY_CUTS]}
        self._forget_unplayed_task_types(ep_metrics)
        self.metrics.log_dict(ep_metrics, key=ENV_RUNNER_RESULTS, window=1)
        self.metrics.log_value(
            (ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), ep_metrics["num_turns"], reduce="lifetime_sum"
        )
        self.metrics.log_value(
            (ENV_RUNNER_RESULTS, NUM_EPISODES_LIFETIME), ep_metrics["num_episodes"], reduce="lifetime_sum"
        )
        self.metrics.log_dict(diagnostics, key=(PROXMO_RESULTS, ADVANTAGE_RESULTS), window=1)
        generation_s = stats[GENERATION_S]
        self.metrics.log_dict(
            {
                "num_groups": float(len(groups) - stats["num_groups_dropped"]),
                "num_groups_dropped": stats["num_groups_dropped"],
                "generated_tokens": stats[GENERATED_TOKENS],
                "generated_tokens_per_s": stats[GENERATED_TOKENS] / generation_s if generation_s > 0 else 0.0,
                "prompt_tokens": stats[PROMPT_TOKENS],
                "shared_prefill_fraction": stats[SHARED_PREFILL_TOKENS] / stats[PROMPT_TOKENS]
                if stats[PROMPT_TOKENS]
                else 0.0,
                "turns_per_s": ep_metrics["num_turns"] / sampling_s if sampling_s > 0 else 0.0,
                "time_sampling_s": sampling_s,
                "time_generation_s": generation_s,
                "time_env_step_s": stats[ENV_STEP_S],
                "time_env_reset_s": stats[ENV_RESET_S],
                "time_advantages_s": advantage_s,
                "time_learning_s": learning_s,
                "time_weight_sync_s": sync_s,
                "time_iteration_s": iteration_s,
                "advantage_time_fraction": advantage_s / iteration_s,
                **draw_stats,
            },
            key=PROXMO_RESULTS,
            window=1,
        )

    def _forget_unplayed_task_types(self, ep_metrics: dict[str, float]) -> None:
        """Drop ``success_rate/<type>`` and ``num_episodes/<type>`` of task types this iteration did not play.

        RLlib's metrics logger keeps every key it has seen and reports NaN for one with no
        new value; a task type absent from an iteration is left out of its result instead.
        """
        logged = self.metrics.peek(ENV_RUNNER_RESULTS, default={}, compile=False)
        for key in [k for k in logged if k.startswith(TASK_TYPE_PREFIXES) and k not in ep_metrics]:
            self.metrics.delete(ENV_RUNNER_RESULTS, key)

    # ---------------------------------------------------------- evaluation
    def evaluate(self, parallel_train_future: Any = None) -> dict:
        """Play ``evaluation_num_tasks`` tasks ``evaluation_group_size`` times each, no exploration.

        Uses the evaluation env runners (``evaluation_config`` may point the env at the
        unseen split) and ``model_config["eval_temperature"]`` (0 = greedy). Every call
        draws the same tasks and seeds (from ``config.seed``, apart from the training
        stream), so evaluations of the same run compare policies on the same tasks.
        """
        config = self.config
        runner_group = self.eval_env_runner_group or self.env_runner_group
        if self.eval_env_runner_group is not None:
            self.sync_env_runner_weights(self.eval_env_runner_group)
        rng = np.random.default_rng([config.seed or 0, 1])
        tasks = uniform_tasks(rng, self.evaluation_config.task_ids, config.evaluation_num_tasks)
        groups, seed = self._group_requests(rng, tasks, config.evaluation_group_size, "eval-")
        episodes, stats = self._sample_complete_groups(runner_group, groups, False, seed)
        return {
            ENV_RUNNER_RESULTS: {
                **episode_metrics(episodes),
                PROMPT_HISTORY_CUTS: stats[PROMPT_HISTORY_CUTS],
                "num_groups_dropped": stats["num_groups_dropped"],
            }
        }

    # --------------------------------------------------------- checkpoints
    def get_state(self, components: Any = None, *, not_components: Any = None, **kwargs: Any) -> dict:
        state = super().get_state(components, not_components=not_components, **kwargs)
        state[SAMPLER_STATE] = {
            "rng": self._group_rng.bit_generator.state,
            "groups_drawn": self._groups_drawn,
        }
        if self._task_outcomes is not None:
            state[SAMPLER_STATE][TASK_OUTCOMES] = self._task_outcomes.state()
        return state

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        if SAMPLER_STATE in state:
            self._group_rng.bit_generator.state = state[SAMPLER_STATE]["rng"]
            self._groups_drawn = state[SAMPLER_STATE]["groups_drawn"]
            if self._task_outcomes is not None and TASK_OUTCOMES in state[SAMPLER_STATE]:
                self._task_outcomes.load_state(state[SAMPLER_STATE][TASK_OUTCOMES])
        if COMPONENT_LEARNER_GROUP in state:
            self._weights_id = new_weights_id()
            self.sync_env_runner_weights(self.env_runner_group)

    def restore_from_path(self, path: Any, *args: Any, **kwargs: Any) -> None:
        """RLlib's restore, then the learner's (possibly restored) weights pushed to the env runners, checked."""
        super().restore_from_path(path, *args, **kwargs)
        self._weights_id = new_weights_id()
        self.sync_env_runner_weights(self.env_runner_group)

    def get_checkpointable_components(self) -> list[tuple[str, Any]]:
        """RLlib's components without the env runners: they hold nothing the learner's
        weights and the config do not rebuild, so checkpoints do not store their module copies."""
        runners = {COMPONENT_ENV_RUNNER, COMPONENT_EVAL_ENV_RUNNER}
        return [(name, component) for name, component in super().get_checkpointable_components() if name not in runners]


def new_weights_id() -> str:
    """A fresh id for a version of the learner's weights."""
    return uuid.uuid4().hex


def _load_weights(runner: GroupedEnvRunner, weights_ref: ray.ObjectRef) -> tuple[int, str | None]:
    """Load the weights into a (remote) runner; its index and the weights id it then holds."""
    runner.set_state(ray.get(weights_ref))
    return runner.worker_index, runner.weights_id


def check_weights_ids(held: Sequence[tuple[int, str | None]], expected: str) -> None:
    """Raise unless every ``(worker_index, weights_id)`` pair holds ``expected``."""
    stale = [(index, weights_id) for index, weights_id in held if weights_id != expected]
    if stale:
        raise RuntimeError(
            f"env runners {[index for index, _ in stale]} hold weights {[w for _, w in stale]}, not the "
            f"learner's current weights {expected!r}: a weight push was lost"
        )


register_trainable("ProxMO", ProxMO)
