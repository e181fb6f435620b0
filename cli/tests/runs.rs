//! `pals runs NAME` against the real server: the runs of a `once_per` job of this test,
//! in the table and in the JSON document, and exit code 3 for a job that never ran.

mod common;

use std::time::Duration;

use common::{json_eval, pals, pals_with};
use pals_tests::{locker, locker_with, unique_app, TestSchema};

/// An error's text that JSON must escape, and the table shows on one line.
const DETAIL: &str = "the \"invoice\" service\\answered\t503: é€😀";

/// Runs the `once_per` job `name` of `locker` once, failing with [`DETAIL`].
async fn fail_once(locker: &pals::Locker, name: &str) {
    let job = locker.lock(name).once_per(Duration::from_secs(3600));
    let ran = job.run(async { Err::<(), _>(DETAIL) }).await.unwrap();
    assert!(
        matches!(ran, pals::Outcome::Ran(Err(_))),
        "the tick was this run's"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_run_shows_its_outcome_and_error() {
    let app = unique_app("cli-runs");
    fail_once(&locker(&app), "nightly-report").await;

    let ran = pals_with(&["runs", "nightly-report"], &[("PALS_APP_NAME", &app)]);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let lines: Vec<&str> = ran.stdout.lines().collect();
    let title = format!("{app}.nightly-report: 1 run(s) shown, newest first");
    assert_eq!(lines[0], title, "{}", ran.stdout);
    assert!(lines[1].starts_with("tick"), "{}", ran.stdout);
    let replica = pals::application_name(&app);
    let run = lines[2];
    assert!(
        run.contains(&replica) && run.ends_with(&format!(" failed     {DETAIL}")),
        "{run}"
    );
    assert_eq!(lines.len(), 3, "{}", ran.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_json_document_has_each_run_s_fields() {
    let app = unique_app("cli-runs-json");
    fail_once(&locker(&app), "cleanup").await;

    let ran = pals(&["runs", "cleanup", "--app", &app, "--json", "--limit", "5"]);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let doc = &ran.stdout;
    let head = "[d['ok'], d['app'] == x, d['name'], d['lock'] == x + '.cleanup', len(d['runs'])]";
    assert_eq!(
        json_eval(doc, head, &app),
        "[true, true, \"cleanup\", true, 1]"
    );
    let run = "[(r['outcome'], r['detail'] == x, r['period'], r['replica'], \
               r['tick'][10] + r['tick'][-1], r['started'] <= r['ended'], \
               0 <= r['took'] < 60) for r in d['runs']]";
    let replica = pals::application_name(&app);
    assert_eq!(
        json_eval(doc, run, DETAIL),
        format!("[[\"failed\", true, 3600.0, \"{replica}\", \"TZ\", true, true]]")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_that_never_ran_exits_3() {
    let app = unique_app("cli-runs-none");
    let ran = pals(&["runs", "never", "--app", &app]);
    assert_eq!(ran.code, 3, "{} {}", ran.stdout, ran.stderr);
    assert!(
        ran.stdout
            .starts_with(&format!("{app}.never: no run recorded")),
        "{}",
        ran.stdout
    );
    let ran = pals(&["runs", "never", "--app", &app, "--json"]);
    assert_eq!(ran.code, 3, "{}", ran.stderr);
    assert_eq!(
        json_eval(&ran.stdout, "[d['ok'], d['runs']]", ""),
        "[true, []]"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_runs_table_of_another_schema_is_read_with_schema() {
    let (app, schema) = (unique_app("cli-runs-schema"), TestSchema::new("cli_runs"));
    let job_locker = locker_with(&app, |b| b.schema(schema.name()));
    fail_once(&job_locker, "export").await;
    assert_eq!(
        pals(&["runs", "export", "--app", &app]).code,
        3,
        "not in public"
    );
    let ran = pals(&["runs", "export", "--app", &app, "--schema", schema.name()]);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert!(ran.stdout.contains(" failed "), "{}", ran.stdout);
}
