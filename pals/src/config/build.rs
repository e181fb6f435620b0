//! Turning the parameters (URL, environment, defaults) into a tokio-postgres configuration,
//! one group of parameters at a time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_postgres::config::{ChannelBinding, Host, LoadBalanceHosts, TargetSessionAttrs};

use super::passfile::{default_passfile, password_from_file};
use super::tls::tls;
use super::{DbConfig, Environment, Keepalives, SOCKET_DIRECTORIES};

/// The parameters by libpq name.
pub(super) type Params = BTreeMap<String, String>;

/// The configuration the parameters describe, in `env`.
pub(super) fn build(mut params: Params, env: &Environment<'_>) -> Result<DbConfig, String> {
    let mut config = tokio_postgres::Config::new();
    let (hosts, ports) = hosts_and_ports(&params, env, &mut config)?;
    let (user, dbname) = user_and_database(&params, env, &mut config)?;
    if !params.contains_key("password") {
        let host = hosts.first().map_or("localhost", String::as_str);
        if let Some(password) = password_from_passfile(&params, env, host, ports[0], &dbname, &user)
        {
            params.insert("password".into(), password);
        }
    }
    if let Some(password) = params.get("password") {
        config.password(password);
    }
    session_options(&params, &mut config)?;
    Ok(DbConfig {
        config,
        tls: tls(&params, env)?,
        connect_timeout: connect_timeout(&params)?,
        keepalives: keepalives(&params)?,
    })
}

/// The hosts and their ports (each host has one; a single port serves them all), and
/// `hostaddr`.
fn hosts_and_ports(
    params: &Params,
    env: &Environment<'_>,
    config: &mut tokio_postgres::Config,
) -> Result<(Vec<String>, Vec<u16>), String> {
    let ports: Vec<u16> = match params.get("port") {
        None => vec![5432],
        Some(ports) => ports.split(',').map(port).collect::<Result<_, _>>()?,
    };
    let hosts: Vec<String> = match params.get("host") {
        Some(hosts) => hosts.split(',').map(|h| h.trim().to_string()).collect(),
        None if params.contains_key("hostaddr") => Vec::new(),
        None => vec![default_host(ports[0], env)],
    };
    if hosts.iter().any(String::is_empty) {
        return Err("an empty host in a list of hosts".into());
    }
    if ports.len() > 1 && ports.len() != hosts.len().max(1) {
        return Err(format!(
            "{} ports for {} hosts: give one port, or one for each host",
            ports.len(),
            hosts.len()
        ));
    }
    for host in &hosts {
        if host.starts_with('/') && !cfg!(unix) {
            return Err(format!(
                "`{host}` is a Unix socket directory, and this system has none"
            ));
        }
        config.host(host);
    }
    if let Some(addresses) = params.get("hostaddr") {
        for address in addresses.split(',') {
            let ip = address
                .trim()
                .parse()
                .map_err(|_| format!("hostaddr `{address}` is not an IP address"))?;
            config.hostaddr(ip);
        }
    }
    for port in &ports {
        config.port(*port);
    }
    Ok((hosts, ports))
}

/// One port of a `port` list (empty: 5432).
fn port(text: &str) -> Result<u16, String> {
    match text.trim() {
        "" => Ok(5432),
        port => port
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("port `{port}` is not a port number (1 to 65535)")),
    }
}

/// The user (else the OS user) and the database (else the user's name).
fn user_and_database(
    params: &Params,
    env: &Environment<'_>,
    config: &mut tokio_postgres::Config,
) -> Result<(String, String), String> {
    let user = params
        .get("user")
        .cloned()
        .or_else(|| env.os_user.clone())
        .ok_or("no user given, and the OS user is unknown: put user@ in the URL or set PGUSER")?;
    config.user(&user);
    let dbname = params
        .get("dbname")
        .cloned()
        .unwrap_or_else(|| user.clone());
    config.dbname(&dbname);
    Ok((user, dbname))
}

/// The password the password file gives for this connection, if any.
fn password_from_passfile(
    params: &Params,
    env: &Environment<'_>,
    host: &str,
    port: u16,
    dbname: &str,
    user: &str,
) -> Option<String> {
    let passfile = params
        .get("passfile")
        .map(PathBuf::from)
        .or_else(|| default_passfile(env))?;
    password_from_file(&passfile, host, port, dbname, user)
}

