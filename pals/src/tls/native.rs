//! The native-tls connector (OpenSSL on Linux): the server's certificate checked as the
//! mode says, and the client certificate when one is given.

use pkcs8::der::pem::LineEnding;

use super::files::{Identity, KeyForm, Material, Roots};
use super::SslMode;
use crate::error::Error;

pub(super) fn connector(
    material: &Material,
) -> Result<postgres_native_tls::MakeTlsConnector, Error> {
    let mut builder = native_tls::TlsConnector::builder();
    // libpq's ssl_min_protocol_version default, and rustls' floor: native-tls releases
    // before 0.2.12 would allow TLS 1.0.
    builder.min_protocol_version(Some(native_tls::Protocol::Tlsv12));
    let checked = !matches!(material.roots, Roots::Unchecked);
    match material.mode {
        SslMode::Prefer | SslMode::Require => {
            builder
                .danger_accept_invalid_certs(true)
                .danger_accept_invalid_hostnames(true);
        }
        SslMode::VerifyCa if checked => {
            builder.danger_accept_invalid_hostnames(true);
        }
        SslMode::VerifyFull if checked => {}
        SslMode::VerifyCa | SslMode::VerifyFull => {
            return Err(Error::InvalidConfig(format!(
                "sslmode={} needs sslrootcert",
                material.mode
            )))
        }
        SslMode::Disable => unreachable!("no connector for sslmode=disable"),
    }
    if let Roots::Pem(pem) = &material.roots {
        add_roots(&mut builder, pem)?;
    }
    if let Some(identity) = &material.identity {
        builder.identity(client_identity(identity)?);
    }
    let connector = builder
        .build()
        .map_err(|e| Error::InvalidConfig(format!("TLS: {e}")))?;
    Ok(postgres_native_tls::MakeTlsConnector::new(connector))
}

/// Every certificate of an `sslrootcert` file (bundles such as a cloud provider's list
/// several), and none of the system's.
fn add_roots(builder: &mut native_tls::TlsConnectorBuilder, pem: &[u8]) -> Result<(), Error> {
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
            "sslrootcert holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    builder.disable_built_in_roots(true);
    Ok(())
}

/// The client certificate and key as native-tls takes them: PEM, the key in PKCS#8.
fn client_identity(identity: &Identity) -> Result<native_tls::Identity, Error> {
    if identity.key.form != KeyForm::Pkcs8 {
        return Err(Error::InvalidConfig(
            "sslkey: native-tls takes PKCS#8 keys only (-----BEGIN PRIVATE KEY-----): convert \
             it with `openssl pkcs8 -topk8 -nocrypt -in KEY -out key.p8`, or use rustls"
                .into(),
        ));
    }
    let key_pem = pkcs8::der::pem::encode_string("PRIVATE KEY", LineEnding::LF, &identity.key.der)
        .map_err(|e| Error::InvalidConfig(format!("sslkey: {e}")))?;
    native_tls::Identity::from_pkcs8(&identity.cert_pem, key_pem.as_bytes())
        .map_err(|e| Error::InvalidConfig(format!("sslcert and sslkey: {e}")))
}
