//! The TLS parameters, as libpq reads them: `sslmode`, `sslrootcert` (a file, or `system`),
//! the client certificate (`sslcert`, `sslkey`, `sslpassword`, `sslcertmode`), their
//! defaults in `~/.postgresql/`, and the settings pals checks but has nothing to do for
//! (`gssencmode`, `sslnegotiation`, `ssl_min_protocol_version`).

use std::path::PathBuf;

use super::build::{one_of, Params};
use super::Environment;
use crate::tls::{ClientCert, RootCert, SslMode, TlsSettings};

/// The TLS settings the parameters give, in `env`.
pub(super) fn tls(params: &Params, env: &Environment<'_>) -> Result<TlsSettings, String> {
    unsupported_choices(params)?;
    let dir = postgresql_dir(env);
    let default_in = |file: &str| {
        dir.as_ref()
            .map(|dir| dir.join(file))
            .filter(|path| (env.exists)(path))
    };
    let root_cert = match params.get("sslrootcert").map(String::as_str) {
        Some("system") => Some(RootCert::System),
        Some(path) => Some(RootCert::File(PathBuf::from(path))),
        None => default_in("root.crt").map(RootCert::File),
    };
    let mode = mode(params, root_cert.as_ref())?;
    if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) && root_cert.is_none() {
        let default = dir.map_or("~/.postgresql/root.crt".into(), |dir| {
            dir.join("root.crt").display().to_string()
        });
        return Err(format!(
            "sslmode={mode} checks the server's certificate against a CA certificate, and \
             none was given: sslrootcert is not set and {default} does not exist. Give \
             sslrootcert=/path/to/ca.pem (your provider's CA bundle), or sslrootcert=system \
             to trust the platform's CAs, or put the CA certificate at {default}"
        ));
    }
    // Without TLS, libpq never looks at the certificate files: a stray or broken
    // ~/.postgresql/postgresql.crt must not stop a plain connection.
    let client = match mode {
        SslMode::Disable => None,
        _ => client_cert(params, env, default_in)?,
    };
    Ok(TlsSettings {
        mode,
        root_cert,
        client,
    })
}

/// `sslmode`: `prefer` by default, `verify-full` with `sslrootcert=system`, which (as
/// libpq 16) allows nothing weaker.
fn mode(params: &Params, root_cert: Option<&RootCert>) -> Result<SslMode, String> {
    let modes = [
        ("disable", SslMode::Disable),
        ("allow", SslMode::Prefer),
        ("prefer", SslMode::Prefer),
        ("require", SslMode::Require),
        ("verify-ca", SslMode::VerifyCa),
        ("verify-full", SslMode::VerifyFull),
    ];
    let given = one_of(params, "sslmode", &modes)?;
    match (root_cert, given) {
        (Some(RootCert::System), None) => Ok(SslMode::VerifyFull),
        (Some(RootCert::System), Some(mode)) if mode != SslMode::VerifyFull => Err(format!(
            "sslmode={mode} is too weak for sslrootcert=system (as libpq: the platform's CAs \
             vouch for any name they sign, so the host name must be checked): use \
             sslmode=verify-full, or sslrootcert=/path/to/ca.pem for your own CA"
        )),
        (_, mode) => Ok(mode.unwrap_or(SslMode::Prefer)),
    }
}

/// `~/.postgresql` (`%APPDATA%\postgresql` on Windows), where libpq's default certificate
/// and key files are.
fn postgresql_dir(env: &Environment<'_>) -> Option<PathBuf> {
    if cfg!(windows) {
        return (env.var)("APPDATA").map(|dir| PathBuf::from(dir).join("postgresql"));
    }
    env.home.as_ref().map(|home| home.join(".postgresql"))
}

