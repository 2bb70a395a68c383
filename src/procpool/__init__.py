"""procpool: the process pool Python should have shipped with.

``procpool.Pool`` is a drop-in for ``multiprocessing.Pool``; the engine behind it never
hangs on a dead worker, stops tasks on timeout or cancel, and keeps per-task overhead
close to a pipe round trip. See ``docs/architecture.md`` for how it works.
"""

from ._errors import CancelledError as CancelledError
from ._errors import GetTimeoutError as GetTimeoutError
from ._errors import PoolBrokenError as PoolBrokenError
from ._errors import ProcpoolError as ProcpoolError
from ._errors import RemoteError as RemoteError
from ._errors import RemoteTraceback as RemoteTraceback
from ._errors import SerializationError as SerializationError
from ._errors import TaskTimeoutError as TaskTimeoutError
from ._errors import WorkerLostError as WorkerLostError
from ._executor import Executor as Executor
from ._imap import IMapIterator as IMapIterator
from ._pool import Pool as Pool
from ._pool import cpu_count as cpu_count
from ._results import AsyncResult as AsyncResult
from ._results import MapResult as MapResult

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
    "RemoteError",
    "RemoteTraceback",
    "SerializationError",
    "TaskTimeoutError",
    "WorkerLostError",
    "cpu_count",
]
