//! pals against the raw-driver limit and its peers:
//! `cargo bench -p pals-bench --bench locking [-- --quick]`.
//!
//! Runs against `PALS_DB_URL` (default: the repository's database, `pals_devdb`) and prints one table:
//! every pals figure beside a baseline measured in the same run, and their ratio. The
//! baseline is the raw tokio-postgres client with its connection spawned on the bench's
//! runtime, sending the same statements, unless the row names another: sqlx's
//! `PgAdvisoryLock`, Python PALs (when an interpreter with it is found: `PALS_PYTHON`, else
//! `target/pals-venv/bin/python`), or pals itself another way. Medians over several rounds,
//! with the spread (lowest..highest round).
//! `--quick` runs few rounds, for CI to keep this program working; its figures are rough.

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pals::Locker;
use sqlx::postgres::{PgAdvisoryLock, PgAdvisoryLockKey, PgConnection};
use sqlx::{Connection, Either};
use tokio_postgres::{Client, NoTls, Statement};

mod common;
use common::{cycle, with_sslmode, Cycle};

/// Counts the bytes the process holds, to price a held lock.
struct Counting;

static HELD_BYTES: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HELD_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

struct Settings {
    url: String,
    rounds: usize,
    cycles: usize,
    window: Duration,
    handoffs: usize,
    scale: Vec<usize>,
}

/// One row of the table: pals beside the row's baseline.
struct Row {
    scenario: String,
    pals: Figure,
    baseline: Figure,
}

/// A measured figure: per-operation time, or a rate, with its spread.
#[derive(Clone, Copy)]
enum Figure {
    Micros { median: f64, low: f64, high: f64 },
    Rate { median: f64, low: f64, high: f64 },
    Count(f64),
    Text(&'static str),
}

impl Figure {
    fn micros(rounds: &mut [f64]) -> Figure {
        let (median, low, high) = spread(rounds);
        Figure::Micros { median, low, high }
    }

    fn rate(rounds: &mut [f64]) -> Figure {
        let (median, low, high) = spread(rounds);
        Figure::Rate { median, low, high }
    }

    fn show(self) -> String {
        match self {
            Figure::Micros { median, low, high } => format!("{median:.1} µs ({low:.1}..{high:.1})"),
            Figure::Rate { median, low, high } => format!("{median:.0}/s ({low:.0}..{high:.0})"),
            Figure::Count(n) => format!("{n:.0}"),
            Figure::Text(text) => text.to_string(),
        }
    }