/// The client certificate: `sslcert` and `sslkey`, else `postgresql.crt` and
/// `postgresql.key` in `~/.postgresql` if there; none with `sslcertmode=disable`.
fn client_cert(
    params: &Params,
    env: &Environment<'_>,
    default_in: impl Fn(&str) -> Option<PathBuf>,
) -> Result<Option<ClientCert>, String> {
    let modes = [
        ("disable", Some(false)),
        ("allow", Some(true)),
        ("require", None),
    ];
    match one_of(params, "sslcertmode", &modes)? {
        Some(Some(false)) => return Ok(None),
        Some(None) => {
            return Err(
                "sslcertmode=require: pals cannot tell whether the server asked for \
                        the client certificate. Use sslcertmode=allow (the default): the \
                        certificate is sent when asked for, and a server that requires one \
                        refuses a login without it"
                    .into(),
            )
        }
        _ => {}
    }
    let given = |key: &str| params.get(key).map(PathBuf::from);
    let cert = match given("sslcert") {
        Some(cert) => must_exist(cert, "sslcert", env)?,
        None => match default_in("postgresql.crt") {
            Some(cert) => cert,
            None => return Ok(None),
        },
    };
    let key = match given("sslkey") {
        Some(key) => must_exist(key, "sslkey", env)?,
        None => default_in("postgresql.key").ok_or_else(|| {
            format!(
                "the client certificate {} has no key: give sslkey=/path/to/key (or PGSSLKEY), \
                 or put it at ~/.postgresql/postgresql.key",
                cert.display()
            )
        })?,
    };
    Ok(Some(ClientCert {
        cert,
        key,
        password: params.get("sslpassword").cloned(),
    }))
}

fn must_exist(path: PathBuf, key: &str, env: &Environment<'_>) -> Result<PathBuf, String> {
    if (env.exists)(&path) {
        return Ok(path);
    }
    Err(format!(
        "{key} {} does not exist: give the path of the file, or leave {key} out",
        path.display()
    ))
}

