"""Storage errors: translated from driver errors at the storage boundary, never HTTP.

StorageError
 ├── NotFoundError   a row that must exist does not
 └── ConflictError   a unique constraint was violated
"""


class StorageError(Exception):
    pass


class NotFoundError(StorageError):
    pass


class ConflictError(StorageError):
    pass
