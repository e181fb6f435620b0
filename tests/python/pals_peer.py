"""A Python PALs peer for pals' interop tests.

    pals_peer.py URL APP NAME hold exclusive|shared   -> prints "held", releases on stdin EOF
    pals_peer.py URL APP NAME try exclusive|shared    -> prints "True" or "False"
    pals_peer.py URL APP NAME key                     -> prints PALs' key for APP.NAME
"""
import sys

import pals


def main():
    url, app, name, action = sys.argv[1:5]
    shared = len(sys.argv) > 5 and sys.argv[5] == "shared"
    locker = pals.Locker(app, url)
    if action == "key":
        print(locker._lock_num(name), flush=True)
        return
    lock = locker.lock(name, shared=shared)
    if action == "try":
        acquired = lock.acquire(blocking=False)
        print(acquired, flush=True)
        if acquired:
            lock.release()
        return
    if action == "hold":
        assert lock.acquire(blocking=False), "the lock was busy"
        print("held", flush=True)
        sys.stdin.read()  # until the test closes our stdin
        lock.release()
        return
    raise SystemExit(f"unknown action {action}")


if __name__ == "__main__":
    main()
