//! What a DBA or a role's settings do to pals' coordination: a table or sequence locked by
//! hand blocks coordination statements (bounded) and a fenced lock's token (an error, never
//! "busy"), never a held lock; a `search_path` that shadows the lock functions changes
//! nothing.

use std::time::{Duration, Instant};

use pals_tests::{
    db_url_with, holders_of, locker_with, probe_query, unique_app, DbaLock, TestSchema,
};

const HEARTBEAT: Duration = Duration::from_secs(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A locker whose objects live in `schema`, with a 1 s heartbeat and connect timeout: a
/// statement queued behind a blocked one for a heartbeat would cost its session.
fn locker_in(app: &str, schema: &TestSchema, pool_size: usize) -> pals::Locker {
    locker_with(app, |b| {
        b.schema(schema.name())
            .heartbeat(Some(HEARTBEAT))
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_size(pool_size)
    })
}

/// `lost` is still held, and the server says so: its session was not closed.
fn assert_still_held(app: &str, guard: &pals::LockGuard) {
    assert!(guard.is_held(), "the held lock was lost");
    assert_eq!(holders_of(app, guard.key(), true), 1, "the server freed it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_lock_on_the_leaders_table_costs_no_held_lock_and_leader_is_bounded() {
    let (app, schema) = (unique_app("dba-leaders"), TestSchema::new("dba_leaders"));
    let locker = locker_in(&app, &schema, 1);
    let election = locker.election("scheduler");
    assert_eq!(election.leader().await.unwrap(), None, "the table is made");
    let guard = locker.lock("held").acquire().await.unwrap();

    let table = schema.object("pals_leaders");
    let dba = DbaLock::hold(&format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"));
    // Three heartbeats with the table locked, asking who leads all along.
    let until = Instant::now() + 3 * HEARTBEAT;
    let mut asked = 0;
    while Instant::now() < until {
        let started = Instant::now();
        let answer = tokio::time::timeout(Duration::from_secs(5), election.leader()).await;
        let took = started.elapsed();
        let answer = answer.expect("leader() is bounded");
        assert!(answer.is_err(), "the table is locked: {answer:?}");
        // Bounded by the server at the connect timeout (the client gives up at twice it).
        assert!(
            took < 2 * CONNECT_TIMEOUT + Duration::from_millis(500),
            "{took:?}"
        );
        asked += 1;
    }
    assert!(asked >= 2);
    assert_still_held(&app, &guard);

    drop(dba);
    assert_eq!(election.leader().await.unwrap(), None);
    assert_still_held(&app, &guard);
    assert!(guard.release().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_announces_itself_once_the_table_is_unlocked() {
    let (app, schema) = (unique_app("dba-campaign"), TestSchema::new("dba_campaign"));
    let locker = locker_in(&app, &schema, 2);
    let election = locker.election("scheduler").identity("replica-a");
    assert_eq!(election.leader().await.unwrap(), None, "the table is made");

    let table = schema.object("pals_leaders");
    let dba = DbaLock::hold(&format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"));
    let candidate = {
        let election = election.clone().backoff(Duration::from_millis(100));
        tokio::spawn(async move { election.run(|term| async move { term.fence() }).await })
    };
    // Each campaign draws a token with its grant: a second token means the first
    // announcement failed at its bound and the candidate campaigned again.
    let sequence = schema.object("pals_fence");
    let campaigned_again = pals_tests::eventually(Duration::from_secs(10), || {
        let last = probe_query(&format!("SELECT last_value FROM {sequence}"));
        let last = last
            .ok()
            .and_then(|rows| rows.first()?.as_deref()?.parse::<u64>().ok());
        last.is_some_and(|last| last >= 2)
    });
    assert!(
        campaigned_again,
        "the announcement never failed and was tried again"
    );
    assert!(!candidate.is_finished(), "it cannot have announced itself");
    drop(dba);
    let fence = tokio::time::timeout(Duration::from_secs(10), candidate)
        .await
        .expect("elected once the table is free")
        .unwrap()
        .unwrap();
    assert!(fence >= 2, "a later campaign's term");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequence_lock_costs_no_held_lock_and_a_fenced_try_never_says_busy() {
    let (app, schema) = (unique_app("dba-fence"), TestSchema::new("dba_fence"));
    // One session: the held lock and the fenced tries share it, heartbeat included.
    let locker = locker_in(&app, &schema, 1);
    let first = locker.lock("f").fenced().try_acquire().await.unwrap();
    assert!(
        first.unwrap().release().await.unwrap(),
        "the sequence is made"
    );
    let guard = locker.lock("held").acquire().await.unwrap();

    let sequence = schema.object("pals_fence");
    let dba = DbaLock::hold(&format!("ALTER SEQUENCE {sequence} INCREMENT BY 1"));
    let free = locker.lock("f").fenced();
    let until = Instant::now() + 3 * HEARTBEAT;
    let mut tries = 0;
    while Instant::now() < until {
        let started = Instant::now();
        let tried = free.try_acquire().await;
        let took = started.elapsed();
        // An error (its token could not be drawn), never Ok(None) for a lock nobody holds.
        assert!(tried.is_err(), "a free lock answered {tried:?}");
        // Half a heartbeat for nextval, then the books are settled.
        assert!(took < HEARTBEAT + Duration::from_millis(500), "{took:?}");
        assert_eq!(
            holders_of(&app, free.key(), true),
            0,
            "left held for nobody"
        );
        tries += 1;
    }
    assert!(tries >= 2);
    assert_still_held(&app, &guard);

    drop(dba);
    let tried = free.try_acquire().await.unwrap().expect("free");
    assert!(tried.fence().is_some());
    assert!(tried.release().await.unwrap());
    assert_still_held(&app, &guard);
    assert!(guard.release().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_wait_granted_while_the_sequence_is_locked_fails_and_frees_the_lock() {
    let (app, schema) = (unique_app("dba-wait"), TestSchema::new("dba_wait"));
    let locker = locker_in(&app, &schema, 3);
    let lock = locker.lock("w").fenced();
    let first = lock.try_acquire().await.unwrap().expect("free");
    let sequence = schema.object("pals_fence");
    let dba = DbaLock::hold(&format!("ALTER SEQUENCE {sequence} INCREMENT BY 1"));
    // Another process holds the lock; the fenced waiter waits in the database for it.
    let other = pals_tests::locker(&unique_app("dba-wait-other"));
    let other_lock = other.lock_key(lock.key());
    assert!(first.release().await.unwrap());
    let holder = other_lock.acquire().await.unwrap();
    let waiter = {
        let lock = lock.clone();
        tokio::spawn(async move { lock.acquire_timeout(Duration::from_secs(10)).await })
    };
    assert!(pals_tests::eventually(Duration::from_secs(5), || {
        holders_of(&app, lock.key(), false) == 1
    }));
    // Granted now, while its token cannot be drawn: an error, and the lock is let go.
    assert!(holder.release().await.unwrap());
    let waited = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("bounded")
        .unwrap();
    assert!(waited.is_err(), "granted without a token: {waited:?}");
    assert_eq!(
        holders_of(&app, lock.key(), true),
        0,
        "left held for nobody"
    );
    drop(dba);
    assert!(other_lock.try_acquire().await.unwrap().is_some(), "free");
}

/// A schema that shadows the lock functions and `pg_locks` with fakes that take nothing,
/// and the URL of a session that puts it before `pg_catalog`.
struct Shadow {
    schema: TestSchema,
}

impl Shadow {
    fn new() -> Shadow {
        let schema = TestSchema::new("shadow");
        let s = schema.name();
        let fakes = [
            "pg_try_advisory_lock(bigint) RETURNS boolean AS 'SELECT true'",
            "pg_try_advisory_lock_shared(bigint) RETURNS boolean AS 'SELECT true'",
            "pg_advisory_lock(bigint) RETURNS void AS ''",
            "pg_advisory_unlock(bigint) RETURNS boolean AS 'SELECT true'",
            "pg_try_advisory_xact_lock(bigint) RETURNS boolean AS 'SELECT true'",
            "nextval(regclass) RETURNS bigint AS 'SELECT 1::bigint'",
        ];
        for fake in fakes {
            probe_query(&format!("CREATE FUNCTION \"{s}\".{fake} LANGUAGE sql"))
                .unwrap_or_else(|e| panic!("{fake}: {e}"));
        }
        probe_query(&format!(
            "CREATE VIEW \"{s}\".pg_locks AS SELECT * FROM pg_catalog.pg_locks WHERE false"
        ))
        .unwrap();
        Shadow { schema }
    }

    /// The test database's URL, with the shadowing schema first in the search path.
    fn url(&self) -> String {
        let options = format!(
            "options=-c%20search_path%3D{}%2Cpg_catalog",
            self.schema.name()
        );
        db_url_with(None, None, None, &options)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_path_that_shadows_the_lock_functions_cannot_make_two_holders() {
    let shadow = Shadow::new();
    let url = shadow.url();
    // The shadow works: plain SQL in such a session takes a "lock" twice.
    let raw = |sql: &str| pals_tests::probe_query_at(&url, sql).unwrap();
    assert_eq!(
        raw("SELECT pg_try_advisory_lock(1)"),
        [Some("t".to_string())]
    );
    assert_eq!(
        raw("SELECT count(*) FROM pg_locks"),
        [Some("0".to_string())]
    );

    let app = unique_app("shadowed");
    let a = locker_with(&app, |b| b.url(&url).schema(shadow.schema.name()));
    let b = locker_with(&app, |b| b.url(&url).schema(shadow.schema.name()));
    let held = a.lock("x").try_acquire().await.unwrap().expect("free");
    assert_eq!(holders_of(&app, held.key(), true), 1, "taken for real");
    assert!(
        b.lock("x").try_acquire().await.unwrap().is_none(),
        "two holders"
    );
    let waited = b
        .lock("x")
        .acquire_timeout(Duration::from_millis(200))
        .await;
    assert!(waited.unwrap().is_none(), "two holders, by a wait");
    let fenced = a
        .lock("f")
        .fenced()
        .try_acquire()
        .await
        .unwrap()
        .expect("free");
    assert!(b.lock("f").fenced().try_acquire().await.unwrap().is_none());
    let token = fenced.fence().unwrap();
    assert!(fenced.release().await.unwrap());
    let again = b
        .lock("f")
        .fenced()
        .try_acquire()
        .await
        .unwrap()
        .expect("free");
    assert!(
        again.fence().unwrap() > token,
        "tokens from the real nextval"
    );
    assert!(again.release().await.unwrap());
    let key = held.key();
    assert!(held.release().await.unwrap());
    assert_eq!(holders_of(&app, key, true), 0, "unlocked for real");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_locks_resist_the_shadow_too() {
    let shadow = Shadow::new();
    let url = shadow.url();
    let connect = || async {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
    };
    let (mut first, mut second) = (connect().await, connect().await);
    let app = unique_app("shadowed-xact");
    let (tx1, tx2) = (
        first.transaction().await.unwrap(),
        second.transaction().await.unwrap(),
    );
    assert!(pals::xact::try_acquire(&tx1, &app, "x").await.unwrap());
    assert!(!pals::xact::try_acquire(&tx2, &app, "x").await.unwrap());
    let waited = pals::xact::acquire(&tx2, &app, "x", Duration::from_millis(100)).await;
    assert!(waited.unwrap_err().is_timeout(), "two holders, by a wait");
    tx1.commit().await.unwrap();
    pals::xact::acquire(&tx2, &app, "x", Duration::from_secs(5))
        .await
        .unwrap();
    tx2.commit().await.unwrap();
}

#[tokio::test]
async fn the_coordination_session_closes_once_idle() {
    let app = unique_app("coord-idle");
    // Long enough that the probes below fit in it on a loaded machine.
    let locker = locker_with(&app, |b| b.idle_timeout(Duration::from_secs(2)));
    locker.holders().await.unwrap();
    assert_eq!(pals_tests::sessions_of(&app), 1, "opened for holders()");
    // Used again within its idle time: kept, and its clock starts again.
    locker.holders().await.unwrap();
    assert_eq!(pals_tests::sessions_of(&app), 1, "one session, reused");
    let closed = pals_tests::eventually(Duration::from_secs(10), || {
        pals_tests::sessions_of(&app) == 0
    });
    assert!(closed, "still open after its idle timeout");
    locker.holders().await.unwrap();
    assert_eq!(pals_tests::sessions_of(&app), 1, "opened again");
}

/// A candidate stopped before it campaigns leaves the line without a word to the server:
/// no lock statement is sent, so no fencing token is drawn (the next token is the one after
/// the last term's).
#[tokio::test]
async fn a_stopped_candidate_sends_nothing() {
    let (app, schema) = (unique_app("stopped"), TestSchema::new("stopped"));
    let locker = locker_in(&app, &schema, 1);
    let election = locker.election("scheduler");
    let last = election
        .run(|term| async move { term.fence() })
        .await
        .unwrap();
    let stopped = election
        .run_until(std::future::ready(()), |_term| async {
            unreachable!("stopped")
        })
        .await
        .unwrap();
    assert!(stopped.is_none());
    // The same session (a pool of one) answers in order: a statement sent by the stopped
    // candidate would have drawn the next token first.
    let next = election.lock().try_acquire().await.unwrap().expect("free");
    assert_eq!(next.fence(), Some(last + 1));
}
