//! `pals check`: does the configuration connect, log in and set a session up?

use crate::answer::{Answer, Exit};
use crate::args;
use crate::connect;
use crate::json::Value;

/// The check that `request` asks for: [`Exit::Failed`], with the error, if it fails.
pub(crate) async fn check(request: &args::Check) -> Answer {
    let app = &request.app;
    let checked = match connect::locker(app, request.common.url.as_deref(), "public") {
        Ok(locker) => locker.check().await,
        Err(error) => Err(error),
    };
    match checked {
        Ok(checked) => Answer {
            text: format!("{checked}\n"),
            json: Value::Object(vec![
                ("ok", Value::Bool(true)),
                ("app", Value::string(app)),
                ("target", Value::string(checked.target())),
                ("user", Value::string(checked.user())),
                ("database", Value::string(checked.database())),
                ("server_version", Value::string(checked.server_version())),
                ("tls", Value::Bool(checked.tls())),
                (
                    "url_from",
                    Value::or_null(checked.url_from(), Value::string),
                ),
            ]),
            exit: Exit::Done,
        },
        Err(error) => Answer {
            text: String::new(),
            json: Value::Object(vec![
                ("ok", Value::Bool(false)),
                ("app", Value::string(app)),
                ("error", Value::string(error.to_string())),
            ]),
            exit: Exit::Failed,
        }
        .with_stderr(&error.to_string()),
    }
}
