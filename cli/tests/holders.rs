//! `pals holders` against the real server: a lock held and a lock awaited by lockers of
//! this test, in the table and in the JSON document.

mod common;

use std::time::Duration;

use common::{json_eval, pals, pals_with};
use pals_tests::{eventually, holders_of, locker, unique_app};

/// A lock name that JSON must escape: quotes, a backslash, a newline, a tab, a control
/// character, and non-ASCII text (written as UTF-8).
const AWKWARD: &str = "mig\"ra\\tions\n\t\u{1}-é€😀";

#[tokio::test(flavor = "multi_thread")]
async fn a_held_lock_and_its_waiter_show_with_their_name() {
    let app = unique_app("cli-holders");
    let (holder, waiter) = (locker(&app), locker(&app));
    let guard = holder.lock("migrations").acquire().await.unwrap();
    let key = guard.key();
    let waiting = tokio::spawn(async move {
        let lock = waiter.lock("migrations");
        lock.acquire_timeout(Duration::from_secs(30)).await
    });
    assert!(eventually(Duration::from_secs(10), || holders_of(
        &app, key, false
    ) == 1));

    let ran = pals(&["holders", "--app", &app, "migrations"]);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let lines: Vec<&str> = ran.stdout.lines().collect();
    assert!(lines[0].starts_with("key"), "{}", ran.stdout);
    let mine: Vec<&str> = (lines.iter().copied())
        .filter(|l| l.starts_with(&format!("{key} ")))
        .collect();
    assert_eq!(mine.len(), 2, "{}", ran.stdout);
    let name = format!("{app}.migrations");
    assert!(mine.iter().all(|l| l.ends_with(&name)), "{}", ran.stdout);
    assert!(mine.iter().any(|l| l.contains(" held ")), "{}", ran.stdout);
    assert!(
        mine.iter().any(|l| l.contains(" waiting ")),
        "{}",
        ran.stdout
    );
    let summary = format!("2 advisory lock(s) of {app} held or awaited");
    assert_eq!(lines.last(), Some(&summary.as_str()), "{}", ran.stdout);

    drop(guard);
    let grant = waiting
        .await
        .unwrap()
        .unwrap()
        .expect("the waiter takes the lock");
    grant.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_json_document_has_each_holder_s_fields() {
    let app = unique_app("cli-holders-json");
    let (holder, waiter) = (locker(&app), locker(&app));
    let guard = holder.lock(AWKWARD).acquire().await.unwrap();
    let key = guard.key();
    let waiting = tokio::spawn(async move {
        let lock = waiter.lock(AWKWARD);
        lock.acquire_timeout(Duration::from_secs(30)).await
    });
    assert!(eventually(Duration::from_secs(10), || holders_of(
        &app, key, false
    ) == 1));

    let ran = pals(&["holders", "--json", "--app", &app, AWKWARD]);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert_eq!(ran.stdout.lines().count(), 1, "one line: {}", ran.stdout);
    let doc = &ran.stdout;
    assert_eq!(
        json_eval(doc, "[d['ok'], d['app'] == x]", &app),
        "[true, true]"
    );
    let names = "[h['name'] == x for h in d['holders']]";
    let name = format!("{app}.{AWKWARD}");
    assert_eq!(json_eval(doc, names, &name), "[true, true]");
    let fields = "sorted((h['key'], h['mode'], h['granted'], h['application_name'], \
                  type(h['pid']).__name__, h['backend_start'][-1], h['backend_start'][10], \
                  type(h['waiting_for']).__name__) for h in d['holders'])";
    let expected = |granted: bool, waited: &str| {
        let application = pals::application_name(&app);
        format!("[\"{key}\", \"exclusive\", {granted}, \"{application}\", \"int\", \"Z\", \"T\", \"{waited}\"]")
    };
    assert_eq!(
        json_eval(doc, fields, ""),
        format!(
            "[{}, {}]",
            expected(false, "float"),
            expected(true, "NoneType")
        )
    );

    drop(guard);
    let grant = waiting
        .await
        .unwrap()
        .unwrap()
        .expect("the waiter takes the lock");
    grant.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn another_app_s_locks_show_only_without_app() {
    let (app, other) = (
        unique_app("cli-holders-app"),
        unique_app("cli-holders-other"),
    );
    let theirs = locker(&other).lock("report").acquire().await.unwrap();
    let key = format!("{} ", theirs.key());
    let shows = |ran: common::Ran| {
        assert_eq!(ran.code, 0, "{}", ran.stderr);
        ran.stdout.lines().any(|line| line.starts_with(&key))
    };
    assert!(!shows(pals(&["holders", "--app", &app])), "not {app}'s");
    assert!(!shows(pals_with(&["holders"], &[("PALS_APP_NAME", &app)])));
    assert!(shows(pals(&["holders", "--app", &other])));
    assert!(shows(pals(&["holders"])), "every app's");
    assert!(shows(pals_with(
        &["holders", "--all"],
        &[("PALS_APP_NAME", &app)]
    )));
    theirs.release().await.unwrap();
}
