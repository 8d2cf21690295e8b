"""synctalk.runtime.configure_threads: OpenMP threads sleep instead of spinning, unless told otherwise."""

import os
import subprocess
import sys

import pytest

CHECK = ("import os, synctalk.runtime as r; print(r.configure_threads()); import torch; "
         "print(os.environ.get('OMP_WAIT_POLICY'), torch.get_num_threads())")


def run(env: dict) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "SYNCTALK_THREADS")}
    out = subprocess.run([sys.executable, "-c", CHECK], env={**clean, **env}, capture_output=True, text=True,
                         check=True)
    return out.stdout.strip().splitlines()


@pytest.mark.parametrize(("env", "policy", "threads"), [
    ({}, "PASSIVE", None),                                        # the default: sleep at barriers
    ({"OMP_WAIT_POLICY": "ACTIVE"}, "ACTIVE", None),              # a user's choice stands
    ({"SYNCTALK_THREADS": "off"}, "None", None),                  # hands off
    ({"SYNCTALK_THREADS": "1"}, "PASSIVE", "1"),                  # a thread count
])
def test_thread_policy(env, policy, threads):
    description, values = run(env)
    got_policy, got_threads = values.split()
    assert got_policy == policy, description
    if threads is not None:
        assert got_threads == threads
    assert description.startswith("threads:")


def test_after_torch_the_policy_is_left_alone_and_said(monkeypatch):
    import torch  # noqa: F401  (already imported by the suite)

    from synctalk.runtime import configure_threads

    monkeypatch.delenv("SYNCTALK_THREADS", raising=False)
    assert "torch already imported" in configure_threads()
