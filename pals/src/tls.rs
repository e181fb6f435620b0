//! TLS for database connections, with `sslmode` read as libpq reads it.
//!
//! tokio-postgres knows `disable`, `prefer` and `require`; pals adds `verify-ca`,
//! `verify-full`, `sslrootcert` (a file, or `system`) and the client certificate (`sslcert`,
//! `sslkey`, `sslpassword`), read by `config`, by giving the connector the matching
//! certificate checks and identity:
//!
//! | sslmode | encrypted | certificate checked | host name checked |
//! |---|---|---|---|
//! | `disable` | no | | |
//! | `prefer` (default) | if the server offers it | no | no |
//! | `require` | yes | only if a root certificate is given (as libpq) | no |
//! | `verify-ca` | yes | against `sslrootcert` (else `~/.postgresql/root.crt`) | no |
//! | `verify-full` | yes | against `sslrootcert` (else `~/.postgresql/root.crt`) | yes |
//!
//! `sslrootcert=system` trusts the platform's CAs (rustls-native-certs with rustls, the
//! system store with native-tls) and makes `verify-full` the mode.

use std::path::PathBuf;

use crate::error::Error;

#[cfg(any(feature = "rustls", feature = "native-tls"))]
mod files;
mod hint;
#[cfg(feature = "native-tls")]
mod native;
#[cfg(feature = "rustls")]
mod rustls_tls;

pub(crate) use hint::next_step;

/// `sslmode`, libpq's way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl std::fmt::Display for SslMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        })
    }
}

/// The CA certificates the server's certificate is checked against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RootCert {
    /// A PEM file (one certificate or a bundle).
    File(PathBuf),
    /// `sslrootcert=system`: the platform's trust store.
    System,
}

/// The client certificate and its key, for servers that authenticate by certificate.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct ClientCert {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    /// `sslpassword`: decrypts an encrypted key.
    pub(crate) password: Option<String>,
}

impl std::fmt::Debug for ClientCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCert")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// What the URL asks of TLS.
#[derive(Clone, Debug)]
pub(crate) struct TlsSettings {
    pub(crate) mode: SslMode,
    pub(crate) root_cert: Option<RootCert>,
    pub(crate) client: Option<ClientCert>,
}

/// What connect errors are explained with: the mode, and whether a client certificate
/// was given.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TlsSummary {
    pub(crate) mode: SslMode,
    /// Whether a root certificate is given (with `require`, it makes the mode `verify-ca`).
    pub(crate) root_cert: bool,
    pub(crate) client_cert: bool,
}

impl std::fmt::Display for TlsSummary {
    /// The mode as messages name it: `sslmode=require (checked as verify-ca: a root
    /// certificate is given)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sslmode={}", self.mode)?;
        if self.mode == SslMode::Require && self.root_cert {
            f.write_str(" (checked as verify-ca: a root certificate is given)")?;
        }
        Ok(())
    }
}

impl TlsSettings {
    pub(crate) fn summary(&self) -> TlsSummary {
        TlsSummary {
            mode: self.mode,
            root_cert: self.root_cert.is_some(),
            client_cert: self.client.is_some(),
        }
    }
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
        if settings.mode == SslMode::Prefer && settings.client.is_none() {
            return Ok((Connector::Plain, Driver::Prefer)); // no TLS compiled in: plain
        }
        return Err(Error::InvalidConfig(format!(
            "sslmode={} (or a client certificate) requires TLS, but pals was built without \
             its rustls and native-tls features: turn one on",
            settings.mode
        )));
    };
    #[cfg(not(any(feature = "rustls", feature = "native-tls")))]
    {
        let _ = (driver_mode, &settings.root_cert);
        match backend {}
    }
    #[cfg(any(feature = "rustls", feature = "native-tls"))]
    {
        let material = files::Material::read(settings).map_err(Error::InvalidConfig)?;
        let connector = match backend {
            #[cfg(feature = "rustls")]
            TlsBackend::Rustls => Connector::Rustls(rustls_tls::connector(&material)?),
            #[cfg(feature = "native-tls")]
            TlsBackend::NativeTls => Connector::Native(native::connector(&material)?),
        };
        Ok((connector, driver_mode))
    }
}
