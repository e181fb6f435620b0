//! The examples as the replicas of a fleet run them: several processes at once against the
//! real server. `cargo test` builds the examples; the tests start their binaries.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pals_tests::{db_url, probe_i64, probe_query, unique_app};

/// The binary of example `name`, built by `cargo test` beside this test's own.
fn example(name: &str) -> Command {
    let mut path = std::env::current_exe().expect("the test binary");
    path.pop(); // deps
    if path.ends_with("deps") {
        path.pop();
    }
    let binary: PathBuf = path.join("examples").join(name);
    assert!(
        binary.exists(),
        "{} is missing: run the tests with `cargo test` at the workspace root, which builds the examples",
        binary.display()
    );
    let mut command = Command::new(binary);
    command.env("PALS_DB_URL", db_url()).stdout(Stdio::piped());
    command
}

/// Waits for `child` and returns its output, failing on a non-zero exit.
fn output_of(child: Child, what: &str) -> String {
    let output = child.wait_with_output().expect("the example ran");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{what} failed: {stdout}");
    stdout
}

/// The period of the scheduled_task example's job, in milliseconds.
const PERIOD_MS: i64 = 4000;

/// One firing, as a replica of the scheduled_task example prints it:
/// `fired HH:MM:SS.mmm (MS): ran: ...` or `...: skipped: ...`; `None` for other lines (the
/// history table it prints at exit).
fn firing(line: &str) -> Option<(i64, bool)> {
    let rest = line.strip_prefix("fired ")?;
    let (ms, outcome) = rest.split_once(" (")?.1.split_once("): ")?;
    let ran = match outcome.split(':').next()? {
        "ran" => true,
        "skipped" => false,
        _ => panic!("unexpected output: {line}"),
    };
    Some((
        ms.parse()
            .unwrap_or_else(|_| panic!("unexpected output: {line}")),
        ran,
    ))
}

#[test]
fn each_tick_of_a_cron_job_runs_once_across_replicas() {
    let app = unique_app("cron");
    let start = || {
        example("scheduled_task")
            .arg("3")
            .env("PALS_APP_NAME", &app)
            .spawn()
            .expect("start scheduled_task")
    };
    // Three replicas at once, and a fourth once the first has fired (a replica that starts
    // late: its first firing may be for a tick that ran).
    let mut first = start();
    let mut lines = BufReader::new(first.stdout.take().expect("piped")).lines();
    let first_line = lines.next().expect("a first firing").expect("output");
    let replicas = [start(), start(), start()];
    let mut outputs = vec![std::iter::once(Ok(first_line))
        .chain(lines)
        .collect::<Result<Vec<String>, _>>()
        .expect("output")
        .join("\n")];
    assert!(
        first.wait().expect("replica 0 ran").success(),
        "replica 0 failed"
    );
    for (n, replica) in replicas.into_iter().enumerate() {
        outputs.push(output_of(replica, &format!("replica {}", n + 1)));
    }
    // Each firing, by the tick it was for: the nearest multiple of the period. A firing
    // near the edge between two ticks cannot be told apart (the server, not this test,
    // reads the tick): none is judged by it.
    let mut ticks: BTreeMap<i64, (usize, usize)> = BTreeMap::new(); // tick -> (ran, skipped)
    let mut ran_lines = 0;
    for output in &outputs {
        for (ms, ran) in output.lines().filter_map(firing) {
            ran_lines += usize::from(ran);
            let tick = (ms + PERIOD_MS / 2).div_euclid(PERIOD_MS) * PERIOD_MS;
            if (ms - tick).abs() < PERIOD_MS / 2 - 100 {
                let entry = ticks.entry(tick).or_default();
                if ran {
                    entry.0 += 1
                } else {
                    entry.1 += 1
                }
            }
        }
    }
    println!("ticks (ran, skipped): {ticks:?}");
    // The history says the same: one row per run, each for a tick that was fired.
    let locker = pals_tests::locker(&app);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let history = runtime
        .block_on(locker.runs("nightly-report", 100))
        .unwrap();
    assert_eq!(history.len(), ran_lines, "{history:?}");
    for (tick, (ran, _)) in &ticks {
        assert_eq!(*ran, 1, "tick {tick} ran {ran} times: {ticks:?}");
        let in_history = history.iter().filter(|run| {
            run.tick
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64
                == *tick
        });
        assert_eq!(in_history.count(), 1, "tick {tick}: {history:?}");
    }
    let seen_by_several = ticks
        .values()
        .filter(|(ran, skipped)| ran + skipped > 1)
        .count();
    assert!(
        seen_by_several >= 2,
        "the replicas overlapped on too few ticks: {ticks:?}"
    );
}

