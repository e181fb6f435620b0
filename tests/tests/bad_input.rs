//! Bad input gets a clear error, in bounded time, and odd lock names just work.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use pals_tests::{locker, unique_app};

#[test]
fn an_unusable_url_fails_at_build_time_saying_which_part_and_why() {
    for (url, why) in [
        (
            "not a url",
            "neither a postgresql:// URL nor key=value pairs",
        ),
        (
            "http://db.example/orders",
            "`http://` is not a PostgreSQL URL",
        ),
        (
            "postgresql://user@host:notaport/db",
            "port `notaport` is not a port number",
        ),
        (
            "postgresql://user@host:543210/db",
            "port `543210` is not a port number",
        ),
        (
            "postgresql://h/db?connect_timeout=abc",
            "connect_timeout `abc` is not a number of seconds",
        ),
        (
            "postgresql://h/db?sslmode=sometimes",
            "sslmode `sometimes`: expected disable",
        ),
        (
            "postgresql://h/db?sslcert=/c.pem",
            "sslcert /c.pem does not exist",
        ),
        (
            "postgresql://h/db?colour=blue",
            "unknown parameter `colour`: it is not a libpq connection parameter",
        ),
        (
            "postgresql://h/db?sslcrl=/crl.pem",
            "sslcrl (in the URL) is not supported",
        ),
        ("host=h port=x", "port `x` is not a port number"),
    ] {
        let err = pals::Locker::new("app", url).unwrap_err();
        assert!(err.is_misconfiguration(), "{url}: {err}");
        let message = err.to_string();
        assert!(
            message.starts_with(&format!(
                "invalid pals configuration: cannot use the database URL `{url}`: "
            )),
            "{message}"
        );
        assert!(message.contains(why), "{url}: {message}");
        assert_eq!(format!("{err:?}"), message, "Debug reads as Display");
    }
    // The password never shows.
    let err = pals::Locker::new("app", "postgresql://u:hunter2@h:99999/db").unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[tokio::test]
async fn a_server_that_is_not_listening_fails_within_the_connect_timeout() {
    let connect_timeout = Duration::from_secs(2);
    let url = pals_tests::unreachable_url();
    let locker = pals::Locker::builder("app")
        .url(&url)
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
    let message = err.to_string();
    let port = pals_tests::db_config_of(&url).get_ports()[0];
    assert!(
        message.starts_with(&format!(
            "cannot connect to the database: 127.0.0.1:{port}: "
        )),
        "{message}"
    );
    assert!(
        message.contains("Next step: start PostgreSQL at that address")
            && message.contains("pg_isready"),
        "{message}"
    );
    // The repository's docker-compose file is not every deployment's.
    assert!(!message.contains("docker"), "{message}");
    assert!(
        !err.is_misconfiguration(),
        "a server that is down may come up"
    );
}

/// A port where connections are accepted and kept open without a word: a hung server, or
/// a black hole.
fn silent_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    port
}

#[test]
fn a_server_that_accepts_but_never_answers_fails_at_the_connect_timeout() {
    let port = silent_server();
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

#[pals::exclusive(name = "job", timeout = "300ms", locker = locker)]
async fn short_timeout_job(locker: &pals::Locker) -> Result<(), pals::Error> {
    unreachable!("no lock can be taken from a silent server")
}

/// A lock timeout shorter than the connect timeout bounds the whole call: the connection
/// still being opened does not hold the caller to the connect timeout (10 s by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_lock_timeout_bounds_the_call_while_a_connection_is_being_opened() {
    let port = silent_server();
    let locker = pals::Locker::new(
        "app",
        &format!("postgresql://postgres@127.0.0.1:{port}/postgres"),
    )
    .unwrap();
    // Waited the whole timeout, and not the connect timeout (10 s): the bound is what
    // tells the two apart, with room for a loaded machine.
    let within = |took: Duration, timeout: Duration| {
        took >= timeout && took < timeout + Duration::from_secs(3)
    };

    let timeout = Duration::from_secs(1);
    let started = Instant::now();
    let got = locker.lock("a").acquire_timeout(timeout).await;
    assert!(matches!(got, Ok(None)), "{got:?}");
    assert!(
        within(started.elapsed(), timeout),
        "acquire_timeout: {:?}",
        started.elapsed()
    );

    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    let got = locker.lock("b").timeout(timeout).try_acquire().await;
    assert!(matches!(got, Ok(None)), "{got:?}");
    assert!(
        within(started.elapsed(), timeout),
        "try_acquire: {:?}",
        started.elapsed()
    );

    // A wait is bounded by its own timeout even on a lock whose own is zero.
    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    let got = locker
        .lock("c")
        .timeout(Duration::ZERO)
        .acquire_timeout(timeout)
        .await;
    assert!(matches!(got, Ok(None)), "{got:?}");
    assert!(
        within(started.elapsed(), timeout),
        "acquire_timeout on a zero-timeout lock: {:?}",
        started.elapsed()
    );

    let started = Instant::now();
    let err = short_timeout_job(&locker).await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(
        within(started.elapsed(), timeout),
        "the attribute: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn huge_and_non_ascii_names_work() {
    let app = unique_app("names");
    let (a, b) = (locker(&app), locker(&app));
    let huge = "x".repeat(10 * 1024);
    for name in [
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
        // A busy lock's error names it; a huge name is shortened there, kept whole inside.
        let err = b
            .lock(name)
            .timeout(Duration::ZERO)
            .acquire()
            .await
            .unwrap_err();
        assert!(err.to_string().len() < 300, "{err}");
        assert!(matches!(err, pals::Error::Timeout { name: ref n } if *n == lock.name()));
        assert!(guard.release().await.unwrap());
    }
}

#[tokio::test]
async fn an_empty_lock_name_is_an_error_on_every_acquire() {
    let app = unique_app("empty-name");
    let mine = locker(&app);
    let lock = mine.lock("");
    for result in [
        lock.try_acquire().await.map(|_| ()),
        lock.acquire().await.map(|_| ()),
        lock.acquire_timeout(Duration::from_secs(1))
            .await
            .map(|_| ()),
    ] {
        let err = result.unwrap_err();
        assert!(err.is_misconfiguration(), "{err}");
        assert!(err.to_string().contains("empty name"), "{err}");
    }
    assert_eq!(
        pals_tests::sessions_of(&app),
        0,
        "nothing went to the database"
    );
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

/// The extreme keys, written into a wait's SQL as text, are read back as themselves (cast
/// with the minus inside: `-9223372036854775808::bigint` casts before it negates).
#[tokio::test]
async fn the_extreme_keys_can_be_waited_for() {
    let app = pals_tests::unique_app("extreme-keys");
    let (holder, waiter) = (pals_tests::locker(&app), pals_tests::locker(&app));
    for key in [i64::MIN, i64::MAX] {
        let held = holder.lock_key(key).acquire().await.unwrap();
        let timeout = Duration::from_millis(100);
        let busy = waiter.lock_key(key).acquire_timeout(timeout).await.unwrap();
        assert!(busy.is_none(), "{key}: held by the other locker");
        assert!(held.release().await.unwrap());
        let waited = waiter.lock_key(key).acquire_timeout(timeout).await.unwrap();
        assert!(waited.expect("free").release().await.unwrap());
    }
}
