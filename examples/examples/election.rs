//! Leader election, and who leads as any replica sees it:
//! `cargo run --example election -- candidate [NAME] | observe | leader`.
//!
//! In three terminals:
//!
//! ```text
//! cargo run --example election -- observe          # prints each change of leader
//! cargo run --example election -- candidate alpha  # campaigns: leads, and works
//! cargo run --example election -- candidate beta   # campaigns: waits in line
//! ```
//!
//! The leader works under its term's fencing token (a store given it refuses a deposed
//! leader's late writes: see the `fenced_writes` example). Ctrl-C (or SIGTERM) to the
//! leader: its body returns, it steps down, and beta leads within milliseconds; the
//! observer prints each. A candidate stopped while it waits leaves the line. A leader whose
//! lock is lost (its session ended) has its body stopped where it stands, and campaigns
//! again. `cargo run --example election -- leader` asks once who leads.
//!
//! Settings: `PALS_DB_URL`, `PALS_APP_NAME` (default `election-demo`).

use std::time::{Duration, SystemTime};

use pals::{Election, Leader, Term};
use tokio::sync::watch;

const USAGE: &str = "usage: election candidate [NAME] | election observe | election leader";

/// The leader's body: an item of work a second, under the term's token, until told to stop.
async fn lead(term: Term, mut stop: watch::Receiver<bool>) {
    for item in 1.. {
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => break,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let (who, fence) = (term.identity(), term.fence());
        println!("{who}: work item {item}, fence {fence}");
    }
    println!("{}: stepping down", term.identity());
}

/// Campaigns and leads until SIGTERM or Ctrl-C.
async fn candidate(election: Election) -> Result<(), pals::Error> {
    let election = election
        .on_started_leading(|leader| {
            println!("{}: leading, fence {}", leader.identity(), leader.fence())
        })
        // Called when the body returns, and when leadership is lost (then `run` campaigns again).
        .on_stopped_leading(|leader| println!("{}: no longer leading", leader.identity()));
    let (stop, stopped) = watch::channel(false);
    let shutdown = async move {
        pals_examples::stop_requested().await;
        stop.send_replace(true); // the body sees it, and returns
    };
    // Stopped while campaigning: it leaves the line. While leading: the body returns and
    // the lead is given up at once.
    election
        .run_until(shutdown, |term| lead(term, stopped.clone()))
        .await?;
    Ok(())
}

/// Prints each change of leader until SIGTERM or Ctrl-C.
async fn observe(election: Election) {
    let mut observer = election.observe();
    let stop = pals_examples::stop_requested();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            leader = observer.changed() => println!("observer: {}", describe(leader.as_ref())),
            () = &mut stop => return,
        }
    }
}

fn describe(leader: Option<&Leader>) -> String {
    let Some(leader) = leader else {
        return "nobody leads".into();
    };
    // `since` is the server's clock; this one may differ a little.
    let ago = SystemTime::now()
        .duration_since(leader.since())
        .unwrap_or_default();
    format!(
        "{} leads (fence {}, elected {:.1} s ago)",
        leader.identity(),
        leader.fence(),
        ago.as_secs_f64()
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let app = std::env::var("PALS_APP_NAME").unwrap_or_else(|_| "election-demo".into());
    let locker = pals::Locker::new(app, &pals_examples::db_url())?;
    let election = locker.election("leader");
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["candidate"] | ["candidate", _] => {
            let name = (args.get(1).cloned())
                .unwrap_or_else(|| format!("candidate-{}", std::process::id()));
            println!("{name}: campaigning");
            candidate(election.identity(&name)).await?;
            println!("{name}: exiting");
        }
        ["observe"] => observe(election).await,
        ["leader"] => println!("{}", describe(election.leader().await?.as_ref())),
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    }
    Ok(())
}
