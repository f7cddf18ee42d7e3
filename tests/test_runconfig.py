import pytest

from salad_ray.config import ConfigError
from salad_ray.run import main
from salad_ray.runconfig import run_config
from salad_ray.rundir import RunDir


def test_a_run_directory_keeps_its_configuration(tmp_path, capsys):
    run = RunDir(tmp_path / "run")
    first = run_config(run, preset="smoke")
    assert run.config.is_file()
    with pytest.raises(ConfigError, match="pass --resume"):
        run_config(run, preset="smoke")
    assert run_config(run, preset="smoke", resume=True) == first
    assert run_config(run, resume=True) == first  # the saved config alone
    with pytest.raises(ConfigError, match="another configuration"):
        run_config(run, preset="smoke", overrides=["selection.gamma=0"], resume=True)
    assert main(["--preset=smoke", f"--run-dir={tmp_path / 'other'}", "--set=train.lrr=1"]) == 2
    assert "train.lrr: unknown key" in capsys.readouterr().err  # a bad key stops before anything starts
    assert not (tmp_path / "other").exists()
