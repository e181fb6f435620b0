//! libpq's connection service file (`pg_service.conf`): `service=name` (or `PGSERVICE`)
//! takes the parameters of the section `[name]`, for what the URL leaves out.
//!
//! As libpq, the user's file comes first (`PGSERVICEFILE`, else `~/.pg_service.conf`), then
//! the system's (`PGSYSCONFDIR/pg_service.conf`, `PGSYSCONFDIR` defaulting to Debian's
//! `/etc/postgresql-common`); the first file with the section gives all of it.

use std::path::PathBuf;

use super::parameters::{check_refused, parameter, unknown};
use super::Environment;

/// Where libpq built by Debian and Ubuntu looks for `pg_service.conf` (`pg_config
/// --sysconfdir`) when `PGSYSCONFDIR` is not set.
const DEFAULT_SYSCONFDIR: &str = "/etc/postgresql-common";

/// The parameters of service `name`, in the order the file gives them.
pub(super) fn service_params(
    name: &str,
    env: &Environment<'_>,
) -> Result<Vec<(String, String)>, String> {
    let files = service_files(env);
    for file in &files {
        let Some(text) = (env.read)(file) else {
            continue;
        };
        if let Some(params) = section(&text, name, file)? {
            return Ok(params);
        }
    }
    let looked: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    Err(format!(
        "service `{name}` is not defined in any service file (looked in {}): add a [{name}] \
         section to one, point PGSERVICEFILE at the file that has it, or fix the name",
        looked.join(" and ")
    ))
}

/// The user's service file, then the system's.
fn service_files(env: &Environment<'_>) -> Vec<PathBuf> {
    let mut files = Vec::new();
    match (env.var)("PGSERVICEFILE") {
        Some(file) => files.push(PathBuf::from(file)),
        None => files.extend(env.home.as_ref().map(|home| home.join(".pg_service.conf"))),
    }
    let sysconfdir = (env.var)("PGSYSCONFDIR").unwrap_or_else(|| DEFAULT_SYSCONFDIR.into());
    files.push(PathBuf::from(sysconfdir).join("pg_service.conf"));
    files
}

/// The `key=value` lines of section `[name]` of a service file, if it has one.
fn section(
    text: &str,
    name: &str,
    file: &std::path::Path,
) -> Result<Option<Vec<(String, String)>>, String> {
    let mut found: Option<Vec<(String, String)>> = None;
    let mut inside = false;
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(header) = line.strip_prefix('[') {
            if found.is_some() && inside {
                break;
            }
            // As libpq: the name right after `[`, then `]`; what follows is not read
            // (`[billing] # prod` is billing's; `[ billing ]` is no one's).
            inside = header
                .strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(']'));
            if inside {
                found = Some(Vec::new());
            }
            continue;
        }
        if !inside {
            continue;
        }
        let at = || format!("{} line {}", file.display(), number + 1);
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("{}: `{line}` is not key=value", at()));
        };
        let key = key.trim();
        if key == "service" {
            return Err(format!(
                "{}: a service cannot name another service (libpq refuses it too)",
                at()
            ));
        }
        if parameter(key).is_none() {
            return Err(format!("{}: {}", at(), unknown(key)));
        }
        check_refused(key, &format!("in service `{name}`, {}", at()))?;
        if let Some(params) = found.as_mut() {
            params.push((key.to_string(), value.trim().to_string()));
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn sections_are_read_as_libpq_reads_them() {
        let text = "# comment\n[other]\nhost=wrong\n[ billing ]\nhost=spaced\n\n[billing] # prod\n host = db.example \n\
                    port=6543\n# not this\ndbname=orders\n[after]\nhost=no\n";
        let params = section(text, "billing", Path::new("f")).unwrap().unwrap();
        let expected = [
            ("host", "db.example"),
            ("port", "6543"),
            ("dbname", "orders"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(params, expected);
        assert_eq!(section(text, "missing", Path::new("f")).unwrap(), None);
        let err = section("[a]\ncolour=blue\n", "a", Path::new("/x/f")).unwrap_err();
        assert!(err.contains("/x/f line 2") && err.contains("unknown parameter `colour`"));
        let err = section("[a]\nservice=b\n", "a", Path::new("f")).unwrap_err();
        assert!(err.contains("cannot name another service"), "{err}");
        let err = section("[a]\nhost\n", "a", Path::new("f")).unwrap_err();
        assert!(err.contains("not key=value"), "{err}");
    }
}

#[cfg(test)]
mod lookup_tests {
    use super::super::testing::FakeEnv;

    const FILE: &str = "[billing]\nhost=svc.example\nport=6000\ndbname=orders\nuser=svc\n";

    #[test]
    fn services_fill_in_what_the_url_leaves_out_before_the_variables() {
        let env = FakeEnv::default()
            .var("PGSERVICEFILE", "/s/services.conf")
            .var("PGPORT", "7000")
            .var("PGUSER", "from-env")
            .file("/s/services.conf", FILE);
        let read = env.read("service=billing user=ann").unwrap();
        assert_eq!(read.config.get_user(), Some("ann"), "the URL wins");
        assert_eq!(read.config.get_ports(), [6000], "then the service file");
        assert_eq!(read.config.get_dbname(), Some("orders"));
        let read = env.read("postgresql:///?service=billing").unwrap();
        assert_eq!(read.config.get_user(), Some("svc"));
        // PGSERVICE names it when the URL does not.
        let read = env.var("PGSERVICE", "billing").read("").unwrap();
        assert_eq!(read.config.get_ports(), [6000]);
    }

    #[test]
    fn the_users_file_then_the_systems() {
        let home = FakeEnv::default()
            .home("/h")
            .file("/h/.pg_service.conf", "[mine]\nport=6001\n")
            .file("/etc/postgresql-common/pg_service.conf", FILE);
        assert_eq!(
            home.read("service=mine").unwrap().config.get_ports(),
            [6001]
        );
        assert_eq!(
            home.read("service=billing").unwrap().config.get_ports(),
            [6000]
        );
        let conf = FakeEnv::default()
            .var("PGSYSCONFDIR", "/conf")
            .file("/conf/pg_service.conf", FILE);
        assert_eq!(
            conf.read("service=billing").unwrap().config.get_ports(),
            [6000]
        );
        let err = FakeEnv::default()
            .home("/h")
            .read("service=nope")
            .unwrap_err();
        assert!(
            err.contains(
                "service `nope` is not defined in any service file (looked in \
                          /h/.pg_service.conf and /etc/postgresql-common/pg_service.conf)"
            ),
            "{err}"
        );
    }
}
