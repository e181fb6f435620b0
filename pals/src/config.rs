//! The database configuration, read as libpq reads it, so that what works for `psql` and
//! Python's PALs works for pals: a URL (`postgresql://user:pass@host:port/db?key=value`) or
//! `key=value` pairs; then, for what they leave out, the `PG*` environment variables
//! (`PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, ...); then libpq's defaults (the local Unix
//! socket if there is one, else `localhost`; port 5432; the OS user; a database named after
//! the user); and a password from the password file (`~/.pgpass`, or `PGPASSFILE`).
//!
//! tokio-postgres reads only the URL and says little when it cannot ("invalid connection
//! string"); this module says which part is wrong and why, and never shows the password.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::identity::application_name;
use crate::tls::TlsSettings;

mod build;
mod parameters;
mod passfile;
mod service;
mod syntax;
#[cfg(test)]
mod testing;
mod tls;

pub(crate) use build::describe_target;

use build::build;
use parameters::{check_refused, parameter, unknown, PARAMETERS};
use service::service_params;
use syntax::mask_password;
use syntax::{key_value_pairs, parse_url, strip_scheme};

/// Environment variable with the database URL of the global locker (and of the tests and
/// examples): `PALS_DB_URL`. Unset or empty, [`FALLBACK_DATABASE_URL_ENV`] is read; unset
/// too, the connection comes from the `PG*` variables and libpq's defaults.
pub const DATABASE_URL_ENV: &str = "PALS_DB_URL";
/// Environment variable read for the database URL when `PALS_DB_URL` is unset:
/// `DATABASE_URL`, which sqlx, Diesel and most Rust services already set.
pub const FALLBACK_DATABASE_URL_ENV: &str = "DATABASE_URL";
/// The name pals read before 0.2; set without `PALS_DB_URL`, it is an error that names the
/// new one (before `DATABASE_URL` is read: the old variable may name a database of its own).
const OLD_DATABASE_URL_ENV: &str = "PALS_DATABASE_URL";

/// The URL the environment gives, and the variable it came from: `PALS_DB_URL`, else
/// `DATABASE_URL`; neither: `""` (the `PG*` variables and libpq's defaults) from none.
pub(crate) fn url_of_env(env: &Environment<'_>) -> Result<(String, Option<&'static str>), String> {
    if let Some(url) = (env.var)(DATABASE_URL_ENV) {
        return Ok((url, Some(DATABASE_URL_ENV)));
    }
    if (env.var)(OLD_DATABASE_URL_ENV).is_some() {
        return Err(format!(
            "{OLD_DATABASE_URL_ENV} is set, but pals reads the URL from {DATABASE_URL_ENV} \
             (else {FALLBACK_DATABASE_URL_ENV}): rename the variable"
        ));
    }
    match (env.var)(FALLBACK_DATABASE_URL_ENV) {
        Some(url) => Ok((url, Some(FALLBACK_DATABASE_URL_ENV))),
        None => Ok((String::new(), None)),
    }
}

/// `url` (a URL or key=value pairs) with its secrets replaced by `***`, for messages.
pub(crate) fn masked(url: &str) -> String {
    mask_password(url)
}

/// Where libpq looks for the server's Unix socket when no host is given.
const SOCKET_DIRECTORIES: &[&str] = &["/var/run/postgresql", "/tmp"];

/// A database configuration ready to connect with.
#[derive(Clone, Debug)]
pub(crate) struct DbConfig {
    pub(crate) config: tokio_postgres::Config,
    pub(crate) tls: TlsSettings,
    /// `connect_timeout` from the URL or `PGCONNECT_TIMEOUT`, if given.
    pub(crate) connect_timeout: Option<Duration>,
    /// TCP keepalive settings the URL gave (each `None`: pals' default).
    pub(crate) keepalives: Keepalives,
}

/// TCP keepalive settings given in the URL.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Keepalives {
    pub(crate) on: Option<bool>,
    pub(crate) idle: Option<Duration>,
    pub(crate) interval: Option<Duration>,
    pub(crate) count: Option<u32>,
}

/// What the process environment offers: its variables and the user's home directory.
pub(crate) struct Environment<'a> {
    pub(crate) var: &'a dyn Fn(&str) -> Option<String>,
    pub(crate) home: Option<PathBuf>,
    /// Whether a path exists (for the default socket directory).
    pub(crate) exists: &'a dyn Fn(&Path) -> bool,
    /// The operating system's name of the user this process runs as.
    pub(crate) os_user: Option<String>,
    /// The text of a file, if it can be read (for the service files).
    pub(crate) read: &'a dyn Fn(&Path) -> Option<String>,
}

