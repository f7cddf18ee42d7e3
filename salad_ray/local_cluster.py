"""Ray clusters on this machine, and Ray's address file.

``ray start`` records the GCS address of the cluster it joins in an address file
(``/tmp/ray/ray_current_cluster``); ``ray.init()`` without an address, ``serve run``, ``ray status``
and the rest of Ray's CLI connect to that address. A cluster killed without ``ray stop`` (SIGKILL, a
crashed node, a killed test) leaves the file naming a GCS that no longer exists, and those commands
then retry the dead address for minutes instead of starting or finding a live one.

A cluster counts as live here when a raylet on this machine is attached to it (what Ray's own
discovery reads from the process table: a head's raylet, or a worker node's). The address file is
stale when it names no live cluster; :func:`forget_dead_cluster` removes it then, and only then.
The driver (:func:`salad_ray.connect.connect`) and the Serve application builders call it before they
connect; ``python -m salad_ray.local_cluster`` does it by hand before Ray's own CLI.
"""

from __future__ import annotations

from pathlib import Path


def address_file(temp_dir: str | None = None) -> Path:
    """Ray's address file under ``temp_dir`` (Ray's default temporary directory when None)."""
    from ray._common.utils import get_ray_address_file

    return Path(get_ray_address_file(temp_dir))


def live_clusters() -> set[str]:
    """GCS addresses of the clusters a raylet on this machine is attached to."""
    from ray._private.services import find_gcs_addresses

    return set(find_gcs_addresses())


def running_cluster() -> str | None:
    """The GCS address of a Ray cluster running on this machine (``ray start``), or None: the one
    the address file names when it is live, else any live one."""
    live = live_clusters()
    if not live:
        return None
    recorded = recorded_address()
    return recorded if recorded in live else sorted(live)[0]


def recorded_address(temp_dir: str | None = None) -> str | None:
    """The address the address file names, or None when there is no file (or it is empty)."""
    path = address_file(temp_dir)
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def forget_dead_cluster(temp_dir: str | None = None, live: set[str] | None = None) -> str | None:
    """Remove the address file when it names no live cluster (``live``: the live GCS addresses,
    found on this machine when None); return the address it named, or None when nothing was removed."""
    recorded = recorded_address(temp_dir)
    if recorded is None or recorded in (live_clusters() if live is None else live):
        return None
    address_file(temp_dir).unlink(missing_ok=True)  # missing: another process forgot it first
    return recorded


def main() -> None:
    """``python -m salad_ray.local_cluster``: forget a dead cluster's address and say what was done."""
    forgotten = forget_dead_cluster()
    path = address_file()
    if forgotten is not None:
        print(f"removed {path}: it named {forgotten}, a Ray cluster no longer running on this machine")
    elif (recorded := recorded_address()) is not None:
        print(f"{path} names {recorded}, a live Ray cluster: kept")
    else:
        print(f"no Ray address file at {path}: nothing to repair")


if __name__ == "__main__":
    main()
