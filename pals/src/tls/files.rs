//! The files TLS needs, read once when the locker is built: the root certificates, the
//! client certificate and its key (checked for permissions and decrypted as libpq does).

use std::path::Path;

use super::{ClientCert, RootCert, SslMode, TlsSettings};

/// What the connectors are made from.
#[cfg_attr(not(any(feature = "rustls", feature = "native-tls")), allow(dead_code))]
pub(super) struct Material {
    /// The mode in force: `require` with a root certificate is `verify-ca`, as libpq.
    pub(super) mode: SslMode,
    pub(super) roots: Roots,
    pub(super) identity: Option<Identity>,
}

/// The CA certificates to check the server's against.
pub(super) enum Roots {
    /// None: the server's certificate is not checked (`prefer`, `require`).
    Unchecked,
    /// The PEM text of `sslrootcert`.
    Pem(Vec<u8>),
    /// The platform's trust store.
    System,
}

/// The client certificate chain (PEM) and its key.
pub(super) struct Identity {
    pub(super) cert_pem: Vec<u8>,
    pub(super) key: Key,
}

/// A private key in DER, in the form its PEM label named.
pub(super) struct Key {
    pub(super) form: KeyForm,
    pub(super) der: Vec<u8>,
}

/// The forms of key PEM files OpenSSL writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum KeyForm {
    /// `BEGIN PRIVATE KEY` (or decrypted from `BEGIN ENCRYPTED PRIVATE KEY`).
    Pkcs8,
    /// `BEGIN RSA PRIVATE KEY`.
    Pkcs1,
    /// `BEGIN EC PRIVATE KEY`.
    Sec1,
}

impl Material {
    pub(super) fn read(settings: &TlsSettings) -> Result<Material, String> {
        let roots = match (&settings.root_cert, settings.mode) {
            (Some(RootCert::System), _) => Roots::System,
            (Some(RootCert::File(path)), _) => Roots::Pem(std::fs::read(path).map_err(|e| {
                format!(
                    "cannot read sslrootcert {}: {e}: give the path of the CA certificate file",
                    path.display()
                )
            })?),
            (None, _) => Roots::Unchecked,
        };
        // As libpq: with a root certificate, require means verify-ca.
        let mode = match (settings.mode, &roots) {
            (SslMode::Require, Roots::Pem(_) | Roots::System) => SslMode::VerifyCa,
            (mode, _) => mode,
        };
        let identity = settings.client.as_ref().map(identity).transpose()?;
        Ok(Material {
            mode,
            roots,
            identity,
        })
    }
}

/// The client certificate and its key, read and, with `sslpassword`, decrypted.
fn identity(client: &ClientCert) -> Result<Identity, String> {
    let cert_pem = std::fs::read(&client.cert)
        .map_err(|e| format!("cannot read sslcert {}: {e}", client.cert.display()))?;
    if !String::from_utf8_lossy(&cert_pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(format!(
            "sslcert {} holds no PEM certificate (-----BEGIN CERTIFICATE-----): give the \
             client certificate in PEM form (`openssl x509 -in cert.der -inform der -out \
             cert.pem` converts a DER one)",
            client.cert.display()
        ));
    }
    check_permissions(&client.key)?;
    let text = std::fs::read_to_string(&client.key)
        .map_err(|e| format!("cannot read sslkey {}: {e}", client.key.display()))?;
    let key = key(&text, &client.key, client.password.as_deref())?;
    Ok(Identity { cert_pem, key })
}

/// The key of PEM file `path`, decrypted with `password` if it is encrypted.
fn key(text: &str, path: &Path, password: Option<&str>) -> Result<Key, String> {
    let shown = path.display();
    if text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(format!(
            "sslkey {shown} is encrypted in OpenSSL's legacy form (Proc-Type: 4,ENCRYPTED), \
             which pals cannot decrypt: convert it to encrypted PKCS#8 with `openssl pkcs8 \
             -topk8 -in {shown} -out key.p8` (it asks for the old and the new password) and \
             give sslkey=key.p8 with sslpassword"
        ));
    }
    let start = text
        .find("-----BEGIN ")
        .ok_or_else(|| format!("sslkey {shown} holds no PEM key (-----BEGIN PRIVATE KEY-----)"))?;
    let (label, der) = pkcs8::der::pem::decode_vec(text[start..].trim_end().as_bytes())
        .map_err(|e| format!("sslkey {shown} is not a PEM key: {e}"))?;
    let form = match label {
        "PRIVATE KEY" => KeyForm::Pkcs8,
        "RSA PRIVATE KEY" => KeyForm::Pkcs1,
        "EC PRIVATE KEY" => KeyForm::Sec1,
        "ENCRYPTED PRIVATE KEY" => return decrypt(&der, path, password),
        other => return Err(format!("sslkey {shown} holds a {other}, not a private key")),
    };
    Ok(Key { form, der })
}

/// An encrypted PKCS#8 key (`openssl pkcs8 -topk8`), decrypted with `sslpassword`.
fn decrypt(der: &[u8], path: &Path, password: Option<&str>) -> Result<Key, String> {
    let shown = path.display();
    let Some(password) = password else {
        return Err(format!(
            "sslkey {shown} is encrypted and no sslpassword was given: give \
             sslpassword=... in the URL (or a key without a password)"
        ));
    };
    let encrypted = pkcs8::EncryptedPrivateKeyInfo::try_from(der)
        .map_err(|e| format!("sslkey {shown} is not an encrypted PKCS#8 key: {e}"))?;
    let decrypted = encrypted.decrypt(password).map_err(|_| {
        format!(
            "sslkey {shown} cannot be decrypted with the sslpassword given: check the \
             password (or the key uses a cipher pals does not know: re-encrypt it with \
             `openssl pkcs8 -topk8 -v2 aes-256-cbc`)"
        )
    })?;
    Ok(Key {
        form: KeyForm::Pkcs8,
        der: decrypted.as_bytes().to_vec(),
    })
}

/// As libpq: a key others can read is refused (unless owned by root and readable by its
/// group only, for keys shared with a service's group).
fn check_permissions(path: &Path) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path)
            .map_err(|e| format!("cannot read sslkey {}: {e}", path.display()))?;
        let mode = meta.mode() & 0o777;
        let allowed = if meta.uid() == 0 { 0o640 } else { 0o600 };
        if mode & !allowed != 0 {
            return Err(format!(
                "the private key file {shown} can be read by others (mode {mode:04o}); libpq \
                 refuses such a key and so does pals: run `chmod 600 {shown}`",
                shown = path.display()
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_say_what_is_wrong_with_them() {
        let path = Path::new("/k.pem");
        let legacy = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\
                      DEK-Info: AES-128-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        let err = key(legacy, path, Some("pw")).err().unwrap();
        assert!(err.contains("openssl pkcs8 -topk8 -in /k.pem"), "{err}");
        let err = key("nothing", path, None).err().unwrap();
        assert!(err.contains("holds no PEM key"), "{err}");
        let cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let err = key(cert, path, None).err().unwrap();
        assert!(err.contains("CERTIFICATE, not a private key"), "{err}");
    }
}
