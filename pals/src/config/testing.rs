//! A made-up environment for the tests of the parameter reading: variables, a home, files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{read, DbConfig, Environment};

/// Variables, a home directory, and files (path → text) that exist.
#[derive(Default)]
pub(super) struct FakeEnv {
    vars: BTreeMap<String, String>,
    home: Option<PathBuf>,
    files: BTreeMap<PathBuf, String>,
}

impl FakeEnv {
    pub(super) fn var(mut self, name: &str, value: &str) -> Self {
        self.vars.insert(name.into(), value.into());
        self
    }

    pub(super) fn home(mut self, home: &str) -> Self {
        self.home = Some(home.into());
        self
    }

    pub(super) fn file(mut self, path: &str, text: &str) -> Self {
        self.files.insert(path.into(), text.into());
        self
    }

    /// [`read`] in this environment (as OS user `me`).
    pub(super) fn read(&self, url: &str) -> Result<DbConfig, String> {
        let var = |name: &str| self.vars.get(name).cloned();
        let exists = |path: &Path| self.files.contains_key(path);
        let text = |path: &Path| self.files.get(path).cloned();
        read(
            url,
            &Environment {
                var: &var,
                home: self.home.clone(),
                exists: &exists,
                os_user: Some("me".into()),
                read: &text,
            },
        )
    }
}
