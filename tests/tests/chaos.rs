//! Chaos: three worker processes take, hold and let go of a few locks (`try_acquire`,
//! `acquire_timeout`, `acquire`; `release` or drop; one lock fenced) while this test
//! SIGKILLs workers (and starts replacements), terminates the backends that hold the app's
//! locks, and sends storms of query cancels. From what the workers recorded: no two holders
//! of a lock overlapped outside the window where the earlier one had lost it on the server
//! but had not been told yet, and no lock was left held for nobody.
//!
//! The workers are `pals_chaos_worker` processes (their side: `pals_tests::chaos`).
//! Every instant is `SystemTime` in microseconds: one clock for the processes of a machine.
//!
//! # When a hold ends
//!
//! A worker records a hold's start once the grant has returned, and its end before it lets
//! go (release or drop): for a holder that kept its lock, the recorded span lies within the
//! server's. A holder that lost its lock learns it after the server freed it; its span ends:
//! - at the instant this test took just before `pg_terminate_backend` of its backend, if
//!   that came before the recorded end (at the start if it came before the start: a grant
//!   handed over on a session already terminated held nothing on the server);
//! - at the instant this test took just before SIGKILL, for a worker killed mid-hold;
//! - otherwise, when told of the loss (`lost()` or `is_held()`), at the last instant it
//!   saw `is_held()` true: pals marks a session's locks lost before it closes the session
//!   itself (heartbeat unanswered, an outcome it could not settle), so the server still
//!   held the lock then.
//!
//! Two spans of one lock that still overlap are a double holding, whatever the load: each
//! bound above is on the safe side of the server's own instant.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pals_tests::chaos::{FENCED, IDLE, NAMES};
use pals_tests::{db_url, eventually, locker, micros_now, unique_app, TempDir, TestSchema};

const WORKERS: usize = 3;
/// How long the workers take locks and the faults go on.
const CHAOS: Duration = Duration::from_secs(25);
/// How often one holder's backend is terminated, and a storm of cancels sent.
const TERMINATE_EVERY: Duration = Duration::from_millis(600);
const STORM_EVERY: Duration = Duration::from_millis(250);
/// Cancel rounds per storm (each cancels every backend of the app).
const STORM_ROUNDS: usize = 10;
/// Bound on the server freeing what nobody holds any more: a killed worker's waiting
/// backend stays queued until its lock timeout (2 s); the rest is slack for a loaded host.
const FREED_WITHIN: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// The test's side: the workers, the faults, the checks.

/// A connection of the test's own, kept for the whole run (cancel storms need speed).
struct Probe {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl Probe {
    fn connect() -> Probe {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = rt.block_on(async {
            let (client, connection) = tokio_postgres::connect(&db_url(), tokio_postgres::NoTls)
                .await
                .expect("the test connects");
            tokio::spawn(connection);
            client
        });
        Probe { rt, client }
    }

    /// The first column of each row of `sql`.
    fn column(&self, sql: &str) -> Vec<String> {
        let messages = self
            .rt
            .block_on(self.client.simple_query(sql))
            .unwrap_or_else(|e| panic!("`{sql}` failed: {e:?}"));
        messages
            .into_iter()
            .filter_map(|message| match message {
                tokio_postgres::SimpleQueryMessage::Row(row) => {
                    Some(row.get(0).unwrap_or_default().to_string())
                }
                _ => None,
            })
            .collect()
    }

    fn count(&self, sql: &str) -> i64 {
        self.column(sql)[0].parse().unwrap()
    }
}

/// What the run is about: the app, and where its workers write.
struct Run {
    app: String,
    schema: TestSchema,
    journals: TempDir,
    until: i64,
    /// The advisory keys of [`NAMES`], as `(classid, objid)` in `pg_locks`.
    keys: Vec<(u32, u32)>,
    probe: Probe,
}

impl Run {
    fn new() -> Run {
        let app = unique_app("chaos");
        let locker = locker(&app); // no I/O: for the keys
        let keys = NAMES
            .iter()
            .map(|name| {
                let key = locker.lock(name).key() as u64;
                ((key >> 32) as u32, key as u32)
            })
            .collect();
        Run {
            app,
            schema: TestSchema::new("chaos"),
            journals: TempDir::new("chaos"),
            until: micros_now() + CHAOS.as_micros() as i64,
            keys,
            probe: Probe::connect(),
        }
    }

