//! Every libpq connection parameter, with the environment variable that fills it in, and
//! what pals does with it: reads it, accepts and ignores it (and why), or refuses it (and
//! why). The README's list "Connection parameters (libpq)" is this table in words.

/// What pals does with a parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Use {
    /// Read and applied.
    Read,
    /// Accepted, and without effect, for this reason.
    Ignored(&'static str),
    /// Refused when given, for this reason (a setting that pals cannot honour and that
    /// would weaken the connection if silently dropped).
    Refused(&'static str),
}

/// One libpq parameter.
pub(super) struct Parameter {
    pub(super) name: &'static str,
    /// The `PG*` variable that gives it when the URL and the service file do not.
    pub(super) variable: Option<&'static str>,
    pub(super) use_: Use,
}

const fn read(name: &'static str, variable: Option<&'static str>) -> Parameter {
    Parameter {
        name,
        variable,
        use_: Use::Read,
    }
}

const GSSAPI: &str = "it configures GSSAPI (Kerberos), which pals does not use";

/// libpq's parameters (PostgreSQL 17).
pub(super) const PARAMETERS: &[Parameter] = &[
    read("host", Some("PGHOST")),
    read("hostaddr", Some("PGHOSTADDR")),
    read("port", Some("PGPORT")),
    read("dbname", Some("PGDATABASE")),
    read("user", Some("PGUSER")),
    read("password", Some("PGPASSWORD")),
    read("passfile", Some("PGPASSFILE")),
    read("service", Some("PGSERVICE")),
    read("options", Some("PGOPTIONS")),
    read("application_name", Some("PGAPPNAME")),
    read("fallback_application_name", None),
    read("connect_timeout", Some("PGCONNECT_TIMEOUT")),
    read("sslmode", Some("PGSSLMODE")),
    read("sslrootcert", Some("PGSSLROOTCERT")),
    read("sslcert", Some("PGSSLCERT")),
    read("sslkey", Some("PGSSLKEY")),
    read("sslpassword", None),
    read("sslcertmode", Some("PGSSLCERTMODE")),
    read("sslnegotiation", Some("PGSSLNEGOTIATION")),
    read("ssl_min_protocol_version", Some("PGSSLMINPROTOCOLVERSION")),
    read("gssencmode", Some("PGGSSENCMODE")),
    read("target_session_attrs", Some("PGTARGETSESSIONATTRS")),
    read("channel_binding", Some("PGCHANNELBINDING")),
    read("load_balance_hosts", Some("PGLOADBALANCEHOSTS")),
    read("keepalives", None),
    read("keepalives_idle", None),
    read("keepalives_interval", None),
    read("keepalives_count", None),
    read("tcp_user_timeout", None),
    Parameter {
        name: "ssl_max_protocol_version",
        variable: Some("PGSSLMAXPROTOCOLVERSION"),
        use_: Use::Ignored("pals uses the highest TLS version both sides know (1.2 or 1.3)"),
    },
    Parameter {
        name: "sslcompression",
        variable: Some("PGSSLCOMPRESSION"),
        use_: Use::Ignored("no TLS library pals uses compresses (nor does libpq's OpenSSL)"),
    },
    Parameter {
        name: "sslsni",
        variable: Some("PGSSLSNI"),
        use_: Use::Ignored("rustls and native-tls always send a host name's SNI"),
    },
    Parameter {
        name: "client_encoding",
        variable: Some("PGCLIENTENCODING"),
        use_: Use::Ignored("the driver always speaks UTF8, and lock names are UTF-8"),
    },
    Parameter {
        name: "krbsrvname",
        variable: Some("PGKRBSRVNAME"),
        use_: Use::Ignored(GSSAPI),
    },
    Parameter {
        name: "gsslib",
        variable: Some("PGGSSLIB"),
        use_: Use::Ignored(GSSAPI),
    },
    Parameter {
        name: "gssdelegation",
        variable: Some("PGGSSDELEGATION"),
        use_: Use::Ignored(GSSAPI),
    },
    Parameter {
        name: "sslcrl",
        variable: Some("PGSSLCRL"),
        use_: Use::Refused(
            "pals does not check certificate revocation lists, and ignoring one would trust \
             revoked certificates: remove it, or rotate the revoked server certificate",
        ),
    },
    Parameter {
        name: "sslcrldir",
        variable: Some("PGSSLCRLDIR"),
        use_: Use::Refused(
            "pals does not check certificate revocation lists, and ignoring one would trust \
             revoked certificates: remove it, or rotate the revoked server certificate",
        ),
    },
    Parameter {
        name: "requirepeer",
        variable: Some("PGREQUIREPEER"),
        use_: Use::Refused(
            "pals cannot check which OS user runs the server at a Unix socket: remove it, \
             or connect over TCP with sslmode=verify-full",
        ),
    },
    Parameter {
        name: "require_auth",
        variable: Some("PGREQUIREAUTH"),
        use_: Use::Refused(
            "the driver pals uses cannot limit the server's authentication methods: remove \
             it (channel_binding=require insists on SCRAM with channel binding)",
        ),
    },
    Parameter {
        name: "replication",
        variable: None,
        use_: Use::Refused(
            "a replication connection cannot take advisory locks: remove it, pals needs an \
             ordinary session",
        ),
    },
];

/// The parameter named `name`, if libpq has one.
pub(super) fn parameter(name: &str) -> Option<&'static Parameter> {
    PARAMETERS.iter().find(|p| p.name == name)
}

/// Why `key` cannot be used: it is not a libpq parameter pals knows, or it is refused.
pub(super) fn unknown(key: &str) -> String {
    let read: Vec<&str> = PARAMETERS
        .iter()
        .filter(|p| p.use_ == Use::Read)
        .map(|p| p.name)
        .collect();
    format!(
        "unknown parameter `{key}`: it is not a libpq connection parameter that pals knows \
         (pals reads {}; see the README's \"Connection parameters (libpq)\")",
        read.join(", ")
    )
}

/// Refuses a parameter pals cannot honour, naming where it came from.
pub(super) fn check_refused(key: &str, from: &str) -> Result<(), String> {
    match parameter(key).map(|p| p.use_) {
        Some(Use::Refused(why)) => Err(format!("{key} ({from}) is not supported: {why}")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::FakeEnv;

    #[test]
    fn ignored_parameters_are_accepted_refused_ones_say_why() {
        let env = FakeEnv::default();
        for ignored in [
            "sslcompression=1",
            "sslsni=1",
            "ssl_max_protocol_version=TLSv1.2",
            "client_encoding=UTF8",
            "krbsrvname=postgres",
            "gsslib=gssapi",
            "gssdelegation=0",
        ] {
            env.read(&format!("host=h {ignored}"))
                .unwrap_or_else(|e| panic!("{ignored}: {e}"));
        }
        let err = env.read("host=h sslcrl=/crl.pem").unwrap_err();
        assert!(
            err.contains("sslcrl (in the URL) is not supported: pals does not check certificate revocation lists"),
            "{err}"
        );
        let err = env.read("host=h replication=database").unwrap_err();
        assert!(err.contains("cannot take advisory locks"), "{err}");
        let err = FakeEnv::default()
            .var("PGREQUIREAUTH", "scram-sha-256")
            .read("host=h")
            .unwrap_err();
        assert!(err.contains("require_auth (from PGREQUIREAUTH)"), "{err}");
        let err = env.read("host=h colour=blue").unwrap_err();
        assert!(
            err.contains("unknown parameter `colour`: it is not a libpq connection parameter")
                && err.contains("sslcert"),
            "{err}"
        );
    }
}
