//! The examples' and tests' own PostgreSQL (`pals_devdb`): where nothing answers at the
//! default address, a private cluster is made and started in a directory of the test's
//! own, once for parallel callers, then reused, restarted, moved to a free port; where
//! something answers, it is used; with no programs to start one, the error says the three
//! ways to get a server.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;

use pals_devdb::{Account, DevDb, How, Search, Server};
use pals_tests::{free_port, lock_through, unique_app, TempDir};

/// An address where nothing answers (a port that was free a moment ago).
fn nothing_answers() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// Stops the test's cluster, whatever the test's end.
struct Stopped<'a>(&'a DevDb);

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        let _ = self.0.stop();
    }
}

/// The port of a server's URL.
fn port_of(server: &Server) -> u16 {
    let (_, port) = server.url.rsplit_once(':').unwrap();
    port.split('/').next().unwrap().parse().unwrap()
}

/// Whether the session pals opens through `url` is encrypted, as the server sees it.
fn encrypted(url: &str) -> bool {
    let locker = pals::Locker::new(unique_app("devdb-tls"), url).unwrap();
    locker.blocking_check().unwrap().tls()
}

#[test]
fn a_private_cluster_starts_once_where_nothing_answers_then_is_reused() {
    let dir = TempDir::new("devdb");
    let devdb = DevDb::new(dir.path().join("pals-postgres"), nothing_answers());
    let _stopped = Stopped(&devdb);

    // Three callers at once (threads here; processes take the same file lock): one makes
    // and starts the cluster, the others wait for it and find it running.
    let servers: Vec<Server> = std::thread::scope(|scope| {
        let callers: Vec<_> = (0..3).map(|_| scope.spawn(|| devdb.server())).collect();
        callers
            .into_iter()
            .map(|caller| caller.join().unwrap().unwrap_or_else(|e| panic!("{e}")))
            .collect()
    });
    let started: Vec<_> = servers.iter().filter(|s| s.how == How::Started).collect();
    assert_eq!(started.len(), 1, "{servers:?}");
    assert!(
        servers.iter().all(|s| s.url == servers[0].url),
        "{servers:?}"
    );
    let server = &servers[0];
    assert!(
        server.url.starts_with("postgresql://postgres@127.0.0.1:"),
        "{}",
        server.url
    );

    // pals locks through it, over TLS too (the TLS tests need SSL on).
    lock_through(&server.url, None).unwrap();
    let tls = format!("{}?sslmode=require", server.url);
    lock_through(&tls, None).unwrap();
    assert!(encrypted(&tls));
    // Its certificate, trusted, passes verify-full by its name and fails by the address:
    // what tests/tls.rs expects of a server's certificate.
    let crt = server.dir.as_ref().unwrap().join("data/server.crt");
    let trusted = format!("sslmode=verify-full&sslrootcert={}", crt.display());
    let by_name = server.url.replace("127.0.0.1", "localhost");
    lock_through(&format!("{by_name}?{trusted}"), None).unwrap();
    let by_address = lock_through(&format!("{}?{trusted}", server.url), None).unwrap_err();
    assert!(by_address.to_string().contains("issued to"), "{by_address}");

    // Stopped, it starts again on the same port; a later caller finds it running.
    assert!(devdb.stop().unwrap());
    assert!(!devdb.stop().unwrap(), "stopped twice");
    let again = devdb.server().unwrap();
    assert_eq!((again.how, &again.url), (How::Started, &server.url));
    assert_eq!(devdb.server().unwrap().how, How::Running);
    lock_through(&again.url, None).unwrap();
}

#[test]
fn a_port_taken_while_the_cluster_was_stopped_is_replaced_by_a_free_one() {
    let dir = TempDir::new("devdb-port");
    let devdb = DevDb::new(dir.path().join("pals-postgres"), nothing_answers());
    let _stopped = Stopped(&devdb);
    let first = devdb.server().unwrap();
    assert!(devdb.stop().unwrap());

    let squatter = TcpListener::bind(("127.0.0.1", port_of(&first))).unwrap();
    let moved = devdb.server().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(moved.how, How::Started);
    assert_ne!(port_of(&moved), port_of(&first), "{moved:?}");
    lock_through(&moved.url, None).unwrap();
    drop(squatter);
}

#[test]
fn a_server_answering_at_the_default_address_is_used_and_nothing_is_made() {
    let dir = TempDir::new("devdb-answering");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let cluster_dir = dir.path().join("pals-postgres");
    let server = DevDb::new(&cluster_dir, address).server().unwrap();
    assert_eq!(server.how, How::Answering);
    assert_eq!(
        server.url,
        format!("postgresql://postgres@{address}/postgres")
    );
    assert!(!cluster_dir.exists(), "nothing is made");
}

#[test]
fn with_no_server_and_no_programs_the_error_names_the_three_ways() {
    let dir = TempDir::new("devdb-none");
    let error = DevDb::new(dir.path().join("pals-postgres"), nothing_answers())
        .search(Search::only(vec![dir.path().join("bin")]))
        .server()
        .unwrap_err();
    let message = error.to_string();
    for way in [
        "set PALS_DB_URL to a PostgreSQL you have",
        "apt-get install postgresql",
        "brew install postgresql",
        "docker compose up -d --wait",
    ] {
        assert!(message.contains(way), "{way:?} missing from: {message}");
    }
    assert!(
        message.contains(&format!("looked in {}", dir.path().join("bin").display())),
        "{message}"
    );
}

/// Run as root, the cluster runs as `postgres`: in the directory asked for when that user
/// can enter it, else in the temporary directory (a clone under a closed home directory).
#[test]
fn as_root_a_cluster_under_a_closed_directory_lives_in_the_temporary_directory() {
    let dir = TempDir::new("devdb-closed");
    let closed = dir.path().join("home");
    std::fs::create_dir(&closed).unwrap();
    set_mode(&closed, 0o700);
    let asked = closed.join("target").join("pals-postgres");
    let devdb = DevDb::new(&asked, nothing_answers());
    let _stopped = Stopped(&devdb);
    let server = devdb.server().unwrap_or_else(|e| panic!("{e}"));
    let placed = server.dir.clone().unwrap();
    match Account::for_this_process().unwrap() {
        Account::Postgres => {
            assert!(placed.starts_with(std::env::temp_dir()), "{placed:?}");
            assert!(!placed.starts_with(&closed), "{placed:?}");
        }
        Account::Current => assert_eq!(placed, asked),
    }
    lock_through(&server.url, None).unwrap();
    drop(_stopped);
    let _ = std::fs::remove_dir_all(&placed);
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}
