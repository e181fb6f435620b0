//! `Locker::election`: three candidates in separate processes, one body at a time, a new
//! leader within a second of the old one's death (process killed, or backend terminated),
//! `leader()` from a fourth process, and `observe()` seeing every change in order.
//!
//! The processes are this test binary run again with `PALS_ELECTION_CHILD` set (see
//! [`child`]); they print what they do, one line per event, with the time.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use pals_tests::{db_url, locker, micros_now, probe_i64, probe_query, unique_app};

/// The child processes' side: a candidate, an observer, or one `leader()` question.
#[test]
fn child() {
    let Ok(role) = std::env::var("PALS_ELECTION_CHILD") else {
        return; // run as a test of the suite: nothing to do
    };
    let app = std::env::var("PALS_ELECTION_APP").unwrap();
    let identity = std::env::var("PALS_ELECTION_IDENTITY").unwrap_or_default();
    println!(); // ends the harness's "test child ... " line: each event has a line of its own
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let locker = pals::Locker::new(app, &db_url()).unwrap();
        let election = locker.election("leader").identity(identity.clone());
        match role.as_str() {
            "candidate" => {
                // Said once the term's body has been dropped (or has returned).
                let election = election.on_stopped_leading(|leader| {
                    let (identity, fence) = (leader.identity(), leader.fence());
                    println!("stopped {identity} {fence} {}", micros_now());
                });
                let result = election
                    .run(|term| async move {
                        let fence = term.fence();
                        println!("elected {} {fence} {}", term.identity(), micros_now());
                        loop {
                            println!("tick {} {fence} {}", term.identity(), micros_now());
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    })
                    .await;
                println!("run ended {result:?}");
            }
            "observer" => {
                let mut observer = election.observe();
                loop {
                    match observer.changed().await {
                        Some(leader) => println!("leader {} {}", leader.identity(), leader.fence()),
                        None => println!("leader none"),
                    }
                }
            }
            "question" => match election.leader().await.unwrap() {
                Some(leader) => println!("leader {} {}", leader.identity(), leader.fence()),
                None => println!("leader none"),
            },
            other => panic!("unknown role {other}"),
        }
    });
}

/// This test binary, run as a child in `role` (see [`child`]).
fn child_command(role: &str, app: &str, identity: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", "child", "--nocapture", "--test-threads", "1"])
        .env("PALS_ELECTION_CHILD", role)
        .env("PALS_ELECTION_APP", app)
        .env("PALS_ELECTION_IDENTITY", identity)
        .env("PALS_DB_URL", db_url());
    command
}

/// A child process, and the lines it prints (sent to `lines` with its name).
struct Process(Child);

impl Process {
    fn start(
        role: &str,
        app: &str,
        identity: &str,
        lines: &mpsc::Sender<(String, String)>,
    ) -> Process {
        let mut child = child_command(role, app, identity)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start a child process");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (lines, identity) = (lines.clone(), identity.to_string());
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if lines.send((identity.clone(), line)).is_err() {
                    return;
                }
            }
        });
        Process(child)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the test has heard: every line, and the elections in order.
struct Heard {
    lines: mpsc::Receiver<(String, String)>,
    /// (identity, fence, micros) of each "elected" line, in the order heard.
    elected: Vec<(String, u64, i64)>,
    /// (micros, identity, fence) of each tick.
    ticks: Vec<(i64, String, u64)>,
    /// (fence, micros) of each term whose body was stopped.
    stopped: Vec<(u64, i64)>,
    /// What the observer printed.
    observed: Vec<String>,
}

impl Heard {
    /// Reads lines until `done` says so (or 20 s pass, which fails).
    fn until(&mut self, what: &str, mut done: impl FnMut(&Heard) -> bool) {
        let give_up = std::time::Instant::now() + Duration::from_secs(20);
        while !done(self) {
            let left = give_up.saturating_duration_since(std::time::Instant::now());
            let (from, line) = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("waited 20 s for {what}"));
            let words: Vec<&str> = line.split(' ').collect();
            match words.as_slice() {
                ["elected", identity, fence, at] => self.elected.push((
                    identity.to_string(),
                    fence.parse().unwrap(),
                    at.parse().unwrap(),
                )),
                ["tick", identity, fence, at] => self.ticks.push((
                    at.parse().unwrap(),
                    identity.to_string(),
                    fence.parse().unwrap(),
                )),
                ["stopped", _, fence, at] => self
                    .stopped
                    .push((fence.parse().unwrap(), at.parse().unwrap())),
                ["leader", ..] if from == "observer" => self.observed.push(line.clone()),
                _ => {}
            }
        }
    }

    fn leader(&self) -> &(String, u64, i64) {
        self.elected.last().expect("someone was elected")
    }
}

