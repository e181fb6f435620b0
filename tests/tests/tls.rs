//! TLS to the test server, which has SSL on (with its snakeoil certificate, issued to
//! `localhost`): sslmode read as libpq reads it, with rustls and with native-tls.

use std::path::PathBuf;
use std::sync::OnceLock;

use pals::TlsBackend;
use pals_tests::{probe_query, unique_app};

/// The test server's URL at `host`, with `query`.
fn url_with(host: &str, query: &str) -> String {
    pals_tests::db_url_with(Some(host), None, None, query)
}

/// The server's own certificate (self-signed: its own CA), read through the server.
fn server_certificate() -> &'static PathBuf {
    static CERT: OnceLock<PathBuf> = OnceLock::new();
    CERT.get_or_init(|| {
        let ssl = probe_query("SHOW ssl").unwrap();
        assert_eq!(
            ssl,
            vec![Some("on".to_string())],
            "the test server must have SSL on (ssl = on; docker-compose.yml sets it)"
        );
        let pem = probe_query("SELECT pg_read_file(current_setting('ssl_cert_file'))")
            .expect("read the server's certificate (the test user must be a superuser)");
        let path =
            std::env::temp_dir().join(format!("pals-server-cert-{}.pem", std::process::id()));
        std::fs::write(&path, pem[0].as_deref().unwrap()).unwrap();
        path
    })
}

fn certificate_names_localhost() -> bool {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let der = CertificateDer::from_pem_file(server_certificate()).expect("a PEM certificate");
    der.windows(b"localhost".len()).any(|w| w == b"localhost")
}

/// Connects with `url` and says whether the session is encrypted; or the error.
fn connect(url: &str, backend: TlsBackend) -> Result<bool, pals::Error> {
    let locker = pals::Locker::builder(unique_app("tls"))
        .url(url)
        .tls_backend(backend)
        .build()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ssl = runtime.block_on(
        locker.__query_pooled("SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()"),
    )?;
    // And a lock works over it.
    let guard = locker.lock("x").blocking_try_acquire()?.expect("free");
    assert!(guard.blocking_release()?);
    Ok(ssl == vec![Some("true".to_string())])
}

const BACKENDS: [TlsBackend; 2] = [TlsBackend::Rustls, TlsBackend::NativeTls];

#[test]
fn require_encrypts() {
    server_certificate();
    for backend in BACKENDS {
        assert!(
            connect(&url_with("127.0.0.1", "sslmode=require"), backend).unwrap(),
            "{backend:?}"
        );
        assert!(
            connect(&url_with("127.0.0.1", "sslmode=prefer"), backend).unwrap(),
            "{backend:?}"
        );
        assert!(
            !connect(&url_with("127.0.0.1", "sslmode=disable"), backend).unwrap(),
            "{backend:?}"
        );
    }
}

#[test]
fn verify_full_checks_the_certificate_and_the_host_name() {
    let ca = server_certificate().display().to_string();
    // (Debian's snakeoil certificate is issued to localhost; one made elsewhere, as in a
    // container, names its build host, which no URL here can reach.)
    let for_localhost = certificate_names_localhost();
    for backend in BACKENDS {
        if for_localhost {
            let right = url_with(
                "localhost",
                &format!("sslmode=verify-full&sslrootcert={ca}"),
            );
            assert!(
                connect(&right, backend).unwrap(),
                "{backend:?}: the right CA and host"
            );
        } else {
            eprintln!("note: the server certificate is not for localhost; verify-full success not checked");
        }

        // A bundle holding another CA first, then the right one, works too.
        let bundle = std::env::temp_dir().join(format!("pals-bundle-{}.pem", std::process::id()));
        let other_ca = std::fs::read_to_string("/etc/ssl/certs/ca-certificates.crt")
            .ok()
            .and_then(|all| {
                all.split_inclusive("-----END CERTIFICATE-----")
                    .next()
                    .map(String::from)
            })
            .unwrap_or_default();
        std::fs::write(
            &bundle,
            other_ca + "\n" + &std::fs::read_to_string(&ca).unwrap(),
        )
        .unwrap();
        let from_bundle = url_with(
            "127.0.0.1",
            &format!("sslmode=verify-ca&sslrootcert={}", bundle.display()),
        );
        assert!(
            connect(&from_bundle, backend).unwrap(),
            "{backend:?}: a CA bundle"
        );

        // The right CA, but the certificate is for localhost, not 127.0.0.1.
        let wrong_host = url_with(
            "127.0.0.1",
            &format!("sslmode=verify-full&sslrootcert={ca}"),
        );
        let err = connect(&wrong_host, backend).unwrap_err();
        assert!(
            matches!(err, pals::Error::Connect { .. }),
            "{backend:?}: {err}"
        );
        let message = err.to_string();
        assert!(
            message.contains("name") || message.contains("mismatch"),
            "{backend:?}: {message}"
        );

        // verify-ca checks the chain only.
        let any_host = url_with("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={ca}"));
        assert!(
            connect(&any_host, backend).unwrap(),
            "{backend:?}: verify-ca"
        );
    }
}

#[test]
fn verify_full_with_the_wrong_ca_fails_clearly() {
    server_certificate();
    // The public CAs (the default roots, or the system bundle) did not issue the snakeoil.
    let defaults = url_with("localhost", "sslmode=verify-full");
    let err = connect(&defaults, TlsBackend::Rustls).unwrap_err();
    let message = err.to_string();
    assert!(
        message.starts_with("cannot connect to the database"),
        "{message}"
    );
    assert!(message.to_lowercase().contains("certificate"), "{message}");

    let bundle = "/etc/ssl/certs/ca-certificates.crt";
    if std::path::Path::new(bundle).exists() {
        for backend in BACKENDS {
            let wrong_ca = url_with(
                "localhost",
                &format!("sslmode=verify-full&sslrootcert={bundle}"),
            );
            let err = connect(&wrong_ca, backend).unwrap_err();
            assert!(
                err.to_string().to_lowercase().contains("certificate"),
                "{backend:?}: {err}"
            );
        }
    }
    // As libpq: require with a root certificate checks the chain.
    if std::path::Path::new(bundle).exists() {
        for backend in BACKENDS {
            let require_wrong_ca = url_with(
                "127.0.0.1",
                &format!("sslmode=require&sslrootcert={bundle}"),
            );
            let err = connect(&require_wrong_ca, backend).unwrap_err();
            assert!(
                err.to_string().to_lowercase().contains("certificate"),
                "{backend:?}: {err}"
            );
        }
    }
    // A root certificate file that cannot be read is a configuration error at build time.
    let missing = url_with(
        "localhost",
        "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
    );
    let err = pals::Locker::new("app", &missing).unwrap_err();
    assert!(matches!(err, pals::Error::InvalidConfig(_)), "{err}");
}
