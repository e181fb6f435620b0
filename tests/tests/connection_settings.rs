//! What pals sets on its sessions, seen from the server and from the operating system:
//! the `application_name` (its own, or the URL's), and TCP keepalives on the socket.

use pals_tests::{db_url_with, locker, locker_with, probe_i64, probe_query, unique_app};

#[tokio::test]
async fn sessions_are_named_after_the_app_unless_the_url_names_them() {
    let app = unique_app("named");
    let mine = locker(&app);
    let _guard = mine.lock("x").acquire().await.unwrap();
    assert_eq!(pals_tests::sessions_of(&app), 1, "named pals:{app}");

    let own = unique_app("own-name");
    let url = db_url_with(None, None, None, &format!("application_name={own}"));
    let named = locker_with(&unique_app("unnamed"), |b| b.url(&url));
    let _guard = named.lock("x").acquire().await.unwrap();
    let sessions = probe_i64(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{own}'"
    ));
    assert_eq!(sessions, 1, "the URL's application_name is kept");
}

/// Keepalives are on the socket, with the 30 s idle time: Linux shows a socket's pending
/// keepalive timer in `/proc/net/tcp` (timer kind 2, time left in hundredths of a second);
/// a socket without keepalives shows none, and the system default idle time is 2 hours.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn tcp_keepalives_are_on_with_a_30_second_idle_time() {
    let app = unique_app("keepalive");
    let mine = locker(&app);
    let _guard = mine.lock("x").acquire().await.unwrap();
    let port = probe_query(&format!(
        "SELECT client_port::text FROM pg_stat_activity WHERE application_name = '{}'",
        pals_tests::application_name(&app)
    ))
    .unwrap();
    let port: u16 = match port.as_slice() {
        [Some(port)] => port.parse().expect("a TCP port"),
        other => panic!("expected one TCP session, found {other:?} (a Unix socket URL?)"),
    };
    // The kernel shows one timer per socket, a retransmit or loss-probe timer (kind 1) before
    // the keepalive timer: while a segment of the session waits for its ACK (a moment,
    // longer on a loaded machine), the keepalive timer is hidden.
    let mut socket = None;
    pals_tests::eventually(std::time::Duration::from_secs(2), || {
        socket = our_socket(port);
        socket.is_some_and(|(kind, _)| kind == 2)
    });
    let (kind, left) = socket.expect("the session's socket in /proc/net/tcp{,6}");
    assert_eq!(kind, 2, "no keepalive timer on the socket");
    // Armed when the socket last carried data, a moment ago: close to 30 s left.
    assert!(
        left > 20 * 100 && left <= 30 * 100,
        "keepalive fires in {left} hundredths of a second, expected 20 to 30 s"
    );
}

/// The timer kind and time left of this process's TCP socket on local port `port`.
#[cfg(target_os = "linux")]
fn our_socket(port: u16) -> Option<(u32, u64)> {
    let local = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|table| table.lines().skip(1).map(String::from).collect::<Vec<_>>())
        .find_map(|line| {
            // sl local_address rem_address st tx_queue:rx_queue tr:tm->when ...
            let fields: Vec<&str> = line.split_whitespace().collect();
            if !fields.get(1)?.ends_with(&local) {
                return None;
            }
            let (kind, left) = fields.get(5)?.split_once(':')?;
            Some((
                u32::from_str_radix(kind, 16).ok()?,
                u64::from_str_radix(left, 16).ok()?,
            ))
        })
}