    /// `pg_stat_activity` rows of the app's sessions are `a`.
    fn of_app(&self) -> String {
        format!("a.application_name LIKE 'pals:{}@%'", self.app)
    }

    /// Rows of `pg_locks` (as `l`, with `pg_stat_activity` as `a`) on the app's keys,
    /// whoever holds or awaits them, and that match `and`.
    fn locks_where(&self, and: &str) -> i64 {
        let keys: Vec<String> = (self.keys.iter())
            .map(|(class, obj)| format!("('{class}'::oid, '{obj}'::oid)"))
            .collect();
        let sql = format!(
            "SELECT count(*) FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.objsubid = 1 \
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
               AND (l.classid, l.objid) IN ({}) AND ({and})",
            keys.join(", ")
        );
        self.probe.count(&sql)
    }
}

/// The worker processes, SIGKILLed when this is dropped, however the test ends.
struct Workers {
    running: Vec<(usize, Child)>,
    started: usize,
    lines: mpsc::Receiver<(usize, String)>,
    send: mpsc::Sender<(usize, String)>,
}

impl Workers {
    fn start(run: &Run) -> Workers {
        let (send, lines) = mpsc::channel();
        let mut workers = Workers {
            running: Vec::new(),
            started: 0,
            lines,
            send,
        };
        for _ in 0..WORKERS {
            workers.start_one(run);
        }
        workers
    }

