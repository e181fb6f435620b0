//! The database objects pals keeps beside its locks, in one schema (`public` unless
//! [`LockerBuilder::schema`](crate::LockerBuilder::schema) names another):
//!
//! - the sequence `pals_fence`, which mints fencing tokens ([`Lock::fenced`](crate::Lock::fenced));
//! - the table `pals_leaders`, where an elected leader says who it is
//!   ([`Election`](crate::Election));
//! - the table `pals_runs`, where each run of a `once_per` job claims its tick and says how
//!   it ended ([`OncePer`](crate::OncePer)).
//!
//! Plain advisory locks need neither. Each is looked up the first time a locker needs it,
//! and created then if it is missing (logged at info level). A role that may not create
//! objects works all the same once an admin has made them: the error that says so gives
//! the SQL to run.

use std::sync::Arc;

use tokio::sync::OnceCell;
use tokio_postgres::error::SqlState;

use super::session::CoordinationSession;
use crate::error::Error;
use crate::sql;

/// The objects of one locker's schema, each checked once.
pub(super) struct Objects {
    schema: String,
    fence: OnceCell<Arc<str>>,
    /// The leaders table, checked for what candidates do (read and write it), and for what
    /// observers do (read it).
    leaders: OnceCell<Arc<str>>,
    leaders_read: OnceCell<Arc<str>>,
    runs: OnceCell<Arc<str>>,
}

/// One object: what it is for, and how it is made and checked.
struct Object<'a> {
    /// Its qualified, quoted name.
    name: &'a str,
    /// `sequence` or `table`.
    what: &'static str,
    purpose: &'static str,
    create: String,
    /// A condition: the role may use it as pals does.
    usable: String,
    /// The privileges it needs, and what `GRANT ... ON` calls it.
    privileges: String,
    grant_on: &'static str,
    /// It must survive a crash and be the same for every session: not unlogged (its
    /// contents start over after a crash), not temporary.
    logged: bool,
}

/// What the check of an object found.
enum Found {
    Ready,
    Denied,
    Missing,
    /// There and usable, but unlogged (`u`) or temporary (`t`), where it must not be.
    NotLogged(String),
}

impl Objects {
    pub(super) fn new(schema: &str) -> Result<Objects, Error> {
        if schema.is_empty() || schema.contains('\0') || schema.len() > 63 {
            return Err(Error::InvalidConfig(format!(
                "schema {schema:?} cannot be a PostgreSQL schema name (1 to 63 bytes, no NUL)"
            )));
        }
        if let Some(why) = unfit_schema(schema) {
            return Err(Error::InvalidConfig(format!(
                "schema {schema:?} cannot hold pals' objects: {why}; name a schema of your \
                 own with LockerBuilder::schema (the default, public, works)"
            )));
        }
        Ok(Objects {
            schema: schema.to_owned(),
            fence: OnceCell::new(),
            leaders: OnceCell::new(),
            leaders_read: OnceCell::new(),
            runs: OnceCell::new(),
        })
    }

    /// The qualified, quoted name of the object `name` in the schema.
    fn qualified(&self, name: &str) -> String {
        format!(
            "{}.{}",
            sql::identifier(&self.schema),
            sql::identifier(name)
        )
    }

    /// The fencing sequence's name, once it is known to exist (made if missing).
    pub(super) async fn fence(&self, session: &CoordinationSession) -> Result<&Arc<str>, Error> {
        let name = "pals_fence";
        self.ensured(&self.fence, name, session, |name| Object {
            name,
            what: "sequence",
            purpose: "fencing tokens",
            create: sql::create_sequence(name),
            usable: sql::sequence_usable(name),
            privileges: "USAGE".into(),
            grant_on: "SEQUENCE ",
            logged: true,
        })
        .await
    }

    /// The leaders table's name, once it is known to exist (made if missing) and the role
    /// may `write` it (candidates), or read it (observers).
    pub(super) async fn leaders(
        &self,
        session: &CoordinationSession,
        write: bool,
    ) -> Result<&Arc<str>, Error> {
        let (cell, privileges): (_, &[&str]) = match write {
            true => (&self.leaders, &["SELECT", "INSERT", "UPDATE"]),
            false => (&self.leaders_read, &["SELECT"]),
        };
        self.ensured(cell, "pals_leaders", session, |name| Object {
            name,
            what: "table",
            purpose: "leader election",
            create: sql::create_leaders_table(name),
            usable: sql::table_usable(name, privileges),
            privileges: privileges.join(", "),
            grant_on: "",
            logged: false,
        })
        .await
    }

