"""Faults injected into the processes a test starts (their PYTHONPATH holds this folder; Python imports it at
start-up). Each is off unless its environment variable is set:

- CXR_TEST_HANG=NAME: a `train` whose command line contains NAME hangs at start, as a run stuck in a driver would;
- CXR_TEST_DISK_FULL=TEXT: renaming a file whose name contains TEXT fails with ENOSPC, as on a full disk.
"""

import errno
import os

if os.environ.get("CXR_TEST_HANG"):
    try:
        with open("/proc/self/cmdline", "rb") as fh:
            argv = fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        argv = ""
    if " train " in argv and os.environ["CXR_TEST_HANG"] in argv:
        import time

        while True:
            time.sleep(1)

if os.environ.get("CXR_TEST_DISK_FULL"):
    _replace = os.replace

    def _full(src, dst, *args, **kwargs):
        if os.environ["CXR_TEST_DISK_FULL"] in os.fspath(dst):
            raise OSError(errno.ENOSPC, "No space left on device", os.fspath(dst))
        return _replace(src, dst, *args, **kwargs)

    os.replace = _full
