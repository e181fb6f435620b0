//! `once_per` across a fleet of replica processes (`pals_ticker`, each a service on the
//! global locker with its own scheduler): each tick runs exactly once whichever replica
//! fires first, is labelled with its own tick even when a replica fires nearly half a
//! period off, and a replica started late skips a tick that ran. What is asserted comes
//! from the run history and the replicas' output, never from when the test looked.
//!
//! The replicas schedule their firings on this machine's clock and the server reads ticks
//! on its own: the database must run on this machine (or agree with its clock), which each
//! test checks first.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::UNIX_EPOCH;

use pals::inspect::{RunOutcome, RunRecord};
use pals_tests::{db_url, micros_now, probe_i64, unique_app};

/// How close to the edge of its tick a call may begin and still be judged: the server
/// takes a call's start to be its clock at the claim less the time the replica measured
/// since the call began, which is late by the claim's trip to the server (a millisecond or
/// so; more on a loaded machine). A call nearer the edge could fairly count for either tick.
const SLACK_MS: i64 = 100;

/// The ticks the replicas fire for: tick k is `first_ms + k * period_ms` (ms since the
/// epoch).
struct Schedule {
    period_ms: i64,
    first_ms: i64,
}

impl Schedule {
    /// The ticks of `period_ms` from the first at least `lead_ms` from now.
    fn starting_after(period_ms: i64, lead_ms: i64) -> Schedule {
        let earliest = micros_now() / 1000 + lead_ms;
        Schedule {
            period_ms,
            first_ms: earliest.div_euclid(period_ms) * period_ms + period_ms,
        }
    }

    /// Tick `index`, in ms since the epoch.
    fn tick_ms(&self, index: i64) -> i64 {
        self.first_ms + index * self.period_ms
    }
}

/// One firing of a replica, as it printed it.
#[derive(Debug)]
struct Firing {
    index: i64,
    /// `ran`, `skipped` or `failed`.
    outcome: String,
    jitter_ms: i64,
    /// How much later than meant the call began.
    late_ms: i64,
    line: String,
}

impl Firing {
    /// `fire index=K OUTCOME jitter_ms=J late_ms=L [error=...]`.
    fn parse(line: &str) -> Firing {
        let words: Vec<&str> = line.split_whitespace().collect();
        let value = |key: &str| -> i64 {
            let found = words.iter().find_map(|word| word.strip_prefix(key));
            let found = found.and_then(|value| value.strip_prefix('='));
            found
                .and_then(|value| value.parse().ok())
                .unwrap_or_else(|| panic!("no {key} in the ticker's line {line:?}"))
        };
        Firing {
            index: value("index"),
            outcome: words.get(2).unwrap_or(&"").to_string(),
            jitter_ms: value("jitter_ms"),
            late_ms: value("late_ms"),
            line: line.to_string(),
        }
    }
}

/// A replica process, and what it has printed so far.
struct Replica {
    label: &'static str,
    shift_ms: i64,
    indexes: Vec<i64>,
    child: Child,
    stdout: BufReader<ChildStdout>,
    /// Its `application_name`, as the history names it.
    name: String,
    firings: Vec<Firing>,
}

