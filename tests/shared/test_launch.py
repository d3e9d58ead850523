
import pytest

from shared import launch


@pytest.fixture
def cfg_file(tmp_path):
    p = tmp_path / "target.yaml"
    p.write_text(f"run: {{project: launchtest, name: null, root: {tmp_path}/runs}}\n"
                 f"out: {tmp_path}/state.json\nsteps: 3\ntick: 0.01\n")
    return p


def test_in_process_and_debug_cluster(cfg_file, tmp_path):
    res = launch.main(["--entry", "tests.shared.launch_target", "--config", str(cfg_file), "steps=2"])
    assert res["done"] == 2
    res = launch.main(["--entry", "tests.shared.launch_target", "--config", str(cfg_file), "--cluster", "debug",
                       "steps=4"])
    assert res == {"done": 4, "starts": 2}
    assert (tmp_path / "runs" / "launchtest" / "target" / "submitit").is_dir()


def test_bad_config_fails_before_submission(cfg_file):
    from shared.config import ConfigError

    with pytest.raises(ConfigError, match="Did you mean 'steps'"):
        launch.main(["--entry", "tests.shared.launch_target", "--config", str(cfg_file), "--cluster", "local",
                     "step=2"])


@pytest.mark.slow
def test_local_job_timing_out_is_requeued_and_resumes(cfg_file, tmp_path):
    # 4 s limit, warned 1 s before: the job checkpoints (state on disk), is requeued, and continues
    job = launch.main(["--entry", "tests.shared.launch_target", "--config", str(cfg_file), "--cluster", "local",
                       "--gpus-per-node", "0", "--time-min", str(4 / 60), "--signal-delay-s", "1",
                       "--max-requeue", "5", "steps=50", "tick=0.1"])
    result = job.result()
    assert result["done"] == 50
    assert result["starts"] >= 2, "the job should have been requeued and continued from its state"
    assert "requeued" in job.stdout().lower() or result["starts"] >= 2
