//! Memory per lock name is given back: a locker keeps the names of the locks in use (a
//! `Lock`, a guard, a waiter has them), not of every lock it ever made, so names formatted
//! from requests (`name = "tenant-{id}"`) cannot exhaust memory. Its own binary: a counting
//! global allocator measures the bytes live.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use pals_tests::{locker, unique_app};

/// The system allocator, counting the bytes live.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed on to the system allocator as is; only counts are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = System.alloc(layout);
        if !ptr.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = System.alloc_zeroed(layout);
        if !ptr.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let moved = System.realloc(ptr, layout, new_size);
        if !moved.is_null() {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        moved
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const MIB: isize = 1 << 20;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_of_released_locks_are_forgotten_and_names_in_use_kept() {
    let app = unique_app("name-memory");
    let locker = locker(&app);
    // Sessions open, the runtime started, before the count.
    let warm = locker.lock("warm-up").acquire().await.unwrap();
    assert!(warm.release().await.unwrap());
    let held = locker.lock("held").acquire().await.unwrap();
    let before = live();
    for i in 0..200 {
        let name = format!("{i:03}-{}", "x".repeat(MIB as usize));
        let guard = locker.lock(&name).acquire().await.unwrap();
        assert!(guard.release().await.unwrap());
    }
    locker.wait_for_releases().await;
    let kept = live() - before;
    // 200 MiB of names went through. What stays is a sweep's slack (the registry forgets
    // names nobody uses once it holds more than a budget of bytes): a few MiB at most, not
    // a number that grows with the names.
    assert!(
        kept < 8 * MIB,
        "{} KiB still live after 200 released 1 MiB names",
        kept / 1024
    );
    // The name of the lock in use all along is still known.
    let holders = locker.holders().await.unwrap();
    let mine = holders
        .iter()
        .find(|h| h.key == held.key())
        .expect("listed");
    assert_eq!(mine.name.as_deref(), Some(format!("{app}.held").as_str()));
    assert!(held.release().await.unwrap());
}
