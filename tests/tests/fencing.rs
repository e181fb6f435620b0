//! Fencing tokens (`Lock::fenced`, `LockGuard::fence`, `fenced = true`): every token is
//! greater than every earlier holder's, across lockers, processes' sessions and restarts;
//! the sequence is made on first use, and a role without CREATE works once an admin made it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pals_tests::cluster::TempCluster;
use pals_tests::{db_url, locker, locker_with, probe_query, unique_app};

fn strictly_increasing(tokens: &[u64]) -> bool {
    tokens.windows(2).all(|pair| pair[0] < pair[1])
}

#[tokio::test]
async fn two_lockers_alternating_get_increasing_tokens() {
    let app = unique_app("fence-alternate");
    let lockers = [locker(&app), locker(&app)];
    let mut tokens = Vec::new();
    for round in 0..200 {
        let lock = lockers[round % 2].lock("ledger").fenced();
        // Every path that takes a lock: a try, a wait that finds it free, a wait.
        let guard = match round % 3 {
            0 => lock.try_acquire().await.unwrap().expect("free"),
            1 => lock.acquire().await.unwrap(),
            _ => lock.acquire_timeout(Duration::MAX).await.unwrap().unwrap(),
        };
        tokens.push(guard.fence().expect("a fenced lock has a token"));
        if round % 2 == 0 {
            assert!(guard.release().await.unwrap());
        } else {
            drop(guard);
            lockers[round % 2].wait_for_releases().await;
        }
    }
    assert!(strictly_increasing(&tokens), "{tokens:?}");
    assert!(tokens[0] > 0);
}