impl Replica {
    /// Starts a replica of `app` that fires for the ticks `indexes` of `schedule`, shifted
    /// by `shift_ms`, with a jitter within ±`jitter_ms`.
    fn start(
        label: &'static str,
        app: &str,
        schedule: &Schedule,
        indexes: &[i64],
        shift_ms: i64,
        jitter_ms: i64,
    ) -> Replica {
        let list: Vec<String> = indexes.iter().map(ToString::to_string).collect();
        let mut child = Command::new(env!("CARGO_BIN_EXE_pals_ticker"))
            .arg(schedule.period_ms.to_string())
            .arg(schedule.first_ms.to_string())
            .arg(list.join(","))
            .arg(shift_ms.to_string())
            .arg(jitter_ms.to_string())
            .env("PALS_DB_URL", db_url())
            .env("PALS_APP_NAME", app)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the ticker starts");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        Replica {
            label,
            shift_ms,
            indexes: indexes.to_vec(),
            child,
            stdout,
            name: String::new(),
            firings: Vec::new(),
        }
    }

    /// Reads the next line the replica printed: false at the end of its output.
    fn read_line(&mut self) -> bool {
        let mut line = String::new();
        if self
            .stdout
            .read_line(&mut line)
            .expect("the ticker's output")
            == 0
        {
            return false;
        }
        let line = line.trim_end();
        match line.strip_prefix("replica ") {
            Some(name) => self.name = name.to_string(),
            None if line.starts_with("fire ") => self.firings.push(Firing::parse(line)),
            None => panic!("{}: unexpected line {line:?}", self.label),
        }
        true
    }

    /// Returns once the replica's firing for tick `index` has returned.
    fn await_firing(&mut self, index: i64) {
        while !self.firings.iter().any(|firing| firing.index == index) {
            if !self.read_line() {
                panic!("{} ended before firing for tick {index}", self.label);
            }
        }
    }

    /// Reads the rest of the output and waits for the replica to exit; fails unless it
    /// exited well, having fired once for each of its ticks, none failed.
    fn finish(&mut self) {
        while self.read_line() {}
        let status = self.child.wait().expect("the ticker is waited for");
        let mut stderr = String::new();
        let pipe = self.child.stderr.as_mut().expect("piped");
        pipe.read_to_string(&mut stderr).expect("its stderr");
        assert!(status.success(), "{} exited {status}: {stderr}", self.label);
        let fired: Vec<i64> = self.firings.iter().map(|firing| firing.index).collect();
        assert_eq!(fired, self.indexes, "{}: {:?}", self.label, self.firings);
        if let Some(failed) = self.firings.iter().find(|f| f.outcome == "failed") {
            panic!("{} failed to fire: {}", self.label, failed.line);
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        // A test that failed midway does not leave its replicas ticking.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Fails unless the server's clock agrees with this machine's: the replicas' shifts are
/// made on this machine's clock, and what they mean depends on it.
fn assert_clocks_agree() {
    let before = micros_now();
    let server = probe_i64("SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::int8");
    let after = micros_now();
    let tolerance = 20_000;
    assert!(
        before - tolerance <= server && server <= after + tolerance,
        "the database's clock is {} ms off this machine's: these tests need the database on \
         this machine (or a clock that agrees with it)",
        (server - before) / 1000
    );
}

/// Fails, saying so, if a firing began too near the edge of its tick for the server to
/// tell it for sure (within [`SLACK_MS`] of it): the machine was too loaded for the
/// test's margins, and the history cannot be judged.
fn assert_within_margins(replicas: &[Replica], schedule: &Schedule) {
    let half = schedule.period_ms / 2;
    let edge = half - SLACK_MS;
    for replica in replicas {
        for firing in &replica.firings {
            let meant = replica.shift_ms + firing.jitter_ms;
            let offset = meant + firing.late_ms;
            assert!(
                offset.abs() < edge,
                "{label}'s firing for tick {index} began {late} ms late, {offset} ms from the \
                 tick (meant {meant} ms): within {SLACK_MS} ms of the tick's edge ({half} ms), \
                 where the server may fairly count it for the neighbouring tick. Its margin allowed \
                 {allowed} ms of lateness: the machine was too loaded for this test ({line:?})",
                label = replica.label,
                index = firing.index,
                late = firing.late_ms,
                allowed = edge - meant.abs(),
                line = firing.line,
            );
        }
    }
}

/// The job's history, oldest first.
fn history(app: &str, job: &str) -> Vec<RunRecord> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let locker = pals_tests::locker(app);
    let mut runs = rt.block_on(locker.runs(job, 100)).expect("the history");
    runs.reverse();
    runs
}

/// Checks that the history has one succeeded run for each of the ticks `0..ticks`, each
/// labelled with its own tick, and run by the one replica that printed that it ran that
/// firing: each tick ran exactly once. Gives the replica that ran each tick.
fn assert_each_tick_ran_once<'r>(
    history: &[RunRecord],
    schedule: &Schedule,
    ticks: i64,
    replicas: &'r [Replica],
) -> Vec<&'r Replica> {
    let ran: Vec<(i64, &Replica)> = replicas
        .iter()
        .flat_map(|r| r.firings.iter().map(move |firing| (firing, r)))
        .filter(|(firing, _)| firing.outcome == "ran")
        .map(|(firing, replica)| (firing.index, replica))
        .collect();
    let printed: Vec<(i64, &str)> = ran.iter().map(|(i, r)| (*i, r.label)).collect();
    let tick_ms = |run: &RunRecord| run.tick.duration_since(UNIX_EPOCH).unwrap().as_millis();
    let got: Vec<i64> = history.iter().map(|run| tick_ms(run) as i64).collect();
    let expected: Vec<i64> = (0..ticks).map(|index| schedule.tick_ms(index)).collect();
    let from_first: Vec<i64> = got.iter().map(|tick| tick - schedule.first_ms).collect();
    assert_eq!(
        got, expected,
        "the history's ticks, ms from the first tick: {from_first:?}; the firings that ran \
         (tick, replica): {printed:?}; {history:?}"
    );
    assert_eq!(
        ran.len() as i64,
        ticks,
        "one firing to run per tick; the firings that ran (tick, replica): {printed:?}"
    );
    (0..ticks)
        .zip(history)
        .map(|(index, run)| {
            assert_eq!(run.outcome, RunOutcome::Succeeded, "{run:?}");
            assert_eq!(run.period.as_millis() as i64, schedule.period_ms);
            let by: Vec<&Replica> = ran
                .iter()
                .filter(|(ran_index, _)| *ran_index == index)
                .map(|(_, replica)| *replica)
                .collect();
            assert_eq!(by.len(), 1, "tick {index} ran by: {printed:?}");
            assert_eq!(run.replica, by[0].name, "who ran tick {index}: {printed:?}");
            by[0]
        })
        .collect()
}

