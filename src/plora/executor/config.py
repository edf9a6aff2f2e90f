"""Where the tasks of :func:`plora.executor.run_tasks` run (``--jobs``, ``--ray-address``), the backend that follows,
and how often a task is tried; shared by the driver and every backend."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Backend = Literal["inline", "processes", "ray"]
ATTEMPTS = 2  # a failed task is run once more, then reported


class ExecutorConfig(BaseModel):
    """Where tasks run; the ``--jobs`` and ``--ray-address`` options of every command that fans out come from it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    jobs: int = Field(
        default=1,
        ge=1,
        description="tasks at once on this machine (worker processes, one thread each); with Ray "
        "the cluster's CPUs decide",
    )
    ray_address: str | None = Field(
        default=None,
        description="run the tasks on Ray: auto (the cluster started on this machine with `ray start --head`), "
        "HOST:PORT, or local (a private Ray on this machine with --jobs CPUs); default RAY_ADDRESS, else local "
        "processes",
    )


def ray_address_in_force(cfg: ExecutorConfig) -> str | None:
    """``cfg.ray_address``, else ``RAY_ADDRESS`` (through plora.settings), else None."""
    from plora.settings import get_settings

    return cfg.ray_address or get_settings().ray_address


def backend_of(cfg: ExecutorConfig) -> Backend:
    if ray_address_in_force(cfg):
        return "ray"
    return "processes" if cfg.jobs > 1 else "inline"