impl Environment<'_> {
    /// The real environment of this process.
    pub(crate) fn of_process() -> Environment<'static> {
        Environment {
            var: &|name| std::env::var(name).ok().filter(|v| !v.is_empty()),
            home: std::env::var_os("HOME")
                .or_else(|| std::env::var_os("USERPROFILE"))
                .map(PathBuf::from),
            exists: &|path| path.exists(),
            os_user: os_user(),
            read: &|path| std::fs::read_to_string(path).ok(),
        }
    }
}

/// The user this process runs as: `USER` (or `LOGNAME`, `USERNAME`), else, on Linux, the
/// name `/etc/passwd` gives the process's user id (libpq asks the same of the system).
fn os_user() -> Option<String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if let Some(user) = var("USER")
        .or_else(|| var("LOGNAME"))
        .or_else(|| var("USERNAME"))
    {
        return Some(user);
    }
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?; // the effective user id
    std::fs::read_to_string("/etc/passwd")
        .ok()?
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.get(2) == Some(&uid)).then(|| fields[0].to_string())
        })
}

/// Reads `url` (a URL, `key=value` pairs, or empty) as libpq would, in `env`: the URL's
/// parameters, then its service's (`service=` or `PGSERVICE`), then the `PG*` variables.
pub(crate) fn read(url: &str, env: &Environment<'_>) -> Result<DbConfig, String> {
    let url = url.trim();
    let cannot = |why: String| match url {
        "" => format!("cannot use the database settings of the PG* variables: {why}"),
        url => format!(
            "cannot use the database URL `{}`: {why}",
            mask_password(url)
        ),
    };
    let mut params = parse(url).map_err(cannot)?;
    let service = params
        .get("service")
        .cloned()
        .or_else(|| (env.var)("PGSERVICE"));
    if let Some(service) = service {
        for (key, value) in service_params(&service, env).map_err(cannot)? {
            params.entry(key).or_insert(value);
        }
    }
    for known in PARAMETERS {
        if let (false, Some(variable)) = (params.contains_key(known.name), known.variable) {
            if let Some(value) = (env.var)(variable) {
                check_refused(known.name, &format!("from {variable}")).map_err(cannot)?;
                params.insert(known.name.to_string(), value);
            }
        }
    }
    build(params, env).map_err(cannot)
}

/// The parameters `text` gives, by libpq name.
fn parse(text: &str) -> Result<BTreeMap<String, String>, String> {
    let pairs = if text.is_empty() {
        Vec::new()
    } else if let Some(rest) = strip_scheme(text) {
        parse_url(rest)?
    } else if let Some((scheme, _)) = text.split_once("://") {
        return Err(format!(
            "`{scheme}://` is not a PostgreSQL URL: write postgresql://user@host:port/dbname, \
             or key=value pairs (host=... dbname=...)"
        ));
    } else {
        key_value_pairs(text)
            .map_err(|why| {
                format!(
                    "it is neither a postgresql:// URL nor key=value pairs ({why}): write \
                     postgresql://user@host:port/dbname, or host=... dbname=..."
                )
            })?
            .into_iter()
            .map(|pair| (pair.key, pair.value))
            .collect()
    };
    let mut params = BTreeMap::new();
    for (key, value) in pairs {
        if parameter(&key).is_none() {
            return Err(unknown(&key));
        }
        check_refused(&key, "in the URL")?;
        params.insert(key, value);
    }
    Ok(params)
}