    fn start_one(&mut self, run: &Run) {
        let index = self.started;
        self.started += 1;
        let mut child = Command::new(env!("CARGO_BIN_EXE_pals_chaos_worker"))
            .env("PALS_CHAOS_WORKER", index.to_string())
            .env("PALS_CHAOS_APP", &run.app)
            .env("PALS_CHAOS_SCHEMA", run.schema.name())
            .env("PALS_CHAOS_DIR", run.journals.path())
            .env("PALS_CHAOS_UNTIL", run.until.to_string())
            .env("PALS_DB_URL", db_url())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("a worker starts");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let send = self.send.clone();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if send.send((index, line)).is_err() {
                    return;
                }
            }
        });
        self.running.push((index, child));
    }

    /// SIGKILLs the worker that runs the longest, and starts another in its place.
    fn kill_one(&mut self, run: &Run, faults: &mut Faults) {
        let (index, mut child) = self.running.remove(0);
        faults.killed.insert(index, (micros_now(), child.id()));
        child.kill().expect("SIGKILL a worker");
        let _ = child.wait();
        self.start_one(run);
    }

    /// Waits until every running worker said it is done: it holds nothing and takes
    /// nothing any more.
    fn wait_idle(&self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        let running: HashSet<usize> = self.running.iter().map(|(index, _)| *index).collect();
        let mut idle = HashSet::new();
        while idle != running {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((index, line)) if line.contains(IDLE) => {
                    idle.insert(index);
                }
                Ok(_) => {}
                Err(_) => {
                    let late: Vec<_> = running.difference(&idle).collect();
                    return Err(format!("workers {late:?} were not done within {within:?}"));
                }
            }
        }
        Ok(())
    }

    /// Closes the workers' stdin, which ends them; what went wrong with their exits.
    fn finish(&mut self, within: Duration) -> Vec<String> {
        for (_, child) in &mut self.running {
            drop(child.stdin.take());
        }
        let running = &mut self.running;
        eventually(within, || {
            (running.iter_mut()).all(|(_, child)| matches!(child.try_wait(), Ok(Some(_))))
        });
        let mut problems = Vec::new();
        for (index, child) in &mut self.running {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => {}
                Ok(Some(status)) => problems.push(format!("worker {index} ended with {status}")),
                _ => problems.push(format!("worker {index} did not exit within {within:?}")),
            }
        }
        problems
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for (_, child) in &mut self.running {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The faults injected, with the instants that bound the server's frees.
#[derive(Default)]
struct Faults {
    /// Per killed worker: the instant taken just before its SIGKILL, and its process id.
    killed: HashMap<usize, (i64, u32)>,
    /// Per terminated backend: the instants taken just before each `pg_terminate_backend`.
    terminated: HashMap<i32, Vec<i64>>,
    terminates: usize,
    cancels: usize,
    storms: usize,
}

fn micros(duration: Duration) -> i64 {
    duration.as_micros() as i64
}

/// Until the run's end: two workers SIGKILLed (at 30% and 65% of it), a holder's backend
/// terminated every [`TERMINATE_EVERY`], a cancel storm every [`STORM_EVERY`].
fn inject_faults(run: &Run, workers: &mut Workers) -> Faults {
    let mut faults = Faults::default();
    let start = micros_now();
    let chaos = run.until - start;
    let mut kills = vec![start + chaos * 3 / 10, start + chaos * 13 / 20];
    let mut terminate_at = start + micros(TERMINATE_EVERY);
    let mut storm_at = start + micros(STORM_EVERY);
    loop {
        let now = micros_now();
        if now >= run.until {
            return faults;
        }
        if kills.first().is_some_and(|&at| now >= at) {
            kills.remove(0);
            workers.kill_one(run, &mut faults);
        }
        if now >= terminate_at {
            terminate_a_holder(run, &mut faults);
            terminate_at = now + micros(TERMINATE_EVERY);
        }
        if now >= storm_at {
            cancel_storm(run, &mut faults);
            storm_at = now + micros(STORM_EVERY);
        }
        let next = [terminate_at, storm_at, run.until].into_iter();
        let next = next.chain(kills.first().copied()).min().unwrap();
        // A schedule, not a wait for anything: the faults come at their own pace.
        let pause = (next - micros_now()).max(0) as u64;
        std::thread::sleep(Duration::from_micros(pause));
    }
}

/// Terminates the backend of one session (at random) that holds a lock of the app.
fn terminate_a_holder(run: &Run, faults: &mut Faults) {
    let at = micros_now(); // before: the server frees the locks after this instant
    let sql = format!(
        "WITH holder AS MATERIALIZED ( \
           SELECT pid FROM (SELECT DISTINCT l.pid FROM pg_locks l \
             JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE {} AND l.locktype = 'advisory' AND l.granted) holders \
           ORDER BY random() LIMIT 1) \
         SELECT pid FROM holder WHERE pg_terminate_backend(pid)",
        run.of_app()
    );
    for pid in run.probe.column(&sql) {
        let pid = pid.parse().unwrap();
        faults.terminated.entry(pid).or_default().push(at);
        faults.terminates += 1;
    }
}

/// [`STORM_ROUNDS`] rounds of `pg_cancel_backend` on every session of the app.
fn cancel_storm(run: &Run, faults: &mut Faults) {
    // Materialized first: the cancel never runs on another app's session.
    let sql = format!(
        "WITH mine AS MATERIALIZED (SELECT a.pid FROM pg_stat_activity a WHERE {}) \
         SELECT pid FROM mine WHERE pg_cancel_backend(pid)",
        run.of_app()
    );
    for _ in 0..STORM_ROUNDS {
        faults.cancels += run.probe.column(&sql).len();
    }
    faults.storms += 1;
}

/// Locks held for nobody, once the faults stop: none by a backend whose worker was killed
/// (while the other workers still run), none at all once the workers are done, nor once
/// they have exited. How many were left after [`FREED_WITHIN`]; what else went wrong goes
/// to `problems`.
fn held_for_nobody(
    run: &Run,
    workers: &mut Workers,
    faults: &Faults,
    problems: &mut Vec<String>,
) -> i64 {
    let of_killed: Vec<String> = (faults.killed.values())
        .map(|(_, pid)| format!("a.application_name LIKE 'pals:{}@%:{pid}'", run.app))
        .chain(["false".to_string()])
        .collect();
    let of_killed = format!("l.granted AND ({})", of_killed.join(" OR "));
    let mut left = 0;
    let mut settle = |when: &str, and: &str, problems: &mut Vec<String>| {
        let mut held = 0;
        if !eventually(FREED_WITHIN, || {
            held = run.locks_where(and);
            held == 0
        }) {
            problems.push(format!("{held} lock(s) held for nobody {when}"));
            left += held;
        }
    };
    settle("by killed workers' backends", &of_killed, problems);
    match workers.wait_idle(Duration::from_secs(20)) {
        Ok(()) => settle("while the workers are idle", "true", problems),
        Err(late) => problems.push(late),
    }
    problems.extend(workers.finish(Duration::from_secs(10)));
    settle("after the workers exited", "true", problems);
    left
}

/// One hold, as its worker journaled it.
struct Hold {
    worker: usize,
    id: u64,
    name: String,
    pid: i32,
    start: i64,
    /// `None`: the worker was killed before it let go.
    end: Option<i64>,
    /// Told of a loss before it let go; `confirmed` is the last instant it saw it held.
    told: bool,
    confirmed: i64,
    fence: Option<u64>,
}

/// Every worker's holds, and a tally of the rest of their journals (acquires that got no
/// lock, how holds were let go).
fn read_journals(run: &Run, workers: usize) -> (Vec<Hold>, BTreeMap<String, usize>) {
    let (mut holds, mut tally) = (Vec::new(), BTreeMap::new());
    for worker in 0..workers {
        let path: PathBuf = run.journals.path().join(format!("w{worker}"));
        // No file: a worker killed before it opened it.
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let mut mine: HashMap<u64, usize> = HashMap::new();
        for line in text.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let id = || fields[1].parse::<u64>().ok();
            let field = |n: usize| fields.get(n).and_then(|f| f.parse::<i64>().ok());
            match (fields[0], id()) {
                ("S", Some(id)) if fields.len() == 6 => {
                    mine.insert(id, holds.len());
                    holds.push(Hold {
                        worker,
                        id,
                        name: fields[2].to_string(),
                        pid: field(3).unwrap() as i32,
                        start: field(4).unwrap(),
                        end: None,
                        told: false,
                        confirmed: 0,
                        fence: fields[5].parse().ok(),
                    });
                }
                // A line cut short by a SIGKILL is left out: the kill ends that hold.
                ("E", Some(id)) if field(4).is_some() => {
                    let hold = &mut holds[mine[&id]];
                    hold.end = field(2);
                    hold.told = fields[3] == "told";
                    hold.confirmed = field(4).unwrap();
                }
                ("O", Some(_)) => *tally.entry(fields[2..].join(" ")).or_default() += 1,
                ("X", _) => *tally.entry(fields[1..].join(" ")).or_default() += 1,
                _ => {}
            }
        }
    }
    (holds, tally)
}

