"""Bad flags of the command lines fail within seconds, before Ray, MLflow or a model start.

Each case calls the real ``main`` of the main job or of a tuned example: it must exit with
argparse's status 2 and a message naming the flag, in under 3 s, without importing Ray or
torch and without creating an MLflow store.
"""

from __future__ import annotations

import inspect
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
from gymnasium.envs.registration import load_env_creator
from huggingface_hub import constants

import envs
from rllib_proxmo.experiments import main_job, preflight, tune_cli
from rllib_proxmo.experiments.preflight import (
    check_address,
    grpc_server_problem,
    local_gpu_count,
    source_signature,
)

REPO = Path(__file__).resolve().parents[2]
UNCACHED_HUB_ID = "Qwen/Qwen2.5-0.5B-Instruct-not-cached"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _refused(run, message: str, capsys) -> None:
    heavy_before = {name for name in ("ray", "torch") if name in sys.modules}
    start = time.perf_counter()
    with pytest.raises(SystemExit) as exit_info:
        run()
    seconds = time.perf_counter() - start
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert seconds < 3.0, seconds
    assert {name for name in ("ray", "torch") if name in sys.modules} == heavy_before


@pytest.fixture
def offline_hub(monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def clean_run(tmp_path, monkeypatch):
    """Run in ``tmp_path`` with its own MLflow store and no cluster address."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    yield tmp_path
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()  # no MLflow run


MAIN_CASES = [
    (["--estimator", "ppo"], "--estimator: unknown estimator 'ppo'; choose one of ('proxmo'"),
    (["--psa-scope", "batch"], "--psa-scope: "),
    (["--tau", "-1"], "--tau: tau must be >="),
    (["--gamma", "2"], "--gamma: gamma must be in [0, 1]"),
    (["--estimator", "proxmo_official", "--beta", "0.3"], "credit-assignment flags: proxmo_official uses"),
    (["--seed", "-1"], "argument --seed: must be >= 0, got -1"),
    (["--task-sampling", "informative", "--group-size", "1"], "--task-sampling: task_sampling='informative' draws"),
    (["--task-sampling", "hard"], "argument --task-sampling: invalid choice: 'hard'"),
    (["--env", "NoSuch-v0"], "--env 'NoSuch-v0' is not a registered Gymnasium id"),
    (["--env", "nosuchmodule:Id"], "--env 'nosuchmodule:Id': cannot import module 'nosuchmodule'"),
    (["--env", "tests.text_env:NoSuch-v0"], "--env 'tests.text_env:NoSuch-v0' is not a registered Gymnasium id"),
    (["--env-config", '{"num_game": 3}'], "--env-config: ALFWorld-v0 takes no setting ['num_game']; its settings are"),
    (
        ["--env", "tests.text_env:TextGuess-v0", "--env-config", '{"colour": 1}'],
        "--env-config: TextGuess-v0 takes no setting ['colour']",
    ),
    (["--llm-env-config", '{"max_steps": 3}'], "--llm-env-config: llm_env_config has unknown keys ['max_steps']"),
    (["--model", "/nonexistent/model"], "--model: Model directory '/nonexistent/model' does not exist"),
    (["--model", "bad id!!"], "--model: model 'bad id!!' is neither an embedded alias"),
]


@pytest.mark.parametrize(("argv", "message"), MAIN_CASES)
def test_main_job_refuses_a_bad_flag_within_seconds(argv, message, clean_run, capsys):
    _refused(lambda: main_job.main(argv), message, capsys)


#: Constructors of every parameter kind, in a module of their own (``every_kind``).
EVERY_KIND = """
def make(a, /, b, *rest, c, d=1, **more):
    pass


class Env:
    def __init__(self, a, /, b, *rest, c, d=1, **more):
        pass
"""


@pytest.fixture
def every_kind(tmp_path, monkeypatch):
    (tmp_path / "every_kind.py").write_text(EVERY_KIND)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("every_kind", None)


@pytest.mark.parametrize(
    "entry_point", [*envs._REGISTRATIONS.values(), "tests.text_env:TextGuessEnv", "every_kind:make", "every_kind:Env"]
)
def test_the_signature_read_from_source_is_the_constructors(entry_point, every_kind):
    """What ``--env-config`` is checked against equals what the constructor takes (names and kinds)."""
    read = source_signature(entry_point).parameters.values()
    real = inspect.signature(load_env_creator(entry_point)).parameters.values()
    assert [(p.name, p.kind) for p in read] == [(p.name, p.kind) for p in real]


def test_a_constructor_the_source_does_not_tell_is_left_to_inspect():
    assert source_signature("rllib_proxmo.experiments.preflight:ADDRESS_PROBE_TIMEOUT_S") is None  # not a def
    assert source_signature("gymnasium.wrappers:TimeLimit") is None  # imported into the module
    assert source_signature("envs.task_selection:TaskSelectionMixin") is None  # no __init__ of its own


def test_an_alfworld_env_config_key_is_refused_without_importing_textworld():
    check = (
        "import sys\n"
        "from rllib_proxmo.experiments.preflight import check_env\n"
        "try:\n"
        "    check_env('ALFWorld-v0', [{'num_gamez': 3}])\n"
        "except ValueError as error:\n"
        "    print(error)\n"
        "print('textworld' in sys.modules, 'alfworld' in sys.modules)\n"
    )
    printed = subprocess.run([sys.executable, "-c", check], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "--env-config: ALFWorld-v0 takes no setting ['num_gamez']; its settings are ['split'," in printed
    assert printed.splitlines()[-1] == "False False", printed


def test_an_uncached_hub_id_fails_at_once_offline_and_says_how_to_use_a_local_directory(offline_hub, clean_run, capsys):
    _refused(
        lambda: main_job.main(["--model", UNCACHED_HUB_ID]),
        f"--model: model '{UNCACHED_HUB_ID}' is not in the local Hugging Face cache",
        capsys,
    )


@pytest.mark.skipif(local_gpu_count() > 0, reason="this machine has a GPU")
def test_a_gpu_on_a_machine_without_one_is_refused(clean_run, capsys):
    _refused(
        lambda: main_job.main(["--num-gpus-per-learner", "1"]),
        "--num-gpus-per-learner 1 asks for a GPU but this machine has none visible",
        capsys,
    )


def test_a_cluster_address_where_nothing_answers_is_refused(clean_run, capsys):
    port = _closed_port()
    _refused(
        lambda: main_job.main(["--address", f"127.0.0.1:{port}"]),
        f"--address 127.0.0.1:{port}: no Ray cluster answers at 127.0.0.1:{port}",
        capsys,
    )
    _refused(lambda: main_job.main(["--address", "nonsense"]), "--address: 'nonsense' is not host:port", capsys)


def test_address_auto_without_a_cluster_on_this_machine_is_refused(clean_run, monkeypatch, capsys):
    monkeypatch.setattr(preflight, "RAY_CURRENT_CLUSTER_FILE", clean_run / "ray" / "ray_current_cluster")
    _refused(lambda: main_job.main(["--address", "auto"]), "--address auto: no Ray cluster was started", capsys)


def test_a_server_that_does_not_speak_grpc_is_not_a_cluster():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        problem = grpc_server_problem("127.0.0.1", server.getsockname()[1], 0.5)
    assert problem is not None and ("TimeoutError" in problem or "does not speak gRPC" in problem)


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def _answer_404(server: socket.socket) -> None:
    """Answer every HTTP/2 request with status 404 (a SETTINGS frame first), until ``server`` is shut down."""
    while True:
        try:
            connection, _ = server.accept()
        except OSError:
            return
        with connection, connection.makefile("rb") as reader, suppress(OSError):  # a client that hung up
            connection.sendall(_frame(4, 0, 0))
            reader.read(24)  # the client's connection preface
            while header := reader.read(9):
                kind, flags, stream = header[3], header[4], int.from_bytes(header[5:9], "big") & 0x7FFFFFFF
                reader.read(int.from_bytes(header[:3], "big"))
                if kind == 4 and not flags & 1:
                    connection.sendall(_frame(4, 1, 0))  # SETTINGS ack
                elif kind == 1:
                    connection.sendall(_frame(1, 5, stream, bytes([0x80 | 13])))  # HEADERS ":status 404", end stream


@contextmanager
def _http2_proxy() -> Iterator[int]:
    """A local port that answers HTTP/2 like the proxy of a network that answers for every outside address."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        thread = threading.Thread(target=_answer_404, args=(server,), daemon=True)
        thread.start()
        try:
            yield server.getsockname()[1]
        finally:
            server.shutdown(socket.SHUT_RDWR)
            thread.join(timeout=5)


def test_a_server_that_speaks_http2_but_is_no_ray_gcs_is_refused_within_seconds():
    with _http2_proxy() as port:
        assert grpc_server_problem("127.0.0.1", port, 2.0) is None  # what a TCP/HTTP/2 probe alone accepted
        start = time.perf_counter()
        with pytest.raises(ValueError) as error:
            check_address("--address", f"127.0.0.1:{port}")
    assert time.perf_counter() - start < 3.0
    assert f"--address 127.0.0.1:{port}: 127.0.0.1:{port} answers, but not as a Ray GCS" in str(error.value)
    assert "asked it for the cluster id: RpcError" in str(error.value) and "404" in str(error.value)


@pytest.fixture(scope="module")
def ray_head() -> Iterator[str]:
    """A Ray head started the way a user starts a cluster (``ray start --head --port``): its GCS address."""
    port = _closed_port()
    with tempfile.TemporaryDirectory(prefix="ray-") as temp_dir:  # short: Ray's socket paths live under it
        head = subprocess.Popen(
            [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--port", str(port), "--num-cpus", "1"]
            + ["--include-dashboard=false", "--disable-usage-stats", "--temp-dir", temp_dir, "--block"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            printed = []
            for line in head.stdout:
                printed.append(line)
                if "Ray runtime started" in line:
                    break
            else:
                raise AssertionError("".join(printed))
            yield f"127.0.0.1:{port}"
        finally:
            # ray start --block and every Ray process it started (its session); SIGTERM takes about 30 s.
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=60)


def test_a_live_ray_head_passes_the_address_check_with_its_token(ray_head, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # Ray 2.60 starts clusters with token authentication
    start = time.perf_counter()
    check_address("--address", ray_head)
    assert time.perf_counter() - start < 3.0


def test_a_live_ray_head_refuses_a_job_without_its_token_and_the_message_says_so(ray_head, monkeypatch):
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    with pytest.raises(ValueError, match=r"answers, but not as a Ray GCS .*AuthenticationError.*RAY_AUTH_MODE"):
        check_address("--address", ray_head)


def _tuned_example():
    import importlib.util

    spec = importlib.util.spec_from_file_location("proxmo_alfworld", REPO / "tuned_examples" / "proxmo_alfworld.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.EXPERIMENT


TUNE_CASES = [
    (["--cpu", "--estimators", "proxmo", "ppo"], "--estimators: unknown ['ppo']; choose from proxmo, grpo"),
    (["--cpu", "--seeds", "-1"], "--seeds must be ints >= 0, got [-1]"),
    (["--cpu", "--stop-iters", "0"], "--stop-iters must be >= 1, got 0"),
    (["--cpu", "--num-env-runners", "-1"], "--num-env-runners must be >= 0, got -1"),
    (["--cpu", "--model", "/nonexistent/model"], "--model: Model directory '/nonexistent/model' does not exist"),
]


@pytest.mark.parametrize(("argv", "message"), TUNE_CASES)
def test_tuned_examples_refuse_a_bad_flag_within_seconds(argv, message, clean_run, capsys):
    experiment = _tuned_example()
    _refused(lambda: tune_cli.main(experiment, argv), message, capsys)


def test_tuned_examples_refuse_the_paper_model_offline_gpus_and_a_dead_cluster(
    offline_hub, clean_run, monkeypatch, capsys
):
    experiment = _tuned_example()
    _refused(
        lambda: tune_cli.main(experiment, ["--model", UNCACHED_HUB_ID]),
        "is not in the local Hugging Face cache",
        capsys,
    )
    if local_gpu_count() == 0:
        _refused(
            lambda: tune_cli.main(experiment, ["--cpu", "--num-gpus-per-learner", "1"]),
            "--num-gpus-per-learner 1 asks for a GPU",
            capsys,
        )
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{_closed_port()}")
    _refused(lambda: tune_cli.main(experiment, ["--cpu"]), "$RAY_ADDRESS 127.0.0.1:", capsys)