    fn value(self) -> Option<f64> {
        match self {
            Figure::Micros { median, .. } | Figure::Rate { median, .. } => Some(median),
            Figure::Count(n) => Some(n),
            Figure::Text(_) => None,
        }
    }
}

/// A time per operation as operations per second (its spread turned round).
fn per_second(figure: Figure) -> Figure {
    match figure {
        Figure::Micros { median, low, high } => Figure::Rate {
            median: 1e6 / median,
            low: 1e6 / high,
            high: 1e6 / low,
        },
        other => other,
    }
}

fn spread(rounds: &mut [f64]) -> (f64, f64, f64) {
    rounds.sort_by(f64::total_cmp);
    let median = rounds[rounds.len() / 2];
    (median, rounds[0], rounds[rounds.len() - 1])
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let settings = Settings {
        // Plain TCP for both sides unless the URL says otherwise: the raw client has no
        // TLS, and pals would otherwise use TLS whenever the server offers it (sslmode
        // prefer). Row 1t shows what TLS costs.
        url: with_sslmode(
            &pals_devdb::db_url().unwrap_or_else(|error| panic!("{error}")),
            "disable",
        ),
        rounds: if quick { 3 } else { 9 },
        cycles: if quick { 400 } else { 2000 },
        window: Duration::from_millis(if quick { 200 } else { 2000 }),
        handoffs: if quick { 30 } else { 400 },
        scale: if quick {
            vec![100, 1000]
        } else {
            vec![100, 1_000, 10_000]
        },
    };
    // A multi-thread runtime with 2 workers, as a typical service runs (and this machine has
    // 2 cores). The callers of pals and of every baseline run on it: in its block_on, as
    // under #[tokio::main], or spawned on its workers (scenarios 2 and 4). The raw clients
    // spawn their connections on its workers (but the 1r references); sqlx drives its
    // connection in the caller's future; pals runs its connections on a thread of its own.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let rows = runtime.block_on(run(&settings));
    print_table(&rows, quick);
}

async fn run(settings: &Settings) -> Vec<Row> {
    let mut rows = Vec::new();
    let app = format!("bench-{}", std::process::id());
    let locker = Locker::builder(&app)
        .url(&settings.url)
        .build()
        .expect("locker");
    // The baselines of scenario 1, each on a key of its own. The raw client as most
    // services run it: its connection spawned on the caller's runtime (this one), on a
    // worker of its own or the caller's, as tokio schedules it ...
    let raw = RawCycle::new(raw_client(&settings.url).await, pals::key(&app, "raw")).await;
    // ... the raw client with its connection on a thread of its own, as pals runs its
    // connections (so that a locker outlives the runtimes that use it), for reference ...
    let (own_thread, _own_thread) = raw_client_on_own_thread(&settings.url);
    let own_thread = RawCycle::new(own_thread, pals::key(&app, "raw-own-thread")).await;
    // ... and sqlx's advisory lock on a connection of its own, with the same kind of key
    // as pals (one bigint; `PgAdvisoryLock::new` would derive its own from a name).
    let sqlx_conn = tokio::sync::Mutex::new(
        PgConnection::connect(&settings.url)
            .await
            .expect("sqlx connect"),
    );
    let sqlx_lock = PgAdvisoryLock::with_key(PgAdvisoryLockKey::BigInt(pals::key(&app, "sqlx")));
    let sqlx_try = || async {
        let mut conn = sqlx_conn.lock().await;
        let Either::Left(guard) = sqlx_lock.try_acquire(&mut *conn).await.unwrap() else {
            panic!("the sqlx lock was busy");
        };
        guard.release_now().await.unwrap();
    };
    let sqlx_acquire = || async {
        let mut conn = sqlx_conn.lock().await;
        let guard = sqlx_lock.acquire(&mut *conn).await.unwrap();
        guard.release_now().await.unwrap();
    };

    // 1. Uncontended cycle, one task; each measured interleaved with its baselines, so
    // that all see the same machine (loopback latency here swings between modes over
    // seconds).
    let lock = locker.lock("one");
    let pals_try = || async {
        let guard = lock.try_acquire().await.unwrap().expect("free");
        assert!(guard.release().await.unwrap());
    };
    let figures = interleaved(
        settings,
        vec![
            cycle(pals_try),
            cycle(|| raw.try_unlock()),
            cycle(sqlx_try),
            cycle(|| own_thread.try_unlock()),
        ],
    )
    .await;
    let (pals_1a, own_thread_figure) = (figures[0], figures[3]);
    rows.push(Row {
        scenario: "1a uncontended try_acquire + release".into(),
        pals: pals_1a,
        baseline: figures[1],
    });
    rows.push(Row {
        scenario: "1a   vs sqlx try_acquire + release_now".into(),
        pals: pals_1a,
        baseline: figures[2],
    });
    let pals_acquire = || async {
        let guard = lock.acquire().await.unwrap();
        assert!(guard.release().await.unwrap());
    };
    let figures = interleaved(
        settings,
        vec![
            cycle(pals_acquire),
            cycle(|| raw.lock_unlock()),
            cycle(sqlx_acquire),
        ],
    )
    .await;
    rows.push(Row {
        scenario: "1b uncontended acquire + release".into(),
        pals: figures[0],
        baseline: figures[1],
    });
    rows.push(Row {
        scenario: "1b   vs sqlx acquire + release_now".into(),
        pals: figures[0],
        baseline: figures[2],
    });
    sqlx_conn.into_inner().close().await.unwrap();
    // A dropped guard's lock is left, until pals' runtime runs its unlock, to a caller of this process that
    // comes at once: the next try takes it in memory (up to the handoff limit, 64 in a
    // row, then it goes back to the database). With handoffs off, the unlock goes out in
    // the background and the next try waits for it to settle, then takes the lock again.
    let no_handoff = Locker::builder(format!("{app}-nh"))
        .url(&settings.url)
        .handoff_limit(0, Duration::ZERO)
        .build()
        .expect("locker");
    let unhanded = no_handoff.lock("one");
    let figures = interleaved(
        settings,
        vec![
            cycle(|| async {
                drop(lock.try_acquire().await.unwrap().expect("free"));
            }),
            cycle(|| async {
                drop(unhanded.try_acquire().await.unwrap().expect("free"));
            }),
            cycle(|| raw.try_unlock()),
        ],
    )
    .await;
    rows.push(Row {
        scenario: "1c try_acquire + guard drop (re-taken in memory)".into(),
        pals: figures[0],
        baseline: figures[2],
    });
    rows.push(Row {
        scenario: "1d try_acquire + guard drop, handoffs off".into(),
        pals: figures[1],
        baseline: figures[2],
    });

    // What a fencing token costs: the fenced cycle against the plain one, both pals (the
    // token is drawn in the lock's own statement: no extra round trip, some server time).
    let fenced = locker.lock("fenced").fenced();
    drop(fenced.acquire().await.unwrap()); // the sequence is checked (made) once, not timed
    locker.wait_for_releases().await;
    let (figure, plain_figure) = paired(
        settings,
        || async {
            let guard = fenced.try_acquire().await.unwrap().expect("free");
            assert!(guard.release().await.unwrap());
        },
        pals_try,
    )
    .await;
    rows.push(Row {
        scenario: "1f fenced try_acquire + release (vs unfenced)".into(),
        pals: figure,
        baseline: plain_figure,
    });

    // What TLS costs: the same cycle with pals over TLS (if the server offers it).
    let tls_url = settings.url.replace("sslmode=disable", "sslmode=require");
    if let Ok(tls_locker) = Locker::new(format!("{app}-tls"), &tls_url) {
        let tls_lock = tls_locker.lock("one");
        let reachable = match tls_lock.try_acquire().await {
            Ok(Some(guard)) => guard.release().await.is_ok(),
            _ => false,
        };
        if reachable {
            let (figure, raw_figure) = paired(
                settings,
                || async {
                    let guard = tls_lock.try_acquire().await.unwrap().expect("free");
                    assert!(guard.release().await.unwrap());
                },
                || raw.try_unlock(),
            )
            .await;
            rows.push(Row {
                scenario: "1t try_acquire + release over TLS (raw: plain)".into(),
                pals: figure,
                baseline: raw_figure,
            });
        }
    }

    // Reference: the raw driver run other ways, beside pals' 1a figure. Its connection on
    // a thread of its own (measured with 1a), and its floor: caller and connection on one
    // current-thread runtime, no thread hop (measured alone: it needs a runtime of its own).
    rows.push(Row {
        scenario: "1r raw try, connection on its own thread".into(),
        pals: pals_1a,
        baseline: own_thread_figure,
    });
    rows.push(Row {
        scenario: "1r raw try, caller + connection on one thread".into(),
        pals: pals_1a,
        baseline: raw_floor(settings, pals::key(&app, "raw-floor")),
    });

    // Python PALs, the library pals is compatible with, in rounds alternating with pals'.
    let (figure, python_figure) = python_rounds(settings, &app, pals_try).await;
    rows.push(Row {
        scenario: "1p vs PALs (Python) try + release".into(),
        pals: figure.unwrap_or(pals_1a),
        baseline: python_figure,
    });

    // 2. Throughput: 64 tasks on 64 names, pool 16, against 16 raw connections. Each task
    // has a name of its own, so the 4 raw tasks that share a session never take the same
    // key: each holds its lock alone, as on the pals side.
    let pooled = Locker::builder(format!("{app}-tp"))
        .url(&settings.url)
        .pool_size(16)
        .build()
        .unwrap();
    let pals_rate = throughput(settings, 64, |task| {
        let lock = pooled.lock(&format!("tp-{task}"));
        move || {
            let lock = lock.clone();
            async move {
                let guard = lock.try_acquire().await.unwrap().expect("free");
                guard.release().await.unwrap();
            }
        }
    })
    .await;
    drop(pooled);
    let raws = raw_clients(&settings.url, 16).await;
    let raw_rate = throughput(settings, 64, |task| {
        let client = Arc::clone(&raws[task % raws.len()]);
        let key = pals::key(&app, &format!("raw-tp-{task}"));
        move || {
            let client = Arc::clone(&client);
            async move {
                let got = client
                    .simple_query(&format!("SELECT pg_try_advisory_lock({key})"))
                    .await
                    .unwrap();
                drop(got);
                client
                    .simple_query(&format!("SELECT pg_advisory_unlock({key})"))
                    .await
                    .unwrap();
            }
        }
    })
    .await;
    drop(raws);
    rows.push(Row {
        scenario: "2  throughput, 64 tasks x 64 names, 16 conns".into(),
        pals: pals_rate,
        baseline: raw_rate,
    });

    // 3. Handoff latency between two processes' worth of lockers.
    let (a, b) = (
        Locker::new(format!("{app}-ho"), &settings.url).unwrap(),
        Locker::new(format!("{app}-ho"), &settings.url).unwrap(),
    );
    let (p50, p99) = pals_handoffs(settings, &a, &b).await;
    drop((a, b));
    let (raw50, raw99) = raw_handoffs(settings, &app).await;
    rows.push(Row {
        scenario: "3  handoff between two lockers, p50".into(),
        pals: p50,
        baseline: raw50,
    });
    rows.push(Row {
        scenario: "3  handoff between two lockers, p99".into(),
        pals: p99,
        baseline: raw99,
    });

    // 4. In-process contention: 64 tasks on one name.
    let pals_rate = contended(settings, &locker.lock("contended")).await;
    // The raw side: each task on a session of its own. Session locks are re-entrant: two
    // tasks on one session would hold the lock at once, which is not mutual exclusion.
    let free = free_connections(&raw.client).await;
    let raw_rate = if free < 64 + 2 {
        eprintln!(
            "scenario 4: its raw side needs 64 connections; the server has {free} free \
             (max_connections less superuser_reserved_connections and those in use)"
        );
        Figure::Text("not run (max_connections)")
    } else {
        let contenders = raw_clients(&settings.url, 64).await;
        let contended_key = pals::key(&app, "raw-contended");
        throughput(settings, 64, |task| {
            let client = Arc::clone(&contenders[task]);
            move || {
                let client = Arc::clone(&client);
                async move {
                    client
                        .simple_query(&format!("SELECT pg_advisory_lock({contended_key})"))
                        .await
                        .unwrap();
                    client
                        .simple_query(&format!("SELECT pg_advisory_unlock({contended_key})"))
                        .await
                        .unwrap();
                }
            }
        })
        .await
    };
    rows.push(Row {
        scenario: "4  handoffs, 64 tasks, one name (raw: 64 conns)".into(),
        pals: pals_rate,
        baseline: raw_rate,
    });
    // The same without handoffs: every holder unlocks in the database and the next of the
    // process takes the lock there again (two round trips a handoff).
    let unhanded_rate = contended(settings, &no_handoff.lock("contended")).await;
    rows.push(Row {
        scenario: "4d the same, handoffs off".into(),
        pals: unhanded_rate,
        baseline: raw_rate,
    });

    // 5. The attribute against the same lock taken by hand.
    let by_hand = locker.lock("attribute");
    let (figure, hand) = paired(
        settings,
        || async { annotated(&locker).await.unwrap() },
        || async {
            let guard = by_hand.acquire().await.unwrap();
            assert!(guard.release().await.unwrap());
        },
    )
    .await;
    rows.push(Row {
        scenario: "5  #[pals::exclusive] empty fn (vs by hand)".into(),
        pals: figure,
        baseline: hand,
    });

    // 6. Thousands of locks held at once.
    for &n in &settings.scale {
        rows.extend(scale(settings, &app, n).await);
    }

    // 7. A once_per run: the lock, the tick's row claimed, the end written into it, the
    // release: two statements on the coordination session beside the lock's own. The
    // claim is a durable commit. A day's period whose offset moves 1 ms a run, so that each
    // run is a tick of its own, after the last, however fast runs go (no claim is a skip).
    let runs_made = std::cell::Cell::new(0_u64);
    let once_per_run = || async {
        runs_made.set(runs_made.get() + 1);
        let offset = Duration::from_millis(runs_made.get());
        let job = locker.lock("once").once_per(DAY).offset(offset);
        let run = job.claim().await.unwrap().expect("a tick of its own");
        run.succeeded().await.unwrap();
    };
    let (figure, plain_figure) = paired(settings, once_per_run, pals_try).await;
    rows.push(Row {
        scenario: "7  once_per run: claim, end, release (vs try)".into(),
        pals: figure,
        baseline: plain_figure,
    });
    rows.push(Row {
        scenario: "7  once_per runs (rows) per second, one job".into(),
        pals: per_second(figure),
        baseline: per_second(plain_figure),
    });
    // Its runs go: the benchmark leaves no rows in the database it measured.
    let key = pals::key(&app, "once");
    let runs_table = "DELETE FROM public.pals_runs WHERE key = $1";
    raw.client
        .execute(runs_table, &[&key])
        .await
        .expect("the runs deleted");
    rows
}

/// A day: the period of row 7's job.
const DAY: Duration = Duration::from_secs(24 * 3600);

#[pals::exclusive(name = "attribute", locker = locker)]
async fn annotated(locker: &Locker) -> Result<(), pals::Error> {
    Ok(())
}

async fn raw_client(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("connect (is PostgreSQL running? see README)");
    tokio::spawn(connection);
    client
}

/// A raw client whose connection runs on a current-thread runtime of its own thread.
fn raw_client_on_own_thread(url: &str) -> (Client, std::thread::JoinHandle<()>) {
    let url = url.to_string();
    let (deliver, delivered) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let (client, connection) = tokio_postgres::connect(&url, NoTls).await.expect("connect");
            deliver.send(client).unwrap();
            let _ = connection.await;
        });
    });
    (delivered.recv().unwrap(), thread)
}

