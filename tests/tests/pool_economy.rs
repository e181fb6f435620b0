//! Connection economy: a pool that grew in a burst closes its idle sessions after the idle
//! timeout, down to one (plus those that hold locks), and never closes a session that holds
//! a lock, however long it is quiet.
//!
//! Waits make the pool grow deterministically: each waits in the database on a session of
//! its own. The tests wait for the server to show the sessions gone, with a bounded wait:
//! no sleep stands in for synchronisation.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use pals_tests::{application_name, eventually, holders_of, locker, locker_with, probe_query};
use pals_tests::{sessions_of, unique_app};
use tokio::task::JoinHandle;

/// The idle timeout of the lockers under test.
const IDLE: Duration = Duration::from_millis(200);
/// How long idle sessions get to close: the idle timeout, and room for a loaded machine.
const SHRINK_WITHIN: Duration = Duration::from_secs(10);

type Waiter = JoinHandle<Result<Option<pals::LockGuard>, pals::Error>>;

/// A locker with a pool of `size` and the short idle timeout.
fn economical(app: &str, size: usize) -> pals::Locker {
    locker_with(app, |b| b.pool_size(size).idle_timeout(IDLE))
}

/// The backend pids of the sessions of `app`.
fn pids_of(app: &str) -> BTreeSet<i32> {
    let sql = format!(
        "SELECT pid FROM pg_stat_activity WHERE application_name = '{}'",
        application_name(app)
    );
    probe_query(&sql)
        .unwrap_or_else(|e| panic!("probe failed: {e}"))
        .into_iter()
        .map(|pid| pid.expect("a pid").parse().expect("a number"))
        .collect()
}

/// Waits (up to [`SHRINK_WITHIN`]) until `app` has `count` sessions or fewer; true if so.
fn shrinks_to(app: &str, count: i64) -> bool {
    eventually(SHRINK_WITHIN, || sessions_of(app) <= count)
}

/// The locks `names` of `mine`, held by `other`, and a task of `mine` waiting for each (up
/// to 20 s), returned once every wait is queued in the database: each on a session of its
/// own.
async fn waits_for(
    mine: &pals::Locker,
    other: &pals::Locker,
    names: &[&str],
) -> (Vec<pals::LockGuard>, Vec<Waiter>) {
    let mut blockers = Vec::new();
    for name in names {
        let key = pals::key(mine.app(), name);
        blockers.push(other.lock_key(key).acquire().await.unwrap());
    }
    let waiters: Vec<Waiter> = names
        .iter()
        .map(|name| {
            let lock = mine.lock(name);
            tokio::spawn(async move { lock.acquire_timeout(Duration::from_secs(20)).await })
        })
        .collect();
    for blocker in &blockers {
        let queued = eventually(Duration::from_secs(10), || {
            holders_of(mine.app(), blocker.key(), false) == 1
        });
        assert!(queued, "a wait never queued in the database");
    }
    (blockers, waiters)
}

/// Lets the waits of [`waits_for`] through: their guards.
async fn let_through(blockers: Vec<pals::LockGuard>, waiters: Vec<Waiter>) -> Vec<pals::LockGuard> {
    for blocker in blockers {
        assert!(blocker.release().await.unwrap());
    }
    let mut guards = Vec::new();
    for waiter in waiters {
        guards.push(
            waiter
                .await
                .unwrap()
                .unwrap()
                .expect("granted once let through"),
        );
    }
    guards
}