/// What pals sets on the configuration of every session of `app`: its name (unless the
/// URL gave one), the connect timeout, and TCP keepalives (30 s idle, 10 s interval, 3
/// probes, unless the URL says otherwise).
pub(crate) fn for_sessions(
    config: &mut tokio_postgres::Config,
    app: &str,
    connect_timeout: Duration,
    keepalives: Keepalives,
) {
    if config.get_application_name().is_none() {
        // Shows in pg_stat_activity which application's sessions hold which locks.
        config.application_name(application_name(app));
    }
    config.connect_timeout(connect_timeout);
    // The server frees a dead client's locks only when TCP says the client is gone.
    config
        .keepalives(keepalives.on.unwrap_or(true))
        .keepalives_idle(keepalives.idle.unwrap_or(Duration::from_secs(30)))
        .keepalives_interval(keepalives.interval.unwrap_or(Duration::from_secs(10)))
        .keepalives_retries(keepalives.count.unwrap_or(3));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::SslMode;
    use tokio_postgres::config::Host;

    /// An environment with these variables, no home, and a socket in `sockets` only.
    fn read_in(url: &str, vars: &[(&str, &str)], sockets: &[&str]) -> Result<DbConfig, String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let sockets: Vec<PathBuf> = sockets.iter().map(PathBuf::from).collect();
        let os_user = vars
            .iter()
            .find(|(k, _)| k == "USER")
            .map(|(_, v)| v.clone());
        let var = move |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let exists = move |path: &Path| sockets.iter().any(|s| s == path);
        read(
            url,
            &Environment {
                var: &var,
                home: None,
                exists: &exists,
                os_user,
                read: &|_| None,
            },
        )
    }

    fn hosts(config: &DbConfig) -> Vec<String> {
        config
            .config
            .get_hosts()
            .iter()
            .map(|host| match host {
                Host::Tcp(name) => name.clone(),
                #[cfg(unix)]
                Host::Unix(path) => path.display().to_string(),
            })
            .collect()
    }

    #[test]
    fn urls_and_key_value_pairs_give_the_same_settings() {
        for url in [
            "postgresql://ann:s%40cret@db.example:6543/orders?sslmode=require&application_name=billing",
            "host=db.example port=6543 user=ann password='s@cret' dbname=orders sslmode=require application_name=billing",
        ] {
            let read = read_in(url, &[], &[]).unwrap();
            assert_eq!(hosts(&read), ["db.example"]);
            assert_eq!(read.config.get_ports(), [6543]);
            assert_eq!(read.config.get_user(), Some("ann"));
            assert_eq!(read.config.get_password(), Some(&b"s@cret"[..]));
            assert_eq!(read.config.get_dbname(), Some("orders"));
            assert_eq!(read.config.get_application_name(), Some("billing"));
            assert_eq!(read.tls.mode, SslMode::Require);
            assert_eq!(describe_target(&read.config), "db.example:6543");
        }
    }

    #[test]
    fn what_the_url_leaves_out_comes_from_pg_variables_then_defaults() {
        let vars = [
            ("PGHOST", "pg.internal"),
            ("PGPORT", "5433"),
            ("PGUSER", "svc"),
            ("PGPASSWORD", "pw"),
            ("PGSSLMODE", "verify-full"),
            ("PGSSLROOTCERT", "/etc/ca.pem"),
            ("PGAPPNAME", "from-env"),
        ];
        let read = read_in("", &vars, &[]).unwrap();
        assert_eq!(hosts(&read), ["pg.internal"]);
        assert_eq!(read.config.get_ports(), [5433]);
        assert_eq!(read.config.get_user(), Some("svc"));
        assert_eq!(
            read.config.get_dbname(),
            Some("svc"),
            "dbname defaults to the user"
        );
        assert_eq!(read.config.get_password(), Some(&b"pw"[..]));
        assert_eq!(read.tls.mode, SslMode::VerifyFull);
        assert_eq!(read.config.get_application_name(), Some("from-env"));
        // The URL wins over the variables.
        let read = read_in("postgresql://u@h:1/d", &vars, &[]).unwrap();
        assert_eq!(
            (hosts(&read), read.config.get_ports()),
            (vec!["h".to_string()], &[1][..])
        );
        assert_eq!(read.config.get_user(), Some("u"));
        // Nothing at all: the OS user, localhost, 5432.
        let read = read_in("", &[("USER", "me")], &[]).unwrap();
        assert_eq!(hosts(&read), ["localhost"]);
        assert_eq!(read.config.get_ports(), [5432]);
        assert_eq!(read.config.get_user(), Some("me"));
    }

    #[cfg(unix)]
    #[test]
    fn unix_sockets_by_default_and_by_path() {
        let socket = "/var/run/postgresql/.s.PGSQL.5432";
        let read = read_in("postgresql:///postgres", &[("USER", "me")], &[socket]).unwrap();
        assert_eq!(hosts(&read), ["/var/run/postgresql"]);
        assert_eq!(describe_target(&read.config), socket);
        let read = read_in("host=/tmp/pg port=6000 user=u", &[], &[]).unwrap();
        assert_eq!(hosts(&read), ["/tmp/pg"]);
        let read = read_in("postgresql://u@%2Ftmp%2Fpg:6000/db", &[], &[]).unwrap();
        assert_eq!(hosts(&read), ["/tmp/pg"]);
        assert_eq!(describe_target(&read.config), "/tmp/pg/.s.PGSQL.6000");
    }

    #[test]
    fn mistakes_say_which_part_is_wrong() {
        let err = |url: &str| read_in(url, &[("USER", "me")], &[]).unwrap_err();
        assert!(err("http://db/x").contains("`http://` is not a PostgreSQL URL"));
        assert!(err("not a url").contains("neither a postgresql:// URL nor key=value pairs"));
        assert!(err("postgresql://h:543210/db").contains("port `543210` is not a port number"));
        assert!(err("postgresql://h:0/db").contains("port `0`"));
        assert!(err("postgresql://h/db?connect_timeout=abc")
            .contains("connect_timeout `abc` is not a number of seconds"));
        assert!(err("postgresql://h/db?sslmode=sometimes").contains("sslmode `sometimes`"));
        assert!(err("postgresql://h/db?colour=blue").contains("unknown parameter `colour`"));
        assert!(err("postgresql://h/db?hostaddr=h").contains("not an IP address"));
        assert!(err("host='h").contains("no closing quote"));
        assert!(err("postgresql://[::1/db").contains("never closes"));
        assert!(err("postgresql://a,b/db?port=1,2,3").contains("3 ports for 2 hosts"));
        // The password never shows.
        let message = err("postgresql://u:hunter2@h:99999/db");
        assert!(
            !message.contains("hunter2") && message.contains("u:***@h"),
            "{message}"
        );
        let message = err("host=h password=hunter2 port=x");
        assert!(!message.contains("hunter2"), "{message}");
        // Nor the client key's passphrase, nor a password under an encoded name.
        for url in [
            "postgresql://u@h:99999/db?sslpassword=hunter2",
            "postgresql://u@h/db?sslmode=require&sslpassword=hunter2&port=x",
            "postgresql://u@h:99999/db?p%61ssword=hunter2",
            "host=h sslpassword=hunter2 port=x",
        ] {
            let message = err(url);
            assert!(
                !message.contains("hunter2") && message.contains("=***"),
                "{message}"
            );
        }
    }

    #[test]
    fn connect_timeouts_and_keepalives_from_the_url() {
        let read = read_in(
            "postgresql://h/db?connect_timeout=3&keepalives_idle=5&keepalives_count=2&keepalives=1",
            &[("USER", "me")],
            &[],
        )
        .unwrap();
        assert_eq!(read.connect_timeout, Some(Duration::from_secs(3)));
        assert_eq!(read.keepalives.idle, Some(Duration::from_secs(5)));
        assert_eq!(read.keepalives.count, Some(2));
        assert_eq!(read.keepalives.on, Some(true));
        assert_eq!(read.keepalives.interval, None);
        let read = read_in(
            "postgresql://h/db?connect_timeout=0",
            &[("USER", "me")],
            &[],
        )
        .unwrap();
        assert_eq!(
            read.connect_timeout,
            Some(Duration::MAX),
            "0: no limit, as libpq"
        );
    }

    #[test]
    fn sessions_keep_alive_and_name_themselves_unless_the_url_does() {
        let mut config: tokio_postgres::Config = "postgresql://h/db".parse().unwrap();
        for_sessions(
            &mut config,
            "app",
            Duration::from_secs(3),
            Keepalives::default(),
        );
        assert_eq!(
            config.get_application_name(),
            Some(application_name("app").as_str())
        );
        assert_eq!(config.get_connect_timeout(), Some(&Duration::from_secs(3)));
        assert!(config.get_keepalives());
        assert_eq!(config.get_keepalives_idle(), Duration::from_secs(30));
        assert_eq!(
            config.get_keepalives_interval(),
            Some(Duration::from_secs(10))
        );
        assert_eq!(config.get_keepalives_retries(), Some(3));

        let mut config: tokio_postgres::Config = "postgresql://h/db?application_name=billing"
            .parse()
            .unwrap();
        let keepalives = Keepalives {
            idle: Some(Duration::from_secs(5)),
            ..Keepalives::default()
        };
        for_sessions(&mut config, "app", Duration::from_secs(3), keepalives);
        assert_eq!(config.get_application_name(), Some("billing"));
        assert_eq!(config.get_keepalives_idle(), Duration::from_secs(5));
    }
}