/// The raw driver's cycles on one client and one key, with prepared statements.
struct RawCycle {
    client: Client,
    try_lock: Statement,
    lock: Statement,
    unlock: Statement,
    key: i64,
}

impl RawCycle {
    async fn new(client: Client, key: i64) -> RawCycle {
        RawCycle {
            try_lock: client
                .prepare("SELECT pg_try_advisory_lock($1)")
                .await
                .unwrap(),
            lock: client.prepare("SELECT pg_advisory_lock($1)").await.unwrap(),
            unlock: client
                .prepare("SELECT pg_advisory_unlock($1)")
                .await
                .unwrap(),
            client,
            key,
        }
    }

    /// `pg_try_advisory_lock`, then `pg_advisory_unlock`.
    async fn try_unlock(&self) {
        let got: bool = self
            .client
            .query_one(&self.try_lock, &[&self.key])
            .await
            .unwrap()
            .get(0);
        assert!(got);
        self.unlock().await;
    }

    /// `pg_advisory_lock`, then `pg_advisory_unlock`.
    async fn lock_unlock(&self) {
        self.client
            .query_one(&self.lock, &[&self.key])
            .await
            .unwrap();
        self.unlock().await;
    }

    async fn unlock(&self) {
        let released: bool = self
            .client
            .query_one(&self.unlock, &[&self.key])
            .await
            .unwrap()
            .get(0);
        assert!(released);
    }
}

