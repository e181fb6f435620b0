//! Helpers for pals' integration tests: the database URL, unique app names, lockers, and a
//! probe that looks at the server from outside the locker under test.

pub mod certs;
pub mod chaos;
pub mod cluster;
pub mod events;
pub mod pgbouncer;
pub mod proxy;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The URL of the test database: `PALS_DB_URL`, else the docker-compose database when it
/// answers, else the repository's private cluster, started if need be (`pals_devdb`).
/// Panics with the three ways to get a server when there is none.
pub fn db_url() -> String {
    pals_devdb::db_url().unwrap_or_else(|error| panic!("{error}"))
}

/// The test database's configuration, parsed from [`db_url`].
pub fn db_config() -> tokio_postgres::Config {
    db_config_of(&db_url())
}

/// The configuration of a URL that tokio-postgres can parse.
pub fn db_config_of(url: &str) -> tokio_postgres::Config {
    url.parse().unwrap_or_else(|e| panic!("{url} parses: {e}"))
}

/// The test database's URL with another host, port or user (each `None`: as in
/// [`db_url`]), and `query` (`key=value&...`, may be empty).
pub fn db_url_with(
    host: Option<&str>,
    port: Option<u16>,
    user: Option<&str>,
    query: &str,
) -> String {
    let config = db_config();
    let host = host
        .map(String::from)
        .unwrap_or_else(|| match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            _ => "127.0.0.1".to_string(),
        });
    let port = port.or(config.get_ports().first().copied()).unwrap_or(5432);
    let user = user.or(config.get_user()).unwrap_or("postgres");
    let dbname = config.get_dbname().unwrap_or("postgres");
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    format!("postgresql://{user}@{host}:{port}/{dbname}{query}")
}

/// The time of day in microseconds since the epoch: one clock for the processes of a
/// machine, to order events that several processes record.
pub fn micros_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after the epoch")
        .as_micros() as i64
}

/// A TCP port of 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// A URL where nothing listens (a port that was free a moment ago).
pub fn unreachable_url() -> String {
    let port = free_port();
    format!("postgresql://postgres@127.0.0.1:{port}/postgres")
}

/// An application name no other test (in this or another process) uses, so tests never
/// see each other's locks and can find their own sessions by `application_name`.
pub fn unique_app(tag: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("t-{tag}-{}-{nanos:x}-{n}", std::process::id())
}

/// A locker on the test database with a short default timeout.
/// Takes and lets go a lock through `url` (with `backend`, else the default TLS backend),
/// in a locker of an app of its own: whether that configuration connects and locks.
pub fn lock_through(url: &str, backend: Option<pals::TlsBackend>) -> Result<(), pals::Error> {
    let mut builder = pals::Locker::builder(unique_app("through")).url(url);
    if let Some(backend) = backend {
        builder = builder.tls_backend(backend);
    }
    let guard = builder
        .build()?
        .lock("x")
        .blocking_try_acquire()?
        .expect("a lock no one else holds");
    assert!(guard.blocking_release()?);
    Ok(())
}

pub fn locker(app: &str) -> pals::Locker {
    locker_with(app, |b| b)
}

/// A locker on the test database, configured further by `configure`.
pub fn locker_with(
    app: &str,
    configure: impl FnOnce(pals::LockerBuilder) -> pals::LockerBuilder,
) -> pals::Locker {
    ensure_server();
    let builder = pals::Locker::builder(app)
        .url(&db_url())
        .default_timeout(Duration::from_secs(5));
    configure(builder).build().expect("test locker builds")
}

/// The `application_name` pals gives the sessions of `app`.
pub fn application_name(app: &str) -> String {
    pals::application_name(app)
}

/// Panics with instructions when no server answers at the test URL.
pub fn ensure_server() {
    static CHECKED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let checked = CHECKED.get_or_init(|| probe_query("SELECT 1").map(|_| ()));
    if let Err(error) = checked {
        let from = match std::env::var(pals_devdb::URL_ENV) {
            Ok(url) if !url.is_empty() => {
                "PALS_DB_URL names it: start that server, or point \
                PALS_DB_URL at one you have (trust or password auth in the URL), or unset it \
                for the docker-compose database or the repository's own (tests start it)"
            }
            _ => {
                "the repository's database: `cargo run -p pals-devdb -- stop`, then run the \
                tests again to start it afresh"
            }
        };
        panic!(
            "no PostgreSQL answers at {url} ({error}).\n{from}",
            url = db_url()
        );
    }
}

/// Runs `sql` on a fresh connection of its own (its own runtime, on its own thread, so it
/// works from any test, async or not) and returns the first column of every row.
pub fn probe_query(sql: &str) -> Result<Vec<Option<String>>, String> {
    probe_query_at(&db_url(), sql)
}

/// `probe_query` on the database at `url`.
pub fn probe_query_at(url: &str, sql: &str) -> Result<Vec<Option<String>>, String> {
    let (url, sql) = (url.to_string(), sql.to_string());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let (client, connection) = tokio::time::timeout(
                Duration::from_secs(5),
                tokio_postgres::connect(&url, tokio_postgres::NoTls),
            )
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            let messages = client.simple_query(&sql).await.map_err(|e| {
                e.as_db_error()
                    .map(|d| d.message().to_string())
                    .unwrap_or_else(|| e.to_string())
            })?;
            Ok(messages
                .into_iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(row) => {
                        Some(row.get(0).map(String::from))
                    }
                    _ => None,
                })
                .collect())
        })
    })
    .join()
    .expect("probe thread")
}

/// `probe_query` for one number.
pub fn probe_i64(sql: &str) -> i64 {
    let rows = probe_query(sql).unwrap_or_else(|e| panic!("probe `{sql}` failed: {e}"));
    rows.first()
        .and_then(|v| v.as_deref())
        .unwrap_or_else(|| panic!("probe `{sql}` returned no value"))
        .parse()
        .unwrap()
}