/// Where `hold` ended for the server's purposes, at the latest (see the module's doc).
fn effective_end(hold: &Hold, faults: &Faults) -> i64 {
    let recorded = match (hold.end, faults.killed.get(&hold.worker)) {
        (Some(end), _) => end,
        (None, Some((killed_at, _))) => *killed_at,
        (None, None) => panic!(
            "worker {} never let go of hold {} and was not killed",
            hold.worker, hold.id
        ),
    };
    let mut end = if hold.told { hold.confirmed } else { recorded };
    let terminated = faults.terminated.get(&hold.pid).into_iter().flatten();
    // The latest before the end: an earlier one was of a backend whose pid was reused.
    if let Some(at) = terminated.filter(|at| **at < recorded).max() {
        end = end.min(*at);
    }
    end.max(hold.start)
}

fn describe(hold: &Hold, end: i64) -> String {
    format!(
        "worker {} hold {} of {:?} (backend {}, fence {:?}) over [{}, {end}] µs{}",
        hold.worker,
        hold.id,
        hold.name,
        hold.pid,
        hold.fence,
        hold.start,
        if hold.told { ", told of a loss" } else { "" }
    )
}

/// A hold with its span as the server saw it at most: `(start, end, hold)`.
type Span<'h> = (i64, i64, &'h Hold);