/// How many more client connections the server takes (for the superuser: besides the
/// reserved ones).
async fn free_connections(client: &Client) -> i64 {
    client
        .query_one(
            "SELECT current_setting('max_connections')::bigint \
                    - current_setting('superuser_reserved_connections')::bigint \
                    - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// The raw cycle with caller and connection on one current-thread runtime.
fn raw_floor(settings: &Settings, key: i64) -> Figure {
    let url = settings.url.clone();
    let (rounds, cycles) = (settings.rounds, settings.cycles);
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let raw = RawCycle::new(raw_client(&url).await, key).await;
            let settings = Settings {
                url,
                rounds,
                cycles,
                window: Duration::ZERO,
                handoffs: 0,
                scale: vec![],
            };
            per_cycle(&settings, || raw.try_unlock()).await
        })
    })
    .join()
    .unwrap()
}

async fn raw_clients(url: &str, count: usize) -> Vec<Arc<Client>> {
    let mut clients = Vec::new();
    for _ in 0..count {
        clients.push(Arc::new(raw_client(url).await));
    }
    clients
}

/// Median time per cycle over the rounds, after a warm-up.
async fn per_cycle<F, Fut>(settings: &Settings, mut cycle: F) -> Figure
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    for _ in 0..settings.cycles / 10 + 1 {
        cycle().await;
    }
    let mut rounds = Vec::new();
    for _ in 0..settings.rounds {
        let started = Instant::now();
        for _ in 0..settings.cycles {
            cycle().await;
        }
        rounds.push(started.elapsed().as_secs_f64() * 1e6 / settings.cycles as f64);
    }
    Figure::micros(&mut rounds)
}

