"""Persistent state: :mod:`storage.store` (the LMDB store, the only code that touches
LMDB, split along its jobs into private modules it re-exports),
:mod:`storage.documents` (every stored document's key format and accessor),
:mod:`storage.datafile` and :mod:`storage.check` (the file read without mapping it;
check-store, recover-store), :mod:`storage.lock` (the service's lock) and
:mod:`storage.location` (where a store may live).

Nothing is imported here, so that the light modules (lock, location) load
without LMDB and numpy.
"""