/// Four replicas start the migrations at once against a fresh schema, with `args`.
fn four_replicas_migrate(args: &[&str]) {
    let (app, schema) = (
        unique_app("migrate"),
        unique_app("schema").replace('-', "_"),
    );
    let replicas: Vec<Child> = (0..4)
        .map(|_| {
            example("migrations")
                .args(args)
                .env("PALS_APP_NAME", &app)
                .env("PALS_SCHEMA", &schema)
                .spawn()
                .expect("start migrations")
        })
        .collect();
    let outputs: Vec<String> = replicas
        .into_iter()
        .enumerate()
        .map(|(n, replica)| output_of(replica, &format!("replica {n}")))
        .collect();
    let applied: usize = outputs
        .iter()
        .filter(|o| o.contains("applied 3 migration(s)"))
        .count();
    let up_to_date = outputs
        .iter()
        .filter(|o| o.contains("nothing to apply"))
        .count();
    assert_eq!((applied, up_to_date), (1, 3), "{args:?}: {outputs:?}");
    let history = probe_query(&format!(
        "SELECT string_agg(version::text || 'x' || n::text, ',' ORDER BY version) FROM \
         (SELECT version, count(*) AS n FROM \"{schema}\".refinery_schema_history GROUP BY version) v"
    ))
    .unwrap();
    let _ = probe_query(&format!("DROP SCHEMA \"{schema}\" CASCADE"));
    assert_eq!(
        history,
        [Some("1x1,2x1,3x1".to_string())],
        "{args:?}: each version once"
    );
}

#[test]
fn four_replicas_apply_the_migrations_once_under_the_attribute() {
    four_replicas_migrate(&[]);
}

#[test]
fn four_replicas_apply_the_migrations_once_under_a_transaction_lock() {
    four_replicas_migrate(&["xact"]);
}

/// Reads `child`'s output lines until one contains `text`; the moment it arrived.
fn wait_for_line(lines: &mut impl Iterator<Item = String>, text: &str) -> Instant {
    for line in lines {
        if line.contains(text) {
            return Instant::now();
        }
    }
    panic!("the output ended before a line with {text:?}");
}

#[test]
fn on_sigterm_the_worker_hands_over_to_a_standby_at_once() {
    let app = unique_app("worker");
    let start = || {
        example("singleton_worker")
            .arg("100000")
            .env("PALS_APP_NAME", &app)
            .spawn()
            .expect("start singleton_worker")
    };
    let mut leader = start();
    let mut leader_lines = BufReader::new(leader.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok);
    wait_for_line(&mut leader_lines, "leading");
    let mut standby = start();
    let mut standby_lines = BufReader::new(standby.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok);
    wait_for_line(&mut standby_lines, "standing by");
    // The standby waits in the database's queue for the lock.
    let key = pals::key(&app, "singleton-worker");
    assert!(pals_tests::eventually(Duration::from_secs(10), || {
        pals_tests::probe_i64(&format!(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
               AND classid = (({key}::bigint >> 32) & 4294967295)::oid \
               AND objid = ({key}::bigint & 4294967295)::oid AND objsubid = 1"
        )) == 1
    }));

    let signalled = Instant::now();
    let term = Command::new("kill")
        .args(["-TERM", &leader.id().to_string()])
        .status()
        .expect("kill");
    assert!(term.success());
    let took_over = wait_for_line(&mut standby_lines, "leading").duration_since(signalled);
    println!(
        "SIGTERM to the standby leading: {took_over:?} (the leader first finishes its job in \
         hand, up to 50 ms)"
    );
    wait_for_line(&mut leader_lines, "stepping down");
    assert!(
        leader.wait().unwrap().success(),
        "the leader exited with an error"
    );
    // Far below what a crash behind a cut network takes to be noticed (keepalives: a
    // minute), and below the heartbeat (5 s): the lock was released, not lost.
    assert!(
        took_over < Duration::from_secs(2),
        "took over after {took_over:?}"
    );

    let _ = Command::new("kill")
        .args(["-TERM", &standby.id().to_string()])
        .status();
    assert!(
        standby.wait().unwrap().success(),
        "the standby exited with an error"
    );
}