#[test]
fn one_leader_at_a_time_and_fast_failover() {
    let app = unique_app("election");
    let election = locker(&app).election("leader");
    let key = election.lock().key();
    let (tell, lines) = mpsc::channel();
    let mut heard = Heard {
        lines,
        elected: Vec::new(),
        ticks: Vec::new(),
        stopped: Vec::new(),
        observed: Vec::new(),
    };
    let _observer = Process::start("observer", &app, "observer", &tell);
    heard.until("the observer's first word", |h| !h.observed.is_empty());
    assert_eq!(heard.observed, ["leader none"]);

    let mut candidates: HashMap<String, Process> = ["c0", "c1", "c2"]
        .into_iter()
        .map(|id| (id.to_string(), Process::start("candidate", &app, id, &tell)))
        .collect();
    heard.until("a first leader", |h| !h.elected.is_empty());
    let (first, first_fence, _) = heard.leader().clone();

    // A fourth process asks who leads.
    let question = child_command("question", &app, "").output().unwrap();
    let answer = String::from_utf8_lossy(&question.stdout);
    assert!(
        answer
            .lines()
            .any(|line| line == format!("leader {first} {first_fence}")),
        "{answer}"
    );

    // Kill the leader's process: another is elected within a second.
    let killed_at = micros_now();
    drop(candidates.remove(&first));
    heard.until("a leader after the kill", |h| h.elected.len() == 2);
    let (second, second_fence, elected_at) = heard.leader().clone();
    let after_kill = Duration::from_micros((elected_at - killed_at) as u64);
    assert_ne!(second, first);
    assert!(second_fence > first_fence);
    assert!(after_kill < Duration::from_secs(1), "{after_kill:?}");

    // Terminate the new leader's backend: its body is stopped, another is elected.
    let pid = probe_i64(&format!(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 \
         AND ((classid::int8 << 32) | objid::int8) = {key}"
    ));
    let terminated_at = micros_now();
    probe_query(&format!("SELECT pg_terminate_backend({pid})")).unwrap();
    heard.until("a leader after the terminate", |h| h.elected.len() == 3);
    let (third, third_fence, elected_at) = heard.leader().clone();
    let after_terminate = Duration::from_micros((elected_at - terminated_at) as u64);
    assert!(third_fence > second_fence);
    assert!(
        after_terminate < Duration::from_secs(1),
        "{after_terminate:?}"
    );
    println!(
        "failover: {after_kill:?} after the leader's process was killed, \
         {after_terminate:?} after its backend was terminated ({first} -> {second} -> {third})"
    );

    // The observer saw each leader, in order.
    let expected: Vec<String> = [
        (&first, first_fence),
        (&second, second_fence),
        (&third, third_fence),
    ]
    .iter()
    .map(|(identity, fence)| format!("leader {identity} {fence}"))
    .collect();
    heard.until("the observer to see the third leader", |h| {
        h.observed.iter().any(|line| *line == expected[2])
    });
    let leaders: Vec<&String> = heard
        .observed
        .iter()
        .filter(|l| *l != "leader none")
        .collect();
    assert_eq!(
        leaders,
        expected.iter().collect::<Vec<_>>(),
        "{:?}",
        heard.observed
    );

    // One body at a time. A killed leader's body stops with its process: none of its
    // ticks comes after the next term's first. A terminated backend's client learns of
    // the loss when its connection closes, and the server may have granted the lock to
    // the next candidate a moment before: the deposed body is dropped as soon as it
    // knows (no tick after its "stopped" line), and the overlap is measured (fencing
    // tokens are what keeps such a body's late writes out).
    heard.until("the third leader's ticks", |h| {
        h.ticks
            .iter()
            .filter(|(_, _, fence)| *fence == third_fence)
            .count()
            >= 5
    });
    heard.until("the second term's end", |h| {
        h.stopped.iter().any(|(fence, _)| *fence == second_fence)
    });
    let first_tick = |term: u64| {
        heard
            .ticks
            .iter()
            .filter(|(_, _, fence)| *fence == term)
            .map(|(at, _, _)| *at)
            .min()
    };
    let last_tick = |term: u64| {
        heard
            .ticks
            .iter()
            .filter(|(_, _, fence)| *fence == term)
            .map(|(at, _, _)| *at)
            .max()
    };
    let (second_start, third_start) = (
        first_tick(second_fence).unwrap(),
        first_tick(third_fence).unwrap(),
    );
    assert!(
        last_tick(first_fence).unwrap() < second_start,
        "the killed leader's body ran on after the next term began"
    );
    let (_, second_stopped) = *heard
        .stopped
        .iter()
        .find(|(fence, _)| *fence == second_fence)
        .unwrap();
    assert!(
        last_tick(second_fence).unwrap() <= second_stopped,
        "the deposed body ticked after it was stopped"
    );
    let overlap = Duration::from_micros((second_stopped - third_start).max(0) as u64);
    println!("after the terminate, the deposed body was stopped {overlap:?} after the next leader's body began");
    assert!(
        heard.stopped.iter().all(|(fence, _)| *fence != third_fence),
        "the third term goes on"
    );
    drop(candidates);
}

