//! pals' objects touched by hand, and schemas that cannot keep them: a fence sequence set
//! back is noticed (the grant is refused and let go, logged at error level), a leaders row
//! edited to an older term is not believed, and system, temporary and unlogged homes for
//! the sequence are refused as misconfigurations.

use std::time::Duration;

use pals_tests::events::Recorder;
use pals_tests::{
    db_url, db_url_with, eventually, holders_of, locker_with, probe_query, unique_app, TestSchema,
};

/// A locker of `app` whose objects live in `schema`.
fn locker_in(app: &str, schema: &TestSchema) -> pals::Locker {
    locker_with(app, |b| b.schema(schema.name()))
}

#[tokio::test]
async fn a_fence_sequence_set_back_by_hand_is_refused_and_logged() {
    let recorder = Recorder::global();
    let (app, schema) = (unique_app("fence-back"), TestSchema::new("fence_back"));
    let locker = locker_in(&app, &schema);
    let lock = locker.lock("ledger").fenced();
    let mut highest = 0;
    for _ in 0..10 {
        let guard = lock.acquire().await.unwrap();
        highest = guard.fence().unwrap();
        assert!(guard.release().await.unwrap());
    }
    probe_query(&format!(
        "SELECT setval('{}', 1)",
        schema.object("pals_fence")
    ))
    .unwrap();

    let err = lock.acquire().await.unwrap_err();
    let message = err.to_string();
    assert!(message.contains("went backwards"), "{message}");
    assert!(message.contains(&format!("after {highest}")), "{message}");
    assert!(message.contains("setval"), "the next step: {message}");
    // Refused, and let go: nobody holds the lock.
    assert!(eventually(Duration::from_secs(5), || {
        holders_of(&app, lock.key(), true) == 0
    }));
    let logged = recorder.lines("ERROR", "the fence sequence went backwards: was it reset?");
    let logged: Vec<_> = logged.iter().filter(|l| l.contains(&app)).collect();
    assert_eq!(logged.len(), 1, "{logged:?}");
    // A shared grant below the highest exclusive token is refused too; a try as well.
    let shared = lock.clone().shared().acquire().await.unwrap_err();
    assert!(shared.to_string().contains("went backwards"), "{shared}");
    let tried = lock.try_acquire().await.unwrap_err();
    assert!(tried.to_string().contains("went backwards"), "{tried}");

    // Mended (the sequence moved past every token handed out): grants go on.
    probe_query(&format!(
        "SELECT setval('{}', {})",
        schema.object("pals_fence"),
        highest + 1000
    ))
    .unwrap();
    let guard = lock.acquire().await.unwrap();
    assert!(guard.fence().unwrap() > highest);
    assert!(guard.release().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaders_row_edited_by_hand_to_an_older_term_is_not_believed() {
    let (app, schema) = (unique_app("leader-edit"), TestSchema::new("leader_edit"));
    let locker = locker_in(&app, &schema);
    // Another replica's locker, which has only read the leader.
    let other = locker_in(&app, &schema).election("scheduler");
    let election = locker.election("scheduler").identity("replica-a");
    let table = schema.object("pals_leaders");
    let key = election.lock().key();
    let (before, after, fence) = election
        .run(|term| {
            let (election, other, table) = (election.clone(), other.clone(), table.clone());
            async move {
                let before = (election.leader().await, other.leader().await);
                // A hand edit of the row: another identity, an older token; the writer's
                // pid kept, so its session still holds the lock.
                probe_query(&format!(
                    "UPDATE {table} SET identity = 'impostor', token = token - 1 \
                     WHERE key = {key}"
                ))
                .unwrap();
                let after = (election.leader().await, other.leader().await);
                (before, after, term.fence())
            }
        })
        .await
        .unwrap();
    let before = (before.0.unwrap().unwrap(), before.1.unwrap().unwrap());
    let after = (after.0.unwrap(), after.1.unwrap());
    assert_eq!(before.0.fence(), fence);
    assert_eq!(before.0.identity(), "replica-a");
    assert_eq!(before.1.identity(), "replica-a");
    assert_eq!(
        after.0, None,
        "the candidate's own locker believed {:?}",
        after.0
    );
    assert_eq!(after.1, None, "an observer believed {:?}", after.1);
}

#[test]
fn system_and_temporary_schemas_are_refused_when_the_locker_is_built() {
    for (schema, why) in [
        ("pg_temp", "temporary"),
        ("PG_TEMP", "temporary"),
        ("pg_temp_3", "temporary"),
        ("\"pg_temp\"", "temporary"),
        ("pg_toast", "system"),
        ("pg_toast_temp_1", "temporary"),
        ("pg_catalog", "system"),
        ("Information_Schema", "system"),
    ] {
        let built = pals::Locker::builder("app")
            .url(&db_url())
            .schema(schema)
            .build();
        let err = built.expect_err(schema);
        assert!(err.is_misconfiguration(), "{schema}: {err}");
        let message = err.to_string();
        assert!(message.contains(why), "{schema}: {message}");
        assert!(
            message.contains(&format!("{schema:?}")),
            "{schema}: {message}"
        );
    }
}

#[tokio::test]
async fn an_unlogged_fence_sequence_is_refused() {
    let (app, schema) = (
        unique_app("fence-unlogged"),
        TestSchema::new("fence_unlogged"),
    );
    let sequence = schema.object("pals_fence");
    probe_query(&format!("CREATE UNLOGGED SEQUENCE {sequence} AS bigint")).unwrap();
    let locker = locker_in(&app, &schema);
    let lock = locker.lock("ledger").fenced();
    let err = lock.acquire().await.unwrap_err();
    assert!(err.is_misconfiguration(), "{err}");
    let message = err.to_string();
    assert!(message.contains("unlogged"), "{message}");
    assert!(message.contains("SET LOGGED"), "the next step: {message}");
    assert_eq!(holders_of(&app, lock.key(), true), 0, "nothing held");

    probe_query(&format!("ALTER SEQUENCE {sequence} SET LOGGED")).unwrap();
    let locker = locker_in(&app, &schema);
    let guard = locker.lock("ledger").fenced().acquire().await.unwrap();
    assert!(guard.fence().is_some());
}

/// Roles of a test of its own, dropped (with what they own or were granted) at the end.
struct Roles(Vec<String>);

impl Roles {
    fn login(&mut self, tag: &str) -> String {
        let role = unique_app(tag).replace('-', "_");
        probe_query(&format!("CREATE ROLE \"{role}\" LOGIN")).unwrap();
        self.0.push(role.clone());
        role
    }
}

impl Drop for Roles {
    fn drop(&mut self) {
        for role in self.0.iter().rev() {
            let _ = probe_query(&format!("DROP OWNED BY \"{role}\"; DROP ROLE \"{role}\""));
        }
    }
}

/// The grants `LockerBuilder::schema` documents: the app's role mints tokens and leads,
/// and can neither set the sequence back nor alter it; a role without grants can touch
/// neither object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_grants_keep_other_roles_from_tampering() {
    let mut roles = Roles(Vec::new());
    let (admin, app_role, other) = (roles.login("adm"), roles.login("app"), roles.login("oth"));
    let schema = unique_app("pals").replace('-', "_");
    let (s, seq, table) = (
        format!("\"{schema}\""),
        format!("\"{schema}\".pals_fence"),
        format!("\"{schema}\".pals_leaders"),
    );
    let as_admin = |sql: &str| {
        let url = db_url_with(None, None, Some(&admin), "");
        pals_tests::probe_query_at(&url, sql).unwrap();
    };
    probe_query(&format!("CREATE SCHEMA {s} AUTHORIZATION \"{admin}\"")).unwrap();
    as_admin(&format!(
        "REVOKE ALL ON SCHEMA {s} FROM PUBLIC; \
         GRANT USAGE ON SCHEMA {s} TO \"{app_role}\"; \
         CREATE SEQUENCE {seq} AS bigint; \
         CREATE TABLE {table} (key bigint PRIMARY KEY, name text NOT NULL, \
           identity text NOT NULL, since timestamptz NOT NULL, token bigint NOT NULL, \
           pid int NOT NULL); \
         REVOKE ALL ON {seq}, {table} FROM PUBLIC; \
         GRANT USAGE ON SEQUENCE {seq} TO \"{app_role}\"; \
         GRANT SELECT, INSERT, UPDATE ON {table} TO \"{app_role}\""
    ));
    let url_of = |role: &str| db_url_with(None, None, Some(role), "");
    let app = unique_app("grants");
    let locker = locker_with(&app, |b| b.url(&url_of(&app_role)).schema(&schema));
    let guard = locker.lock("ledger").fenced().acquire().await.unwrap();
    assert!(guard.fence().is_some());
    assert!(guard.release().await.unwrap());
    let election = locker.election("scheduler").identity("a");
    let led = election
        .run(|term| async move { term.fence() })
        .await
        .unwrap();
    assert!(led > 0);

    let denied = |role: &str, sql: &str| {
        let refused = pals_tests::probe_query_at(&url_of(role), sql).unwrap_err();
        assert!(
            refused.contains("permission denied") || refused.contains("must be owner"),
            "{role}: {sql}: {refused}"
        );
    };
    denied(&app_role, &format!("SELECT setval('{seq}', 1)"));
    denied(&app_role, &format!("ALTER SEQUENCE {seq} RESTART WITH 1"));
    denied(&app_role, &format!("DROP TABLE {table}"));
    denied(&other, &format!("SELECT nextval('{seq}')"));
    denied(&other, &format!("UPDATE {table} SET identity = 'impostor'"));
    drop(locker);
    probe_query(&format!("DROP SCHEMA {s} CASCADE")).unwrap();
}
