"""How `vlfusion.distributed` decides whether and how to initialise jax.distributed."""

import pytest

from vlfusion.distributed import launch_settings


def test_single_process_initialises_nothing():
  assert launch_settings(environ={}) is None
  assert launch_settings(environ={"SLURM_NTASKS": "1", "TPU_WORKER_HOSTNAMES": "localhost"}) is None


def test_flags_win_over_environment():
  env = {"JAX_COORDINATOR_ADDRESS": "other:1", "JAX_NUM_PROCESSES": "8", "JAX_PROCESS_ID": "7"}
  assert launch_settings("host:1234", 2, 1, environ=env) == dict(
      coordinator_address="host:1234", num_processes=2, process_id=1)
  assert launch_settings(environ=env) == dict(coordinator_address="other:1", num_processes=8,
                                              process_id=7)


def test_clusters_are_auto_detected():
  assert launch_settings(environ={"SLURM_NTASKS": "4"}) == {}
  assert launch_settings(environ={"TPU_WORKER_HOSTNAMES": "t0,t1,t2,t3"}) == {}
  assert launch_settings(mode="on", environ={}) == {}
  assert launch_settings(mode="off", environ={"SLURM_NTASKS": "4"}) is None


@pytest.mark.parametrize("kwargs,match", [
    (dict(coordinator_address="h:1"), "num_processes"),
    (dict(coordinator_address="h:1", num_processes=2, process_id=2), "not in"),
])
def test_incomplete_or_wrong_launch_flags_are_errors(kwargs, match):
  with pytest.raises(ValueError, match=match):
    launch_settings(environ={}, **kwargs)
