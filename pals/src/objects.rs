//! The database objects pals keeps beside its locks, in one schema (`public` unless
//! [`LockerBuilder::schema`](crate::LockerBuilder::schema) names another):
//!
//! - the sequence `pals_fence`, which mints fencing tokens ([`Lock::fenced`](crate::Lock::fenced));
//! - the table `pals_leaders`, where an elected leader says who it is
//!   ([`Election`](crate::Election)).
//!
//! Plain advisory locks need neither. Each is looked up the first time a locker needs it,
//! and created then if it is missing (logged at info level). A role that may not create
//! objects works all the same once an admin has made them: the error that says so gives
//! the SQL to run.

use std::sync::Arc;

use tokio::sync::OnceCell;
use tokio_postgres::error::SqlState;

use crate::pool::Pool;
use crate::statement::literal;
use crate::Error;

/// The objects of one locker's schema, each checked once.
pub(crate) struct Objects {
    schema: String,
    fence: OnceCell<Arc<str>>,
    /// The leaders table, checked for what candidates do (read and write it), and for what
    /// observers do (read it).
    leaders: OnceCell<Arc<str>>,
    leaders_read: OnceCell<Arc<str>>,
}

/// One object: what it is for, and how it is made and checked.
struct Object<'a> {
    /// Its qualified, quoted name.
    name: &'a str,
    kind: &'static str,
    purpose: &'static str,
    create: String,
    /// A condition on `$name` (as a literal): the role may use it as pals does.
    usable: String,
    grant: String,
}

impl Objects {
    pub(crate) fn new(schema: &str) -> Result<Objects, Error> {
        if schema.is_empty() || schema.contains('\0') || schema.len() > 63 {
            return Err(Error::InvalidConfig(format!(
                "schema {schema:?} cannot be a PostgreSQL schema name (1 to 63 bytes, no NUL)"
            )));
        }
        Ok(Objects {
            schema: schema.to_owned(),
            fence: OnceCell::new(),
            leaders: OnceCell::new(),
            leaders_read: OnceCell::new(),
        })
    }

    /// The sequence's qualified, quoted name.
    pub(crate) fn fence_name(&self) -> String {
        format!("{}.\"pals_fence\"", quote(&self.schema))
    }

    /// The leaders table's qualified, quoted name.
    pub(crate) fn leaders_name(&self) -> String {
        format!("{}.\"pals_leaders\"", quote(&self.schema))
    }

    /// The fencing sequence's name, once it is known to exist (made if missing).
    pub(crate) async fn fence(&self, pool: &Pool) -> Result<&Arc<str>, Error> {
        self.fence
            .get_or_try_init(|| async {
                let name = self.fence_name();
                let lit = literal(&name);
                let object = Object {
                    name: &name,
                    kind: "sequence",
                    purpose: "fencing tokens",
                    create: format!("CREATE SEQUENCE IF NOT EXISTS {name} AS bigint"),
                    // nextval needs USAGE or UPDATE.
                    usable: format!(
                        "(has_sequence_privilege({lit}, 'USAGE') \
                         OR has_sequence_privilege({lit}, 'UPDATE'))"
                    ),
                    grant: format!("GRANT USAGE ON SEQUENCE {name} TO"),
                };
                ensure(pool, &object, &self.schema).await?;
                Ok(Arc::from(name))
            })
            .await
    }

    /// The leaders table's name, once it is known to exist (made if missing) and the role
    /// may `write` it (candidates), or read it (observers).
    pub(crate) async fn leaders(&self, pool: &Pool, write: bool) -> Result<&Arc<str>, Error> {
        let cell = if write {
            &self.leaders
        } else {
            &self.leaders_read
        };
        let privileges: &[&str] = if write {
            &["SELECT", "INSERT", "UPDATE"]
        } else {
            &["SELECT"]
        };
        cell.get_or_try_init(|| async {
            let name = self.leaders_name();
            let lit = literal(&name);
            let object = Object {
                name: &name,
                kind: "table",
                purpose: "leader election",
                create: format!(
                    "CREATE TABLE IF NOT EXISTS {name} (\
                         key bigint PRIMARY KEY, name text NOT NULL, identity text NOT NULL, \
                         since timestamptz NOT NULL, token bigint NOT NULL, pid int NOT NULL)"
                ),
                usable: privileges
                    .iter()
                    .map(|privilege| format!("has_table_privilege({lit}, '{privilege}')"))
                    .collect::<Vec<_>>()
                    .join(" AND "),
                grant: format!("GRANT {} ON {name} TO", privileges.join(", ")),
            };
            ensure(pool, &object, &self.schema).await?;
            Ok(Arc::from(name))
        })
        .await
    }
}

