//! libpq's password file (`~/.pgpass`, or `PGPASSFILE`): the password for a connection
//! that names none.

use std::path::{Path, PathBuf};

use super::Environment;
use crate::loud;

/// `~/.pgpass` (`%APPDATA%\postgresql\pgpass.conf` on Windows).
pub(super) fn default_passfile(env: &Environment<'_>) -> Option<PathBuf> {
    if cfg!(windows) {
        return (env.var)("APPDATA").map(|dir| PathBuf::from(dir).join("postgresql/pgpass.conf"));
    }
    env.home.as_ref().map(|home| home.join(".pgpass"))
}

/// The password for a connection from a libpq password file: the first line
/// `host:port:dbname:user:password` that matches (`*` matches anything; `\:` and `\\` are
/// a colon and a backslash). A socket directory matches `localhost`, as in libpq. Like
/// libpq, a file that others may read is ignored, with a warning.
pub(super) fn password_from_file(
    file: &Path,
    host: &str,
    port: u16,
    dbname: &str,
    user: &str,
) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(file).ok()?.permissions().mode();
        if mode & 0o077 != 0 {
            loud::passfile_ignored(file);
            return None;
        }
    }
    let host = if host.starts_with('/') {
        "localhost"
    } else {
        host
    };
    let port = port.to_string();
    let wanted = [host, port.as_str(), dbname, user];
    text.lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .find_map(|line| {
            let fields = pgpass_fields(line);
            let [h, p, d, u, password] = fields.as_slice() else {
                return None;
            };
            [h, p, d, u]
                .iter()
                .zip(wanted)
                .all(|(field, want)| field.as_str() == "*" || field.as_str() == want)
                .then(|| password.clone())
        })
}

/// The fields of one password-file line: split at unescaped colons, escapes removed.
pub(super) fn pgpass_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => fields.last_mut().unwrap().extend(chars.next()),
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut().unwrap().push(c),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_file_lines_match_as_libpq_reads_them() {
        let dir = std::env::temp_dir().join(format!("pals-pgpass-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pgpass");
        std::fs::write(
            &file,
            "# comment\nother:5432:*:*:wrong\ndb\\:x:*:orders:ann:first\n*:5432:*:ann:p\\:w\n",
        )
        .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let found = |host, port, db, user| password_from_file(&file, host, port, db, user);
        assert_eq!(
            found("db.example", 5432, "orders", "ann"),
            Some("p:w".into())
        );
        assert_eq!(found("other", 5432, "x", "bob"), Some("wrong".into()));
        assert_eq!(found("db:x", 6000, "orders", "ann"), Some("first".into()));
        assert_eq!(
            found("/var/run/postgresql", 5432, "d", "ann"),
            Some("p:w".into())
        );
        assert_eq!(found("h", 6000, "d", "ann"), None);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert_eq!(
                found("db.example", 5432, "orders", "ann"),
                None,
                "readable by others"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