/// Median time per cycle of `pals` and of `raw` over the rounds: see [`interleaved`].
async fn paired<'a, P, PF, R, RF>(settings: &Settings, pals: P, raw: R) -> (Figure, Figure)
where
    P: FnMut() -> PF + 'a,
    PF: Future<Output = ()> + 'a,
    R: FnMut() -> RF + 'a,
    RF: Future<Output = ()> + 'a,
{
    let figures = interleaved(settings, vec![cycle(pals), cycle(raw)]).await;
    (figures[0], figures[1])
}

/// Median time per cycle of each side over the rounds, after a warm-up; the sides take
/// turns in blocks of 200 cycles within each round, so that all see the same machine.
async fn interleaved(settings: &Settings, mut sides: Vec<Cycle<'_>>) -> Vec<Figure> {
    const BLOCK: usize = 200;
    // Warm up well: the first few hundred cycles here run slow (caches, CPU frequency,
    // threads settling on cores), which would be measured as noise.
    for _ in 0..1000 {
        for side in sides.iter_mut() {
            side().await;
        }
    }
    let blocks = settings.cycles.div_ceil(BLOCK);
    let mut rounds = vec![Vec::new(); sides.len()];
    for _ in 0..settings.rounds {
        let mut times = vec![Duration::ZERO; sides.len()];
        for _ in 0..blocks {
            for (side, time) in sides.iter_mut().zip(&mut times) {
                let started = Instant::now();
                for _ in 0..BLOCK {
                    side().await;
                }
                *time += started.elapsed();
            }
        }
        let cycles = (blocks * BLOCK) as f64;
        for (side_rounds, time) in rounds.iter_mut().zip(times) {
            side_rounds.push(time.as_secs_f64() * 1e6 / cycles);
        }
    }
    rounds.iter_mut().map(|r| Figure::micros(r)).collect()
}

