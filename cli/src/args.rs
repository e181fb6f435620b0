//! The command line, read by hand: the command, its options and its operands, checked
//! into a [`Command`]. Nothing here reads the environment: the app name of `PALS_APP_NAME`
//! comes in as an argument.

use crate::help::Topic;

/// What the command line asks for.
#[derive(Debug, PartialEq)]
pub(crate) enum Command {
    /// Print the help of a command (`None`: the overview).
    Help(Option<Topic>),
    /// Print the version.
    Version,
    /// Ask the database.
    Ask(Request),
}

/// A command that asks the database.
#[derive(Debug, PartialEq)]
pub(crate) enum Request {
    Holders(Holders),
    Runs(Runs),
    Check(Check),
}

impl Request {
    /// Whether it asks for a JSON document (`--json`).
    pub(crate) fn json(&self) -> bool {
        let common = match self {
            Request::Holders(request) => &request.common,
            Request::Runs(request) => &request.common,
            Request::Check(request) => &request.common,
        };
        common.json
    }
}

/// Options of every command that asks the database.
#[derive(Debug, PartialEq)]
pub(crate) struct Common {
    /// `--url`; `None`: the environment, as pals reads it.
    pub(crate) url: Option<String>,
    /// `--json`: one JSON document instead of the table.
    pub(crate) json: bool,
}

/// `pals holders`.
#[derive(Debug, PartialEq)]
pub(crate) struct Holders {
    pub(crate) common: Common,
    /// Only this app's locks; `None`: every lock.
    pub(crate) app: Option<String>,
    /// Lock names of `app`, whose keys are labelled.
    pub(crate) names: Vec<String>,
}

/// `pals runs NAME`.
#[derive(Debug, PartialEq)]
pub(crate) struct Runs {
    pub(crate) common: Common,
    pub(crate) app: String,
    pub(crate) name: String,
    pub(crate) limit: u32,
    pub(crate) schema: String,
}

/// `pals check`.
#[derive(Debug, PartialEq)]
pub(crate) struct Check {
    pub(crate) common: Common,
    pub(crate) app: String,
}

/// A command line that cannot be used: what is wrong, and the command whose usage to show.
#[derive(Debug, PartialEq)]
pub(crate) struct Usage {
    pub(crate) message: String,
    pub(crate) topic: Option<Topic>,
}

/// An option, as the command line spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flag {
    Help,
    Version,
    Url,
    Json,
    App,
    All,
    Limit,
    Schema,
}

impl Flag {
    /// The option `word` spells (`--name`, or `-h`, `-V`).
    fn of(word: &str) -> Option<Flag> {
        Some(match word {
            "--help" | "-h" => Flag::Help,
            "--version" | "-V" => Flag::Version,
            "--url" => Flag::Url,
            "--json" => Flag::Json,
            "--app" => Flag::App,
            "--all" => Flag::All,
            "--limit" => Flag::Limit,
            "--schema" => Flag::Schema,
            _ => return None,
        })
    }

    fn spelled(self) -> &'static str {
        match self {
            Flag::Help => "--help",
            Flag::Version => "--version",
            Flag::Url => "--url",
            Flag::Json => "--json",
            Flag::App => "--app",
            Flag::All => "--all",
            Flag::Limit => "--limit",
            Flag::Schema => "--schema",
        }
    }

    /// What its value is, for an option that takes one.
    fn value(self) -> Option<&'static str> {
        match self {
            Flag::Url => Some("a database URL"),
            Flag::App => Some("an application name"),
            Flag::Limit => Some("a number of runs"),
            Flag::Schema => Some("a schema name"),
            _ => None,
        }
    }

    /// Whether `command` takes it.
    fn taken_by(self, command: Topic) -> bool {
        match self {
            Flag::Help | Flag::Version | Flag::Url | Flag::Json | Flag::App => true,
            Flag::All => command == Topic::Holders,
            Flag::Limit | Flag::Schema => command == Topic::Runs,
        }
    }
}

/// The command line cut into its words: the command, the options and the operands.
#[derive(Default)]
struct Words {
    command: Option<String>,
    options: Vec<(Flag, Option<String>)>,
    operands: Vec<String>,
}

impl Words {
    fn has(&self, flag: Flag) -> bool {
        self.options.iter().any(|(f, _)| *f == flag)
    }