    /// The runs table's name, once it is known to exist (made if missing) and the role may
    /// claim ticks in it, write their ends and prune it.
    pub(super) async fn runs(&self, session: &CoordinationSession) -> Result<&Arc<str>, Error> {
        let privileges = ["SELECT", "INSERT", "UPDATE", "DELETE"];
        self.ensured(&self.runs, "pals_runs", session, |name| Object {
            name,
            what: "table",
            purpose: "once_per jobs",
            create: sql::create_runs_table(name),
            usable: sql::table_usable(name, &privileges),
            privileges: privileges.join(", "),
            grant_on: "",
            logged: true,
        })
        .await
    }

    /// The runs table's qualified name, unchecked: reading the history makes nothing.
    pub(super) fn runs_name(&self) -> String {
        self.qualified("pals_runs")
    }

    /// The qualified name of the object `name`, from `cell` once `describe`'s object (given
    /// that name) is known to exist and be usable: checked, and made if missing, on first
    /// use only.
    async fn ensured<'a>(
        &'a self,
        cell: &'a OnceCell<Arc<str>>,
        name: &str,
        session: &CoordinationSession,
        describe: impl FnOnce(&str) -> Object<'_>,
    ) -> Result<&'a Arc<str>, Error> {
        cell.get_or_try_init(|| async {
            let name = self.qualified(name);
            self.ensure(session, &describe(&name)).await?;
            Ok(Arc::from(name))
        })
        .await
    }

    /// Makes sure `object` exists and the role may use it: one round trip when it does.
    async fn ensure(
        &self,
        session: &CoordinationSession,
        object: &Object<'_>,
    ) -> Result<(), Error> {
        // Twice at most: a missing object is made, then checked again.
        for _ in 0..2 {
            let (found, role) = self.check(session, object).await?;
            match found {
                Found::Ready => return Ok(()),
                Found::Denied => return Err(object.denied(&role)),
                Found::NotLogged(persistence) => return Err(object.not_logged(&persistence)),
                Found::Missing => self.create(session, object, &role).await?,
            }
        }
        Err(Error::InvalidConfig(format!(
            "the {} {} could not be found or made",
            object.what, object.name
        )))
    }

    /// Whether `object` is there and usable, and the role's name.
    async fn check(
        &self,
        session: &CoordinationSession,
        object: &Object<'_>,
    ) -> Result<(Found, String), Error> {
        let check = sql::ensure_check(object.name, &object.usable);
        let answer = match session.query(&check, "the check of pals' objects").await {
            Err(Error::Database(error))
                if error.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) =>
            {
                return Err(Error::InvalidConfig(format!(
                    "{purpose} use the {what} {name}, and this role may not use schema \
                     {schema:?}; ask an admin to run: GRANT USAGE ON SCHEMA {schema_q} TO <role>",
                    purpose = object.purpose,
                    what = object.what,
                    name = object.name,
                    schema = self.schema,
                    schema_q = sql::identifier(&self.schema),
                )))
            }
            answer => answer?,
        };
        let row = sql::rows(&answer).next();
        let column = |i| row.and_then(|row| row.get(i)).unwrap_or("");
        let found = match column(0) {
            "ready" if object.logged && !matches!(column(2), "p" | "") => {
                Found::NotLogged(column(2).to_string())
            }
            "ready" => Found::Ready,
            "denied" => Found::Denied,
            "missing" => Found::Missing,
            other => {
                return Err(Error::InvalidConfig(format!(
                    "the check of the {} {} answered {other:?}",
                    object.what, object.name
                )))
            }
        };
        Ok((found, column(1).to_string()))
    }

    /// Creates `object`; made by someone else meanwhile is fine (it is checked again).
    async fn create(
        &self,
        session: &CoordinationSession,
        object: &Object<'_>,
        role: &str,
    ) -> Result<(), Error> {
        let (what, name, purpose) = (object.what, object.name, object.purpose);
        let error = match session
            .query(&object.create, "the creation of pals' objects")
            .await
        {
            Ok(_) => {
                tracing::info!(
                    object = name,
                    "pals: created the {what} {name} for {purpose} (first use; see pals' docs)"
                );
                return Ok(());
            }
            Err(Error::Database(error)) => error,
            Err(other) => return Err(other),
        };
        let code = error.code();
        if matches!(
            code,
            Some(&SqlState::UNIQUE_VIOLATION | &SqlState::DUPLICATE_TABLE)
        ) {
            return Ok(());
        }
        if code == Some(&SqlState::INVALID_SCHEMA_NAME) {
            return Err(Error::InvalidConfig(format!(
                "{purpose} use the {what} {name}, and schema {schema:?} does not exist: \
                 create it, or name another with LockerBuilder::schema",
                schema = self.schema,
            )));
        }
        if code == Some(&SqlState::INSUFFICIENT_PRIVILEGE) {
            let message = error
                .as_db_error()
                .map_or(String::new(), |e| e.message().into());
            let grant = sql::grant(&object.privileges, object.grant_on, name, role);
            return Err(Error::InvalidConfig(format!(
                "{purpose} use the {what} {name}, which does not exist, and role {role:?} may \
                 not create it ({message}); ask an admin to run once: {}; {grant}",
                object.create
            )));
        }
        Err(Error::Database(error))
    }
}

