//! The rustls connector: the server's certificate checked as the mode says, and the
//! client certificate when one is given.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, WebPkiServerVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
    ServerName, UnixTime,
};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use tokio_postgres_rustls::MakeRustlsConnect;

use super::files::{Identity, KeyForm, Material, Roots};
use super::SslMode;
use crate::error::Error;

pub(super) fn connector(material: &Material) -> Result<MakeRustlsConnect, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::InvalidConfig(format!("TLS: {e}")))?;
    let verifier = verifier(material, provider)?;
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match &material.identity {
        None => builder.with_no_client_auth(),
        Some(identity) => {
            let (certs, key) = client_identity(identity)?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| Error::InvalidConfig(format!("sslcert and sslkey: {e}")))?
        }
    };
    Ok(MakeRustlsConnect::new(config))
}

/// How the server's certificate is checked, by mode.
fn verifier(
    material: &Material,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>, Error> {
    let roots = match (&material.roots, material.mode) {
        (_, SslMode::Prefer | SslMode::Require) | (Roots::Unchecked, _) => {
            return Ok(Arc::new(AcceptAnyCertificate(provider)))
        }
        (Roots::Pem(pem), _) => pem_roots(pem)?,
        (Roots::System, _) => system_roots()?,
    };
    let roots = Arc::new(roots);
    let webpki =
        WebPkiServerVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&provider))
            .build()
            .map_err(|e| Error::InvalidConfig(format!("TLS: {e}")))?;
    Ok(match material.mode {
        SslMode::VerifyCa => Arc::new(AnyHostName {
            roots,
            webpki,
            provider,
        }),
        _ => webpki,
    })
}

/// The certificates of an `sslrootcert` file.
fn pem_roots(pem: &[u8]) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| Error::InvalidConfig(format!("sslrootcert: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| Error::InvalidConfig(format!("sslrootcert: {e}")))?;
    }
    if roots.is_empty() {
        return Err(Error::InvalidConfig(
            "sslrootcert holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(roots)
}

/// `sslrootcert=system`: the platform's CAs (on Linux the distribution's bundle, or
/// `SSL_CERT_FILE`/`SSL_CERT_DIR`).
fn system_roots() -> Result<RootCertStore, Error> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        return Err(Error::InvalidConfig(format!(
            "sslrootcert=system: no CA certificate found in the platform's trust store{}: \
             install the CA bundle (the ca-certificates package), set SSL_CERT_FILE to one, \
             or give sslrootcert=/path/to/ca.pem",
            match errors.is_empty() {
                true => String::new(),
                false => format!(" ({})", errors.join("; ")),
            }
        )));
    }
    Ok(roots)
}

/// The client certificate chain and key, as rustls takes them.
fn client_identity(
    identity: &Identity,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), Error> {
    let certs = CertificateDer::pem_slice_iter(&identity.cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::InvalidConfig(format!("sslcert: {e}")))?;
    let der = identity.key.der.clone();
    let key = match identity.key.form {
        KeyForm::Pkcs8 => PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der)),
        KeyForm::Pkcs1 => PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(der)),
        KeyForm::Sec1 => PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(der)),
    };
    Ok((certs, key))
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

/// `verify-ca`: the chain must lead to a trusted root; the host name may differ. The chain
/// is checked on its own (not by ignoring a name error of the full check, which would
/// pass any certificate if a rustls release checked the name first).
#[derive(Debug)]
struct AnyHostName {
    roots: Arc<RootCertStore>,
    /// For the handshake's signatures.
    webpki: Arc<WebPkiServerVerifier>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AnyHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        let algorithms = self.provider.signature_verification_algorithms.all;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            algorithms,
        )?;
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}