    /// The value of `flag`, if given.
    fn value(&self, flag: Flag) -> Option<&str> {
        let found = self.options.iter().find(|(f, _)| *f == flag);
        found.and_then(|(_, value)| value.as_deref())
    }
}

fn usage(message: impl Into<String>, topic: Option<Topic>) -> Usage {
    Usage {
        message: message.into(),
        topic,
    }
}

/// The command that `args` (the arguments after the program's name) ask for; `env_app`
/// is `PALS_APP_NAME`'s value, if set.
pub(crate) fn parse(args: Vec<String>, env_app: Option<String>) -> Result<Command, Usage> {
    // A word the command line could not be cut into: the usage shown is its command's.
    let command = args.iter().find_map(|arg| Topic::of(arg));
    let words = words(args).map_err(|refused| Usage {
        topic: refused.topic.or(command),
        ..refused
    })?;
    let topic = match words.command.as_deref() {
        None | Some("help") => None,
        Some(word) => Some(Topic::of(word).ok_or_else(|| {
            usage(
                format!("unknown command {word:?}: the commands are holders, runs and check"),
                None,
            )
        })?),
    };
    if words.has(Flag::Help) {
        return Ok(Command::Help(topic));
    }
    if words.has(Flag::Version) {
        return Ok(Command::Version);
    }
    let Some(topic) = topic else {
        return help_command(&words);
    };
    checked_options(&words, topic)?;
    let env_app = env_app.filter(|app| !app.is_empty());
    let common = Common {
        url: words.value(Flag::Url).map(str::to_string),
        json: words.has(Flag::Json),
    };
    let request = match topic {
        Topic::Holders => Request::Holders(holders(words, common, env_app)?),
        Topic::Runs => Request::Runs(runs(words, common, env_app)?),
        Topic::Check => Request::Check(check(words, common, env_app)?),
    };
    Ok(Command::Ask(request))
}

/// The words of `args`: `--name value`, `--name=value`, flags, `--` (operands only after
/// it), and the first other word is the command.
fn words(args: Vec<String>) -> Result<Words, Usage> {
    let mut words = Words::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--" {
            words.operands.extend(args.by_ref());
        } else if arg.starts_with('-') && arg != "-" {
            let (spelled, inline) = match arg.split_once('=') {
                Some((name, value)) if arg.starts_with("--") => (name, Some(value.to_string())),
                _ => (arg.as_str(), None),
            };
            let flag = Flag::of(spelled)
                .ok_or_else(|| usage(format!("unknown option {spelled}"), None))?;
            let value = value_of(flag, inline, &mut args)?;
            words.options.push((flag, value));
        } else if words.command.is_none() {
            words.command = Some(arg);
        } else {
            words.operands.push(arg);
        }
    }
    Ok(words)
}

/// The value of `flag`: given inline (`--app=x`), else the next argument, unless that is
/// one of pals' options (`--app --json` is a forgotten value, not an app named `--json`;
/// `--app=--json` names it).
fn value_of(
    flag: Flag,
    inline: Option<String>,
    args: &mut impl Iterator<Item = String>,
) -> Result<Option<String>, Usage> {
    let name = flag.spelled();
    let Some(what) = flag.value() else {
        return match inline {
            None => Ok(None),
            Some(_) => Err(usage(format!("{name} takes no value"), None)),
        };
    };
    let value = match inline {
        Some(value) => Some(value),
        None => match args.next() {
            Some(next) if Flag::of(next.split('=').next().unwrap_or_default()).is_some() => {
                return Err(usage(
                    format!("{name} needs {what}, and {next} is an option (write {name}={next} if that is the value)"),
                    None,
                ));
            }
            next => next,
        },
    };
    match value {
        Some(value) if !value.is_empty() => Ok(Some(value)),
        _ => Err(usage(format!("{name} needs {what}"), None)),
    }
}

/// `pals help [COMMAND]`.
fn help_command(words: &Words) -> Result<Command, Usage> {
    if words.command.is_none() {
        return Err(usage(
            "no command given: pals holders, pals runs NAME or pals check",
            None,
        ));
    }
    if let Some((flag, _)) = words.options.first() {
        return Err(usage(format!("help takes no {}", flag.spelled()), None));
    }
    match words.operands.as_slice() {
        [] => Ok(Command::Help(None)),
        [word] => Topic::of(word)
            .map(|t| Command::Help(Some(t)))
            .ok_or_else(|| {
                usage(
                    format!("no help on {word:?}: the commands are holders, runs and check"),
                    None,
                )
            }),
        [_, extra, ..] => Err(usage(
            format!("help takes one COMMAND, not {extra:?}"),
            None,
        )),
    }
}