/// The settings pals checks for a choice it cannot make: GSSAPI encryption, direct TLS,
/// TLS 1.3 only.
fn unsupported_choices(params: &Params) -> Result<(), String> {
    let gss = [("disable", true), ("prefer", true), ("require", false)];
    if one_of(params, "gssencmode", &gss)? == Some(false) {
        return Err(
            "gssencmode=require: pals does not support GSSAPI encryption. Use TLS \
                    instead: gssencmode=prefer (or leave it out) with sslmode=verify-full"
                .into(),
        );
    }
    let negotiation = [("postgres", true), ("direct", false)];
    if one_of(params, "sslnegotiation", &negotiation)? == Some(false) {
        return Err(
            "sslnegotiation=direct: the driver pals uses starts TLS the PostgreSQL \
                    way (an SSLRequest first). Use sslnegotiation=postgres, or leave it out"
                .into(),
        );
    }
    let versions = [
        ("TLSv1", true),
        ("TLSv1.1", true),
        ("TLSv1.2", true),
        ("TLSv1.3", false),
    ];
    if one_of(params, "ssl_min_protocol_version", &versions)? == Some(false) {
        return Err(
            "ssl_min_protocol_version=TLSv1.3: pals cannot insist on TLS 1.3 with \
                    every TLS library it uses (it never goes below TLS 1.2, and uses 1.3 when \
                    the server has it). Use TLSv1.2, or leave it out"
                .into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testing::FakeEnv;
    use super::*;

    const URL: &str = "postgresql://u@db.example/d";

    fn with(query: &str) -> String {
        format!("{URL}?{query}")
    }

    #[test]
    fn client_certificates_from_parameters_variables_and_home() {
        let env = FakeEnv::default()
            .file("/c.crt", "")
            .file("/c.key", "")
            .file("/env.crt", "")
            .file("/env.key", "");
        let read = env
            .read(&with("sslcert=/c.crt&sslkey=/c.key&sslpassword=pw"))
            .unwrap();
        let client = read.tls.client.unwrap();
        assert_eq!(
            (client.cert.to_str(), client.key.to_str()),
            (Some("/c.crt"), Some("/c.key"))
        );
        assert_eq!(client.password.as_deref(), Some("pw"));
        assert!(
            !format!("{client:?}").contains("pw\""),
            "the password never shows"
        );
        // PGSSLCERT/PGSSLKEY fill in what the URL leaves out.
        let env = env.var("PGSSLCERT", "/env.crt").var("PGSSLKEY", "/env.key");
        let client = env.read(URL).unwrap().tls.client.unwrap();
        assert_eq!(client.cert, PathBuf::from("/env.crt"));
        assert_eq!(client.key, PathBuf::from("/env.key"));
        // ~/.postgresql/postgresql.crt and .key when there.
        let home = FakeEnv::default()
            .home("/h")
            .file("/h/.postgresql/postgresql.crt", "")
            .file("/h/.postgresql/postgresql.key", "");
        let client = home.read(URL).unwrap().tls.client.unwrap();
        assert_eq!(client.key, PathBuf::from("/h/.postgresql/postgresql.key"));
        let none = home.read(&with("sslcertmode=disable")).unwrap();
        assert!(none.tls.client.is_none(), "sslcertmode=disable sends none");
        assert!(FakeEnv::default().read(URL).unwrap().tls.client.is_none());
    }

    #[test]
    fn client_certificate_mistakes() {
        let env = FakeEnv::default().home("/h").file("/c.crt", "");
        let err = env.read(&with("sslcert=/missing.crt")).unwrap_err();
        assert!(err.contains("sslcert /missing.crt does not exist"), "{err}");
        let err = env.read(&with("sslcert=/c.crt")).unwrap_err();
        assert!(
            err.contains("has no key") && err.contains("sslkey="),
            "{err}"
        );
        let err = env.read(&with("sslcertmode=require")).unwrap_err();
        assert!(err.contains("sslcertmode=allow"), "{err}");
        // Without TLS the certificate files are not looked at (as libpq): neither a
        // missing sslcert nor a stray ~/.postgresql/postgresql.crt without its key.
        let stray = FakeEnv::default()
            .home("/h")
            .file("/h/.postgresql/postgresql.crt", "");
        assert!(stray.read(URL).unwrap_err().contains("has no key"));
        for env in [&env, &stray] {
            let read = env.read(&with("sslmode=disable&sslcert=/missing.crt"));
            assert!(read.unwrap().tls.client.is_none());
        }
    }

    #[test]
    fn root_certificates_as_libpq() {
        let home = FakeEnv::default()
            .home("/h")
            .file("/h/.postgresql/root.crt", "");
        let read = home.read(&with("sslmode=verify-full")).unwrap();
        assert_eq!(
            read.tls.root_cert,
            Some(RootCert::File("/h/.postgresql/root.crt".into()))
        );
        let read = home.read(&with("sslrootcert=/ca.pem")).unwrap();
        assert_eq!(read.tls.root_cert, Some(RootCert::File("/ca.pem".into())));
        // No root certificate: the verify modes say what to give.
        let err = FakeEnv::default()
            .home("/h")
            .read(&with("sslmode=verify-ca"))
            .unwrap_err();
        assert!(
            err.contains("/h/.postgresql/root.crt does not exist")
                && err.contains("sslrootcert=system"),
            "{err}"
        );
        // system: the platform's CAs, verify-full by default, nothing weaker.
        let read = FakeEnv::default()
            .read(&with("sslrootcert=system"))
            .unwrap();
        assert_eq!(read.tls.root_cert, Some(RootCert::System));
        assert_eq!(read.tls.mode, SslMode::VerifyFull);
        let env = FakeEnv::default().var("PGSSLROOTCERT", "system");
        assert_eq!(env.read(URL).unwrap().tls.mode, SslMode::VerifyFull);
        let err = env.read(&with("sslmode=require")).unwrap_err();
        assert!(
            err.contains("sslmode=require is too weak for sslrootcert=system"),
            "{err}"
        );
    }

    #[test]
    fn settings_pals_cannot_honour_are_refused_with_the_reason() {
        let env = FakeEnv::default();
        for ok in [
            "gssencmode=disable",
            "gssencmode=prefer",
            "sslnegotiation=postgres",
        ] {
            env.read(&with(ok)).unwrap();
        }
        let err = env.read(&with("gssencmode=require")).unwrap_err();
        assert!(err.contains("does not support GSSAPI encryption"), "{err}");
        let err = FakeEnv::default()
            .var("PGGSSENCMODE", "require")
            .read(URL)
            .unwrap_err();
        assert!(err.contains("GSSAPI"), "{err}");
        let err = env.read(&with("sslnegotiation=direct")).unwrap_err();
        assert!(err.contains("sslnegotiation=postgres"), "{err}");
        let err = env
            .read(&with("ssl_min_protocol_version=TLSv1.3"))
            .unwrap_err();
        assert!(err.contains("Use TLSv1.2"), "{err}");
        env.read(&with("ssl_min_protocol_version=TLSv1.2")).unwrap();
    }
}
