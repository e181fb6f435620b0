//! Where PostgreSQL's server programs are: a directory of `PATH`, then `pg_config
//! --bindir`, then the directories distributions and installers put them in.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The programs a private cluster needs, all in one directory.
const PROGRAMS: [&str; 2] = ["initdb", "pg_ctl"];

/// The places [`Search::find`] looks, in order.
#[derive(Debug, Clone)]
pub struct Search {
    path: Option<OsString>,
    pg_config: bool,
    /// `(parent, prefix)`: the directories `parent/{prefix}{version}/bin`.
    versioned: Vec<(&'static str, &'static str)>,
    dirs: Vec<PathBuf>,
}

/// Where distributions and installers put each major version's programs.
const VERSIONED: [(&str, &str); 4] = [
    ("/usr/lib/postgresql", ""),          // Debian, Ubuntu
    ("/usr", "pgsql-"),                   // the PGDG RPMs
    ("/opt/homebrew/opt", "postgresql@"), // Homebrew on Apple silicon
    ("/usr/local/opt", "postgresql@"),    // Homebrew on Intel
];

/// Where a source build and Postgres.app put them.
const FIXED: [&str; 2] = [
    "/usr/local/pgsql/bin",
    "/Applications/Postgres.app/Contents/Versions/latest/bin",
];

impl Search {
    /// `PATH`, `pg_config --bindir`, then the usual directories, newest version first:
    /// Debian and Ubuntu's `/usr/lib/postgresql/*/bin`, the PGDG RPMs' `/usr/pgsql-*/bin`,
    /// Homebrew's `postgresql@*`, a source build's `/usr/local/pgsql/bin`, Postgres.app.
    pub fn usual() -> Search {
        Search {
            path: std::env::var_os("PATH"),
            pg_config: true,
            versioned: VERSIONED.to_vec(),
            dirs: FIXED.iter().map(PathBuf::from).collect(),
        }
    }

    /// Only `dirs`: no `PATH`, no `pg_config` (for tests of what happens when nothing is
    /// installed, or to name one installation).
    pub fn only(dirs: Vec<PathBuf>) -> Search {
        Search {
            path: None,
            pg_config: false,
            versioned: Vec::new(),
            dirs,
        }
    }

    /// The first directory that holds both `initdb` and `pg_ctl`.
    pub fn find(&self) -> Option<PathBuf> {
        let from_path = self.path.iter().flat_map(std::env::split_paths);
        let from_pg_config = self.pg_config.then(pg_config_bindir).flatten();
        let versioned = self
            .versioned
            .iter()
            .flat_map(|(parent, prefix)| versions_in(Path::new(parent), prefix));
        from_path
            .chain(from_pg_config)
            .chain(versioned)
            .chain(self.dirs.iter().cloned())
            .find(|dir| PROGRAMS.iter().all(|program| dir.join(program).is_file()))
    }

    /// Where [`find`](Search::find) looked, for a message that says so.
    pub fn places(&self) -> String {
        let mut places = Vec::new();
        if self.path.is_some() {
            places.push("PATH".to_string());
        }
        if self.pg_config {
            places.push("`pg_config --bindir`".to_string());
        }
        let versioned = self.versioned.iter();
        places.extend(versioned.map(|(parent, prefix)| format!("{parent}/{prefix}*/bin")));
        places.extend(self.dirs.iter().map(|dir| dir.display().to_string()));
        if places.is_empty() {
            return "nowhere".to_string();
        }
        places.join(", ")
    }
}

fn pg_config_bindir() -> Option<PathBuf> {
    let output = Command::new("pg_config").arg("--bindir").output().ok()?;
    let dir = String::from_utf8_lossy(&output.stdout).trim().to_string();
    (output.status.success() && !dir.is_empty()).then(|| PathBuf::from(dir))
}

/// `parent/{prefix}{version}/bin` for each version there, newest first.
fn versions_in(parent: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut found: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir(parent)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version = name.strip_prefix(prefix)?;
            let numbers = version
                .split('.')
                .map(str::parse)
                .collect::<Result<Vec<u32>, _>>()
                .ok()?;
            Some((numbers, entry.path().join("bin")))
        })
        .collect();
    found.sort_by(|a, b| b.0.cmp(&a.0));
    found.into_iter().map(|(_, dir)| dir).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_newest_first_and_only_numbers() {
        let dir = std::env::temp_dir().join(format!("pals-devdb-versions-{}", std::process::id()));
        for name in ["9.6", "15", "17", "latest", "pgsql-16"] {
            std::fs::create_dir_all(dir.join(name)).unwrap();
        }
        let found = versions_in(&dir, "");
        std::fs::remove_dir_all(&dir).unwrap();
        let names: Vec<_> = found
            .iter()
            .map(|bin| bin.parent().unwrap().file_name().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["17", "15", "9.6"]);
    }

    #[test]
    fn only_looks_in_the_given_directories() {
        let search = Search::only(vec![PathBuf::from("/nonexistent/bin")]);
        assert_eq!(search.find(), None);
        assert_eq!(search.places(), "/nonexistent/bin");
        assert_eq!(Search::only(Vec::new()).places(), "nowhere");
    }
}
