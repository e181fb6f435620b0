//! `pals holders`: the advisory locks held or awaited, of every app or of one.

use std::collections::HashMap;

use pals::inspect::Holder;

use crate::answer::{Answer, Exit};
use crate::args;
use crate::connect;
use crate::json::Value;

/// The holders that `request` asks for.
pub(crate) async fn holders(request: &args::Holders) -> Result<Answer, pals::Error> {
    let app = request.app.as_deref();
    let url = request.common.url.as_deref();
    let locker = connect::locker(app.unwrap_or(connect::NO_APP), url, "public")?;
    let labels: HashMap<i64, String> = match app {
        Some(app) => (request.names.iter())
            .map(|name| (pals::key(app, name), format!("{app}.{name}")))
            .collect(),
        None => HashMap::new(),
    };
    let mut holders = locker.holders().await?;
    holders.retain(|holder| app.map_or(true, |app| is_of(holder, app, &labels)));
    for holder in &mut holders {
        if let Some(label) = labels.get(&holder.key) {
            holder.name = Some(label.clone());
        }
    }
    let of_app = app.map_or(String::new(), |app| format!(" of {app}"));
    let count = holders.len();
    Ok(Answer {
        text: format!(
            "{}{count} advisory lock(s){of_app} held or awaited\n",
            pals::inspect::table(&holders)
        ),
        json: Value::Object(vec![
            ("ok", Value::Bool(true)),
            ("app", Value::or_null(app, Value::string)),
            ("holders", Value::Array(holders.iter().map(json).collect())),
        ]),
        exit: Exit::Done,
    })
}

/// Whether `holder` is `app`'s: on the key of a lock it named, or in one of its sessions.
fn is_of(holder: &Holder, app: &str, labels: &HashMap<i64, String>) -> bool {
    labels.contains_key(&holder.key) || is_session_of(&holder.application_name, app)
}

/// Whether `application_name` is one pals gives the sessions of `app` (see
/// `pals::application_name`): `pals:{app}@{host}:{pid}`, or where the app leaves no room
/// for the rest within PostgreSQL's 63 bytes, `pals:{app}`, cut to them.
fn is_session_of(application_name: &str, app: &str) -> bool {
    let head = format!("pals:{app}");
    let Some(rest) = application_name.strip_prefix(&head) else {
        let cut = application_name.len() > 63 - 4 && head.len() > 63;
        return cut && head.starts_with(application_name);
    };
    let Some(replica) = rest.strip_prefix('@') else {
        return rest.is_empty();
    };
    // A host name has no '@', and a pid ends it: "pals:a" is not the app of "pals:a@b@h:1".
    replica.rsplit_once(':').is_some_and(|(host, pid)| {
        !host.contains('@') && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit())
    })
}

/// One holder in the JSON document.
fn json(holder: &Holder) -> Value {
    Value::Object(vec![
        ("key", Value::string(holder.key.to_string())),
        ("name", Value::or_null(holder.name.clone(), Value::string)),
        ("mode", Value::string(holder.mode.to_string())),
        ("granted", Value::Bool(holder.granted)),
        ("pid", Value::or_null(holder.pid, Value::integer)),
        ("application_name", Value::string(&holder.application_name)),
        (
            "client_addr",
            Value::or_null(holder.client_addr.clone(), Value::string),
        ),
        (
            "backend_start",
            Value::or_null(holder.backend_start, Value::time),
        ),
        (
            "waiting_for",
            Value::or_null(holder.waiting_for, Value::seconds),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_of_an_app_are_told_by_their_application_name() {
        assert!(is_session_of("pals:billing@web-1:4242", "billing"));
        assert!(is_session_of("pals:billing", "billing"));
        assert!(!is_session_of("pals:billing-eu@web-1:4242", "billing"));
        assert!(!is_session_of("pals:a@b@web-1:4242", "a"), "app a@b");
        assert!(!is_session_of("billing", "billing"));
        assert!(!is_session_of("pals:billing@web-1", "billing"));
        assert!(!is_session_of("pals-cli", "billing"));
        // An app too long for the host and pid: its name alone, cut to 63 bytes.
        let long = "x".repeat(80);
        let cut = &format!("pals:{long}")[..63];
        assert!(is_session_of(cut, &long));
        assert!(!is_session_of("pals:xxx", &long));
        // One real name, whatever the host: the library's own.
        for app in ["billing", "é-app", &long] {
            assert!(is_session_of(&pals::application_name(app), app), "{app}");
        }
    }
}
