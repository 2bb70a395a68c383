"""procpool: the process pool Python should have shipped with.

``procpool.Pool`` is a drop-in for ``multiprocessing.Pool``; the engine behind it never
hangs on a dead worker, stops tasks on timeout or cancel, and keeps per-task overhead
close to a pipe round trip. See ``docs/architecture.md`` for how it works.
"""

from procpool._api.executor import Executor as Executor
from procpool._api.imap import IMapIterator as IMapIterator
from procpool._api.options import cpu_count as cpu_count
from procpool._api.pool import Pool as Pool
from procpool._api.results import AsyncResult as AsyncResult
from procpool._api.results import MapResult as MapResult
from procpool._api.share import Shared as Shared
from procpool._api.shared_queue import Queue as Queue
from procpool._api.stream import StreamIterator as StreamIterator
from procpool._core.errors import CancelledError as CancelledError
from procpool._core.errors import GetTimeoutError as GetTimeoutError
from procpool._core.errors import PoolBrokenError as PoolBrokenError
from procpool._core.errors import ProcpoolError as ProcpoolError
from procpool._core.errors import RemoteError as RemoteError
from procpool._core.errors import RemoteTraceback as RemoteTraceback
from procpool._core.errors import SerializationError as SerializationError
from procpool._core.errors import TaskTimeoutError as TaskTimeoutError
from procpool._core.errors import WorkerLostError as WorkerLostError

__version__ = "0.1.0"

__all__ = [
    "AsyncResult",
    "CancelledError",
    "Executor",
    "GetTimeoutError",
    "IMapIterator",
    "MapResult",
    "Pool",
    "PoolBrokenError",
    "ProcpoolError",
    "Queue",
    "RemoteError",
    "RemoteTraceback",
    "SerializationError",
    "Shared",
    "StreamIterator",
    "TaskTimeoutError",
    "WorkerLostError",
    "cpu_count",
]