/// Prints which replica ran each tick, and how far from the tick its call began.
fn print_who_ran(ran_by: &[&Replica]) {
    for (index, replica) in ran_by.iter().enumerate() {
        let firing = replica.firings.iter().find(|f| f.index == index as i64);
        let offset = firing.map(|f| replica.shift_ms + f.jitter_ms + f.late_ms);
        println!(
            "tick {index}: ran by {} ({}), which began {} ms from the tick",
            replica.label,
            replica.name,
            offset.unwrap_or_default()
        );
    }
}

#[test]
fn three_replicas_run_each_tick_exactly_once() {
    assert_clocks_agree();
    let app = unique_app("fleet-three");
    // The earliest firing (-450 ms) at least half a second after the replicas start.
    let schedule = Schedule::starting_after(2000, 950);
    let ticks = [0, 1, 2, 3, 4];
    let mut replicas = [("ahead", -400), ("on-time", 0), ("behind", 400)]
        .map(|(label, shift)| Replica::start(label, &app, &schedule, &ticks, shift, 50));
    replicas.iter_mut().for_each(Replica::finish);
    assert_within_margins(&replicas, &schedule);
    let history = history(&app, "every-2s");
    let ran_by = assert_each_tick_ran_once(&history, &schedule, 5, &replicas);
    print_who_ran(&ran_by);
}

#[test]
fn clocks_half_a_period_off_and_a_late_start_keep_each_tick_its_own() {
    assert_clocks_agree();
    let app = unique_app("fleet-skew");
    // Half a period (2 s) minus a 500 ms margin either way; the earliest firing at least
    // half a second after the replicas start.
    let schedule = Schedule::starting_after(4000, 2000);
    let mut ahead = Replica::start("ahead", &app, &schedule, &[0, 1], -1500, 0);
    let behind = Replica::start("behind", &app, &schedule, &[0, 1, 2, 3], 1500, 0);
    // Once ahead's firing for tick 1 has returned, tick 1's row is written: ahead ran it,
    // or found it run.
    ahead.await_firing(1);
    // Fires 1.2 s after tick 1, before behind does: a new process that must find the row.
    let late = Replica::start("late", &app, &schedule, &[1], 1200, 0);
    let mut replicas = [ahead, behind, late];
    replicas.iter_mut().for_each(Replica::finish);
    assert_within_margins(&replicas, &schedule);
    let history = history(&app, "every-4s");
    let ran_by = assert_each_tick_ran_once(&history, &schedule, 4, &replicas);
    print_who_ran(&ran_by);
    // Only behind fires for ticks 2 and 3, 1.5 s after them: its runs count for them.
    assert_eq!(ran_by[2].label, "behind");
    assert_eq!(ran_by[3].label, "behind");
    let late = &replicas[2];
    assert_eq!(late.firings[0].outcome, "skipped", "{:?}", late.firings);
}
