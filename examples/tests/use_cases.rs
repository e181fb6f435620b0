//! The examples as the replicas of a fleet run them: several processes at once against the
//! real server. `cargo test` builds the examples; the tests start their binaries.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pals_tests::{db_url, probe_query, unique_app};

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
        "{} is missing: run the tests with `cargo test --workspace`, which builds the examples",
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

#[test]
fn each_tick_of_a_cron_job_runs_once_across_two_replicas() {
    let app = unique_app("cron");
    let start = || {
        example("scheduled_task")
            .arg("3")
            .env("PALS_APP_NAME", &app)
            .spawn()
            .expect("start scheduled_task")
    };
    let replicas = [start(), start()];
    let mut runs: BTreeMap<u64, (usize, usize)> = BTreeMap::new(); // tick -> (ran, skipped)
    for (n, replica) in replicas.into_iter().enumerate() {
        for line in output_of(replica, &format!("replica {n}")).lines() {
            let (tick, outcome) = line
                .strip_prefix("tick ")
                .and_then(|rest| rest.split_once(": "))
                .unwrap_or_else(|| panic!("unexpected output: {line}"));
            let entry = runs.entry(tick.parse().unwrap()).or_default();
            match outcome.split(':').next() {
                Some("ran") => entry.0 += 1,
                Some("skipped") => entry.1 += 1,
                _ => panic!("unexpected output: {line}"),
            }
        }
    }
    println!("ticks (ran, skipped): {runs:?}");
    for (tick, (ran, _)) in &runs {
        assert_eq!(*ran, 1, "tick {tick} ran {ran} times: {runs:?}");
    }
    let seen_by_both = runs
        .values()
        .filter(|(ran, skipped)| ran + skipped == 2)
        .count();
    assert!(
        seen_by_both >= 2,
        "the replicas overlapped on too few ticks: {runs:?}"
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
