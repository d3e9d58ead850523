"""Issue 9, item 1: stopping a ``--cluster local`` job ends its training process (the probe: the process
survived the kill of its job id and went on writing into the run folder)."""
import os
import signal
import time
from pathlib import Path

import pytest

from shared import launch

pytestmark = pytest.mark.timeout(120)


def main(cfg):
    """The job's entry (this module): record the training process's pid, then train until stopped."""
    Path(cfg.out).write_text(str(os.getpid()))
    while True:
        time.sleep(0.05)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")  # a zombie has ended, it only waits for its parent to reap it


def _wait(cond, timeout=60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("stop", ["kill", "kill -9", "job.cancel()"])
def test_stopping_a_local_job_ends_the_training_process(tmp_path, stop, capsys):
    cfg = tmp_path / "target.yaml"
    cfg.write_text(f"run: {{project: launchtest, name: null, root: {tmp_path}/runs}}\nout: {tmp_path}/pid\n")
    job = launch.main(["--entry", "tests.shared.test_launch_cancel", "--config", str(cfg), "--cluster", "local",
                       "--gpus-per-node", "0", "--time-min", "5"])
    assert f"stop it with: kill {job.job_id}" in capsys.readouterr().out
    assert _wait(lambda: (tmp_path / "pid").exists() and (tmp_path / "pid").read_text()), "the job did not start"
    task = int((tmp_path / "pid").read_text())
    assert task != int(job.job_id) and _running(task)
    if stop == "kill":
        os.kill(int(job.job_id), signal.SIGTERM)
    elif stop == "kill -9":
        os.kill(int(job.job_id), signal.SIGKILL)
    else:
        job.cancel()
    try:
        assert _wait(lambda: not _running(task), timeout=30), f"the training process survived `{stop}`"
    finally:
        if _running(task):
            os.kill(task, signal.SIGKILL)
        if _running(int(job.job_id)):
            os.kill(int(job.job_id), signal.SIGKILL)
        job._process.wait()