#[tokio::test]
async fn contending_holders_get_tokens_in_the_order_of_their_grants() {
    let app = unique_app("fence-contend");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for worker in 0..4 {
        // Each worker its own locker: grants go through the database, and waits queue
        // there (the wait statement mints its token in a second statement).
        let locker = locker(&app);
        let seen = Arc::clone(&seen);
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                let lock = locker.lock("ledger").fenced();
                let guard = lock.acquire_timeout(Duration::from_secs(30)).await.unwrap();
                let guard = guard.expect("granted within 30 s");
                // Recorded while held: the vector's order is the order of the grants.
                seen.lock().unwrap().push((worker, guard.fence().unwrap()));
                tokio::task::yield_now().await;
                assert!(guard.release().await.unwrap());
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let seen = seen.lock().unwrap();
    let tokens: Vec<u64> = seen.iter().map(|(_, token)| *token).collect();
    assert_eq!(tokens.len(), 100);
    assert!(strictly_increasing(&tokens), "{seen:?}");
}

#[tokio::test]
async fn unfenced_locks_have_no_token_and_shared_ones_do() {
    let app = unique_app("fence-modes");
    let locker = locker(&app);
    let plain = locker.lock("plain").acquire().await.unwrap();
    assert_eq!(plain.fence(), None);
    let first = locker
        .lock("read")
        .shared()
        .fenced()
        .acquire()
        .await
        .unwrap();
    let second = locker
        .lock("read")
        .shared()
        .fenced()
        .acquire()
        .await
        .unwrap();
    assert!(second.fence().unwrap() > first.fence().unwrap());
    // Fenced and plain handles of one lock exclude each other: it is one lock.
    assert!(locker
        .lock("plain")
        .fenced()
        .try_acquire()
        .await
        .unwrap()
        .is_none());
}

#[test]
fn tokens_keep_increasing_across_a_restart_and_a_crash() {
    let cluster = TempCluster::start("fence-restart");
    let url = cluster.url();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let token = |url: &str| {
        rt.block_on(async {
            let locker = pals::Locker::builder("fence-restart")
                .url(url)
                .build()
                .unwrap();
            let guard = locker.lock("ledger").fenced().acquire().await.unwrap();
            let token = guard.fence().unwrap();
            guard.release().await.unwrap();
            token
        })
    };
    let mut tokens = vec![token(&url), token(&url)];
    cluster.restart();
    tokens.push(token(&url));
    cluster.crash_and_restart();
    tokens.push(token(&url));
    tokens.push(token(&url));
    assert!(strictly_increasing(&tokens), "{tokens:?}");
}

/// A schema of its own (and roles of its own) for each test that checks how the sequence
/// comes to be: the shared server's `public.pals_fence` is left alone.
struct Schema {
    // Dropped after the roles (Drop below): DROP OWNED BY first, then the schema.
    schema: pals_tests::TestSchema,
    roles: Vec<String>,
}

impl Schema {
    fn new(tag: &str) -> Schema {
        Schema {
            schema: pals_tests::TestSchema::new(tag),
            roles: Vec::new(),
        }
    }

    fn name(&self) -> &str {
        self.schema.name()
    }

    /// A login role with USAGE on the schema and nothing else (no CREATE).
    fn role(&mut self) -> String {
        let role = format!("{}_r{}", self.name(), self.roles.len());
        probe_query(&format!(
            "CREATE ROLE \"{role}\" LOGIN; GRANT USAGE ON SCHEMA \"{}\" TO \"{role}\"",
            self.name()
        ))
        .unwrap();
        self.roles.push(role.clone());
        role
    }

    fn url_as(&self, role: &str) -> String {
        db_url().replacen("postgres@", &format!("{role}@"), 1)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        for role in &self.roles {
            let _ = probe_query(&format!("DROP OWNED BY \"{role}\"; DROP ROLE \"{role}\""));
        }
    }
}

#[tokio::test]
async fn the_sequence_is_made_on_first_use() {
    let schema = Schema::new("fence-made");
    let exists = format!(
        "SELECT (to_regclass('\"{}\".pals_fence') IS NOT NULL)::text",
        schema.name()
    );
    assert_eq!(probe_query(&exists).unwrap(), [Some("false".into())]);
    let app = unique_app("fence-made");
    let locker = locker_with(&app, |b| b.schema(schema.name()));
    let guard = locker.lock("x").fenced().acquire().await.unwrap();
    assert!(guard.fence().is_some());
    assert_eq!(probe_query(&exists).unwrap(), [Some("true".into())]);
}

#[tokio::test]
async fn a_role_without_create_is_told_what_an_admin_must_run_and_works_once_done() {
    let mut schema = Schema::new("fence-role");
    let role = schema.role();
    let app = unique_app("fence-role");
    let url = schema.url_as(&role);
    let locker = locker_with(&app, |b| b.url(&url).schema(schema.name()));
    let error = locker.lock("x").fenced().acquire().await.unwrap_err();
    assert!(error.is_misconfiguration(), "{error}");
    let message = error.to_string();
    assert!(message.contains("fencing tokens"), "{message}");
    assert!(
        message.contains("CREATE SEQUENCE IF NOT EXISTS"),
        "{message}"
    );
    assert!(
        message.contains(&format!(
            "GRANT USAGE ON SEQUENCE \"{}\".\"pals_fence\" TO \"{role}\"",
            schema.name()
        )),
        "{message}"
    );
    // Nothing is left held for nobody: the lock is free.
    assert!(locker.lock("x").try_acquire().await.unwrap().is_some());

    // The admin makes the sequence but forgets the grant: told so.
    probe_query(&format!(
        "CREATE SEQUENCE \"{}\".pals_fence AS bigint",
        schema.name()
    ))
    .unwrap();
    let locker = locker_with(&app, |b| b.url(&url).schema(schema.name()));
    let error = locker.lock("x").fenced().acquire().await.unwrap_err();
    assert!(error.to_string().contains("may not use"), "{error}");

    // With a grant, the role mints tokens without CREATE (UPDATE is enough for nextval,
    // as USAGE is).
    probe_query(&format!(
        "GRANT UPDATE ON SEQUENCE \"{}\".pals_fence TO \"{role}\"",
        schema.name()
    ))
    .unwrap();
    let locker = locker_with(&app, |b| b.url(&url).schema(schema.name()));
    let first = locker.lock("x").fenced().acquire().await.unwrap();
    let token = first.fence().unwrap();
    first.release().await.unwrap();
    let second = locker.lock("x").fenced().acquire().await.unwrap();
    assert!(second.fence().unwrap() > token);
}

#[tokio::test]
async fn a_missing_schema_is_a_configuration_error() {
    let app = unique_app("fence-noschema");
    let locker = locker_with(&app, |b| b.schema("no_such_schema_for_pals"));
    let error = locker.lock("x").fenced().acquire().await.unwrap_err();
    assert!(error.is_misconfiguration(), "{error}");
    assert!(error.to_string().contains("does not exist"), "{error}");
}

mod attribute {
    use std::sync::LazyLock;

    use super::*;

    static LOCKER: LazyLock<pals::Locker> =
        LazyLock::new(|| locker(&unique_app("fence-attribute")));

    #[pals::exclusive(name = "ledger", fenced = true, locker = &LOCKER)]
    async fn append_async() -> Result<u64, pals::Error> {
        tokio::task::yield_now().await; // the token survives the task's suspensions
        Ok(pals::current_fence().expect("set for the body"))
    }

    #[pals::exclusive(name = "ledger", fenced = true, locker = &LOCKER)]
    fn append_sync() -> Result<u64, pals::Error> {
        Ok(pals::current_fence().expect("set for the body"))
    }

    #[pals::exclusive(name = "plain", locker = &LOCKER)]
    fn unfenced() -> Result<Option<u64>, pals::Error> {
        Ok(pals::current_fence())
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_body_reads_its_token() {
        let first = append_async().await.unwrap();
        let second = tokio::task::spawn_blocking(append_sync)
            .await
            .unwrap()
            .unwrap();
        let third = append_async().await.unwrap();
        assert!(first < second && second < third, "{first} {second} {third}");
        assert_eq!(pals::current_fence(), None, "only inside the body");
        let none = tokio::task::spawn_blocking(unfenced)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(none, None);
    }
}

#[tokio::test]
async fn a_role_that_may_not_use_the_schema_is_told_so() {
    let mut schema = Schema::new("fence-nousage");
    let role = schema.role();
    probe_query(&format!(
        "REVOKE USAGE ON SCHEMA \"{}\" FROM \"{role}\"",
        schema.name()
    ))
    .unwrap();
    let app = unique_app("fence-nousage");
    let url = schema.url_as(&role);
    let locker = locker_with(&app, |b| b.url(&url).schema(schema.name()));
    let error = locker.lock("x").fenced().acquire().await.unwrap_err();
    assert!(error.is_misconfiguration(), "{error}");
    assert!(
        error.to_string().contains(&format!(
            "GRANT USAGE ON SCHEMA \"{}\" TO <role>",
            schema.name()
        )),
        "{error}"
    );
}