/// Holds per second of 64 tasks each taking and releasing `lock` in a loop.
async fn contended(settings: &Settings, lock: &pals::Lock) -> Figure {
    throughput(settings, 64, |_| {
        let lock = lock.clone();
        move || {
            let lock = lock.clone();
            async move {
                let guard = lock.acquire().await.unwrap();
                guard.release().await.unwrap();
            }
        }
    })
    .await
}

/// Cycles per second of `tasks` tasks each running its cycle in a loop for the window.
async fn throughput<M, C, Fut>(settings: &Settings, tasks: usize, mut make: M) -> Figure
where
    M: FnMut(usize) -> C,
    C: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let cycles: Vec<C> = (0..tasks).map(&mut make).collect();
    let cycles: Vec<Arc<C>> = cycles.into_iter().map(Arc::new).collect();
    let mut rounds = Vec::new();
    for round in 0..settings.rounds.min(5) + 1 {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let workers: Vec<_> = cycles
            .iter()
            .map(|cycle| {
                let (cycle, stop, done) = (Arc::clone(cycle), Arc::clone(&stop), Arc::clone(&done));
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        cycle().await;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        let started = Instant::now();
        tokio::time::sleep(settings.window).await; // the measuring window
        stop.store(true, Ordering::Relaxed);
        let elapsed = started.elapsed();
        let count = done.load(Ordering::Relaxed);
        for worker in workers {
            worker.await.unwrap();
        }
        if round > 0 {
            // (the first round warms up)
            rounds.push(count as f64 / elapsed.as_secs_f64());
        }
    }
    Figure::rate(&mut rounds)
}

/// Release-to-acquire latency: `b` waits for the lock `a` holds; `a` releases.
async fn pals_handoffs(settings: &Settings, a: &Locker, b: &Locker) -> (Figure, Figure) {
    let mut samples = Vec::new();
    let (lock_a, lock_b) = (a.lock("handoff"), b.lock("handoff"));
    let mut holder = lock_a.acquire().await.unwrap();
    let mut holder_is_a = true;
    for _ in 0..settings.handoffs {
        let waiter = if holder_is_a {
            lock_b.clone()
        } else {
            lock_a.clone()
        };
        let waiting = tokio::spawn(async move {
            let guard = waiter.acquire().await.unwrap();
            (Instant::now(), guard)
        });
        // Give the waiter time to reach the server and queue there (a benchmark's pacing).
        tokio::time::sleep(Duration::from_millis(3)).await;
        let released_at = Instant::now();
        assert!(holder.release().await.unwrap());
        let (acquired_at, guard) = waiting.await.unwrap();
        samples.push(acquired_at.duration_since(released_at).as_secs_f64() * 1e6);
        holder = guard;
        holder_is_a = !holder_is_a;
    }
    drop(holder);
    percentiles(&mut samples)
}

async fn raw_handoffs(settings: &Settings, app: &str) -> (Figure, Figure) {
    let clients = raw_clients(&settings.url, 2).await;
    let key = pals::key(app, "raw-handoff");
    let mut samples = Vec::new();
    let mut holder = 0;
    clients[holder]
        .simple_query(&format!("SELECT pg_advisory_lock({key})"))
        .await
        .unwrap();
    for _ in 0..settings.handoffs {
        let waiter = Arc::clone(&clients[1 - holder]);
        let waiting = tokio::spawn(async move {
            waiter
                .simple_query(&format!("SELECT pg_advisory_lock({key})"))
                .await
                .unwrap();
            Instant::now()
        });
        tokio::time::sleep(Duration::from_millis(3)).await;
        let released_at = Instant::now();
        clients[holder]
            .simple_query(&format!("SELECT pg_advisory_unlock({key})"))
            .await
            .unwrap();
        let acquired_at = waiting.await.unwrap();
        samples.push(acquired_at.duration_since(released_at).as_secs_f64() * 1e6);
        holder = 1 - holder;
    }
    clients[holder]
        .simple_query(&format!("SELECT pg_advisory_unlock({key})"))
        .await
        .unwrap();
    percentiles(&mut samples)
}

fn percentiles(samples: &mut [f64]) -> (Figure, Figure) {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    let (p50, p99) = (at(0.5), at(0.99));
    (
        Figure::Micros {
            median: p50,
            low: samples[0],
            high: at(0.9),
        },
        Figure::Micros {
            median: p99,
            low: at(0.9),
            high: samples[samples.len() - 1],
        },
    )
}

/// Takes `n` locks with try_acquire, 64 at a time, holds them, then releases them all.
async fn scale(settings: &Settings, app: &str, n: usize) -> Vec<Row> {
    let scale_app = format!("{app}-scale-{n}");
    let locker = Locker::new(&scale_app, &settings.url).unwrap();
    let probe = raw_client(&settings.url).await;
    // Warm the pool (64 at once opens every connection the carriers may use), so that the
    // figures are for locking rather than connecting.
    let warm: Vec<_> = (0..64)
        .map(|i| {
            let lock = locker.lock(&format!("warm-{i}"));
            tokio::spawn(async move { lock.try_acquire().await.unwrap().expect("free") })
        })
        .collect();
    for guard in warm {
        assert!(guard.await.unwrap().release().await.unwrap());
    }

    let bytes_before = HELD_BYTES.load(Ordering::Relaxed);
    let started = Instant::now();
    let mut guards = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(64) {
        let attempts: Vec<_> = chunk
            .iter()
            .map(|i| {
                let lock = locker.lock(&format!("lock-{i}"));
                tokio::spawn(async move { lock.try_acquire().await.unwrap().expect("free") })
            })
            .collect();
        for attempt in attempts {
            guards.push(attempt.await.unwrap());
        }
    }
    let take = started.elapsed();
    let bytes_per_lock = (HELD_BYTES.load(Ordering::Relaxed) - bytes_before) as f64 / n as f64;
    let connections: i64 = probe
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            &[&pals::application_name(&scale_app)],
        )
        .await
        .unwrap()
        .get(0);
    let started = Instant::now();
    let releases: Vec<_> = guards
        .into_iter()
        .map(|g| tokio::spawn(g.release()))
        .collect();
    for release in releases {
        assert!(release.await.unwrap().unwrap());
    }
    let release = started.elapsed();

    // The raw driver on one connection, 64 in flight (pipelined).
    let raw = Arc::new(raw_client(&settings.url).await);
    let keys: Vec<i64> = (0..n)
        .map(|i| pals::key(&scale_app, &format!("raw-{i}")))
        .collect();
    let raw_take = pipelined(&raw, &keys, "pg_try_advisory_lock").await;
    let raw_release = pipelined(&raw, &keys, "pg_advisory_unlock").await;

    let ms = |d: Duration| Figure::Micros {
        median: d.as_secs_f64() * 1e3,
        low: f64::NAN,
        high: f64::NAN,
    };
    vec![
        Row {
            scenario: format!("6  take {n} locks, ms (raw: 1 connection)"),
            pals: ms(take),
            baseline: ms(raw_take),
        },
        Row {
            scenario: format!("6  connections used for {n} locks"),
            pals: Figure::Count(connections as f64),
            baseline: Figure::Count(1.0),
        },
        Row {
            scenario: format!("6  release {n} locks, ms (raw: 1 connection)"),
            pals: ms(release),
            baseline: ms(raw_release),
        },
        Row {
            scenario: format!("6  bytes per held lock at {n}"),
            pals: Figure::Count(bytes_per_lock),
            baseline: Figure::Text("-"),
        },
    ]
}

