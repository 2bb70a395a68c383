"""The Dask backend: procpool's Pool and Executor on Dask distributed.

It implements :class:`procpool._core.backend.Backend`, the interface the facades use,
on ``distributed`` futures (:mod:`procpool._dask.backend`, whose docstring draws the
flow); :mod:`~procpool._dask.remote` is what runs on a Dask worker and
:mod:`~procpool._dask.answers` decodes its answers; :mod:`~procpool._dask.cluster`
connects (a LocalCluster of its own, a scheduler's address, or the user's client).
Imported only by :mod:`procpool.dask`: ``import procpool`` never imports Dask.
"""
