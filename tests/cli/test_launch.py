"""Launch scripts (through --dry-run, no gcloud needed): the commands they would run.

Real multi-process training is not run here (tests/training/test_multiprocess.py does); the
start-up decision of `training.distributed` is tested in tests/training/test_distributed.py.
"""

from __future__ import annotations

import os
import shlex
import subprocess

import pytest

from helpers import ROOT

LAUNCH = ROOT / "launch"
SCRIPTS = sorted(LAUNCH.glob("*.sh"))


# ---------------------------------------------------------------------------------------------
# Shell scripts


@pytest.fixture
def fake_gcloud(tmp_path):
    """A PATH whose `gcloud` records any call and fails: a dry run must never reach it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "gcloud_was_called"
    gcloud = bin_dir / "gcloud"
    gcloud.write_text(f'#!/bin/sh\necho "$@" >> {marker}\nexit 1\n')
    gcloud.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return env, marker


def run_script(name, *args, env=None):
    return subprocess.run(
        ["bash", str(LAUNCH / name), *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60
    )


def commands(stdout: str) -> list[list[str]]:
    """The '+ '-prefixed lines of a dry run, each split as a shell would."""
    return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ ")]


def remote_command(argv: list[str]) -> str:
    [value] = [a.split("=", 1)[1] for a in argv if a.startswith("--command=")]
    return value


def test_scripts_exist_and_parse():
    names = {p.name for p in SCRIPTS}
    assert {"tpu_pod.sh", "local_multiprocess.sh", "train_local.sh"} <= names
    for script in SCRIPTS:
        subprocess.run(["bash", "-n", str(script)], check=True)
        assert os.access(script, os.X_OK), f"{script.name} is not executable"


POD_ARGS = [
    "--name",
    "simcse-pod",
    "--zone",
    "us-central2-b",
    "--accelerator-type",
    "v4-32",
    "--config",
    "configs/tiny.py",
    "--workdir",
    "gs://my-bucket/runs/tiny",
    "--project",
    "my-project",
]


def test_tpu_pod_dry_run_prints_the_whole_lifecycle_in_order(fake_gcloud):
    env, marker = fake_gcloud
    result = run_script(
        "tpu_pod.sh",
        "--dry-run",
        *POD_ARGS,
        "--spot",
        "--export-out",
        "gs://my-bucket/models/tiny",
        "--config.max_steps=7",
        "--",
        "--config.learning_rate=5e-5",
        "--config.model.pooler=avg",
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert not marker.exists(), "--dry-run ran gcloud"
    gcloud = [c for c in commands(result.stdout) if c[0] == "gcloud"]
    kinds = [" ".join(c[1:5]) for c in gcloud]
    assert kinds == [
        "compute tpus queued-resources create",
        "compute tpus queued-resources describe",
        "compute tpus tpu-vm scp",
        "compute tpus tpu-vm ssh",  # unpack the tarball
        "compute tpus tpu-vm ssh",  # install
        "compute tpus tpu-vm ssh",  # train
        "compute tpus tpu-vm ssh",  # export
        "compute tpus queued-resources delete",
    ]
    create, describe, scp, unpack, install, train, export, delete = gcloud

    assert create[5] == "simcse-pod"
    for flag in (
        "--node-id=simcse-pod",
        "--accelerator-type=v4-32",
        "--runtime-version=tpu-ubuntu2204-base",
        "--zone=us-central2-b",
        "--project=my-project",
        "--spot",
    ):
        assert flag in create
    assert "--format=value(state.state)" in describe

    assert "--worker=all" in scp and scp[5].endswith(".tar.gz")
    archive = [c for c in commands(result.stdout) if c[0] == "git"]
    assert archive and "archive" in archive[0] and archive[0][-1] == "HEAD"
    assert "--worker=all" in unpack and "tar -xzf" in remote_command(unpack)

    assert "--worker=all" in install
    assert 'pip install -U "jax[tpu]"' in remote_command(install)
    assert "pip install ." in remote_command(install)

    assert "--worker=all" in train
    argv = shlex.split(remote_command(train).split("&&", 1)[1])
    assert argv[:3] == ["python3", "-m", "distilface_jax.train"]
    assert argv[argv.index("--config") + 1] == "configs/tiny.py"
    assert argv[argv.index("--workdir") + 1] == "gs://my-bucket/runs/tiny"
    assert argv[-3:] == ["--config.max_steps=7", "--config.learning_rate=5e-5", "--config.model.pooler=avg"]
    assert "--distributed=auto" in argv

    assert "--worker=0" in export
    export_cmd = remote_command(export)
    # The one documented choice (README, docs/pods.md): the best STS-B dev checkpoint.
    assert (
        "JAX_PLATFORMS=cpu python3 -m distilface_jax.export --workdir gs://my-bucket/runs/tiny --out export "
        "--step best" in export_cmd
    )
    assert export_cmd.endswith("gcloud storage rsync --recursive export gs://my-bucket/models/tiny")

    assert delete[5] == "simcse-pod" and "--force" in delete and "--zone=us-central2-b" in delete


def test_tpu_pod_export_to_a_local_folder_comes_back_here(fake_gcloud, tmp_path):
    out = tmp_path / "model"
    result = run_script(
        "tpu_pod.sh",
        "--dry-run",
        *POD_ARGS,
        "--export-out",
        str(out),
        "--service-account",
        "tpu@my-project.iam.gserviceaccount.com",
        env=fake_gcloud[0],
    )
    assert result.returncode == 0, result.stderr
    cmds = commands(result.stdout)
    assert "--service-account=tpu@my-project.iam.gserviceaccount.com" in cmds[0]
    [export] = [c for c in cmds if "--worker=0" in c and "ssh" in c]
    assert remote_command(export).endswith("tar -czf export.tar.gz -C export .")
    [fetch] = [c for c in cmds if "scp" in c and "--worker=0" in c]
    assert fetch[5] == "simcse-pod:distilface-jax/export.tar.gz"
    assert cmds[-2][:2] == ["tar", "-xzf"] and cmds[-2][-1] == str(out)
    assert cmds[-1][:5] == ["gcloud", "compute", "tpus", "queued-resources", "delete"]
    assert not out.exists(), "a dry run creates nothing"


def test_tpu_pod_deletes_the_slice_when_training_fails(tmp_path):
    """A real (not dry) run against a stub gcloud: polls until ACTIVE, and the EXIT trap deletes
    the slice even though the training command failed, keeping the failure's exit status."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "gcloud.log"
    states = tmp_path / "states"
    states.write_text("WAITING_FOR_RESOURCES\nPROVISIONING\nACTIVE\n")
    (bin_dir / "gcloud").write_text(f"""#!/bin/bash
echo "$*" >> {log}
case "$*" in
  *" describe "*) head -n 1 {states}; sed -i 1d {states}; [ -s {states} ] || echo ACTIVE > {states} ;;
  *distilface_jax.train*) exit 7 ;;
esac
exit 0
""")
    (bin_dir / "gcloud").chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", TMPDIR=str(tmp_path))
    result = run_script("tpu_pod.sh", *POD_ARGS, "--poll-seconds", "0", env=env)
    assert result.returncode == 7, result.stderr
    calls = log.read_text().splitlines()
    assert calls[0].startswith("compute tpus queued-resources create simcse-pod")
    assert sum(" describe " in c for c in calls) == 3  # polled until ACTIVE
    assert calls[-1].startswith("compute tpus queued-resources delete simcse-pod")
    assert "PROVISIONING" in result.stderr
    assert (tmp_path / "distilface_jax-simcse-pod.tar.gz").stat().st_size > 0  # git archive ran


