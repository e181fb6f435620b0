//! Parsing and checking the attribute's arguments, with errors that point at the argument.

use proc_macro2::Span;
use syn::meta::ParseNestedMeta;
use syn::{Expr, LitBool, LitInt, LitStr, Path, Result};

/// The arguments the attribute accepts, in the order the docs list them.
pub(crate) const VALID_ARGUMENTS: &str =
    "name, timeout, on_busy, on_lost, shared, fenced, permits, locker, min_hold, crate";

/// What to do when the lock is not acquired within the timeout.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnBusy {
    Error,
    Skip,
}

/// A parsed duration argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    Millis(u64),
    Forever,
}

/// The attribute's arguments.
#[derive(Default)]
pub(crate) struct Args {
    pub name: Option<LitStr>,
    pub timeout: Option<Wait>,
    pub on_busy: Option<(OnBusy, Span)>,
    /// `on_lost = "cancel"`, with the span of its value.
    pub cancel_on_lost: Option<Span>,
    pub shared: Option<bool>,
    pub fenced: Option<bool>,
    /// `permits = N`: a semaphore of N permits instead of the lock, with the span of N.
    pub permits: Option<(u32, Span)>,
    pub locker: Option<Expr>,
    pub min_hold: Option<u64>,
    /// `crate = path`: the path of the pals crate in the generated code (default `::pals`).
    pub krate: Option<Path>,
    seen: Vec<String>,
}

impl Args {
    /// Parses one `key = value` argument (called by `syn::meta::parser`).
    pub(crate) fn parse(&mut self, meta: ParseNestedMeta) -> Result<()> {
        let key = meta
            .path
            .get_ident()
            .map(|ident| ident.to_string())
            .unwrap_or_default();
        if !VALID_ARGUMENTS.split(", ").any(|valid| valid == key) {
            return Err(meta.error(format!(
                "unknown argument of #[pals::exclusive]; valid arguments are: {VALID_ARGUMENTS}"
            )));
        }
        if self.seen.contains(&key) {
            return Err(meta.error(format!("duplicate argument `{key}`")));
        }
        if meta.input.is_empty() || meta.input.peek(syn::Token![,]) {
            return Err(meta.error(format!("`{key}` needs a value: `{key} = ...`")));
        }
        self.seen.push(key.clone());
        let value = meta.value()?;
        match key.as_str() {
            "name" => {
                let lit: LitStr = value.parse()?;
                if lit.value().is_empty() {
                    return Err(syn::Error::new(
                        lit.span(),
                        "the lock name is empty: give the lock a name, or leave `name` out for \
                         the default (the function's path)",
                    ));
                }
                self.name = Some(lit);
            }
            "timeout" => {
                let lit: LitStr = value.parse()?;
                self.timeout =
                    Some(parse_duration(&lit.value()).map_err(|e| syn::Error::new(lit.span(), e))?);
            }
            "min_hold" => {
                let lit: LitStr = value.parse()?;
                match parse_duration(&lit.value()).map_err(|e| syn::Error::new(lit.span(), e))? {
                    Wait::Millis(millis) => self.min_hold = Some(millis),
                    Wait::Forever => {
                        return Err(syn::Error::new(
                            lit.span(),
                            "min_hold cannot be \"forever\": the lock would never be released",
                        ))
                    }
                }
            }
            "on_busy" => {
                let lit: LitStr = value.parse()?;
                let on_busy = match lit.value().as_str() {
                    "error" => OnBusy::Error,
                    "skip" => OnBusy::Skip,
                    other => {
                        return Err(syn::Error::new(
                            lit.span(),
                            format!(
                                "invalid on_busy value \"{other}\": expected \"error\" or \"skip\""
                            ),
                        ))
                    }
                };
                self.on_busy = Some((on_busy, lit.span()));
            }
            "on_lost" => {
                let lit: LitStr = value.parse()?;
                match lit.value().as_str() {
                    "cancel" => self.cancel_on_lost = Some(lit.span()),
                    "continue" => {}
                    other => {
                        return Err(syn::Error::new(
                            lit.span(),
                            format!("invalid on_lost value \"{other}\": expected \"cancel\" or \"continue\""),
                        ))
                    }
                }
            }
            "shared" => self.shared = Some(value.parse::<LitBool>()?.value),
            "fenced" => self.fenced = Some(value.parse::<LitBool>()?.value),
            "permits" => {
                let lit: LitInt = value.parse()?;
                let permits: u32 = lit.base10_parse().map_err(|_| {
                    syn::Error::new(
                        lit.span(),
                        "permits must be a whole number from 1 to 4294967295",
                    )
                })?;
                if permits == 0 {
                    return Err(syn::Error::new(
                        lit.span(),
                        "permits = 0 would never let the function run: give at least 1",
                    ));
                }
                self.permits = Some((permits, lit.span()));
            }
            "locker" => self.locker = Some(value.parse()?),
            // A path (`crate = pals_renamed`) or, as serde and tokio write it, a string
            // holding one (`crate = "pals_renamed"`).
            "crate" => {
                self.krate = Some(if value.peek(LitStr) {
                    let lit: LitStr = value.parse()?;
                    lit.parse::<Path>().map_err(|_| {
                        syn::Error::new(
                            lit.span(),
                            format!(
                                "invalid crate path \"{}\": expected the path of the pals crate, such as `crate = pals_renamed`",
                                lit.value()
                            ),
                        )
                    })?
                } else {
                    value.call(Path::parse_mod_style)?
                });
            }
            _ => unreachable!("checked against VALID_ARGUMENTS above"),
        }
        Ok(())
    }
}