/// Runs `SELECT function(key)` for every key on one raw connection, 64 in flight; the time.
async fn pipelined(raw: &Arc<Client>, keys: &[i64], function: &str) -> Duration {
    let started = Instant::now();
    for chunk in keys.chunks(64) {
        let statements: Vec<_> = chunk
            .iter()
            .map(|key| {
                let (raw, sql) = (Arc::clone(raw), format!("SELECT {function}({key})"));
                tokio::spawn(async move { raw.simple_query(&sql).await.unwrap() })
            })
            .collect();
        for statement in statements {
            statement.await.unwrap();
        }
    }
    started.elapsed()
}

/// pals' cycle and Python PALs' try-acquire + release, in rounds that alternate: the
/// median time per cycle of each, or why Python did not run (then no pals figure).
async fn python_rounds<P, PF>(
    settings: &Settings,
    app: &str,
    mut pals: P,
) -> (Option<Figure>, Figure)
where
    P: FnMut() -> PF,
    PF: Future<Output = ()>,
{
    let mut python = match PythonPeer::start(settings, &format!("{app}-py")) {
        Ok(python) => python,
        Err(why) => return (None, Figure::Text(why)),
    };
    // Python runs about ten times slower: fewer cycles a round keep its rounds short.
    let python_cycles = (settings.cycles / 4).max(50);
    let (mut pals_rounds, mut python_rounds) = (Vec::new(), Vec::new());
    for _ in 0..settings.rounds {
        let started = Instant::now();
        for _ in 0..settings.cycles {
            pals().await;
        }
        pals_rounds.push(started.elapsed().as_secs_f64() * 1e6 / settings.cycles as f64);
        // (Blocks this thread while Python runs: nothing else is in flight meanwhile.)
        match python.round(python_cycles) {
            Some(micros) => python_rounds.push(micros),
            None => return (None, Figure::Text("not run (PALs failed: see stderr)")),
        }
    }
    (
        Some(Figure::micros(&mut pals_rounds)),
        Figure::micros(&mut python_rounds),
    )
}