mod in_process {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use pals_tests::locker_with;

    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn a_lost_term_drops_the_body_and_the_candidate_campaigns_again() {
        let app = unique_app("election-lost");
        let locker = locker(&app);
        let (started, stopped) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let election = {
            let (started, stopped) = (Arc::clone(&started), Arc::clone(&stopped));
            locker
                .election("leader")
                .identity("only")
                .backoff(Duration::from_millis(10))
                .on_started_leading(move |_| {
                    started.fetch_add(1, Ordering::SeqCst);
                })
                .on_stopped_leading(move |_| {
                    stopped.fetch_add(1, Ordering::SeqCst);
                })
        };
        let key = election.lock().key();
        let dropped = Arc::new(AtomicUsize::new(0));
        struct CountDrop(Arc<AtomicUsize>);
        impl Drop for CountDrop {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let terms = Arc::new(std::sync::Mutex::new(Vec::new()));
        let result = election
            .run(|term| {
                let (dropped, terms) = (Arc::clone(&dropped), Arc::clone(&terms));
                async move {
                    let _count = CountDrop(dropped);
                    terms.lock().unwrap().push(term.fence());
                    if terms.lock().unwrap().len() == 1 {
                        // First term: the server ends the session; the body never returns.
                        let pid = probe_i64(&format!(
                            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted \
                             AND objsubid = 1 AND ((classid::int8 << 32) | objid::int8) = {key}"
                        ));
                        probe_query(&format!("SELECT pg_terminate_backend({pid})")).unwrap();
                        std::future::pending::<()>().await;
                    }
                    assert!(term.is_leader());
                    "second term"
                }
            })
            .await
            .unwrap();
        assert_eq!(result, "second term");
        let terms = terms.lock().unwrap().clone();
        assert_eq!(terms.len(), 2);
        assert!(terms[1] > terms[0]);
        assert_eq!(
            dropped.load(Ordering::SeqCst),
            2,
            "the first body was dropped"
        );
        assert_eq!(started.load(Ordering::SeqCst), 2);
        assert_eq!(stopped.load(Ordering::SeqCst), 2);
        assert!(election.leader().await.unwrap().is_none(), "stepped down");
        assert!(locker.lock("leader").try_acquire().await.unwrap().is_some());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn dropping_run_gives_the_lead_up_and_says_so() {
        let app = unique_app("election-drop");
        let locker = locker(&app);
        let (stopped_tell, mut stopped) = tokio::sync::mpsc::unbounded_channel();
        let election = locker
            .election("leader")
            .on_stopped_leading(move |leader| stopped_tell.send(leader.fence()).unwrap());
        let (elected, mut leading) = tokio::sync::mpsc::unbounded_channel();
        let candidate = {
            let election = election.clone();
            tokio::spawn(async move {
                election
                    .run(|term| {
                        let elected = elected.clone();
                        async move {
                            elected.send(term.fence()).unwrap();
                            std::future::pending::<()>().await
                        }
                    })
                    .await
            })
        };
        let bound = Duration::from_secs(10); // fails instead of hanging the suite
        let fence = tokio::time::timeout(bound, leading.recv()).await;
        let fence = fence.expect("elected").unwrap();
        candidate.abort();
        let hooked = tokio::time::timeout(bound, stopped.recv()).await;
        assert_eq!(
            hooked.expect("the hook ran in time"),
            Some(fence),
            "the hook ran"
        );
        // Given up: another candidate leads at once.
        let next = locker.election("leader");
        assert!(next.run(|term| async move { term.fence() }).await.unwrap() > fence);
    }

    /// A reset sequence: a candidate that saw the earlier tokens refuses its term (it
    /// would be fenced out by its own store, and a stale leader let in) and says why; a new
    /// process, which saw none, is not kept from announcing itself, and the old process's
    /// observers do not believe it.
    #[tokio::test]
    async fn a_reset_sequence_stops_those_who_saw_it_and_not_new_leaders() {
        let test_schema = pals_tests::TestSchema::new("election-reset");
        let schema = test_schema.name();
        let app = unique_app("election-reset");
        let locker = locker_with(&app, |b| b.schema(schema));
        let election = locker.election("leader").identity("a");
        let mut first = 0;
        for _term in 0..5 {
            first = election
                .run(|term| async move { term.fence() })
                .await
                .unwrap();
        }
        probe_query(&format!(
            "ALTER SEQUENCE \"{schema}\".pals_fence RESTART WITH 1"
        ))
        .unwrap();
        let refused = election.run(|_term| async {}).await.unwrap_err();
        assert!(refused.to_string().contains("went backwards"), "{refused}");

        let fresh = locker_with(&app, |b| b.schema(schema)).election("leader");
        let old_observer = election.clone();
        let (fence, seen, seen_before) = fresh
            .clone()
            .identity("b")
            .run(|term| {
                let (fresh, old_observer) = (fresh.clone(), old_observer.clone());
                async move {
                    let seen = fresh.leader().await.unwrap();
                    (term.fence(), seen, old_observer.leader().await.unwrap())
                }
            })
            .await
            .unwrap();
        assert!(
            fence < first,
            "the sequence went back: {fence} then {first}"
        );
        let leader = seen.expect("the new leader announced itself");
        assert_eq!((leader.fence(), leader.identity()), (fence, "b"));
        assert_eq!(seen_before, None, "older than what the old process saw");
    }
}

mod stopping {
    use pals_tests::{eventually, holders_of};
    use tokio::sync::oneshot;

    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn stopped_while_campaigning_it_leaves_the_line() {
        let app = unique_app("election-stop-campaign");
        let locker = locker(&app);
        let election = locker.election("leader");
        let key = election.lock().key();
        // The lead is taken, by another locker (as another process would): the candidate
        // waits in the server's queue.
        let holder = pals_tests::locker(&app)
            .lock("leader")
            .acquire()
            .await
            .unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let candidate = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            election
                .run_until(shutdown, |_term| async { panic!("never elected") })
                .await
        });
        assert!(eventually(Duration::from_secs(5), || holders_of(
            &app, key, false
        ) == 1));
        stop.send(()).unwrap();
        assert!(candidate.await.unwrap().unwrap().is_none());
        assert!(eventually(Duration::from_secs(5), || holders_of(
            &app, key, false
        ) == 0));
        drop(holder);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn stopped_while_leading_it_does_not_campaign_again_after_a_loss() {
        let app = unique_app("election-stop-lead");
        let locker = locker(&app);
        let election = locker.election("leader").backoff(Duration::from_millis(1));
        let key = election.lock().key();
        let (stop, stopped) = oneshot::channel::<()>();
        let (elected, mut leading) = tokio::sync::mpsc::unbounded_channel();
        let candidate = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            election
                .run_until(shutdown, |term| {
                    let elected = elected.clone();
                    async move {
                        elected.send(term.fence()).unwrap();
                        std::future::pending::<()>().await; // finishing its work in hand
                    }
                })
                .await
        });
        leading.recv().await.unwrap();
        stop.send(()).unwrap();
        // The body goes on after the stop; then the lead is lost.
        let pid = probe_i64(&format!(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 \
             AND ((classid::int8 << 32) | objid::int8) = {key}"
        ));
        probe_query(&format!("SELECT pg_terminate_backend({pid})")).unwrap();
        assert!(candidate.await.unwrap().unwrap().is_none());
        assert!(leading.try_recv().is_err(), "no second term");
        // pg_terminate_backend only signals: the ended session's lock leaves pg_locks once
        // the server has ended it (seen still there under load, right after the return).
        assert!(eventually(Duration::from_secs(5), || holders_of(
            &app, key, true
        ) == 0));
    }
}

