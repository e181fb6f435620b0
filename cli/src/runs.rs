//! `pals runs NAME`: the last runs of a `once_per` job.

use pals::inspect::RunRecord;

use crate::answer::{Answer, Exit};
use crate::args;
use crate::connect;
use crate::json::Value;

/// The runs that `request` asks for; [`Exit::Nothing`] if none is recorded.
pub(crate) async fn runs(request: &args::Runs) -> Result<Answer, pals::Error> {
    let (app, name, schema) = (&request.app, &request.name, &request.schema);
    let url = request.common.url.as_deref();
    let locker = connect::locker(app, url, schema)?;
    let runs = locker.runs(name, request.limit).await?;
    let lock = format!("{app}.{name}");
    let (text, exit) = match runs.len() {
        0 => (
            format!(
                "{lock}: no run recorded in {schema}.pals_runs: the job never ran, or ran \
                 under another app name (--app) or schema (--schema)\n"
            ),
            Exit::Nothing,
        ),
        count => (
            format!(
                "{lock}: {count} run(s) shown, newest first\n{}",
                pals::inspect::runs_table(&runs)
            ),
            Exit::Done,
        ),
    };
    let json = Value::Object(vec![
        ("ok", Value::Bool(true)),
        ("app", Value::string(app)),
        ("name", Value::string(name)),
        ("lock", Value::string(lock)),
        ("runs", Value::Array(runs.iter().map(json).collect())),
    ]);
    Ok(Answer { text, json, exit })
}

/// One run in the JSON document.
fn json(run: &RunRecord) -> Value {
    let took = run
        .ended
        .map(|ended| ended.duration_since(run.started).unwrap_or_default());
    Value::Object(vec![
        ("tick", Value::time(run.tick)),
        ("period", Value::seconds(run.period)),
        ("started", Value::time(run.started)),
        ("ended", Value::or_null(run.ended, Value::time)),
        ("took", Value::or_null(took, Value::seconds)),
        ("replica", Value::string(&run.replica)),
        ("outcome", Value::string(run.outcome.as_str())),
        ("detail", Value::or_null(run.detail.clone(), Value::string)),
    ])
}
