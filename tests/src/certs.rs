//! Certificates made for a test with the `openssl` command: a CA, a server certificate
//! for 127.0.0.1 and localhost, and client certificates whose CN is a user name.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::TempDir;

/// A throwaway CA and the certificates it issued, in a temporary directory.
pub struct TestCa {
    dir: TempDir,
}

impl TestCa {
    /// Makes the CA (`ca.crt`, `ca.key`) and the server's certificate (`server.crt`,
    /// `server.key`, for IP 127.0.0.1 and DNS localhost). P-256 keys: quick to make.
    pub fn new(tag: &str) -> TestCa {
        let ca = TestCa {
            dir: TempDir::new(tag),
        };
        ca.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            &format!("/CN=pals test CA {tag}"),
        ]);
        ca.issue(
            "server",
            "127.0.0.1",
            Some("subjectAltName=IP:127.0.0.1,DNS:localhost"),
        );
        ca
    }

    /// Issues `name.crt` and `name.key` (PKCS#8, mode 600) with common name `cn`.
    pub fn issue(&self, name: &str, cn: &str, extension: Option<&str>) {
        let (key, csr, crt) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
        );
        self.openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={cn}"),
        ]);
        let ext = self.dir.path().join(format!("{name}.ext"));
        std::fs::write(&ext, extension.unwrap_or("basicConstraints=CA:FALSE")).unwrap();
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "2",
            "-extfile",
            &ext.display().to_string(),
        ]);
        self.chmod(&key, 0o600);
    }

    /// Writes `name.p8`: `name.key` encrypted with `password` (`openssl pkcs8 -topk8`).
    pub fn encrypt_key(&self, name: &str, password: &str) -> PathBuf {
        let out = format!("{name}.p8");
        self.openssl(&[
            "pkcs8",
            "-topk8",
            "-in",
            &format!("{name}.key"),
            "-out",
            &out,
            "-passout",
            &format!("pass:{password}"),
        ]);
        self.chmod(&out, 0o600);
        self.path(&out)
    }

    /// Sets the mode of a file of the CA's directory.
    pub fn chmod(&self, file: &str, mode: u32) {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(self.path(file), std::fs::Permissions::from_mode(mode))
                .unwrap();
        }
        #[cfg(not(unix))]
        let _ = (file, mode);
    }

    /// The path of a file of the CA's directory (`ca.crt`, `client.key`, ...).
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// The CA's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn openssl(&self, args: &[&str]) {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run openssl (install it): {e}"));
        assert!(
            output.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
