//! What to do about a connect that failed for TLS: the mode, what the server or the
//! certificate said, and the fix.

use super::{SslMode, TlsSummary};

/// The end of a connect error's message for a TLS failure (". With sslmode=...: ... Next
/// step: ..."), or `None` when the failure is not about TLS.
pub(crate) fn next_step(
    error: &tokio_postgres::Error,
    reason: &str,
    tls: TlsSummary,
) -> Option<String> {
    if let Some(db) = error.as_db_error() {
        let message = db.message();
        if db.code().code() != "28000" {
            return None;
        }
        return refused_by_server(message, tls)
            .map(|(what, step)| format!(". With {tls}, {what}. Next step: {step}"));
    }
    let mut text = format!("{error}: {reason}");
    let mut cause = std::error::Error::source(error);
    while let Some(inner) = cause {
        text.push_str(&format!(": {inner}"));
        cause = inner.source();
    }
    let (what, step) = handshake_failure(&text.to_lowercase(), tls)?;
    Some(format!(". With {tls}, {what}. Next step: {step}"))
}

/// The server's own refusals (SQLSTATE 28000) that are about TLS or certificates.
fn refused_by_server(message: &str, tls: TlsSummary) -> Option<(String, String)> {
    let cert_files = "sslcert=/path/to/client.crt and sslkey=/path/to/client.key (or put them \
                      at ~/.postgresql/postgresql.crt and postgresql.key)";
    if message.contains("requires a valid client certificate") {
        let what = match tls.mode {
            SslMode::Disable => "no TLS was used, so no client certificate was sent".to_string(),
            _ => "the server asks for a client certificate and none was sent".to_string(),
        };
        let step = match tls.mode {
            SslMode::Disable => format!("use sslmode=verify-full (or require) and give {cert_files}"),
            _ => format!("give {cert_files}, a certificate whose CN is the user name, issued by the CA of the server's ssl_ca_file"),
        };
        return Some((what, step));
    }
    if message.contains("certificate authentication failed") || message.contains("does not match") {
        return Some((
            "the server refused the client certificate for this user".into(),
            "give sslcert/sslkey of a certificate whose CN (common name) is the user name, or \
             map its CN to the user in the server's pg_ident.conf"
                .into(),
        ));
    }
    let plain = message.contains("no encryption") || message.contains("SSL off");
    if plain && matches!(tls.mode, SslMode::Disable | SslMode::Prefer) {
        return Some((
            "the connection was not encrypted and the server's pg_hba.conf lets this user in \
             over TLS only"
                .into(),
            "use sslmode=verify-full with sslrootcert (or sslmode=require)".into(),
        ));
    }
    None
}

/// A TLS handshake that failed, from the text of the driver's error and its causes.
fn handshake_failure(text: &str, tls: TlsSummary) -> Option<(String, String)> {
    let has = |words: &[&str]| words.iter().any(|w| text.contains(w));
    let said = |what: &str| format!("the TLS handshake failed: {what}");
    if has(&["server does not support tls"]) {
        return Some((
            "the server does not support TLS (ssl = off)".into(),
            "turn ssl on in the server's postgresql.conf, or use sslmode=prefer if an \
             unencrypted connection is acceptable"
                .into(),
        ));
    }
    // rustls' words ("certificate not valid for name"), its variants' names, OpenSSL's
    // (for a host name, and for an address connected to by IP).
    if has(&[
        "not valid for name",
        "notvalidforname",
        "hostname mismatch",
        "host name mismatch",
        "ip address mismatch",
    ]) {
        return Some((
            said("the server's certificate is not issued to the host name connected to"),
            "connect by the name the certificate is issued to (hostaddr=IP keeps the \
             address), or use sslmode=verify-ca to check the CA only"
                .into(),
        ));
    }
    if has(&["expired", "not valid yet", "notvalidyet"]) {
        return Some((
            said("a certificate is expired or not yet valid"),
            "renew the expired certificate (the server's, or the client's in sslcert), and \
             check the clocks"
                .into(),
        ));
    }
    if has(&[
        "unknownissuer",
        "unable to get local issuer",
        "self-signed certificate",
        "self signed certificate",
        "certificate verify failed",
        "badsignature",
    ]) {
        return Some((
            said("the server's certificate is not signed by a CA in sslrootcert"),
            "give sslrootcert=the CA certificate that issued the server's (your provider's \
             CA bundle, or sslrootcert=system for a public CA); or, to encrypt without \
             checking the server, sslmode=require with no sslrootcert (nor \
             ~/.postgresql/root.crt)"
                .into(),
        ));
    }
    client_certificate_refused(text, tls)
}

