//! TLS for database connections, with `sslmode` read as libpq reads it.
//!
//! tokio-postgres knows `disable`, `prefer` and `require`; pals adds `verify-ca`,
//! `verify-full` and `sslrootcert` (read from the URL by `config`) by giving the connector
//! the matching certificate checks:
//!
//! | sslmode | encrypted | certificate checked | host name checked |
//! |---|---|---|---|
//! | `disable` | no | | |
//! | `prefer` (default) | if the server offers it | no | no |
//! | `require` | yes | only if `sslrootcert` is given (as libpq) | no |
//! | `verify-ca` | yes | against `sslrootcert`, else the default roots | no |
//! | `verify-full` | yes | against `sslrootcert`, else the default roots | yes |
//!
//! The default roots are the Mozilla roots (webpki-roots) with rustls, and the operating
//! system's trust store with native-tls.

use std::path::PathBuf;

use crate::error::Error;

/// `sslmode`, libpq's way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// What the URL asks of TLS.
#[derive(Clone, Debug)]
pub(crate) struct TlsSettings {
    pub(crate) mode: SslMode,
    pub(crate) root_cert: Option<PathBuf>,
}

/// A TLS implementation pals can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsBackend {
    /// rustls (cargo feature `rustls`, on by default).
    #[cfg(feature = "rustls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
    Rustls,
    /// The platform's TLS (OpenSSL on Linux; cargo feature `native-tls`).
    #[cfg(feature = "native-tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "native-tls")))]
    NativeTls,
}

impl TlsBackend {
    /// The backend used unless the builder names one: rustls where compiled in.
    pub(crate) fn default_available() -> Option<TlsBackend> {
        #[cfg(feature = "rustls")]
        return Some(TlsBackend::Rustls);
        #[cfg(all(not(feature = "rustls"), feature = "native-tls"))]
        return Some(TlsBackend::NativeTls);
        #[cfg(not(any(feature = "rustls", feature = "native-tls")))]
        None
    }
}

/// The TLS side of a connection.
#[derive(Clone)]
pub(crate) enum Connector {
    Plain,
    #[cfg(feature = "rustls")]
    Rustls(tokio_postgres_rustls::MakeRustlsConnect),
    #[cfg(feature = "native-tls")]
    Native(postgres_native_tls::MakeTlsConnector),
}

/// The connector for `settings`, and the sslmode to give tokio-postgres.
pub(crate) fn connector(
    settings: &TlsSettings,
    backend: Option<TlsBackend>,
) -> Result<(Connector, tokio_postgres::config::SslMode), Error> {
    use tokio_postgres::config::SslMode as Driver;
    let driver_mode = match settings.mode {
        SslMode::Disable => return Ok((Connector::Plain, Driver::Disable)),
        SslMode::Prefer => Driver::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Driver::Require,
    };
    let Some(backend) = backend else {
        if settings.mode == SslMode::Prefer {
            return Ok((Connector::Plain, Driver::Prefer)); // no TLS compiled in: plain
        }
        return Err(Error::InvalidConfig(
            "sslmode requires TLS, but pals was built without its rustls and native-tls features"
                .into(),
        ));
    };
    #[cfg(not(any(feature = "rustls", feature = "native-tls")))]
    {
        let _ = (driver_mode, &settings.root_cert);
        match backend {}
    }
    #[cfg(any(feature = "rustls", feature = "native-tls"))]
    {
        let root_cert = match &settings.root_cert {
            None => None,
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                Error::InvalidConfig(format!("cannot read sslrootcert {}: {e}", path.display()))
            })?),
        };
        // As libpq: with a root certificate, require means verify-ca.
        let mode = match (settings.mode, &root_cert) {
            (SslMode::Require, Some(_)) => SslMode::VerifyCa,
            (mode, _) => mode,
        };
        let connector = match backend {
            #[cfg(feature = "rustls")]
            TlsBackend::Rustls => {
                Connector::Rustls(rustls_tls::connector(mode, root_cert.as_deref())?)
            }
            #[cfg(feature = "native-tls")]
            TlsBackend::NativeTls => {
                Connector::Native(native::connector(mode, root_cert.as_deref())?)
            }
        };
        Ok((connector, driver_mode))
    }
}

