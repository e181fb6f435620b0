//! Client certificate authentication (pg_hba.conf `cert`) against a throwaway cluster whose
//! certificates the test makes with `openssl`: `sslcert`/`sslkey` log in on rustls and
//! native-tls, an encrypted key opens with `sslpassword`, and what goes wrong says what to do.

use pals::TlsBackend;
use pals_tests::certs::TestCa;
use pals_tests::cluster::TempCluster;

#[cfg(feature = "native-tls")]
const BACKENDS: &[TlsBackend] = &[TlsBackend::Rustls, TlsBackend::NativeTls];
/// Without the crate's `native-tls` feature (`cargo test --all-features` has it), rustls only.
#[cfg(not(feature = "native-tls"))]
const BACKENDS: &[TlsBackend] = &[TlsBackend::Rustls];

/// Only TLS with a certificate whose CN is the user gets in over TCP.
const HBA: &str = "local all all trust\nhostssl all all 127.0.0.1/32 cert\n";

/// A cluster that authenticates by certificate, its CA, and a client certificate for
/// `postgres` (`client.crt`, `client.key`).
fn cert_cluster(tag: &str) -> (TempCluster, TestCa) {
    let ca = TestCa::new(tag);
    ca.issue("client", "postgres", None);
    let cluster = TempCluster::start_with_tls(tag, &ca, HBA);
    (cluster, ca)
}

/// The cluster's URL with `query` after the CA's `sslrootcert` and verify-full.
fn url(cluster: &TempCluster, ca: &TestCa, query: &str) -> String {
    format!(
        "postgresql://postgres@127.0.0.1:{}/postgres?sslmode=verify-full&sslrootcert={}&{query}",
        cluster.port(),
        ca.path("ca.crt").display()
    )
}

/// Takes and lets go a lock through `url` with `backend`.
fn lock_through(url: &str, backend: TlsBackend) -> Result<(), pals::Error> {
    pals_tests::lock_through(url, Some(backend))
}

#[test]
fn client_certificates_log_in_and_their_absence_is_explained() {
    let (cluster, ca) = cert_cluster("mtls");
    let cert = format!(
        "sslcert={}&sslkey={}",
        ca.path("client.crt").display(),
        ca.path("client.key").display()
    );
    for &backend in BACKENDS {
        lock_through(&url(&cluster, &ca, &cert), backend)
            .unwrap_or_else(|e| panic!("{backend:?}: {e}"));
        // Without the certificate the server refuses, and the error says what to give.
        let err = lock_through(&url(&cluster, &ca, "sslmode=verify-full"), backend).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("With sslmode=verify-full, the server asks for a client certificate")
                && message.contains("sslcert=")
                && message.contains("sslkey="),
            "{backend:?}: {message}"
        );
        assert!(err.is_misconfiguration(), "{backend:?}: {message}");
    }
}

#[test]
fn an_encrypted_key_opens_with_sslpassword() {
    let (cluster, ca) = cert_cluster("mtls-enc");
    let key = ca.encrypt_key("client", "s3cret");
    let with = |password: &str| {
        url(
            &cluster,
            &ca,
            &format!(
                "sslcert={}&sslkey={}{password}",
                ca.path("client.crt").display(),
                key.display()
            ),
        )
    };
    for &backend in BACKENDS {
        lock_through(&with("&sslpassword=s3cret"), backend)
            .unwrap_or_else(|e| panic!("{backend:?}: {e}"));
    }
    let err = lock_through(&with("&sslpassword=wrong"), TlsBackend::Rustls).unwrap_err();
    assert!(
        matches!(err, pals::Error::InvalidConfig(_))
            && err
                .to_string()
                .contains("cannot be decrypted with the sslpassword given"),
        "{err}"
    );
    let err = lock_through(&with(""), TlsBackend::Rustls).unwrap_err();
    assert!(
        err.to_string().contains("no sslpassword was given"),
        "{err}"
    );
}

#[test]
fn certificate_mistakes_name_the_fix() {
    let (cluster, ca) = cert_cluster("mtls-wrong");
    // A client certificate for another user: the server refuses it for this one.
    ca.issue("other", "someone-else", None);
    let other = format!(
        "sslcert={}&sslkey={}",
        ca.path("other.crt").display(),
        ca.path("other.key").display()
    );
    let message = lock_through(&url(&cluster, &ca, &other), TlsBackend::Rustls)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("refused the client certificate for this user") && message.contains("CN"),
        "{message}"
    );
    // A key others can read is refused, as libpq does.
    ca.chmod("client.key", 0o644);
    let cert = format!(
        "sslcert={}&sslkey={}",
        ca.path("client.crt").display(),
        ca.path("client.key").display()
    );
    let err = lock_through(&url(&cluster, &ca, &cert), TlsBackend::Rustls).unwrap_err();
    assert!(
        matches!(err, pals::Error::InvalidConfig(_)) && err.to_string().contains("chmod 600"),
        "{err}"
    );
    ca.chmod("client.key", 0o600);
    // A server certificate from another CA: the mode, what failed, and what to give.
    let stranger = TestCa::new("mtls-stranger");
    let wrong_ca = format!(
        "postgresql://postgres@127.0.0.1:{}/postgres?sslmode=verify-ca&sslrootcert={}&{cert}",
        cluster.port(),
        stranger.path("ca.crt").display()
    );
    // Nor is the throwaway CA among the platform's (sslrootcert=system: verify-full).
    let system = format!(
        "postgresql://postgres@127.0.0.1:{}/postgres?sslrootcert=system&{cert}",
        cluster.port()
    );
    for &backend in BACKENDS {
        let message = lock_through(&system, backend).unwrap_err().to_string();
        assert!(
            message.contains("With sslmode=verify-full")
                && message.contains("not signed by a CA in sslrootcert"),
            "{backend:?}: {message}"
        );
        let message = lock_through(&wrong_ca, backend).unwrap_err().to_string();
        assert!(
            message.contains("With sslmode=verify-ca")
                && message.contains("not signed by a CA in sslrootcert")
                && message.contains("sslrootcert="),
            "{backend:?}: {message}"
        );
    }
}
