//! Who this process is, as pals tells the server and other replicas: the host name, and
//! the `application_name` of its sessions.

/// The `application_name` that pals gives the sessions of `app` from this process, unless
/// the URL names one: `pals:{app}@{host}:{pid}`, so that `pg_stat_activity` (and
/// [`Locker::holders`](crate::Locker::holders)) tell which replica holds what.
///
/// PostgreSQL keeps 63 bytes of it: the app comes first and is kept whole where it fits,
/// then the host name is shortened, then, for an app too long to leave room, the name is
/// cut to `pals:{app}` alone (on a character boundary).
///
/// ```
/// let name = pals::application_name("billing");
/// assert!(name.starts_with("pals:billing@"));
/// assert!(name.ends_with(&format!(":{}", std::process::id())));
/// ```
pub fn application_name(app: &str) -> String {
    name_within_limit(app, host_name(), std::process::id())
}

/// `pals:{app}@{host}:{pid}` within PostgreSQL's 63 bytes (see [`application_name`]).
fn name_within_limit(app: &str, host: &str, pid: u32) -> String {
    const LIMIT: usize = 63;
    let head = format!("pals:{app}");
    let tail = format!(":{pid}");
    // No room for a byte of the host: the app alone (never an empty host).
    let Some(room_for_host) = LIMIT
        .checked_sub(head.len() + 1 + tail.len())
        .filter(|room| *room > 0)
    else {
        return cut(head, LIMIT);
    };
    format!("{head}@{}{tail}", cut(host.to_string(), room_for_host))
}

/// `text` cut to at most `limit` bytes, on a character boundary.
fn cut(mut text: String, limit: usize) -> String {
    let mut end = text.len().min(limit);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text
}

/// This machine's host name (the kernel's on Linux, else `HOSTNAME` or `COMPUTERNAME`).
pub(crate) fn host_name() -> &'static str {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .or_else(|| std::env::var("COMPUTERNAME").ok())
            .map(|name| name.trim().to_string())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "unknown-host".to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn application_name_names_the_replica_within_63_bytes() {
        assert_eq!(name_within_limit("app", "web-1", 42), "pals:app@web-1:42");
        // A long host name is shortened first; the app and the pid stay whole.
        let name = name_within_limit("billing", &"h".repeat(80), 123456);
        assert_eq!(name.len(), 63);
        assert!(
            name.starts_with("pals:billing@hhh") && name.ends_with(":123456"),
            "{name}"
        );
        // An app too long to leave room: the app alone, cut on a character boundary.
        let name = name_within_limit(&"é".repeat(100), "web-1", 42);
        assert!(name.len() <= 63 && name.starts_with("pals:é") && !name.contains('@'));
        // Exactly no room left for the host: the app alone, not an empty host.
        let app = "a".repeat(63 - "pals:".len() - "@:42".len());
        assert_eq!(name_within_limit(&app, "web-1", 42), format!("pals:{app}"));
        let app = &app[1..]; // one byte of room: one byte of the host
        assert_eq!(
            name_within_limit(app, "web-1", 42),
            format!("pals:{app}@w:42")
        );
        assert!(application_name("app").starts_with("pals:app@"));
    }
}
