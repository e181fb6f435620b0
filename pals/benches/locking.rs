//! pals against the raw-driver limit: `cargo bench -p pals --bench locking [-- --quick]`.
//!
//! Runs against `PALS_DB_URL` (default: the docker-compose database) and prints one table:
//! every pals figure beside the raw tokio-postgres figure measured in the same run, and
//! their ratio. Medians over several rounds, with the spread (lowest..highest round).
//! `--quick` runs few rounds, for CI to keep this program working; its figures are rough.

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pals::Locker;
use tokio_postgres::{Client, NoTls};

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

/// One row of the table.
struct Row {
    scenario: String,
    pals: Figure,
    raw: Figure,
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
            &std::env::var("PALS_DB_URL")
                .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:54321/postgres".into()),
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
    // The raw client for scenario 1 runs its connection on a thread of its own, as pals
    // does: the same architecture, minus the library. (Reference rows below show the raw
    // driver with its connection on the caller's runtime, and on the caller's own thread.)
    let (raw, _raw_thread) = raw_client_on_own_thread(&settings.url);
    let raw_try = raw
        .prepare("SELECT pg_try_advisory_lock($1)")
        .await
        .unwrap();
    let raw_unlock = raw.prepare("SELECT pg_advisory_unlock($1)").await.unwrap();
    let raw_key = pals::key(&app, "raw");
    let raw_cycle = || async {
        let got: bool = raw.query_one(&raw_try, &[&raw_key]).await.unwrap().get(0);
        assert!(got);
        let _: bool = raw
            .query_one(&raw_unlock, &[&raw_key])
            .await
            .unwrap()
            .get(0);
    };

    // 1. Uncontended cycle, one task; each measured interleaved with the raw cycle, so that
    // both see the same machine (loopback latency here swings between modes over seconds).
    let lock = locker.lock("one");
    let (figure, raw_figure) = paired(
        settings,
        || async {
            let guard = lock.try_acquire().await.unwrap().expect("free");
            assert!(guard.release().await.unwrap());
        },
        raw_cycle,
    )
    .await;
    rows.push(Row {
        scenario: "1a uncontended try_acquire + release".into(),
        pals: figure,
        raw: raw_figure,
    });
    let (figure, raw_figure) = paired(
        settings,
        || async {
            let guard = lock.acquire().await.unwrap();
            assert!(guard.release().await.unwrap());
        },
        raw_cycle,
    )
    .await;
    rows.push(Row {
        scenario: "1b uncontended acquire + release".into(),
        pals: figure,
        raw: raw_figure,
    });
    let (figure, raw_figure) = paired(
        settings,
        || async {
            drop(lock.acquire().await.unwrap()); // released in the background; the next waits for it
        },
        raw_cycle,
    )
    .await;
    rows.push(Row {
        scenario: "1c uncontended acquire + guard drop".into(),
        pals: figure,
        raw: raw_figure,
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
        || async {
            let guard = lock.try_acquire().await.unwrap().expect("free");
            assert!(guard.release().await.unwrap());
        },
    )
    .await;
    rows.push(Row {
        scenario: "1f fenced try_acquire + release (raw: pals unfenced)".into(),
        pals: figure,
        raw: plain_figure,
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
                raw_cycle,
            )
            .await;
            rows.push(Row {
                scenario: "1t try_acquire + release over TLS (raw: plain)".into(),
                pals: figure,
                raw: raw_figure,
            });
        }
    }

    // Reference: the raw driver as most applications run it (connection spawned on the
    // caller's multi-thread runtime: on the caller's worker or not, as tokio schedules it),
    // and its floor (caller and connection on one current-thread runtime: no thread hop).
    let typical = raw_client(&settings.url).await;
    let typical_figure = per_cycle(settings, || raw_try_unlock(&typical, raw_key)).await;
    rows.push(Row {
        scenario: "1r raw, connection on the caller's runtime".into(),
        pals: rows[0].pals,
        raw: typical_figure,
    });
    let floor = raw_floor(settings, raw_key);
    rows.push(Row {
        scenario: "1r raw, caller and connection on one thread".into(),
        pals: rows[0].pals,
        raw: floor,
    });

    // 2. Throughput: 64 tasks on 64 names, pool 16, against 16 raw connections.
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
    rows.push(Row {
        scenario: "2  throughput, 64 tasks x 64 names, 16 connections".into(),
        pals: pals_rate,
        raw: raw_rate,
    });

    // 3. Handoff latency between two processes' worth of lockers.
    let (a, b) = (
        Locker::new(format!("{app}-ho"), &settings.url).unwrap(),
        Locker::new(format!("{app}-ho"), &settings.url).unwrap(),
    );
    let (p50, p99) = pals_handoffs(settings, &a, &b).await;
    let (raw50, raw99) = raw_handoffs(settings, &app).await;
    rows.push(Row {
        scenario: "3  handoff between two lockers, p50".into(),
        pals: p50,
        raw: raw50,
    });
    rows.push(Row {
        scenario: "3  handoff between two lockers, p99".into(),
        pals: p99,
        raw: raw99,
    });

