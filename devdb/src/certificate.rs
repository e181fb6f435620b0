//! The private server's certificate: self-signed, made with the `openssl` command, so that
//! the TLS tests run against it. They read it back from the server and trust it, then
//! expect `verify-full` to pass by the name it is issued to (`localhost`) and to fail by
//! the address (127.0.0.1), as with a distribution's own (Debian's snakeoil certificate):
//! so it names `localhost` only, and it is no CA (`CA:FALSE`), which rustls requires of a
//! certificate a server presents as its own.

use std::path::Path;
use std::process::Command;

use crate::error::Error;
use crate::run::run;

/// Writes `server.crt` and `server.key` (mode 600, as PostgreSQL requires) into `data`.
pub fn make(data: &Path) -> Result<(), Error> {
    run(Command::new("openssl")
        .current_dir(data)
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "3650"])
        .args(["-keyout", "server.key", "-out", "server.crt"])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"]))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key = data.join("server.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
            .map_err(Error::io(format!("make {} private", key.display())))?;
    }
    Ok(())
}