/// A Python child process running `python/pals_cycles.py`: Python PALs' own cycle, timed
/// in Python (its start and imports are not timed).
struct PythonPeer {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl PythonPeer {
    /// Starts the peer with the interpreter `PALS_PYTHON` names, else the one in
    /// `target/pals-venv` (which `.ci/run` and the interop test make), once it is warm.
    fn start(settings: &Settings, app: &str) -> Result<PythonPeer, &'static str> {
        let python = match std::env::var_os("PALS_PYTHON") {
            Some(python) => PathBuf::from(python),
            None => {
                let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("../target/pals-venv/bin/python");
                if !venv.exists() {
                    return Err("not run (set PALS_PYTHON)");
                }
                venv
            }
        };
        // SQLAlchemy's spelling of the URL, with the psycopg (3) driver.
        let Some(rest) = settings
            .url
            .strip_prefix("postgresql://")
            .or_else(|| settings.url.strip_prefix("postgres://"))
        else {
            return Err("not run (URL not postgresql://)");
        };
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/pals_cycles.py");
        let Ok(mut child) = Command::new(&python)
            .arg(script)
            .arg(format!("postgresql+psycopg://{rest}"))
            .arg(app)
            .arg("one")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
        else {
            return Err("not run (PALS_PYTHON does not start)");
        };
        let mut peer = PythonPeer {
            stdin: child.stdin.take(),
            stdout: BufReader::new(child.stdout.take().unwrap()),
            child,
        };
        match peer.line().as_deref() {
            Some("ready") => Ok(peer),
            _ => Err("not run (PALs failed: see stderr)"),
        }
    }

    /// Runs `cycles` cycles; the microseconds per cycle, None if the peer failed.
    fn round(&mut self, cycles: usize) -> Option<f64> {
        writeln!(self.stdin.as_mut()?, "{cycles}").ok()?;
        self.line()?.parse().ok()
    }

    fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(n) if n > 0 => Some(line.trim().to_string()),
            _ => None,
        }
    }
}

impl Drop for PythonPeer {
    fn drop(&mut self) {
        drop(self.stdin.take()); // EOF: the peer exits
        let _ = self.child.wait();
    }
}

fn print_table(rows: &[Row], quick: bool) {
    println!();
    println!(
        "pals locking benchmark{}",
        if quick {
            " (--quick: rough figures)"
        } else {
            ""
        }
    );
    println!(
        "{:<47} {:>24} {:>24} {:>6}",
        "scenario", "pals", "baseline", "ratio"
    );
    for row in rows {
        let ratio = match (row.pals.value(), row.baseline.value()) {
            (Some(p), Some(b)) if b > 0.0 => format!("{:.2}", p / b),
            _ => "-".into(),
        };
        let show = |f: Figure| match f {
            Figure::Micros { median, low, .. } if low.is_nan() => format!("{median:.1}"),
            other => other.show(),
        };
        println!(
            "{:<47} {:>24} {:>24} {:>6}",
            row.scenario,
            show(row.pals),
            show(row.baseline),
            ratio
        );
    }
    println!(
        "(baseline: raw tokio-postgres, its connection spawned on the bench's runtime, unless"
    );
    println!(" the row names another; ratio: pals / baseline; for µs and ms lower is better, for");
    println!(" rates higher is better)");
}