mod hostile_input {
    use super::*;

    #[tokio::test]
    async fn identities_and_names_are_data_even_without_standard_conforming_strings() {
        let schema = unique_app("election-quotes").replace('-', "_");
        let role = format!("{schema}_r");
        probe_query(&format!(
            "CREATE SCHEMA \"{schema}\"; CREATE ROLE \"{role}\" LOGIN; \
             GRANT USAGE, CREATE ON SCHEMA \"{schema}\" TO \"{role}\"; \
             ALTER ROLE \"{role}\" SET standard_conforming_strings = off"
        ))
        .unwrap();
        struct Cleanup(String);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                let _ = probe_query(&self.0);
            }
        }
        let _cleanup = Cleanup(format!(
            "DROP SCHEMA \"{schema}\" CASCADE; DROP OWNED BY \"{role}\"; DROP ROLE \"{role}\""
        ));
        let url = db_url().replacen("postgres@", &format!("{role}@"), 1);
        let app = unique_app("election-quotes");
        let locker = pals_tests::locker_with(&app, |b| b.url(&url).schema(&schema));
        // With standard_conforming_strings off, \' would end a literal that only doubles
        // its quotes, and the rest would run as SQL.
        let identity = r"x\'; CREATE TABLE injected (); --";
        let name = r"it\'s";
        let election = locker.election(name).identity(identity);
        let observer = election.clone();
        let seen = election
            .run(|_term| {
                let observer = observer.clone();
                async move { observer.leader().await }
            })
            .await
            .unwrap()
            .unwrap()
            .expect("the leader");
        assert_eq!(seen.identity(), identity);
    }
}