/// The last word of the line of `output` that starts with `prefix`, as a number.
fn number_after(output: &str, prefix: &str) -> u64 {
    let line = (output.lines())
        .find(|line| line.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starts with {prefix:?} in:\n{output}"));
    let word = line.rsplit(' ').next().unwrap();
    word.parse()
        .unwrap_or_else(|_| panic!("not a number at the end of {line:?}"))
}

#[test]
fn a_stale_holder_s_late_write_is_refused_by_its_fencing_token() {
    let app = unique_app("fenced");
    let run = example("fenced_writes")
        .env("PALS_APP_NAME", &app)
        .spawn()
        .expect("start fenced_writes");
    let output = output_of(run, "fenced_writes");
    println!("{output}");
    let a = number_after(&output, "A: acquired the lock, token ");
    let b = number_after(&output, "B: acquired the lock, token ");
    assert!(b > a, "B's token {b} is not above A's {a}");
    let lines: Vec<&str> = output.lines().collect();
    for expected in [
        format!("A: writes with token {a}: accepted"),
        format!("B: writes with token {b}: accepted"),
        format!("A: wakes and writes late with token {a}: rejected (0 rows)"),
        // The lock really was lost, and pals says so.
        "A: is_held() = false; release() -> false: the lock had been lost".to_string(),
        format!("store: the row is \"written by B\", fence {b}"),
    ] {
        assert!(
            lines.contains(&expected.as_str()),
            "no {expected:?} in:\n{output}"
        );
    }
    // The example cleans up after itself.
    let table = (lines[0].strip_prefix("store: table "))
        .and_then(|rest| rest.split(',').next())
        .expect("the first line names the table");
    assert_eq!(
        probe_i64(&format!(
            "SELECT count(*) FROM pg_class WHERE relname = '{table}'"
        )),
        0,
        "table {table} was left behind"
    );
}

/// A process of an example, killed if the test ends before it does.
struct Running(Child);

impl Running {
    /// Sends SIGTERM, as a deploy (or `kill`) does.
    fn terminate(&self) {
        let term = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .expect("kill");
        assert!(term.success());
    }

    /// Waits for the process to end; fails unless it exited successfully.
    fn exits_ok(mut self, what: &str) {
        let status = self.0.wait().unwrap();
        assert!(status.success(), "{what} exited with {status}");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Example processes whose output lines arrive on one channel, each with its process's
/// name and the moment it was read.
struct Fleet {
    tell: mpsc::Sender<(String, String, Instant)>,
    lines: mpsc::Receiver<(String, String, Instant)>,
    /// Every line read so far: (who, line, when), in the order read.
    heard: Vec<(String, String, Instant)>,
}

impl Fleet {
    fn new() -> Fleet {
        let (tell, lines) = mpsc::channel();
        Fleet {
            tell,
            lines,
            heard: Vec::new(),
        }
    }

    fn start(&self, who: &str, mut command: Command) -> Running {
        let mut child = command.spawn().expect("start an example");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tell, who) = (self.tell.clone(), who.to_string());
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if tell.send((who.clone(), line, Instant::now())).is_err() {
                    return;
                }
            }
        });
        Running(child)
    }

    /// Reads lines until `done` holds of what was heard (30 s at most).
    fn until(&mut self, what: &str, done: impl Fn(&Fleet) -> bool) {
        let give_up = Instant::now() + Duration::from_secs(30);
        while !done(self) {
            let left = give_up.saturating_duration_since(Instant::now());
            let heard = (self.lines.recv_timeout(left))
                .unwrap_or_else(|_| panic!("waited 30 s for {what}; heard {:#?}", self.heard));
            self.heard.push(heard);
        }
    }

    /// The first line heard, or read from now on, for which `wanted(who, line)` holds; and
    /// when it was read.
    fn wait_for(
        &mut self,
        what: &str,
        wanted: impl Fn(&str, &str) -> bool,
    ) -> (String, String, Instant) {
        let find = |fleet: &Fleet| {
            (fleet.heard.iter())
                .find(|(who, line, _)| wanted(who, line))
                .cloned()
        };
        self.until(what, |fleet| find(fleet).is_some());
        find(self).unwrap()
    }

    /// What `who` printed so far.
    fn lines_of(&self, who: &str) -> Vec<&str> {
        (self.heard.iter())
            .filter(|(from, _, _)| from == who)
            .map(|(_, line, _)| line.as_str())
            .collect()
    }
}

/// How many sessions hold (`granted`) or await the advisory lock `key`.
fn sessions_on(key: i64, granted: bool) -> i64 {
    probe_i64(&format!(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted = {granted} \
           AND classid = (({key}::bigint >> 32) & 4294967295)::oid \
           AND objid = ({key}::bigint & 4294967295)::oid AND objsubid = 1"
    ))
}