/// Refuses an option the command does not take, or one given twice.
fn checked_options(words: &Words, command: Topic) -> Result<(), Usage> {
    for (i, (flag, _)) in words.options.iter().enumerate() {
        let name = flag.spelled();
        if !flag.taken_by(command) {
            let message = format!("{} takes no {name}", command.name());
            return Err(usage(message, Some(command)));
        }
        if words.options[..i].iter().any(|(f, _)| f == flag) {
            return Err(usage(format!("{name} is given twice"), Some(command)));
        }
    }
    Ok(())
}

/// The app: `--app`, else `PALS_APP_NAME`, else a usage error that says both.
fn app_needed(words: &Words, env_app: Option<String>, command: Topic) -> Result<String, Usage> {
    let app = words.value(Flag::App).map(str::to_string).or(env_app);
    app.ok_or_else(|| {
        let message = format!(
            "{} needs the application's name: give --app APP, or set PALS_APP_NAME",
            command.name()
        );
        usage(message, Some(command))
    })
}

fn holders(words: Words, common: Common, env_app: Option<String>) -> Result<Holders, Usage> {
    let app = match (words.has(Flag::All), words.value(Flag::App)) {
        (true, Some(_)) => {
            let message = "--all and --app ask for different locks: give one of them";
            return Err(usage(message, Some(Topic::Holders)));
        }
        (true, None) => None,
        (false, app) => app.map(str::to_string).or(env_app),
    };
    if app.is_none() && !words.operands.is_empty() {
        let message = "NAMEs are lock names of an application: give --app APP, or set \
                       PALS_APP_NAME (and leave --all out)";
        return Err(usage(message, Some(Topic::Holders)));
    }
    Ok(Holders {
        common,
        app,
        names: words.operands,
    })
}

fn runs(words: Words, common: Common, env_app: Option<String>) -> Result<Runs, Usage> {
    let topic = Some(Topic::Runs);
    let name = match words.operands.as_slice() {
        [] => return Err(usage("runs needs the NAME of a job", topic)),
        [name] if name.is_empty() => return Err(usage("a job's NAME cannot be empty", topic)),
        [name] => name.clone(),
        [_, extra, ..] => {
            return Err(usage(
                format!("runs takes one NAME, not {extra:?} too"),
                topic,
            ));
        }
    };
    let limit = match words.value(Flag::Limit) {
        None => 10,
        Some(text) => match text.parse::<u32>() {
            Ok(limit) if limit > 0 => limit,
            _ => {
                let message = format!("--limit needs a whole number from 1, not {text:?}");
                return Err(usage(message, topic));
            }
        },
    };
    Ok(Runs {
        app: app_needed(&words, env_app, Topic::Runs)?,
        schema: words.value(Flag::Schema).unwrap_or("public").to_string(),
        common,
        name,
        limit,
    })
}

