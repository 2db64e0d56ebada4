"""Lambda's SnapStart runtime hooks for Python, under AWS's module name.

    from snapshot_restore_py import register_before_snapshot, register_after_restore

    @register_before_snapshot
    def close_connections(): ...

    @register_after_restore
    def reconnect(): ...

Before-snapshot hooks run once, in the version's template, after the function's
module is imported (the end of INIT); after-restore hooks run once in every
environment made from the template, before its first invocation. As on Lambda,
before-snapshot hooks run in the reverse order of registration, after-restore
hooks in the order of registration; both accept extra arguments, given to the
hook when it runs.
"""

_before_snapshot: list = []  # (hook, args, kwargs)
_after_restore: list = []


def register_before_snapshot(func, *args, **kwargs):
    _before_snapshot.append((func, args, kwargs))
    return func


def register_after_restore(func, *args, **kwargs):
    _after_restore.append((func, args, kwargs))
    return func


def get_before_snapshot():
    return list(reversed(_before_snapshot))


def get_after_restore():
    return list(_after_restore)
