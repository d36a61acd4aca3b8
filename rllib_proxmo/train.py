"""``python -m rllib_proxmo.train``: the main job (:mod:`rllib_proxmo.experiments.main_job`)."""

from rllib_proxmo.experiments.main_job import main

if __name__ == "__main__":
    main()