/// Why `schema` cannot hold pals' objects, if it cannot: a temporary schema (`pg_temp`,
/// each session's own, where the sequence would differ per session and vanish with it:
/// tokens would restart at 1 in every process) or a system one (`pg_catalog`, `pg_toast`,
/// `information_schema`). Told apart whatever the case or quotes: pals quotes the name, so
/// only the exact lower-case names would resolve to those schemas, but a name written
/// otherwise was meant as one of them all the same.
fn unfit_schema(schema: &str) -> Option<&'static str> {
    let bare = schema.trim_matches('"').to_ascii_lowercase();
    if bare.starts_with("pg_temp") || bare.starts_with("pg_toast_temp") {
        return Some(
            "it is a temporary schema, private to each session and gone with it, so every \
             process would mint fencing tokens from a sequence of its own, from 1",
        );
    }
    if bare.starts_with("pg_") || bare == "information_schema" {
        return Some(
            "it is a system schema (names starting with pg_ and information_schema are \
             PostgreSQL's own)",
        );
    }
    None
}

impl Object<'_> {
    /// The error for an object that is unlogged or temporary (`persistence`, as
    /// `pg_class.relpersistence` says) where it must not be.
    fn not_logged(&self, persistence: &str) -> Error {
        let (what, name, purpose) = (self.what, self.name, self.purpose);
        let (is, mend) = match persistence {
            "u" => (
                "unlogged: after a server crash it starts over, and what it keeps is lost",
                format!(
                    "ask an admin to run: ALTER {} {name} SET LOGGED",
                    what.to_uppercase()
                ),
            ),
            _ => (
                "temporary: each session has its own, gone with the session",
                format!(
                    "drop it, and let pals (or an admin) create it: {}",
                    self.create
                ),
            ),
        };
        Error::InvalidConfig(format!(
            "{purpose} use the {what} {name}, which is {is}; {mend}"
        ))
    }

    /// The error for a role that may not use the object.
    fn denied(&self, role: &str) -> Error {
        Error::InvalidConfig(format!(
            "{purpose} use the {what} {name}, which role {role:?} may not use; ask an admin \
             to run: {grant}",
            purpose = self.purpose,
            what = self.what,
            name = self.name,
            grant = sql::grant(&self.privileges, self.grant_on, self.name, role),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_quoted_in_their_schema() {
        let objects = Objects::new("Ops \"x\"").unwrap();
        assert_eq!(
            objects.qualified("pals_fence"),
            "\"Ops \"\"x\"\"\".\"pals_fence\""
        );
        let public = Objects::new("public").unwrap();
        assert_eq!(
            public.qualified("pals_leaders"),
            "\"public\".\"pals_leaders\""
        );
        assert!(Objects::new("").is_err());
        assert!(Objects::new(&"s".repeat(64)).is_err());
    }
}
