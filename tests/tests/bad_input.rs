//! Bad input gets a clear error, in bounded time, and odd lock names just work.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use pals_tests::{locker, unique_app};

#[test]
fn an_unparsable_url_fails_at_build_time() {
    for url in [
        "not a url",
        "postgresql://user@host:notaport/db",
        "postgresql://h/db?sslmode=sometimes",
    ] {
        let err = pals::Locker::new("app", url).unwrap_err();
        assert!(
            matches!(err, pals::Error::InvalidConfig(_)),
            "{url}: {err:?}"
        );
        assert!(
            err.to_string().contains("cannot parse the database URL"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn a_server_that_is_not_listening_fails_within_the_connect_timeout() {
    let connect_timeout = Duration::from_secs(2);
    let locker = pals::Locker::builder("app")
        .url(&pals_tests::unreachable_url())
        .connect_timeout(connect_timeout)
        .build()
        .unwrap();
    let started = Instant::now();
    let err = locker.lock("x").acquire().await.unwrap_err();
    assert!(
        started.elapsed() < connect_timeout,
        "took {:?}",
        started.elapsed()
    );
    assert!(matches!(err, pals::Error::Connect { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("cannot connect to the database"),
        "{err}"
    );
}

#[test]
fn a_server_that_accepts_but_never_answers_fails_at_the_connect_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accept connections and keep them open without a word: a hung server or a black hole.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().take(4) {
            held.push(stream);
        }
        std::thread::park();
    });
    let connect_timeout = Duration::from_millis(300);
    let locker = pals::Locker::builder("app")
        .url(&format!("postgresql://postgres@127.0.0.1:{port}/postgres"))
        .connect_timeout(connect_timeout)
        .build()
        .unwrap();
    let started = Instant::now();
    let err = locker.lock("x").blocking_try_acquire().unwrap_err();
    let took = started.elapsed();
    assert!(
        took >= connect_timeout && took < connect_timeout + Duration::from_secs(1),
        "took {took:?}"
    );
    assert!(err.to_string().contains("connect timeout"), "{err}");
}

#[tokio::test]
async fn empty_huge_and_non_ascii_names_work() {
    let app = unique_app("names");
    let (a, b) = (locker(&app), locker(&app));
    let huge = "x".repeat(10 * 1024);
    for name in [
        "",
        huge.as_str(),
        "ñandú-鎖-🔒",
        "it's \"quoted\"; DROP TABLE x; --",
    ] {
        let lock = a.lock(name);
        assert_eq!(lock.key(), pals::key(&app, name));
        assert_eq!(lock.name(), format!("{app}.{name}"));
        let guard = lock.acquire().await.unwrap();
        assert!(
            b.lock(name).try_acquire().await.unwrap().is_none(),
            "{name:.20}"
        );
        assert!(guard.release().await.unwrap());
    }
}

#[tokio::test]
async fn raw_keys_interoperate_with_plain_sql() {
    let app = unique_app("rawkey");
    let a = locker(&app);
    // Negative and extreme keys are valid bigint advisory keys.
    for key in [0, -1, i64::MIN, i64::MAX, pals::key(&app, "k")] {
        let guard = a.lock_key(key).acquire().await.unwrap();
        let free = pals_tests::probe_query(&format!("SELECT pg_try_advisory_lock({key})")).unwrap();
        assert_eq!(
            free,
            vec![Some("f".to_string())],
            "key {key} should be held"
        );
        assert!(guard.release().await.unwrap());
    }
}
