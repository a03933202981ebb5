"""The multi-process start-up decision (`training.distributed`): `distributed_settings`, the pure
part, and `initialize_from_flags`, which calls jax.distributed.initialize at most once."""

from __future__ import annotations

import pytest
from absl.testing import flagsaver

from distilface_jax.training import distributed

# ---------------------------------------------------------------------------------------------
# distributed_settings: the pure decision


def flag_values(**given):
    values = dict(
        coordinator_address=None, num_processes=None, process_id=None, local_device_ids=None, distributed="detect"
    )
    values.update(given)
    return values


def test_single_process_by_default():
    assert distributed.distributed_settings(flag_values(), {}) is None
    assert distributed.distributed_settings(flag_values(), {"PATH": "/usr/bin"}) is None


def test_explicit_flags():
    settings = distributed.distributed_settings(
        flag_values(coordinator_address="10.0.0.2:8476", num_processes=4, process_id=3), {}
    )
    assert settings == dict(coordinator_address="10.0.0.2:8476", num_processes=4, process_id=3)
    settings = distributed.distributed_settings(
        flag_values(coordinator_address="[::1]:1234", num_processes=2, process_id=0, local_device_ids=["0", "1"]), {}
    )
    assert settings["local_device_ids"] == [0, 1] and settings["coordinator_address"] == "[::1]:1234"


@pytest.mark.parametrize(
    "given, missing",
    [
        (dict(coordinator_address="h:1"), ["--num_processes", "--process_id"]),
        (dict(num_processes=2, process_id=0), ["--coordinator_address"]),
        (dict(coordinator_address="h:1", num_processes=2), ["--process_id"]),
    ],
)
def test_partial_flags_name_the_missing_ones(given, missing):
    with pytest.raises(ValueError) as error:
        distributed.distributed_settings(flag_values(**given), {})
    for flag in missing:
        assert flag in str(error.value)


@pytest.mark.parametrize(
    "given, flag",
    [
        (dict(coordinator_address="h:1", num_processes=2, process_id=2), "--process_id"),
        (dict(coordinator_address="h:1", num_processes=2, process_id=-1), "--process_id"),
        (dict(coordinator_address="h:1", num_processes=0, process_id=0), "--num_processes"),
        (dict(coordinator_address="hostonly", num_processes=2, process_id=0), "--coordinator_address"),
        (dict(coordinator_address="h:port", num_processes=2, process_id=0), "--coordinator_address"),
        (dict(coordinator_address=":1234", num_processes=2, process_id=0), "--coordinator_address"),
        (dict(coordinator_address="h:1", num_processes=2, process_id=0, local_device_ids=["a"]), "--local_device_ids"),
        (dict(local_device_ids=["0"]), "--local_device_ids"),
        (dict(coordinator_address="h:1", num_processes=2, process_id=0, distributed="off"), "--distributed=off"),
    ],
)
def test_invalid_flags_are_named(given, flag):
    with pytest.raises(ValueError, match=flag):
        distributed.distributed_settings(flag_values(**given), {})


@pytest.mark.parametrize(
    "environ",
    [
        {"TPU_WORKER_HOSTNAMES": "t1v-w-0,t1v-w-1,t1v-w-2,t1v-w-3", "TPU_WORKER_ID": "2"},
        {"TPU_PROCESS_ADDRESSES": "10.0.0.1:8476,10.0.0.2:8476"},
        {"MEGASCALE_NUM_SLICES": "2", "MEGASCALE_SLICE_ID": "1"},
        {"MEGASCALE_COORDINATOR_ADDRESS": "10.0.0.1"},
    ],
)
def test_multi_host_tpu_environment_means_auto_initialize(environ):
    assert distributed.distributed_settings(flag_values(), environ) == {}
    assert distributed.tpu_slice_in_environment(environ)


@pytest.mark.parametrize(
    "environ",
    [
        {"TPU_WORKER_HOSTNAMES": "localhost", "TPU_WORKER_ID": "0"},  # single-host slice
        {"CLOUD_TPU_TASK_ID": "0"},  # splits one host's chips; not a pod by itself
        {"MEGASCALE_NUM_SLICES": "1"},
    ],
)
def test_single_host_tpu_environment_needs_no_initialize(environ):
    assert distributed.distributed_settings(flag_values(), environ) is None


def test_modes():
    pod = {"TPU_WORKER_HOSTNAMES": "a,b"}
    assert distributed.distributed_settings(flag_values(distributed="auto"), {}) == {}
    assert distributed.distributed_settings(flag_values(distributed="off"), pod) is None
    explicit = flag_values(coordinator_address="h:1", num_processes=2, process_id=1)
    # Explicit flags win over what the environment says.
    assert distributed.distributed_settings(explicit, pod)["process_id"] == 1
    with pytest.raises(ValueError, match="--distributed"):
        distributed.distributed_settings(flag_values(distributed="sometimes"), {})


# ---------------------------------------------------------------------------------------------
# initialize_from_flags: calls jax.distributed.initialize at most once, only when needed


@pytest.fixture
def fake_initialize(monkeypatch):
    calls = []
    monkeypatch.setattr(distributed.jax.distributed, "initialize", lambda **kw: calls.append(kw))
    monkeypatch.setattr(distributed.jax.distributed, "is_initialized", lambda: bool(calls))
    monkeypatch.setattr(distributed, "_initialized_here", False)
    return calls


def test_flags_are_registered_once():
    from absl import flags

    distributed._define_flags()  # as if imported again: must not raise DuplicateFlagError
    for name in ("coordinator_address", "num_processes", "process_id", "local_device_ids", "distributed"):
        assert name in flags.FLAGS


def test_initialize_from_flags_single_process_does_nothing(fake_initialize):
    assert distributed.initialize_from_flags(environ={}) is False
    assert fake_initialize == []


@flagsaver.flagsaver(coordinator_address="127.0.0.1:1234", num_processes=2, process_id=1)
def test_initialize_from_flags_explicit_then_no_op(fake_initialize):
    assert distributed.initialize_from_flags(environ={}) is True
    assert fake_initialize == [dict(coordinator_address="127.0.0.1:1234", num_processes=2, process_id=1)]
    assert distributed.initialize_from_flags(environ={}) is False  # already initialized
    assert len(fake_initialize) == 1


def test_initialize_from_flags_on_a_tpu_pod_auto_detects(fake_initialize):
    assert distributed.initialize_from_flags(environ={"TPU_WORKER_HOSTNAMES": "a,b,c,d"}) is True
    assert fake_initialize == [{}]


def test_initialize_from_flags_skips_when_someone_else_initialized(monkeypatch, fake_initialize):
    monkeypatch.setattr(distributed.jax.distributed, "is_initialized", lambda: True)
    assert distributed.initialize_from_flags(environ={"TPU_WORKER_HOSTNAMES": "a,b"}) is False
    assert fake_initialize == []


def test_is_main_process():
    assert distributed.is_main_process()  # one process here: it is process 0