/// `name` as a quoted SQL identifier.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Makes sure `object` exists and the role may use it: one round trip when it does.
async fn ensure(pool: &Pool, object: &Object<'_>, schema: &str) -> Result<(), Error> {
    let name = object.name;
    let check = format!(
        "SELECT CASE WHEN to_regclass({lit}) IS NULL THEN 'missing' \
         WHEN {usable} THEN 'ready' ELSE 'denied' END, current_user::text",
        lit = literal(name),
        usable = object.usable,
    );
    let turn = pool.turn().await?;
    // Twice at most: a missing object is made, then checked again.
    for _ in 0..2 {
        let answer = match turn.query(&check).await {
            Err(Error::Database(error))
                if error.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) =>
            {
                return Err(Error::InvalidConfig(format!(
                    "{purpose} use the {kind} {name}, and this role may not use schema \
                     {schema:?}; ask an admin to run: GRANT USAGE ON SCHEMA {schema_q} TO <role>",
                    purpose = object.purpose,
                    kind = object.kind,
                    schema_q = quote(schema),
                )))
            }
            answer => answer?,
        };
        let row = answer.iter().find_map(|message| match message {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        });
        let (state, role) = match row {
            Some(row) => (row.get(0).unwrap_or(""), row.get(1).unwrap_or("")),
            None => ("", ""),
        };
        let admin_sql = format!("{}; {} {}", object.create, object.grant, quote(role));
        match state {
            "ready" => return Ok(()),
            "denied" => {
                return Err(Error::InvalidConfig(format!(
                    "{purpose} use the {kind} {name}, which role {role:?} may not use; ask an \
                     admin to run: {grant} {role_q}",
                    purpose = object.purpose,
                    kind = object.kind,
                    grant = object.grant,
                    role_q = quote(role),
                )))
            }
            "missing" => match turn.query(&object.create).await {
                Ok(_) => tracing::info!(
                    object = name,
                    "pals: created the {} {name} for {} (first use; see pals' docs)",
                    object.kind,
                    object.purpose
                ),
                // Made by someone else meanwhile: check again.
                Err(Error::Database(error))
                    if matches!(
                        error.code(),
                        Some(&SqlState::UNIQUE_VIOLATION | &SqlState::DUPLICATE_TABLE)
                    ) => {}
                Err(Error::Database(error))
                    if error.code() == Some(&SqlState::INVALID_SCHEMA_NAME) =>
                {
                    return Err(Error::InvalidConfig(format!(
                        "{purpose} use the {kind} {name}, and schema {schema:?} does not exist: \
                         create it, or name another with LockerBuilder::schema",
                        purpose = object.purpose,
                        kind = object.kind,
                    )))
                }
                Err(Error::Database(error))
                    if error.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) =>
                {
                    return Err(Error::InvalidConfig(format!(
                        "{purpose} use the {kind} {name}, which does not exist, and role \
                         {role:?} may not create it ({error}); ask an admin to run once: \
                         {admin_sql}",
                        purpose = object.purpose,
                        kind = object.kind,
                        error = error
                            .as_db_error()
                            .map_or(String::new(), |e| e.message().into()),
                    )))
                }
                Err(error) => return Err(error),
            },
            _ => break,
        }
    }
    Err(Error::InvalidConfig(format!(
        "the {} {name} could not be found or made",
        object.kind
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_quoted_in_their_schema() {
        let objects = Objects::new("Ops \"x\"").unwrap();
        assert_eq!(objects.fence_name(), "\"Ops \"\"x\"\"\".\"pals_fence\"");
        assert_eq!(
            Objects::new("public").unwrap().leaders_name(),
            "\"public\".\"pals_leaders\""
        );
        assert!(Objects::new("").is_err());
        assert!(Objects::new(&"s".repeat(64)).is_err());
    }
}
