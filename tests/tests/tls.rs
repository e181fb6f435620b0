//! TLS to the test server, which has SSL on (with its snakeoil certificate): sslmode read
//! as libpq reads it, with rustls and with native-tls. Nothing here depends on what the
//! certificate is issued to: the host name is taken from the certificate and reached with
//! `hostaddr`, as libpq allows. The CA that did not issue it is committed beside the tests
//! (`tests/certs/isrg-root-x1.pem`, a public root), so no system bundle is needed.

use pals::TlsBackend;
use pals_tests::{probe_query, unique_app, TempFile};

/// The test server's URL at `host`, with `query`.
fn url_with(host: &str, query: &str) -> String {
    pals_tests::db_url_with(Some(host), None, None, query)
}

/// The IP address the test server is reached at.
fn server_address() -> String {
    let host = pals_tests::proxy::db_host_port();
    let (host, _) = host.rsplit_once(':').unwrap();
    match host {
        "localhost" => "127.0.0.1".to_string(),
        address => address.to_string(),
    }
}

/// A CA that did not issue the server's certificate.
const OTHER_CA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/certs/isrg-root-x1.pem");

/// The server's own certificate (self-signed: its own CA), read through the server, and
/// the DNS name it is issued to.
struct ServerCertificate {
    file: TempFile,
    name: String,
}

impl ServerCertificate {
    fn read() -> ServerCertificate {
        let ssl = probe_query("SHOW ssl").unwrap();
        assert_eq!(
            ssl,
            vec![Some("on".to_string())],
            "the test server must have SSL on (ssl = on; docker-compose.yml sets it)"
        );
        let pem = probe_query("SELECT pg_read_file(current_setting('ssl_cert_file'))")
            .expect("read the server's certificate (the test user must be a superuser)");
        let pem = pem[0].clone().expect("a certificate file");
        let file = TempFile::new("server-cert", &pem);
        let name = dns_name(&file);
        ServerCertificate { file, name }
    }

    fn path(&self) -> String {
        self.file.path().display().to_string()
    }

    /// A URL that names the host the certificate is for, and reaches the server by its
    /// address.
    fn url_for_its_host(&self, query: &str) -> String {
        url_with(
            &self.name,
            &format!("hostaddr={}&{query}", server_address()),
        )
    }
}

/// The first DNS name in the certificate's subjectAltName (rustls checks those only).
fn dns_name(pem: &TempFile) -> String {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let der = CertificateDer::from_pem_file(pem.path()).expect("a PEM certificate");
    subject_alt_dns_names(&der)
        .into_iter()
        .next()
        .unwrap_or_else(|| {
            panic!(
                "the test server's certificate names no host in subjectAltName, so no URL can \
             pass sslmode=verify-full; give the server a certificate with a DNS name \
             (Debian's `make-ssl-cert generate-default-snakeoil` makes one)"
            )
        })
}

/// The DNS names of a DER certificate's subjectAltName extension (OID 2.5.29.17).
fn subject_alt_dns_names(der: &[u8]) -> Vec<String> {
    const SAN: [u8; 5] = [0x06, 0x03, 0x55, 0x1d, 0x11];
    let Some(at) = der.windows(SAN.len()).position(|w| w == SAN) else {
        return Vec::new();
    };
    let mut rest = &der[at + SAN.len()..];
    if rest.first() == Some(&0x01) {
        rest = &rest[3..]; // critical: BOOLEAN
    }
    // OCTET STRING { SEQUENCE { GeneralName... } }
    let Some((_, value, _)) = der_element(rest) else {
        return Vec::new();
    };
    let Some((_, mut names, _)) = der_element(value) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    while let Some((tag, value, next)) = der_element(names) {
        if tag == 0x82 {
            found.push(String::from_utf8_lossy(value).into_owned()); // dNSName
        }
        names = next;
    }
    found
}

/// One DER element: its tag, its value and what follows it.
fn der_element(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = bytes.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let count = (first & 0x7f) as usize;
        let length = rest
            .get(..count)?
            .iter()
            .fold(0usize, |n, b| (n << 8) | *b as usize);
        (length, &rest[count..])
    };
    (rest.len() >= length).then(|| (tag, &rest[..length], &rest[length..]))
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
    // A lock works over it; its session, seen from the server, is encrypted or not.
    let guard = runtime
        .block_on(locker.lock("x").try_acquire())?
        .expect("free");
    let pid = guard.backend_pid().expect("held");
    let ssl = probe_query(&format!(
        "SELECT ssl::text FROM pg_stat_ssl WHERE pid = {pid}"
    ))
    .expect("the probe answers");
    assert!(guard.blocking_release()?);
    Ok(ssl == vec![Some("true".to_string())])
}

