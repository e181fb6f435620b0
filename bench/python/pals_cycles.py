"""Python PALs' try-acquire + release cycle, timed for pals' benchmark (benches/locking.rs).

    pals_cycles.py URL APP NAME

URL is SQLAlchemy's (postgresql+psycopg://...). Warms up, prints "ready", then for every
number N read from stdin runs N cycles of lock.acquire(blocking=False) + lock.release() and
prints the microseconds per cycle. Exits at EOF.
"""
import sys
import time

import pals


def main():
    url, app, name = sys.argv[1:4]
    lock = pals.Locker(app, url).lock(name)

    def cycle():
        assert lock.acquire(blocking=False), "the lock was busy"
        lock.release()

    for _ in range(200):  # the pool's connection, SQLAlchemy's caches
        cycle()
    print("ready", flush=True)
    for line in sys.stdin:
        cycles = int(line)
        started = time.perf_counter()
        for _ in range(cycles):
            cycle()
        print((time.perf_counter() - started) * 1e6 / cycles, flush=True)


if __name__ == "__main__":
    main()
