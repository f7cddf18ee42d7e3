"""A run's configuration: the one saved in its directory, or a new one saved there.

A run directory keeps the configuration it was started with (``RunDir.config``, written once,
before any phase). Continuing it (``resume``) reads that file; giving another configuration for it
is an error, since its phases were computed under the saved one.
"""

from __future__ import annotations

from salad_ray import preflight
from salad_ray.config import ConfigError, RunConfig, load_config
from salad_ray.files import write_text
from salad_ray.rundir import RunDir


def run_config(
    run: RunDir,
    *,
    preset: str | None = None,
    file: str | None = None,
    overrides: list[str] | None = None,
    resume: bool = False,
) -> RunConfig:
    """The saved config of ``run`` when it holds one (``resume`` required; a given config must equal
    it), else the given one, pre-flight-checked before the directory is created and then saved."""
    given = preset or file or overrides
    if run.config.is_file():
        if not resume:
            raise ConfigError(
                f"{run.root} holds a run already: pass --resume to continue it, or choose another --run-dir"
            )
        config = load_config(file=run.config)
        if given and load_config(preset or config.preset, file, overrides) != config:
            raise ConfigError(
                f"{run.root} was started with another configuration ({run.config}); "
                "start a new --run-dir to change it"
            )
        preflight.check(config)
        return config
    config = load_config(preset, file, overrides)
    preflight.check(config)  # before the run directory exists: a rejected config leaves nothing behind
    run.root.mkdir(parents=True, exist_ok=True)
    write_text(run.config, config.to_yaml())
    return config
