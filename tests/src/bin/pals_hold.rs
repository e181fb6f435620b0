//! Test helper: takes a lock and holds it until the process is killed.
//!
//! `pals_hold URL APP NAME` prints `held` once the lock is taken.

use std::io::Write;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, app, name] = &args[..] else {
        eprintln!("usage: pals_hold URL APP NAME");
        std::process::exit(2);
    };
    let locker = pals::Locker::new(app.as_str(), url).expect("locker");
    let _guard = locker.lock(name).blocking_acquire().expect("acquire");
    println!("held");
    std::io::stdout().flush().unwrap();
    loop {
        std::thread::park();
    }
}