/// `options`, the application name, and the choices tokio-postgres knows.
fn session_options(params: &Params, config: &mut tokio_postgres::Config) -> Result<(), String> {
    if let Some(options) = params.get("options") {
        config.options(options);
    }
    let name = params
        .get("application_name")
        .or_else(|| params.get("fallback_application_name"));
    if let Some(name) = name {
        config.application_name(name);
    }
    use TargetSessionAttrs as Attrs;
    let attrs = [
        ("any", Attrs::Any),
        ("read-write", Attrs::ReadWrite),
        ("read-only", Attrs::ReadOnly),
    ];
    if let Some(attrs) = one_of(params, "target_session_attrs", &attrs)? {
        config.target_session_attrs(attrs);
    }
    use ChannelBinding as Binding;
    let bindings = [
        ("disable", Binding::Disable),
        ("prefer", Binding::Prefer),
        ("require", Binding::Require),
    ];
    if let Some(binding) = one_of(params, "channel_binding", &bindings)? {
        config.channel_binding(binding);
    }
    let balances = [
        ("disable", LoadBalanceHosts::Disable),
        ("random", LoadBalanceHosts::Random),
    ];
    if let Some(balance) = one_of(params, "load_balance_hosts", &balances)? {
        config.load_balance_hosts(balance);
    }
    if let Some(millis) = number(params, "tcp_user_timeout", "milliseconds")? {
        config.tcp_user_timeout(Duration::from_millis(millis));
    }
    Ok(())
}

/// `connect_timeout`. libpq: zero or less waits for ever; pals' connect timeout needs a
/// limit, so it is the largest there is.
fn connect_timeout(params: &Params) -> Result<Option<Duration>, String> {
    let Some(text) = params.get("connect_timeout") else {
        return Ok(None);
    };
    match text.trim().parse::<i64>() {
        Ok(secs) if secs > 0 => Ok(Some(Duration::from_secs(secs as u64))),
        Ok(_) => Ok(Some(Duration::MAX)),
        Err(_) => Err(format!(
            "connect_timeout `{text}` is not a number of seconds"
        )),
    }
}

/// The TCP keepalive settings given.
fn keepalives(params: &Params) -> Result<Keepalives, String> {
    Ok(Keepalives {
        on: one_of(params, "keepalives", &[("1", true), ("0", false)])?,
        idle: number(params, "keepalives_idle", "seconds")?.map(Duration::from_secs),
        interval: number(params, "keepalives_interval", "seconds")?.map(Duration::from_secs),
        count: number(params, "keepalives_count", "probes")?
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
    })
}

/// A parameter that must be one of `choices` (by name), as its value.
pub(super) fn one_of<T: Copy>(
    params: &Params,
    key: &str,
    choices: &[(&str, T)],
) -> Result<Option<T>, String> {
    let Some(text) = params.get(key) else {
        return Ok(None);
    };
    if let Some((_, value)) = choices.iter().find(|(name, _)| name == text) {
        return Ok(Some(*value));
    }
    let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
    let (last, rest) = names.split_last().expect("choices are given");
    Err(format!(
        "{key} `{text}`: expected {} or {last}",
        rest.join(", ")
    ))
}

/// A parameter that must be a whole number of `unit`s.
fn number(params: &Params, key: &str, unit: &str) -> Result<Option<u64>, String> {
    params
        .get(key)
        .map(|text| {
            text.trim()
                .parse::<u64>()
                .map_err(|_| format!("{key} `{text}` is not a number of {unit}"))
        })
        .transpose()
}

/// libpq's default host: the server's Unix socket where one is found, else `localhost`.
fn default_host(port: u16, env: &Environment<'_>) -> String {
    if cfg!(unix) {
        for directory in SOCKET_DIRECTORIES {
            let socket = Path::new(directory).join(format!(".s.PGSQL.{port}"));
            if (env.exists)(&socket) {
                return directory.to_string();
            }
        }
    }
    "localhost".to_string()
}

/// Where a configuration connects, for messages: `host:port` of its first host (with its
/// address, if `hostaddr` gives one), or the socket's path, and how many more hosts there are.
pub(crate) fn describe_target(config: &tokio_postgres::Config) -> String {
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let address = config.get_hostaddrs().first();
    let first = match (config.get_hosts().first(), address) {
        #[cfg(unix)]
        (Some(Host::Unix(path)), _) => format!("{}/.s.PGSQL.{port}", path.display()),
        (Some(Host::Tcp(host)), Some(address)) => format!("{host} ({address}):{port}"),
        (Some(Host::Tcp(host)), None) if host.contains(':') => format!("[{host}]:{port}"),
        (Some(Host::Tcp(host)), None) => format!("{host}:{port}"),
        (None, Some(address)) => format!("{address}:{port}"),
        (None, None) => format!("localhost:{port}"),
    };
    match config.get_hosts().len() {
        0 | 1 => first,
        n => format!("{first} (and {} more hosts)", n - 1),
    }
}