    // 4. In-process contention: 64 tasks on one name.
    let contended = locker.lock("contended");
    let pals_rate = throughput(settings, 64, |_| {
        let lock = contended.clone();
        move || {
            let lock = lock.clone();
            async move {
                let guard = lock.acquire().await.unwrap();
                guard.release().await.unwrap();
            }
        }
    })
    .await;
    let contended_key = pals::key(&app, "raw-contended");
    let raw_rate = throughput(settings, 64, |task| {
        let client = Arc::clone(&raws[task % raws.len()]);
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
    .await;
    rows.push(Row {
        scenario: "4  handoffs, 64 tasks on one name".into(),
        pals: pals_rate,
        raw: raw_rate,
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
        scenario: "5  #[pals::exclusive] empty async fn (raw: by hand)".into(),
        pals: figure,
        raw: hand,
    });

    // 6. Thousands of locks held at once.
    for &n in &settings.scale {
        rows.extend(scale(settings, &app, n).await);
    }
    rows
}

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

async fn raw_try_unlock(client: &Client, key: i64) {
    let got: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
        .await
        .unwrap()
        .get(0);
    assert!(got);
    client
        .query_one("SELECT pg_advisory_unlock($1)", &[&key])
        .await
        .unwrap();
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
            let client = raw_client(&url).await;
            let try_lock = client
                .prepare("SELECT pg_try_advisory_lock($1)")
                .await
                .unwrap();
            let unlock = client
                .prepare("SELECT pg_advisory_unlock($1)")
                .await
                .unwrap();
            let settings = Settings {
                url,
                rounds,
                cycles,
                window: Duration::ZERO,
                handoffs: 0,
                scale: vec![],
            };
            per_cycle(&settings, || async {
                let got: bool = client.query_one(&try_lock, &[&key]).await.unwrap().get(0);
                assert!(got);
                client.query_one(&unlock, &[&key]).await.unwrap();
            })
            .await
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

/// Median time per cycle of `pals` and of `raw` over the rounds, after a warm-up; the two
/// alternate in blocks of 200 cycles within each round.
async fn paired<P, PF, R, RF>(settings: &Settings, mut pals: P, mut raw: R) -> (Figure, Figure)
where
    P: FnMut() -> PF,
    PF: Future<Output = ()>,
    R: FnMut() -> RF,
    RF: Future<Output = ()>,
{
    const BLOCK: usize = 200;
    // Warm up well: the first few hundred cycles here run slow (caches, CPU frequency,
    // threads settling on cores), which would be measured as noise.
    for _ in 0..1000 {
        pals().await;
        raw().await;
    }
    let blocks = settings.cycles.div_ceil(BLOCK);
    let (mut pals_rounds, mut raw_rounds) = (Vec::new(), Vec::new());
    for _ in 0..settings.rounds {
        let (mut pals_time, mut raw_time) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..blocks {
            let started = Instant::now();
            for _ in 0..BLOCK {
                pals().await;
            }
            pals_time += started.elapsed();
            let started = Instant::now();
            for _ in 0..BLOCK {
                raw().await;
            }
            raw_time += started.elapsed();
        }
        let cycles = (blocks * BLOCK) as f64;
        pals_rounds.push(pals_time.as_secs_f64() * 1e6 / cycles);
        raw_rounds.push(raw_time.as_secs_f64() * 1e6 / cycles);
    }
    (
        Figure::micros(&mut pals_rounds),
        Figure::micros(&mut raw_rounds),
    )
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
            raw: ms(raw_take),
        },
        Row {
            scenario: format!("6  connections used for {n} locks"),
            pals: Figure::Count(connections as f64),
            raw: Figure::Count(1.0),
        },
        Row {
            scenario: format!("6  release {n} locks, ms (raw: 1 connection)"),
            pals: ms(release),
            raw: ms(raw_release),
        },
        Row {
            scenario: format!("6  bytes per held lock at {n}"),
            pals: Figure::Count(bytes_per_lock),
            raw: Figure::Text("-"),
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

/// `url` with `sslmode=mode`, unless it names one already.
fn with_sslmode(url: &str, mode: &str) -> String {
    if url.contains("sslmode=") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&sslmode={mode}")
    } else {
        format!("{url}?sslmode={mode}")
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
        "{:<56} {:>28} {:>28} {:>7}",
        "scenario", "pals", "raw tokio-postgres", "ratio"
    );
    for row in rows {
        let ratio = match (row.pals.value(), row.raw.value()) {
            (Some(p), Some(r)) if r > 0.0 => format!("{:.2}", p / r),
            _ => "-".into(),
        };
        let show = |f: Figure| match f {
            Figure::Micros { median, low, .. } if low.is_nan() => format!("{median:.1}"),
            other => other.show(),
        };
        println!(
            "{:<56} {:>28} {:>28} {:>7}",
            row.scenario,
            show(row.pals),
            show(row.raw),
            ratio
        );
    }
    println!("(ratio: pals / raw; for µs and ms lower is better, for rates higher is better)");
}
