//! `pals --help`, each command's help, `--version`, and the command lines that cannot be
//! used: exit code 2, what is wrong and the usage on stderr, nothing on stdout.

mod common;

use common::{pals, Ran};

/// Asserts that `ran` is a usage error that says `why`, with the usage line of `command`.
fn refused(ran: Ran, why: &str, usage: &str) {
    assert_eq!(ran.code, 2, "{} {}", ran.stdout, ran.stderr);
    assert_eq!(ran.stdout, "", "nothing on stdout");
    assert!(
        ran.stderr.starts_with(&format!("pals: {why}")),
        "{}",
        ran.stderr
    );
    assert!(
        ran.stderr.contains(&format!("\n\nUsage: {usage}")),
        "{}",
        ran.stderr
    );
}

#[test]
fn the_help_names_every_command_and_the_exit_codes() {
    for args in [&["--help"][..], &["-h"], &["help"]] {
        let ran = pals(args);
        assert_eq!((ran.code, ran.stderr.as_str()), (0, ""), "{args:?}");
        assert!(
            ran.stdout.starts_with("Usage: pals [--url URL] COMMAND"),
            "{}",
            ran.stdout
        );
        for needed in [
            "holders",
            "runs NAME",
            "check",
            "--json",
            "PALS_DB_URL",
            "PALS_APP_NAME",
        ] {
            assert!(ran.stdout.contains(needed), "{needed} in {}", ran.stdout);
        }
        for code in [
            "0  done",
            "1  the database could not be asked",
            "2  the command line",
            "3  runs",
        ] {
            assert!(ran.stdout.contains(code), "{code} in {}", ran.stdout);
        }
    }
}

#[test]
fn each_command_has_its_help_three_ways() {
    for (command, usage, says) in [
        (
            "holders",
            "Usage: pals holders [--url URL] [--app APP | --all]",
            "--all",
        ),
        (
            "runs",
            "Usage: pals runs NAME [--url URL] [--app APP] [--limit N]",
            "--schema S",
        ),
        (
            "check",
            "Usage: pals check [--url URL] [--app APP] [--json]",
            "init_from_env",
        ),
    ] {
        let help = pals(&["help", command]);
        assert_eq!(help.code, 0, "{}", help.stderr);
        assert!(help.stdout.starts_with(usage), "{}", help.stdout);
        assert!(help.stdout.contains(says) && help.stdout.contains("Exit codes: 0"));
        for other in [pals(&[command, "--help"]), pals(&["-h", command, "--json"])] {
            assert_eq!((other.code, &other.stdout), (0, &help.stdout));
        }
    }
}

#[test]
fn version() {
    let ran = pals(&["--version"]);
    assert_eq!(ran.code, 0);
    assert_eq!(ran.stdout, format!("pals {}\n", env!("CARGO_PKG_VERSION")));
}

#[test]
fn command_lines_that_cannot_be_used_exit_2() {
    let overview = "pals [--url URL] COMMAND";
    let holders = "pals holders [--url URL]";
    let runs = "pals runs NAME [--url URL]";
    refused(pals(&[]), "no command given", overview);
    refused(
        pals(&["frobnicate"]),
        "unknown command \"frobnicate\"",
        overview,
    );
    refused(
        pals(&["holders", "--bogus"]),
        "unknown option --bogus",
        holders,
    );
    refused(pals(&["--bogus"]), "unknown option --bogus", overview);
    refused(
        pals(&["holders", "--limit", "3"]),
        "holders takes no --limit",
        holders,
    );
    refused(
        pals(&["holders", "--json", "--json"]),
        "--json is given twice",
        holders,
    );
    refused(
        pals(&["holders", "migrations"]),
        "NAMEs are lock names of an application",
        holders,
    );
    refused(
        pals(&["runs", "--app", "a"]),
        "runs needs the NAME of a job",
        runs,
    );
    refused(
        pals(&["runs", "job", "--app", "a", "--limit", "ten"]),
        "--limit needs a whole number",
        runs,
    );
    refused(pals(&["runs", "--url"]), "--url needs a database URL", runs);
    refused(
        pals(&["help", "nothing"]),
        "no help on \"nothing\"",
        overview,
    );
}

#[test]
fn a_command_that_needs_the_app_says_both_ways_to_give_it() {
    for (command, usage) in [
        (&["runs", "job"][..], "pals runs NAME"),
        (&["check"], "pals check"),
    ] {
        let why = format!(
            "{} needs the application's name: give --app APP, or set PALS_APP_NAME",
            command[0]
        );
        refused(pals(command), &why, usage);
    }
}