@pytest.mark.parametrize(
    "accelerator, runtime",
    [
        ("v5litepod-16", "v2-alpha-tpuv5-lite"),
        ("v6e-16", "v2-alpha-tpuv6e"),
        ("v5p-32", "v2-alpha-tpuv5"),
        ("v4-32", "tpu-ubuntu2204-base"),
    ],
)
def test_tpu_pod_default_runtime_version(accelerator, runtime, fake_gcloud):
    args = [a if a != "v4-32" else accelerator for a in POD_ARGS]
    result = run_script("tpu_pod.sh", "--dry-run", *args, env=fake_gcloud[0])
    assert result.returncode == 0, result.stderr
    create = commands(result.stdout)[0]
    assert f"--accelerator-type={accelerator}" in create and f"--runtime-version={runtime}" in create
    assert "--spot" not in create


def test_tpu_pod_explicit_runtime_keep_and_no_export(fake_gcloud):
    result = run_script(
        "tpu_pod.sh", "--dry-run", *POD_ARGS, "--runtime-version", "my-runtime", "--keep", env=fake_gcloud[0]
    )
    assert result.returncode == 0, result.stderr
    cmds = commands(result.stdout)
    assert "--runtime-version=my-runtime" in cmds[0]
    assert not any("delete" in c for c in cmds), "--keep must not delete the slice"
    assert not any("--worker=0" in c for c in cmds), "no --export-out, no export"
    assert "queued-resources delete simcse-pod" in result.stderr  # tells how to delete it later