/// How many server sessions the locker of `app` has open.
pub fn sessions_of(app: &str) -> i64 {
    probe_i64(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{}'",
        application_name(app)
    ))
}

/// How many sessions of `app` hold (granted) or await (not granted) the advisory lock `key`.
pub fn holders_of(app: &str, key: i64, granted: bool) -> i64 {
    probe_i64(&format!(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE a.application_name = '{}' AND l.locktype = 'advisory' AND l.granted = {granted} \
           AND l.classid = (({key}::bigint >> 32) & 4294967295)::oid \
           AND l.objid = ({key}::bigint & 4294967295)::oid AND l.objsubid = 1",
        application_name(app)
    ))
}

/// A file in the temporary directory, removed when dropped.
pub struct TempFile(std::path::PathBuf);

impl TempFile {
    /// Writes `contents` to a new file named after `tag`, this process and a counter.
    pub fn new(tag: &str, contents: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!("{}.tmp", unique_app(tag)));
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {path:?}: {e}"));
        TempFile(path)
    }

    /// Where the file is.
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A directory in the temporary directory, removed with what it holds when dropped.
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    /// Creates a new directory named after `tag`, this process and a counter.
    pub fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(unique_app(tag));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {path:?}: {e}"));
        TempDir(path)
    }

    /// Where the directory is.
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `condition` until it holds or `within` has passed; true if it held.
///
/// For conditions that only the server can tell (a backend went away); the bound is the
/// behaviour under test, not a synchronisation guess.
pub fn eventually(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        // Not a spin: on a loaded 2-core machine it would starve what it waits for.
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Polls `future` once, in the calling task: `Some` if it finished. For a caller that has
/// started waiting (and will be awaited later, with the same task's waker).
pub async fn poll_once<F: std::future::Future + Unpin>(future: &mut F) -> Option<F::Output> {
    std::future::poll_fn(|cx| match std::pin::Pin::new(&mut *future).poll(cx) {
        std::task::Poll::Ready(output) => std::task::Poll::Ready(Some(output)),
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await
}

/// A DBA's session holding a lock on a table or sequence: `statement` (`LOCK TABLE ...`,
/// `ALTER SEQUENCE ...`) run in a transaction left open until this is dropped, then rolled
/// back. On a connection and thread of its own.
pub struct DbaLock {
    release: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DbaLock {
    /// Runs `statement` in a new transaction and returns once it holds its lock.
    pub fn hold(statement: &str) -> DbaLock {
        let (url, statement) = (db_url(), statement.to_string());
        let (held, holding) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .expect("the DBA connects");
                tokio::spawn(connection);
                let sql = format!("BEGIN; {statement}");
                let taken = client.batch_execute(&sql).await.map_err(|e| e.to_string());
                held.send(taken).unwrap();
                let _ = tokio::task::spawn_blocking(move || released.recv()).await;
                let _ = client.batch_execute("ROLLBACK").await;
            });
        });
        let taken = holding.recv().expect("the DBA's thread answers");
        taken.unwrap_or_else(|e| panic!("the DBA's statement failed: {e}"));
        DbaLock {
            release: Some(release),
            thread: Some(thread),
        }
    }
}

impl Drop for DbaLock {
    fn drop(&mut self) {
        drop(self.release.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A schema of its own for a test's objects (fencing sequence, leaders table), dropped
/// with them when this is dropped.
pub struct TestSchema(String);

impl TestSchema {
    /// Creates a schema named after `tag`.
    pub fn new(tag: &str) -> TestSchema {
        let name = unique_app(tag).replace('-', "_");
        probe_query(&format!("CREATE SCHEMA \"{name}\"")).expect("the schema is made");
        TestSchema(name)
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.0
    }

    /// The qualified name of `object` in it.
    pub fn object(&self, object: &str) -> String {
        format!("\"{}\".{object}", self.0)
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let _ = probe_query(&format!("DROP SCHEMA \"{}\" CASCADE", self.0));
    }
}

/// Another connection that cancels every statement of an app's sessions
/// (`pg_cancel_backend`), over and over, as fast as the server answers, until stopped. On a
/// connection and thread of its own.
/// Dropped without [`stop`](CancelStorm::stop) (a test that panicked), it stops too.
pub struct CancelStorm {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
    started: Instant,
}

impl CancelStorm {
    /// Starts cancelling the statements of the sessions of `app`, from a session that is
    /// not one of them.
    pub fn start(app: &str) -> CancelStorm {
        let sql = format!(
            "SELECT count(pg_cancel_backend(pid))::text FROM pg_stat_activity \
             WHERE application_name = '{}' AND pid <> pg_backend_pid()",
            application_name(app)
        );
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let (client, connection) =
                    tokio_postgres::connect(&db_url(), tokio_postgres::NoTls)
                        .await
                        .expect("the canceller connects");
                tokio::spawn(connection);
                let mut sent = 0;
                while !stopped.load(Ordering::Relaxed) {
                    let row = client.query_one(sql.as_str(), &[]).await.unwrap();
                    sent += row.get::<_, String>(0).parse::<u64>().unwrap();
                }
                sent
            })
        });
        CancelStorm {
            stop,
            thread: Some(thread),
            started: Instant::now(),
        }
    }

    /// Stops the storm: how many cancels it sent (one per session signalled, busy or
    /// not), and for how long.
    pub fn stop(mut self) -> (u64, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("stopped once");
        let sent = thread.join().expect("the canceller's thread");
        (sent, self.started.elapsed())
    }
}

impl Drop for CancelStorm {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
