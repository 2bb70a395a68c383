"""Where a Dask backend's calls go: a cluster of its own, a scheduler's address, or
the user's ``distributed.Client``; and what the backend owns and so closes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import distributed


@dataclass(frozen=True)
class Target:
    """What the user asked for: ``client``, else ``address``, else a LocalCluster of
    ``workers`` one-thread worker processes (``cluster_kwargs`` override any setting)."""

    address: str | None = None
    client: Any = None
    cluster_kwargs: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.address is not None and self.client is not None:
            raise ValueError("give either address= or client=, not both")
        if self.client is not None and not isinstance(self.client, distributed.Client):
            kind = type(self.client).__name__
            raise TypeError(f"client must be a distributed.Client, not {kind}")
        if self.cluster_kwargs is not None and (self.address or self.client is not None):
            raise ValueError("cluster_kwargs apply to the pool's own LocalCluster only "
                             "(no address= or client=)")


class Connection:
    """The client a backend talks through; closes what it opened, and only that."""

    def __init__(self, target: Target, workers: int) -> None:
        self.cluster: Any = None
        if target.client is not None:
            self.client = target.client
            self.owns_client = False
        elif target.address is not None:
            self.client = distributed.Client(  # type: ignore[no-untyped-call]
                target.address, set_as_default=False
            )
            self.owns_client = True
        else:
            settings: dict[str, Any] = {
                "n_workers": workers, "threads_per_worker": 1, "processes": True,
                # Loopback only, the dashboard too (on a free port).
                "host": "127.0.0.1", "dashboard_address": "127.0.0.1:0",
            }
            settings.update(target.cluster_kwargs or {})
            if not settings["processes"] and "host" not in (target.cluster_kwargs or {}):
                del settings["host"]  # threads talk in-process (inproc://): no socket
            self.cluster = distributed.LocalCluster(**settings)  # type: ignore[no-untyped-call]
            try:
                self.client = distributed.Client(  # type: ignore[no-untyped-call]
                    self.cluster, set_as_default=False
                )
            except BaseException:
                self.cluster.close()
                raise
            self.owns_client = True

    @property
    def restartable(self) -> bool:
        """Whether a worker may be restarted to stop what it runs: the backend's own
        cluster, of worker processes (a shared cluster's workers are not ours)."""
        return self.cluster is not None and bool(getattr(self.cluster, "processes", False))

    def threads(self) -> int:
        """The cluster's worker threads: how many calls run at once."""
        threads: dict[str, int] = self.client.nthreads()
        return max(1, sum(threads.values()))

    def close(self) -> None:
        try:
            if self.owns_client:
                self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()