/// Holds of one lock, by start, whose spans overlap an earlier one's.
fn overlaps(spans: &[Span], found: &mut Vec<String>) {
    let mut reach: Option<Span> = None; // the span that ends last so far
    for &(start, end, hold) in spans.iter().filter(|(start, end, _)| end > start) {
        if let Some((_, until, earlier)) = reach.filter(|(_, until, _)| start < *until) {
            found.push(format!(
                "{} overlaps {} by {} µs",
                describe(hold, end),
                describe(earlier, until),
                until.min(end) - start
            ));
        }
        let reaches_further = match reach {
            Some((_, until, _)) => end > until,
            None => true,
        };
        if reaches_further {
            reach = Some((start, end, hold));
        }
    }
}

/// Fenced holds, by start, whose token is not greater than the one before; a token granted
/// twice; a fenced grant without one.
fn fence_disorder(spans: &[Span], found: &mut Vec<String>) {
    let held: Vec<&Span> = spans.iter().filter(|(start, end, _)| end > start).collect();
    for pair in held.windows(2) {
        let ((_, end_a, a), (_, end_b, b)) = (pair[0], pair[1]);
        if a.fence >= b.fence {
            found.push(format!(
                "{} then {}",
                describe(a, *end_a),
                describe(b, *end_b)
            ));
        }
    }
    let mut seen = HashSet::new();
    for (_, end, hold) in spans {
        if !hold.fence.is_some_and(|fence| seen.insert(fence)) {
            found.push(format!("token of {} not unique", describe(hold, *end)));
        }
    }
}

/// Overlaps outside the detection window, and fencing tokens out of order.
fn check(holds: &[Hold], faults: &Faults) -> (Vec<String>, Vec<String>) {
    let mut by_name: BTreeMap<&str, Vec<Span>> = BTreeMap::new();
    for hold in holds {
        let span = (hold.start, effective_end(hold, faults), hold);
        by_name.entry(&hold.name).or_default().push(span);
    }
    let (mut overlapping, mut disordered) = (Vec::new(), Vec::new());
    for (name, spans) in &mut by_name {
        spans.sort_by_key(|(start, end, _)| (*start, *end));
        overlaps(spans, &mut overlapping);
        if *name == FENCED {
            fence_disorder(spans, &mut disordered);
        }
    }
    (overlapping, disordered)
}

#[test]
fn no_two_holders_under_kills_terminations_and_cancel_storms() {
    let run = Run::new();
    let mut workers = Workers::start(&run);
    let faults = inject_faults(&run, &mut workers);
    let mut problems = Vec::new();
    let nobody = held_for_nobody(&run, &mut workers, &faults, &mut problems);
    let (holds, tally) = read_journals(&run, workers.started);
    let (overlapping, disordered) = check(&holds, &faults);
    let told = holds.iter().filter(|hold| hold.told).count();
    println!(
        "chaos: {} intervals ({told} told of a loss), by {} workers; faults: {} SIGKILL, \
         {} backends terminated, {} cancels in {} storms; overlaps outside the window: {}; \
         fencing tokens out of order: {}; held for nobody: {nobody}\nchaos: {tally:?}",
        holds.len(),
        workers.started,
        faults.killed.len(),
        faults.terminates,
        faults.cancels,
        faults.storms,
        overlapping.len(),
        disordered.len(),
    );
    let first = |found: &[String]| found.iter().take(5).cloned().collect::<Vec<_>>().join("\n");
    assert!(
        overlapping.is_empty(),
        "two holders:\n{}",
        first(&overlapping)
    );
    assert!(disordered.is_empty(), "fencing:\n{}", first(&disordered));
    assert!(problems.is_empty() && nobody == 0, "{problems:#?}");
    let misconfigured = tally
        .keys()
        .filter(|what| what.contains("MISCONFIGURATION"));
    assert_eq!(
        misconfigured.count(),
        0,
        "a fault taken for a mistake: {tally:?}"
    );
    // The run did what it is about: many holds, every kind of fault, losses noticed.
    assert!(holds.len() >= 100, "only {} holds", holds.len());
    assert_eq!(faults.killed.len(), 2);
    assert!(faults.terminates > 0 && faults.cancels > 0 && told > 0);
}