fn check(words: Words, common: Common, env_app: Option<String>) -> Result<Check, Usage> {
    if let Some(extra) = words.operands.first() {
        let message = format!("check takes no operand, not {extra:?}");
        return Err(usage(message, Some(Topic::Check)));
    }
    Ok(Check {
        app: app_needed(&words, env_app, Topic::Check)?,
        common,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_of(args: &str, env_app: Option<&str>) -> Result<Command, Usage> {
        let args = args.split_whitespace().map(str::to_string).collect();
        parse(args, env_app.map(str::to_string))
    }

    fn error_of(args: &str) -> String {
        parse_of(args, None).unwrap_err().message
    }

    fn common(url: Option<&str>, json: bool) -> Common {
        let url = url.map(str::to_string);
        Common { url, json }
    }

    #[test]
    fn help_and_version() {
        for args in ["--help", "-h", "help", "--help holders x"] {
            let expected = Command::Help(
                (args != "--help" && args != "-h" && args != "help").then_some(Topic::Holders),
            );
            assert_eq!(parse_of(args, None), Ok(expected), "{args}");
        }
        assert_eq!(
            parse_of("runs -h", None),
            Ok(Command::Help(Some(Topic::Runs)))
        );
        assert_eq!(
            parse_of("help check", None),
            Ok(Command::Help(Some(Topic::Check)))
        );
        assert_eq!(parse_of("-V", None), Ok(Command::Version));
        assert_eq!(parse_of("check --version", None), Ok(Command::Version));
        assert!(error_of("help nothing").contains("no help on \"nothing\""));
        assert!(error_of("").contains("no command given"));
    }

    #[test]
    fn holders_of_every_app_or_of_one() {
        let all = parse_of("holders", None);
        let expected = |app: Option<&str>, names: &[&str], common: Common| {
            Ok(Command::Ask(Request::Holders(Holders {
                common,
                app: app.map(str::to_string),
                names: names.iter().map(|n| n.to_string()).collect(),
            })))
        };
        assert_eq!(all, expected(None, &[], common(None, false)));
        assert_eq!(
            parse_of("--url=u holders --json --app a x y", None),
            expected(Some("a"), &["x", "y"], common(Some("u"), true))
        );
        assert_eq!(
            parse_of("holders x", Some("env")),
            expected(Some("env"), &["x"], common(None, false))
        );
        assert_eq!(
            parse_of("holders --all", Some("env")),
            expected(None, &[], common(None, false))
        );
        assert!(error_of("holders x").contains("give --app APP, or set PALS_APP_NAME"));
        assert!(error_of("holders --all --app a").contains("give one of them"));
    }

    #[test]
    fn runs_of_a_job() {
        let runs = parse_of("runs job --limit 3 --schema s", Some("env"));
        let expected = Runs {
            common: common(None, false),
            app: "env".into(),
            name: "job".into(),
            limit: 3,
            schema: "s".into(),
        };
        assert_eq!(runs, Ok(Command::Ask(Request::Runs(expected))));
        let Ok(Command::Ask(Request::Runs(runs))) = parse_of("runs --app a -- -odd", None) else {
            panic!("runs -- -odd parses");
        };
        assert_eq!((runs.name.as_str(), runs.limit), ("-odd", 10));
        assert!(error_of("runs job").contains("give --app APP, or set PALS_APP_NAME"));
        assert!(error_of("runs --app a").contains("needs the NAME"));
        assert!(error_of("runs a b --app a").contains("one NAME"));
        assert!(error_of("runs j --app a --limit 0").contains("from 1, not \"0\""));
        assert!(error_of("runs j --app a --limit x").contains("not \"x\""));
    }

    #[test]
    fn check_needs_an_app() {
        let check = parse_of("check --url u", Some("env"));
        let expected = Check {
            common: common(Some("u"), false),
            app: "env".into(),
        };
        assert_eq!(check, Ok(Command::Ask(Request::Check(expected))));
        assert!(error_of("check").contains("give --app APP, or set PALS_APP_NAME"));
        assert!(
            parse_of("check", Some("")).is_err(),
            "an empty variable is unset"
        );
    }

    #[test]
    fn what_cannot_be_used_is_refused() {
        assert_eq!(error_of("holders --bogus"), "unknown option --bogus");
        assert_eq!(error_of("holders -x"), "unknown option -x");
        assert_eq!(
            error_of("frobnicate"),
            "unknown command \"frobnicate\": the commands are holders, runs and check"
        );
        assert_eq!(error_of("holders --limit 3"), "holders takes no --limit");
        assert_eq!(error_of("check --all"), "check takes no --all");
        assert_eq!(error_of("holders --json=yes"), "--json takes no value");
        assert_eq!(error_of("holders --url"), "--url needs a database URL");
        assert_eq!(
            error_of("holders --app="),
            "--app needs an application name"
        );
        assert_eq!(error_of("holders --json --json"), "--json is given twice");
        assert_eq!(
            error_of("holders --app --json"),
            "--app needs an application name, and --json is an option (write --app=--json if \
             that is the value)"
        );
        assert!(error_of("runs j --app --limit=3").contains("--limit=3 is an option"));
        let named = parse_of("holders --app=--json", None).expect("an inline value is taken");
        assert!(matches!(named, Command::Ask(_)));
        assert!(error_of("check --app a extra").contains("no operand"));
        let topic = parse_of("runs --limit x j --app a", None)
            .unwrap_err()
            .topic;
        assert_eq!(topic, Some(Topic::Runs), "the command's usage is shown");
    }
}