/// The lock is held by `guard` and nobody else can take it; then it releases cleanly.
async fn still_held(guard: pals::LockGuard, other: &pals::Locker) {
    assert!(guard.is_held(), "{} was lost", guard.name());
    let taken = other.lock_key(guard.key()).try_acquire().await.unwrap();
    assert!(taken.is_none(), "another locker took {}", guard.name());
    assert!(guard.release().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_grows_the_pool_and_its_idle_sessions_close_after() {
    let app = unique_app("economy-burst");
    let mine = economical(&app, 12);
    assert_eq!(mine.idle_timeout(), IDLE);
    let other = locker(&unique_app("economy-burst-other"));

    // The burst: four waits, each on a session of its own, and twenty instant takes at
    // once, which the waiting sessions cannot take.
    let (blockers, waiters) = waits_for(&mine, &other, &["w0", "w1", "w2", "w3"]).await;
    let takes: Vec<_> = (0..20)
        .map(|n| {
            let lock = mine.lock(&format!("burst-{n}"));
            tokio::spawn(async move { lock.try_acquire().await })
        })
        .collect();
    let mut taken = Vec::new();
    for take in takes {
        taken.push(take.await.unwrap().unwrap().expect("free"));
    }
    let peak = sessions_of(&app);
    assert!(peak >= 5, "the burst opened {peak} sessions");
    let mut waited = let_through(blockers, waiters).await;

    // Two locks stay held across the end of the burst; the rest are released.
    let kept = [waited.remove(0), taken.remove(0)];
    for guard in waited.into_iter().chain(taken) {
        assert!(guard.release().await.unwrap());
    }
    let holding: BTreeSet<i32> = kept.iter().map(|g| g.backend_pid().unwrap()).collect();
    let bound = 1 + holding.len() as i64;
    assert!(bound < peak);
    assert!(
        shrinks_to(&app, bound),
        "{} sessions after the burst, {} holding locks",
        sessions_of(&app),
        holding.len()
    );
    let open = pids_of(&app);
    assert!(holding.is_subset(&open), "{holding:?} not all in {open:?}");

    for guard in kept {
        still_held(guard, &other).await;
    }
    // Nothing held: the first session alone stays.
    assert!(shrinks_to(&app, 1), "{} sessions", sessions_of(&app));
    assert_eq!(sessions_of(&app), 1);
    assert!(mine.lock("after").try_acquire().await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_holds_a_lock_is_never_closed() {
    let app = unique_app("economy-holder");
    let mine = economical(&app, 10);
    let other = locker(&unique_app("economy-holder-other"));

    // "first" opens the first session; "held" is then granted after a wait, on a second
    // session, the one the closer could close if it carried nothing.
    let first = mine.lock("first").acquire().await.unwrap();
    let first_pid = first.backend_pid().unwrap();
    let (blockers, waiters) = waits_for(&mine, &other, &["held"]).await;
    let held = let_through(blockers, waiters).await.remove(0);
    let held_pid = held.backend_pid().unwrap();
    assert_ne!(held_pid, first_pid, "held on the first session");
    assert!(first.release().await.unwrap());
    let since = Instant::now();

    // Rounds of a burst that the pool shrinks back from: each round lasts at least an
    // idle timeout (its sessions close no sooner), while "held" sits on its session.
    for round in 0..4 {
        let (blockers, waiters) = waits_for(&mine, &other, &["a", "b", "c"]).await;
        assert!(sessions_of(&app) >= 4, "round {round}");
        for guard in let_through(blockers, waiters).await {
            assert!(guard.release().await.unwrap());
        }
        assert!(
            shrinks_to(&app, 2),
            "round {round}: {} sessions",
            sessions_of(&app)
        );
        let open = pids_of(&app);
        assert!(
            open.contains(&held_pid),
            "round {round}: the holder's session closed"
        );
        assert!(held.is_held(), "round {round}");
    }
    assert!(since.elapsed() >= 4 * IDLE);
    still_held(held, &other).await;
    assert!(shrinks_to(&app, 1), "{} sessions", sessions_of(&app));
}

/// A session's idle time starts when it last carried something: one in steady use, idle
/// most of the time but never for a whole idle timeout, is never closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_in_steady_use_is_not_closed() {
    let idle = Duration::from_secs(1);
    let app = unique_app("economy-steady");
    let mine = locker_with(&app, |b| b.pool_size(4).idle_timeout(idle));
    let other = locker(&unique_app("economy-steady-other"));
    // The first session waits for a lock: instant takes go to a second one, which the
    // closer would close if it were idle for a second.
    let (blockers, waiters) = waits_for(&mine, &other, &["blocker"]).await;
    let mut pids = BTreeSet::new();
    let started = Instant::now();
    while started.elapsed() < 3 * idle {
        let guard = mine
            .lock("steady")
            .try_acquire()
            .await
            .unwrap()
            .expect("free");
        pids.insert(guard.backend_pid().unwrap());
        assert!(guard.release().await.unwrap());
        // Pacing, not synchronisation: the session is idle between takes, each time for
        // far less than the idle timeout.
        tokio::time::sleep(idle / 50).await;
    }
    assert_eq!(pids.len(), 1, "the steady session was closed: {pids:?}");
    assert!(pids_of(&app).is_superset(&pids));
    for guard in let_through(blockers, waiters).await {
        assert!(guard.release().await.unwrap());
    }
}

/// How many lock sessions `app` has open: those whose last statement was a lock statement
/// (the coordination session, which makes the fence sequence, and the listening session
/// of semaphores are not lock sessions).
fn lock_sessions_of(app: &str) -> i64 {
    pals_tests::probe_i64(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{}' \
         AND query LIKE '%advisory%'",
        application_name(app)
    ))
}

/// How many rounds each sequential loop runs.
const ROUNDS: usize = 300;

/// What a sequential caller does in one round: each call awaited before the next.
#[derive(Clone, Copy, Debug)]
enum Round {
    /// A try, its guard dropped (released in the background), on one name.
    TryDrop,
    /// A try, its guard dropped, on a different name each round.
    TryDropNames,
    TryRelease,
    AcquireRelease,
    /// A fenced try, its guard dropped; then one released.
    Fenced,
    /// A semaphore permit (the next free one each time), dropped; then one released.
    Permits,
    /// A shared try, its guard dropped; then one released.
    Shared,
    /// A shared try, its guard dropped, and at once the same lock again, released.
    SharedAgain,
}

impl Round {
    /// Runs round `n` on `mine`; the backend pids of the guards it took.
    async fn run(self, mine: &pals::Locker, n: usize) -> Vec<i32> {
        let try_ =
            |lock: pals::Lock| async move { lock.try_acquire().await.unwrap().expect("free") };
        let mut pids = Vec::new();
        match self {
            Round::TryDrop => pids.push(try_(mine.lock("one")).await.backend_pid().unwrap()),
            Round::TryDropNames => {
                let guard = try_(mine.lock(&format!("name-{n}"))).await;
                pids.push(guard.backend_pid().unwrap());
            }
            Round::TryRelease | Round::AcquireRelease => {
                let lock = mine.lock("one");
                let guard = match self {
                    Round::TryRelease => try_(lock).await,
                    _ => lock.acquire().await.unwrap(),
                };
                pids.push(guard.backend_pid().unwrap());
                assert!(guard.release().await.unwrap());
            }
            Round::Fenced | Round::Shared => {
                let lock = |name: &str| match self {
                    Round::Fenced => mine.lock(name).fenced(),
                    _ => mine.lock(name).shared(),
                };
                let dropped = try_(lock("one")).await;
                pids.push(dropped.backend_pid().unwrap());
                drop(dropped);
                let released = try_(lock(&format!("name-{}", n % 5))).await;
                pids.push(released.backend_pid().unwrap());
                assert!(released.release().await.unwrap());
            }
            Round::SharedAgain => {
                let dropped = try_(mine.lock("one").shared()).await;
                pids.push(dropped.backend_pid().unwrap());
                drop(dropped);
                let again = try_(mine.lock("one").shared()).await;
                pids.push(again.backend_pid().unwrap());
                assert!(again.release().await.unwrap());
            }
            Round::Permits => {
                let semaphore = mine.semaphore("pool", 4);
                for release in [false, true] {
                    let permit = semaphore.try_acquire().await.unwrap().expect("a permit");
                    pids.push(permit.lock_guard().backend_pid().unwrap());
                    if release {
                        assert!(permit.release().await.unwrap());
                    }
                }
            }
        }
        pids
    }
}

/// One sequential caller uses one lock session, whatever it does between its calls: the
/// background unlock of a dropped guard, still in flight when the next call comes, does
/// not send that call to a new session. (The pool may open 16; the idle timeout is long,
/// so a session opened on the way would still be there to count.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sequential_caller_uses_one_lock_session() {
    let rounds = [
        Round::TryDrop,
        Round::TryDropNames,
        Round::TryRelease,
        Round::AcquireRelease,
        Round::Fenced,
        Round::Permits,
        Round::Shared,
        Round::SharedAgain,
    ];
    let mut grew = Vec::new();
    for round in rounds {
        let app = unique_app("economy-sequential");
        let mine = locker_with(&app, |b| {
            b.pool_size(16).idle_timeout(Duration::from_secs(3600))
        });
        let mut pids = BTreeSet::new();
        for n in 0..ROUNDS {
            pids.extend(round.run(&mine, n).await);
        }
        let sessions = lock_sessions_of(&app);
        if pids.len() != 1 || sessions != 1 {
            grew.push(format!(
                "{round:?}: {sessions} lock sessions, guards on {}",
                pids.len()
            ));
        }
    }
    assert!(grew.is_empty(), "the pool grew: {grew:#?}");
}
