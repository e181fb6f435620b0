//! A user's crate that adds pals by its published name (`pals-pg`, library `pals`) and runs
//! the README's Quick start as written (`tests/fresh_crate`, whose build script copies it).

use std::process::Command;

/// Builds and runs the fresh crate with `app` as its application name.
fn quick_start(app: &str) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["run", "--quiet", "-p", "pals-fresh-crate"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("PALS_APP_NAME", app)
        .env("PALS_DB_URL", pals_tests::db_url())
        .env_remove("DATABASE_URL")
        .output()
        .expect("cargo runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    stdout
}

#[test]
fn the_quick_start_runs_as_written_in_a_crate_of_its_own() {
    pals_tests::ensure_server();
    let app = pals_tests::unique_app("quick-start");
    assert_eq!(quick_start(&app), "report built: 42 rows\n");
    // A second replica in the same tick (a day long) skips it; unless the two runs
    // straddled the tick's boundary (12:00 UTC), the one case where it runs: then the two
    // runs are of two ticks.
    let second = quick_start(&app);
    if second != "tonight's report ran on another replica\n" {
        assert_eq!(second, "report built: 42 rows\n");
        let key = pals::key(&app, "nightly-report");
        let ticks = pals_tests::probe_i64(&format!(
            "SELECT count(DISTINCT tick) FROM public.pals_runs WHERE key = {key}"
        ));
        assert_eq!(ticks, 2, "a second run in the same tick");
    }
}