/// `"0"`, a whole number with a unit (`ms`, `s`, `m`, `h`), or `"forever"`.
pub(crate) fn parse_duration(text: &str) -> std::result::Result<Wait, String> {
    let help = "use \"0\", a whole number with ms, s, m or h (\"300ms\", \"5s\", \"2m\", \"1h\"), or \"forever\"";
    if text == "forever" {
        return Ok(Wait::Forever);
    }
    if text == "0" {
        return Ok(Wait::Millis(0));
    }
    let digits = text.len() - text.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let (number, unit) = text.split_at(digits);
    let per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("invalid duration \"{text}\": {help}")),
    };
    let number: u64 = number
        .parse()
        .map_err(|_| format!("invalid duration \"{text}\": {help}"))?;
    number
        .checked_mul(per_unit)
        .map(Wait::Millis)
        .ok_or_else(|| {
            format!("duration \"{text}\" is too long; use \"forever\" to wait without limit")
        })
}

/// A `{ident}` placeholder of a lock-name template.
pub(crate) struct Placeholder {
    pub name: String,
}

/// The placeholders of `template`; `{{` and `}}` are literal braces.
pub(crate) fn placeholders(template: &str) -> std::result::Result<Vec<Placeholder>, String> {
    let mut found = Vec::new();
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) => name.push(c),
                        None => {
                            return Err(
                                "unclosed `{` in the lock name; write `{{` for a literal brace"
                                    .into(),
                            )
                        }
                    }
                }
                // `{name}` or `{name:spec}` (`{id:?}`, `{n:04}`): the spec goes to format!.
                let written = name.clone();
                let name = match name.split_once(':') {
                    Some((name, _spec)) => name.to_string(),
                    None => name,
                };
                let is_ident = name
                    .chars()
                    .next()
                    .is_some_and(|c| c == '_' || c.is_alphabetic())
                    && name.chars().all(|c| c == '_' || c.is_alphanumeric());
                if !is_ident {
                    return Err(format!(
                        "`{{{written}}}` in the lock name is not a placeholder: use `{{argument_name}}`, or `{{{{` for a literal brace"
                    ));
                }
                found.push(Placeholder { name });
            }
            '}' => {
                return Err("unmatched `}` in the lock name; write `}}` for a literal brace".into())
            }
            _ => {}
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0"), Ok(Wait::Millis(0)));
        assert_eq!(parse_duration("300ms"), Ok(Wait::Millis(300)));
        assert_eq!(parse_duration("5s"), Ok(Wait::Millis(5_000)));
        assert_eq!(parse_duration("2m"), Ok(Wait::Millis(120_000)));
        assert_eq!(parse_duration("1h"), Ok(Wait::Millis(3_600_000)));
        assert_eq!(parse_duration("forever"), Ok(Wait::Forever));
        for bad in [
            "",
            "5",
            "ms",
            "5 s",
            "-5s",
            "1.5s",
            "5sec",
            "99999999999999999999h",
            "٣s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn templates() {
        let names =
            |t: &str| placeholders(t).map(|p| p.into_iter().map(|p| p.name).collect::<Vec<_>>());
        assert_eq!(names("tenant-{tenant_id}").unwrap(), ["tenant_id"]);
        assert_eq!(names("{a}-{b}-{{literal}}").unwrap(), ["a", "b"]);
        assert!(names("plain").unwrap().is_empty());
        assert_eq!(names("{id:?}-{n:04}").unwrap(), ["id", "n"]);
        for bad in ["{", "}", "{a", "{}", "{1a}", "{:?}", "{a.b}"] {
            assert!(names(bad).is_err(), "{bad:?}");
        }
    }
}

/// Fuzzing the parsers with arbitrary input: never a panic, always a clear answer.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn any_duration_text_is_parsed_or_explained(text in ".{0,24}") {
            match parse_duration(&text) {
                Ok(_) => {}
                Err(message) => prop_assert!(message.contains(&format!("\"{text}\"")), "{message}"),
            }
        }

        #[test]
        fn whole_numbers_with_units_parse_exactly(n in 0u64..1_000_000, unit in prop::sample::select(vec!["ms", "s", "m", "h"])) {
            let per_unit = match unit { "ms" => 1, "s" => 1_000, "m" => 60_000, _ => 3_600_000 };
            prop_assert_eq!(parse_duration(&format!("{n}{unit}")), Ok(Wait::Millis(n * per_unit)));
        }

        #[test]
        fn any_template_is_parsed_or_explained(template in "[a-z{}_0-9 -]{0,24}|.{0,24}") {
            match placeholders(&template) {
                Ok(found) => {
                    for placeholder in found {
                        let (plain, with_spec) = (format!("{{{}}}", placeholder.name), format!("{{{}:", placeholder.name));
                        prop_assert!(
                            template.contains(&plain) || template.contains(&with_spec),
                            "{} not in {}", plain, template
                        );
                    }
                }
                Err(message) => prop_assert!(!message.is_empty()),
            }
        }

        #[test]
        fn templates_built_from_names_give_those_names(
            parts in prop::collection::vec(("[a-z -]{0,5}", "[a-z_][a-z0-9_]{0,8}"), 0..5),
            tail in "[a-z -]{0,5}",
        ) {
            let template: String = parts.iter().map(|(text, name)| format!("{text}{{{name}}}")).collect::<String>() + &tail;
            let found: Vec<String> = placeholders(&template).unwrap().into_iter().map(|p| p.name).collect();
            let expected: Vec<String> = parts.into_iter().map(|(_, name)| name).collect();
            prop_assert_eq!(found, expected);
        }
    }
}