#[cfg(feature = "native-tls")]
const BACKENDS: &[TlsBackend] = &[TlsBackend::Rustls, TlsBackend::NativeTls];
/// Without the crate's `native-tls` feature (`cargo test --all-features` has it), rustls only.
#[cfg(not(feature = "native-tls"))]
const BACKENDS: &[TlsBackend] = &[TlsBackend::Rustls];

#[test]
fn require_encrypts() {
    ServerCertificate::read();
    let address = server_address();
    for &backend in BACKENDS {
        assert!(
            connect(&url_with(&address, "sslmode=require"), backend).unwrap(),
            "{backend:?}"
        );
        assert!(
            connect(&url_with(&address, "sslmode=prefer"), backend).unwrap(),
            "{backend:?}"
        );
        assert!(
            !connect(&url_with(&address, "sslmode=disable"), backend).unwrap(),
            "{backend:?}"
        );
    }
}

#[test]
fn verify_full_checks_the_certificate_and_the_host_name() {
    let cert = ServerCertificate::read();
    let ca = cert.path();
    let address = server_address();
    // A bundle holding another CA first, then the right one.
    let bundle = TempFile::new(
        "bundle",
        &(std::fs::read_to_string(OTHER_CA).unwrap()
            + "\n"
            + &std::fs::read_to_string(&ca).unwrap()),
    );
    for &backend in BACKENDS {
        let right = cert.url_for_its_host(&format!("sslmode=verify-full&sslrootcert={ca}"));
        assert!(
            connect(&right, backend).unwrap(),
            "{backend:?}: the right CA and host ({})",
            cert.name
        );

        let from_bundle = url_with(
            &address,
            &format!("sslmode=verify-ca&sslrootcert={}", bundle.path().display()),
        );
        assert!(
            connect(&from_bundle, backend).unwrap(),
            "{backend:?}: a CA bundle"
        );

        // The right CA, but the certificate is not for the address.
        let wrong_host = url_with(&address, &format!("sslmode=verify-full&sslrootcert={ca}"));
        let err = connect(&wrong_host, backend).unwrap_err();
        assert!(
            matches!(err, pals::Error::Connect { .. }),
            "{backend:?}: {err}"
        );
        let message = err.to_string();
        assert!(
            message.contains("Next step: connect by the name the certificate is issued to"),
            "{backend:?}: {message}"
        );

        // verify-ca checks the chain only.
        let any_host = url_with(&address, &format!("sslmode=verify-ca&sslrootcert={ca}"));
        assert!(
            connect(&any_host, backend).unwrap(),
            "{backend:?}: verify-ca"
        );
    }
}

#[test]
fn verify_full_with_the_wrong_ca_fails_clearly() {
    let cert = ServerCertificate::read();
    for &backend in BACKENDS {
        let wrong_ca =
            cert.url_for_its_host(&format!("sslmode=verify-full&sslrootcert={OTHER_CA}"));
        let message = connect(&wrong_ca, backend).unwrap_err().to_string();
        assert!(
            message.starts_with("cannot connect to the database")
                && message.contains("With sslmode=verify-full")
                && message.contains("not signed by a CA in sslrootcert"),
            "{backend:?}: {message}"
        );
        // As libpq: require with a root certificate checks the chain.
        let require_wrong_ca = url_with(
            &server_address(),
            &format!("sslmode=require&sslrootcert={OTHER_CA}"),
        );
        let err = connect(&require_wrong_ca, backend).unwrap_err();
        assert!(
            err.to_string().to_lowercase().contains("certificate"),
            "{backend:?}: {err}"
        );
    }
    // A root certificate file that cannot be read is a configuration error at build time.
    let missing = url_with(
        "localhost",
        "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
    );
    let err = pals::Locker::new("app", &missing).unwrap_err();
    assert!(matches!(err, pals::Error::InvalidConfig(_)), "{err}");
}

#[test]
fn hostaddr_reaches_a_host_name_that_does_not_resolve() {
    // What lets the verify-full case name the certificate's host whatever it is.
    let url = url_with(
        "no-such-host.invalid",
        &format!("hostaddr={}&sslmode=require", server_address()),
    );
    assert!(connect(&url, TlsBackend::Rustls).unwrap());
}

#[test]
fn a_certificate_without_alternative_names_has_no_dns_name() {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let root = CertificateDer::from_pem_file(OTHER_CA).unwrap();
    assert!(subject_alt_dns_names(&root).is_empty());
}