/// A handshake the server ended over the client certificate.
fn client_certificate_refused(text: &str, tls: TlsSummary) -> Option<(String, String)> {
    let has = |words: &[&str]| words.iter().any(|w| text.contains(w));
    let said = |what: &str| format!("the TLS handshake failed: {what}");
    let client_refused = [
        "certificate required",
        "certificaterequired",
        "unknownca",
        "unknown ca",
        "bad certificate",
        "badcertificate",
    ];
    if has(&client_refused) {
        let what = match tls.client_cert {
            true => "the server did not accept the client certificate (sslcert)",
            false => "the server wants a client certificate and none was given",
        };
        return Some((
            said(what),
            "give sslcert and sslkey of a certificate issued by the CA in the server's \
             ssl_ca_file"
                .into(),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(mode: SslMode, client_cert: bool) -> TlsSummary {
        TlsSummary {
            mode,
            root_cert: false,
            client_cert,
        }
    }

    #[test]
    fn handshake_failures_name_the_fix() {
        let full = tls(SslMode::VerifyFull, false);
        let (what, step) =
            handshake_failure("invalid peer certificate: unknownissuer", full).unwrap();
        assert!(what.contains("not signed by a CA in sslrootcert"), "{what}");
        assert!(step.contains("sslrootcert=") && step.contains("sslmode=require"));
        let require_with_root = TlsSummary {
            root_cert: true,
            ..tls(SslMode::Require, false)
        };
        assert_eq!(
            require_with_root.to_string(),
            "sslmode=require (checked as verify-ca: a root certificate is given)"
        );
        let (_, step) =
            handshake_failure("certificate verify failed: hostname mismatch", full).unwrap();
        assert!(step.contains("sslmode=verify-ca"), "{step}");
        let (what, _) = handshake_failure("server does not support tls", full).unwrap();
        assert!(what.contains("does not support TLS"));
        let (what, step) = handshake_failure(
            "received fatal alert: unknownca",
            tls(SslMode::Require, true),
        )
        .unwrap();
        assert!(
            what.contains("did not accept the client certificate"),
            "{what}"
        );
        assert!(step.contains("ssl_ca_file"));
        assert!(handshake_failure("connection refused", full).is_none());
    }

    #[test]
    fn server_refusals_about_certificates() {
        let (what, step) = refused_by_server(
            "connection requires a valid client certificate",
            tls(SslMode::Require, false),
        )
        .unwrap();
        assert!(what.contains("asks for a client certificate"), "{what}");
        assert!(
            step.contains("sslcert=") && step.contains("sslkey="),
            "{step}"
        );
        let (_, step) = refused_by_server(
            "certificate authentication failed for user \"ann\"",
            tls(SslMode::Require, true),
        )
        .unwrap();
        assert!(step.contains("CN"), "{step}");
        let (_, step) = refused_by_server(
            "no pg_hba.conf entry for host \"1.2.3.4\", user \"a\", database \"b\", no encryption",
            tls(SslMode::Prefer, false),
        )
        .unwrap();
        assert!(step.contains("sslmode=verify-full"), "{step}");
        assert!(refused_by_server(
            "password authentication failed",
            tls(SslMode::Require, false)
        )
        .is_none());
    }
}
