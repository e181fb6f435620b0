//! NUL bytes: a name that reaches SQL text or a session's `application_name` (an app, an
//! election, a candidate's identity) cannot carry one, and is refused at once as a
//! misconfiguration, never retried; a plain lock name, which only feeds the key's hash, may
//! (as in PALs).

use std::time::Duration;

use pals_tests::{db_url, db_url_with, locker, sessions_of, unique_app};

#[tokio::test]
async fn an_election_named_with_a_nul_fails_at_once() {
    let app = unique_app("nul-election");
    let locker = locker(&app);
    let election = locker.election("a\0b");
    // Bounded: this used to campaign for ever (take, fail to announce, drop, again).
    let ran = tokio::time::timeout(Duration::from_secs(10), election.run(|_term| async {}));
    let err = ran.await.expect("no campaign loop").unwrap_err();
    assert!(err.is_misconfiguration(), "{err}");
    assert!(err.to_string().contains("NUL"), "{err}");
    assert_eq!(sessions_of(&app), 0, "nothing went to the database");
    // Its identity, too.
    let election = locker.election("fine").identity("replica\0a");
    let ran = tokio::time::timeout(Duration::from_secs(10), election.run(|_term| async {}));
    let err = ran.await.expect("no campaign loop").unwrap_err();
    assert!(err.is_misconfiguration() && err.to_string().contains("NUL"));
}

#[tokio::test]
async fn an_app_name_with_a_nul_is_a_misconfiguration() {
    // Refused when the locker is built: the attribute then reports it loudly (a
    // misconfiguration), instead of skipping every call on a connect error.
    let err = pals::Locker::new("billing\0x", &db_url()).unwrap_err();
    assert!(err.is_misconfiguration(), "{err}");
    assert!(err.to_string().contains("NUL"), "{err}");
    // So is one given as the sessions' application_name.
    let url = db_url_with(None, None, None, "application_name=a%00b");
    let err = pals::Locker::new("billing", &url).unwrap_err();
    assert!(err.is_misconfiguration(), "{err}");
    assert!(err.to_string().contains("NUL"), "{err}");
}

#[tokio::test]
async fn plain_lock_names_may_hold_a_nul_as_in_pals() {
    let app = unique_app("nul-lock");
    let (a, b) = (locker(&app), locker(&app));
    let lock = a.lock("a\0b");
    assert_eq!(lock.key(), pals::key(&app, "a\0b"));
    assert_ne!(lock.key(), pals::key(&app, "a"));
    let guard = lock.acquire().await.unwrap();
    assert!(b.lock("a\0b").try_acquire().await.unwrap().is_none());
    let holders = a.holders().await.unwrap();
    let listed = holders.iter().find(|h| h.key == guard.key()).unwrap();
    assert_eq!(listed.name.as_deref(), Some(format!("{app}.a\0b").as_str()));
    assert!(guard.release().await.unwrap());
}
