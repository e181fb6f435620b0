//! The locker the commands ask through: one session, no heartbeat, its database from
//! `--url` or from the environment as pals reads it.

/// The application name the `pals` command's sessions show in `pg_stat_activity`, unless
/// the URL or `PGAPPNAME` name one: not `pals:{app}@...`, which would pass the command for
/// a replica of the app it looks at.
pub(crate) const SESSION_NAME: &str = "pals-cli";

/// The app of a locker that takes no lock (holders of every app).
pub(crate) const NO_APP: &str = "pals-cli";

/// Names the command's sessions [`SESSION_NAME`], unless `PGAPPNAME` names them already.
/// Called at the start of `main`, before any thread is started.
pub(crate) fn name_sessions() {
    if std::env::var_os("PGAPPNAME").map_or(true, |name| name.is_empty()) {
        std::env::set_var("PGAPPNAME", SESSION_NAME);
    }
}

/// A locker of `app` on `url` (`None`: the environment), its runs table in `schema`.
/// Does no I/O: fails only on a configuration that cannot be used.
pub(crate) fn locker(
    app: &str,
    url: Option<&str>,
    schema: &str,
) -> Result<pals::Locker, pals::Error> {
    let builder = pals::Locker::builder(app)
        .pool_size(1)
        .heartbeat(None)
        .schema(schema);
    let builder = match url {
        Some(url) => builder.url(url),
        None => builder.url_from_env(),
    };
    builder.build()
}