#[test]
fn election_one_of_two_candidates_leads_the_other_takes_over_and_the_observer_sees_both() {
    let app = unique_app("election");
    let election = |args: &[&str]| {
        let mut command = example("election");
        command.args(args).env("PALS_APP_NAME", &app);
        command
    };
    let mut fleet = Fleet::new();
    let observer = fleet.start("observer", election(&["observe"]));
    let (_, first_word, _) = fleet.wait_for("the observer's first word", |_, _| true);
    assert_eq!(first_word, "observer: nobody leads");

    // Two candidates at once: one leads, the other waits in the database's queue.
    let mut candidates: BTreeMap<&str, Running> = ["alpha", "beta"]
        .into_iter()
        .map(|name| (name, fleet.start(name, election(&["candidate", name]))))
        .collect();
    let (first, line, _) = fleet.wait_for("a leader", |who, line| {
        line.starts_with(&format!("{who}: leading, fence "))
    });
    let first_fence = number_after(&line, &format!("{first}: leading, fence "));
    let second = if first == "alpha" { "beta" } else { "alpha" };
    let key = pals::key(&app, "leader");
    assert!(
        pals_tests::eventually(Duration::from_secs(10), || sessions_on(key, false) == 1),
        "{second} is not waiting for the lock"
    );
    assert_eq!(
        sessions_on(key, true),
        1,
        "one holder of the election's lock"
    );
    // The leader works under its term's token.
    let item = format!("{first}: work item 1, fence {first_fence}");
    fleet.wait_for("the leader's work", |who, line| {
        who == first && line == item
    });
    // Another process asks who leads.
    let asked = election(&["leader"])
        .spawn()
        .expect("start election leader");
    let answer = output_of(asked, "election leader");
    assert!(
        answer.starts_with(&format!("{first} leads (fence {first_fence}, elected ")),
        "{answer}"
    );
    assert!(
        !fleet.lines_of(second).iter().any(|l| l.contains("leading")),
        "two leaders: {:#?}",
        fleet.heard
    );

    // SIGTERM to the leader: its body returns, it steps down, the other leads at once.
    let signalled = Instant::now();
    candidates[first.as_str()].terminate();
    let (_, line, at) = fleet.wait_for("the second leader", |who, line| {
        who == second && line.starts_with(&format!("{second}: leading, fence "))
    });
    let took_over = at.duration_since(signalled);
    let second_fence = number_after(&line, &format!("{second}: leading, fence "));
    println!("SIGTERM to the leader, to the other candidate leading: {took_over:?}");
    assert!(
        second_fence > first_fence,
        "{second_fence} after {first_fence}"
    );
    fleet.wait_for("the first leader to exit", |who, line| {
        who == first && line == format!("{first}: exiting")
    });
    candidates.remove(first.as_str()).unwrap().exits_ok(&first);
    // Its body returned (it was not dropped), then `run` gave the lead up.
    let story: Vec<&str> = (fleet.lines_of(&first).into_iter())
        .filter(|line| !line.contains(": work item "))
        .collect();
    assert_eq!(
        story,
        [
            format!("{first}: campaigning"),
            format!("{first}: leading, fence {first_fence}"),
            format!("{first}: stepping down"),
            format!("{first}: no longer leading"),
            format!("{first}: exiting"),
        ],
    );
    // Given up, not lost: far below a keepalive, and below the heartbeat (5 s).
    assert!(
        took_over < Duration::from_secs(2),
        "took over after {took_over:?}"
    );

    // The observer saw both leaders, in order, then nobody once the second stopped.
    let seen = format!("observer: {second} leads (fence {second_fence}, ");
    fleet.wait_for("the observer to see the second leader", |who, line| {
        who == "observer" && line.starts_with(&seen)
    });
    candidates[second].terminate();
    fleet.wait_for("the second leader to exit", |who, line| {
        who == second && line == format!("{second}: exiting")
    });
    candidates.remove(second).unwrap().exits_ok(second);
    fleet.until("the observer to see nobody lead again", |fleet| {
        fleet.lines_of("observer").last() == Some(&"observer: nobody leads")
    });
    observer.terminate();
    observer.exits_ok("the observer");
    let observed = fleet.lines_of("observer");
    let leaders: Vec<&str> = (observed.iter())
        .filter(|line| **line != "observer: nobody leads")
        .map(|line| line.split(", elected").next().unwrap())
        .collect();
    assert_eq!(
        leaders,
        [
            format!("observer: {first} leads (fence {first_fence}"),
            format!("observer: {second} leads (fence {second_fence}"),
        ],
        "{observed:#?}"
    );
}