#[cfg(feature = "rustls")]
mod rustls_tls {
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::client::WebPkiServerVerifier;
    use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{
        CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    };

    use super::SslMode;
    use crate::error::Error;

    pub(super) fn connector(
        mode: SslMode,
        root_cert: Option<&[u8]>,
    ) -> Result<tokio_postgres_rustls::MakeRustlsConnect, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::InvalidConfig(format!("TLS: {e}")))?;
        let verifier: Arc<dyn ServerCertVerifier> = match mode {
            SslMode::Prefer | SslMode::Require => Arc::new(AcceptAnyCertificate(provider)),
            SslMode::VerifyCa | SslMode::VerifyFull => {
                let mut roots = RootCertStore::empty();
                match root_cert {
                    Some(pem) => {
                        for cert in CertificateDer::pem_slice_iter(pem) {
                            let cert = cert
                                .map_err(|e| Error::InvalidConfig(format!("sslrootcert: {e}")))?;
                            roots
                                .add(cert)
                                .map_err(|e| Error::InvalidConfig(format!("sslrootcert: {e}")))?;
                        }
                    }
                    None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
                }
                let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| Error::InvalidConfig(format!("TLS: {e}")))?;
                if mode == SslMode::VerifyCa {
                    Arc::new(AnyHostName(webpki))
                } else {
                    webpki
                }
            }
            SslMode::Disable => unreachable!("no connector for sslmode=disable"),
        };
        let config = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
    }

    /// `prefer` and `require` without a root certificate: encrypted, not authenticated (as
    /// libpq). The handshake signature is still checked.
    #[derive(Debug)]
    struct AcceptAnyCertificate(Arc<CryptoProvider>);

    impl ServerCertVerifier for AcceptAnyCertificate {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    /// `verify-ca`: the chain must lead to a trusted root; the host name may differ.
    #[derive(Debug)]
    struct AnyHostName(Arc<WebPkiServerVerifier>);

    impl ServerCertVerifier for AnyHostName {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            ocsp: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            match self
                .0
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            {
                Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName))
                | Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForNameContext { .. },
                )) => Ok(ServerCertVerified::assertion()),
                other => other,
            }
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls12_signature(message, cert, dss)
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls13_signature(message, cert, dss)
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.supported_verify_schemes()
        }
    }
}

#[cfg(feature = "native-tls")]
mod native {
    use super::SslMode;
    use crate::error::Error;

    pub(super) fn connector(
        mode: SslMode,
        root_cert: Option<&[u8]>,
    ) -> Result<postgres_native_tls::MakeTlsConnector, Error> {
        let mut builder = native_tls::TlsConnector::builder();
        match mode {
            SslMode::Prefer | SslMode::Require => {
                builder
                    .danger_accept_invalid_certs(true)
                    .danger_accept_invalid_hostnames(true);
            }
            SslMode::VerifyCa => {
                builder.danger_accept_invalid_hostnames(true);
            }
            SslMode::VerifyFull => {}
            SslMode::Disable => unreachable!("no connector for sslmode=disable"),
        }
        if let Some(pem) = root_cert {
            // Every certificate of the file (bundles such as a cloud provider's list several).
            let text = String::from_utf8_lossy(pem);
            let mut found = 0;
            for block in text
                .split_inclusive("-----END CERTIFICATE-----")
                .filter(|b| b.contains("-----BEGIN CERTIFICATE-----"))
            {
                let cert = native_tls::Certificate::from_pem(block.trim_start().as_bytes())
                    .map_err(|e| Error::InvalidConfig(format!("sslrootcert: {e}")))?;
                builder.add_root_certificate(cert);
                found += 1;
            }
            if found == 0 {
                return Err(Error::InvalidConfig(
                    "sslrootcert holds no PEM certificate".into(),
                ));
            }
            builder.disable_built_in_roots(true);
        }
        let connector = builder
            .build()
            .map_err(|e| Error::InvalidConfig(format!("TLS: {e}")))?;
        Ok(postgres_native_tls::MakeTlsConnector::new(connector))
    }
}