@pytest.mark.parametrize("drop", ["--name", "--zone", "--accelerator-type", "--config", "--workdir"])
def test_tpu_pod_missing_required_argument(drop, fake_gcloud):
    i = POD_ARGS.index(drop)
    result = run_script("tpu_pod.sh", "--dry-run", *(POD_ARGS[:i] + POD_ARGS[i + 2 :]), env=fake_gcloud[0])
    assert result.returncode != 0
    assert drop in result.stderr and "--help" in result.stderr
    assert not result.stdout.strip()


def test_tpu_pod_rejects_local_workdir_unknown_args_and_shows_help(fake_gcloud):
    env = fake_gcloud[0]
    local = [a if not a.startswith("gs://") else "runs/tiny" for a in POD_ARGS]
    result = run_script("tpu_pod.sh", "--dry-run", *local, env=env)
    assert result.returncode != 0 and "gs://" in result.stderr
    result = run_script("tpu_pod.sh", "--dry-run", *POD_ARGS, "--bogus", env=env)
    assert result.returncode != 0 and "--bogus" in result.stderr
    result = run_script("tpu_pod.sh", "--help", env=env)
    assert result.returncode == 0 and "Usage:" in result.stdout and "--accelerator-type" in result.stdout
    assert not fake_gcloud[1].exists()


def test_local_multiprocess_dry_run(tmp_path):
    workdir = tmp_path / "run"
    result = run_script(
        "local_multiprocess.sh",
        "--dry-run",
        "--num-processes",
        "3",
        "--devices-per-process",
        "2",
        "--config",
        "configs/tiny.py",
        "--workdir",
        str(workdir),
        "--config.max_steps=5",
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("+ ")]
    assert len(lines) == 3
    addresses = set()
    for process_id, line in enumerate(lines):
        argv = shlex.split(line[2:])
        redirect = argv.index(">")
        argv, log = argv[:redirect], argv[redirect + 1]
        assert log == f"{workdir}/logs/process_{process_id}.log"
        assert "JAX_PLATFORMS=cpu" in argv
        assert "XLA_FLAGS=--xla_force_host_platform_device_count=2" in argv
        assert argv[argv.index("-m") + 1] == "distilface_jax.train"
        assert f"--process_id={process_id}" in argv and "--num_processes=3" in argv
        assert argv[argv.index("--config") + 1] == "configs/tiny.py"
        assert argv[argv.index("--workdir") + 1] == str(workdir)
        assert argv[-1] == "--config.max_steps=5"
        [address] = [a.split("=", 1)[1] for a in argv if a.startswith("--coordinator_address=")]
        addresses.add(address)
    [address] = addresses  # one coordinator shared by all processes
    host, port = address.rsplit(":", 1)
    assert host == "127.0.0.1" and 0 < int(port) < 65536
    assert not workdir.exists(), "a dry run creates nothing"


def test_local_multiprocess_stops_the_others_when_one_fails(tmp_path):
    """A stand-in interpreter: process 1 fails at once, process 0 would hang (as a real one
    blocked in a collective would). The script must stop process 0 and report failure."""
    fake_python = tmp_path / "python"
    fake_python.write_text('#!/bin/bash\ncase "$*" in *--process_id=1*) echo boom; exit 3;; esac\nexec sleep 60\n')
    fake_python.chmod(0o755)
    workdir = tmp_path / "run"
    result = run_script(
        "local_multiprocess.sh",
        "--python",
        str(fake_python),
        "--config",
        "c",
        "--workdir",
        str(workdir),
        "--num-processes",
        "2",
    )
    assert result.returncode == 1
    assert "process 1 exited with status 3" in result.stderr and "boom" in result.stderr
    assert (workdir / "logs" / "process_0.log").exists()


def test_local_multiprocess_bad_arguments():
    assert run_script("local_multiprocess.sh", "--workdir", "x").returncode != 0
    result = run_script("local_multiprocess.sh", "--config", "c", "--workdir", "w", "--num-processes", "0")
    assert result.returncode != 0 and "--num-processes" in result.stderr


def test_train_local_dry_run():
    result = run_script(
        "train_local.sh", "--dry-run", "--config", "configs/tiny.py", "--workdir", "runs/t", "--config.max_steps=3"
    )
    assert result.returncode == 0, result.stderr
    [argv] = commands(result.stdout)
    assert argv[1:] == [
        "-m",
        "distilface_jax.train",
        "--config",
        "configs/tiny.py",
        "--workdir",
        "runs/t",
        "--distributed=off",
        "--config.max_steps=3",
    ]
    assert run_script("train_local.sh", "--config", "configs/tiny.py").returncode != 0
