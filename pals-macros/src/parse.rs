//! Reading the attribute's arguments into typed values, with errors that point at the
//! argument.
//!
//! The arguments are read as `syn::meta::parser` reads nested meta (`key = value`, comma
//! separated, a trailing comma allowed), so the errors syn gives for malformed input are
//! the same.

use proc_macro2::{Span, TokenStream};
use quote::{quote, ToTokens};
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Expr, Ident, Lit, LitBool, LitInt, LitStr, Path, PathSegment, Result, Token};

/// The argument keywords that are not Rust keywords (`crate` is `Token![crate]`).
mod kw {
    syn::custom_keyword!(name);
    syn::custom_keyword!(timeout);
    syn::custom_keyword!(on_busy);
    syn::custom_keyword!(on_lost);
    syn::custom_keyword!(shared);
    syn::custom_keyword!(fenced);
    syn::custom_keyword!(permits);
    syn::custom_keyword!(locker);
    syn::custom_keyword!(min_hold);
    syn::custom_keyword!(once_per);
    syn::custom_keyword!(offset);
}

/// An argument of the attribute, named by its keyword.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Keyword {
    Name,
    Timeout,
    OnBusy,
    OnLost,
    Shared,
    Fenced,
    Permits,
    Locker,
    MinHold,
    OncePer,
    Offset,
    Crate,
}

impl Keyword {
    /// Every argument, in the order the docs list them.
    const ALL: [Self; 12] = [
        Self::Name,
        Self::Timeout,
        Self::OnBusy,
        Self::OnLost,
        Self::Shared,
        Self::Fenced,
        Self::Permits,
        Self::Locker,
        Self::MinHold,
        Self::OncePer,
        Self::Offset,
        Self::Crate,
    ];

    /// The keyword as it is written.
    fn as_str(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::Timeout => "timeout",
            Self::OnBusy => "on_busy",
            Self::OnLost => "on_lost",
            Self::Shared => "shared",
            Self::Fenced => "fenced",
            Self::Permits => "permits",
            Self::Locker => "locker",
            Self::MinHold => "min_hold",
            Self::OncePer => "once_per",
            Self::Offset => "offset",
            Self::Crate => "crate",
        }
    }

    /// The argument whose keyword is next in `input`, if one is.
    fn peek(input: ParseStream) -> Option<Self> {
        let keyword = if input.peek(kw::name) {
            Self::Name
        } else if input.peek(kw::timeout) {
            Self::Timeout
        } else if input.peek(kw::on_busy) {
            Self::OnBusy
        } else if input.peek(kw::on_lost) {
            Self::OnLost
        } else if input.peek(kw::shared) {
            Self::Shared
        } else if input.peek(kw::fenced) {
            Self::Fenced
        } else if input.peek(kw::permits) {
            Self::Permits
        } else if input.peek(kw::locker) {
            Self::Locker
        } else if input.peek(kw::min_hold) {
            Self::MinHold
        } else if input.peek(kw::once_per) {
            Self::OncePer
        } else if input.peek(kw::offset) {
            Self::Offset
        } else if input.peek(Token![crate]) {
            Self::Crate
        } else {
            return None;
        };
        Some(keyword)
    }
}

/// The arguments the attribute accepts, as the unknown-argument error lists them.
fn valid_arguments() -> String {
    Keyword::ALL.map(Keyword::as_str).join(", ")
}

/// An argument's keyword where it is written: duplicate and missing-value errors point at
/// it.
struct Key {
    keyword: Keyword,
    span: Span,
}

impl Parse for Key {
    /// Reads one argument's keyword; anything else is an unknown argument, or syn's error
    /// for what is not a path.
    fn parse(input: ParseStream) -> Result<Self> {
        // A path of more than one word (`name::x`) is one argument, as syn's nested-meta
        // parser reads it: an unknown one, even when it starts with a keyword.
        let keyword = match input.peek2(Token![::]) {
            true => None,
            false => Keyword::peek(input),
        };
        match keyword {
            Some(keyword) => {
                let span = input.call(Ident::parse_any)?.span();
                Ok(Key { keyword, span })
            }
            None => Err(unknown_argument(&input.call(meta_path)?)),
        }
    }
}

/// A path as syn's nested-meta parser reads one (keywords allowed), with its errors for
/// input that is not one.
fn meta_path(input: ParseStream) -> Result<Path> {
    let leading_colon = input.parse()?;
    let mut segments = Punctuated::new();
    if input.peek(Ident::peek_any) {
        segments.push_value(PathSegment::from(input.call(Ident::parse_any)?));
    } else if input.is_empty() {
        return Err(input.error("expected nested attribute"));
    } else if input.peek(Lit) {
        return Err(input.error("unexpected literal in nested attribute, expected ident"));
    } else {
        return Err(input.error("unexpected token in nested attribute, expected ident"));
    }
    while input.peek(Token![::]) {
        segments.push_punct(input.parse()?);
        segments.push_value(PathSegment::from(input.call(Ident::parse_any)?));
    }
    Ok(Path {
        leading_colon,
        segments,
    })
}

/// The error for a path that is not an argument, spanning its words from the first to the
/// last (not a leading `::`), as syn's nested-meta errors do.
fn unknown_argument(path: &Path) -> syn::Error {
    let first = path.segments.first().map(|segment| &segment.ident);
    let last = path.segments.last().map(|segment| &segment.ident);
    syn::Error::new_spanned(
        quote!(#first #last),
        format!(
            "unknown argument of #[pals::exclusive]; valid arguments are: {}",
            valid_arguments()
        ),
    )
}

/// The attribute's arguments, each `None` when it is left out.
#[derive(Default)]
pub(crate) struct Args {
    pub(crate) name: Option<NameTemplate>,
    pub(crate) timeout: Option<DurationArg>,
    pub(crate) on_busy: Option<OnBusyArg>,
    pub(crate) on_lost: Option<OnLostArg>,
    pub(crate) shared: Option<bool>,
    pub(crate) fenced: Option<bool>,
    pub(crate) permits: Option<Permits>,
    pub(crate) locker: Option<Expr>,
    pub(crate) min_hold: Option<MinHold>,
    pub(crate) once_per: Option<Period>,
    pub(crate) offset: Option<Offset>,
    /// `crate = path`: the path of the pals crate in the generated code (default `::pals`).
    pub(crate) krate: Option<Path>,
}

impl Parse for Args {
    /// Reads `key = value` arguments as `syn::meta::parser` does. Each key is checked
    /// (known, not given twice, with a value) before its value is read, so the first
    /// problem in writing order is the one reported.
    fn parse(input: ParseStream) -> Result<Self> {
        let mut args = Args::default();
        while !input.is_empty() {
            let Key { keyword, span } = input.parse()?;
            let key = keyword.as_str();
            if args.has(keyword) {
                return Err(syn::Error::new(span, format!("duplicate argument `{key}`")));
            }
            if input.is_empty() || input.peek(Token![,]) {
                let message = format!("`{key}` needs a value: `{key} = ...`");
                return Err(syn::Error::new(span, message));
            }
            input.parse::<Token![=]>()?;
            args.set(keyword, input)?;
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(args)
    }
}

impl Args {
    /// Whether the argument was given already.
    fn has(&self, keyword: Keyword) -> bool {
        match keyword {
            Keyword::Name => self.name.is_some(),
            Keyword::Timeout => self.timeout.is_some(),
            Keyword::OnBusy => self.on_busy.is_some(),
            Keyword::OnLost => self.on_lost.is_some(),
            Keyword::Shared => self.shared.is_some(),
            Keyword::Fenced => self.fenced.is_some(),
            Keyword::Permits => self.permits.is_some(),
            Keyword::Locker => self.locker.is_some(),
            Keyword::MinHold => self.min_hold.is_some(),
            Keyword::OncePer => self.once_per.is_some(),
            Keyword::Offset => self.offset.is_some(),
            Keyword::Crate => self.krate.is_some(),
        }
    }

    /// Reads the argument's value from `value` (what follows its `=`).
    fn set(&mut self, keyword: Keyword, value: ParseStream) -> Result<()> {
        match keyword {
            Keyword::Name => self.name = Some(value.parse()?),
            Keyword::Timeout => self.timeout = Some(value.parse()?),
            Keyword::OnBusy => self.on_busy = Some(value.parse()?),
            Keyword::OnLost => self.on_lost = Some(value.parse()?),
            Keyword::Shared => self.shared = Some(value.parse::<LitBool>()?.value),
            Keyword::Fenced => self.fenced = Some(value.parse::<LitBool>()?.value),
            Keyword::Permits => self.permits = Some(value.parse()?),
            Keyword::Locker => self.locker = Some(value.parse()?),
            Keyword::MinHold => self.min_hold = Some(value.parse()?),
            Keyword::OncePer => self.once_per = Some(value.parse()?),
            Keyword::Offset => self.offset = Some(value.parse()?),
            Keyword::Crate => self.krate = Some(value.call(crate_path)?),
        }
        Ok(())
    }
}

/// `name = "..."`: the lock name, a template whose `{argument}` placeholders the
/// function's arguments fill in. Never empty.
pub(crate) struct NameTemplate {
    lit: LitStr,
}

impl Parse for NameTemplate {
    /// Reads the string literal; an empty one is an error at it. Its placeholders are read
    /// when the plan is made, after the checks that come first there.
    fn parse(input: ParseStream) -> Result<Self> {
        let lit: LitStr = input.parse()?;
        if lit.value().is_empty() {
            return Err(syn::Error::new(
                lit.span(),
                "the lock name is empty: give the lock a name, or leave `name` out for \
                 the default (the function's path)",
            ));
        }
        Ok(NameTemplate { lit })
    }
}

impl NameTemplate {
    /// The literal as written: errors about the name point at it.
    pub(crate) fn lit(&self) -> &LitStr {
        &self.lit
    }

    /// The template's placeholders, in order; a malformed template is an error at the
    /// literal.
    pub(crate) fn placeholders(&self) -> Result<Vec<Placeholder>> {
        placeholders(&self.lit.value()).map_err(|e| syn::Error::new(self.lit.span(), e))
    }
}

/// A duration argument (`timeout`, `min_hold`): `"0"`, a whole number with a unit, or
/// `"forever"`. As tokens, a `Duration` expression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DurationArg {
    Millis(u64),
    Forever,
}

impl DurationArg {
    /// `"0"`, a whole number with a unit (`ms`, `s`, `m`, `h`), or `"forever"`; the error
    /// says what was written and what to write.
    fn from_text(text: &str) -> std::result::Result<Self, String> {
        let help = "use \"0\", a whole number with ms, s, m or h (\"300ms\", \"5s\", \"2m\", \"1h\"), or \"forever\"";
        if text == "forever" {
            return Ok(Self::Forever);
        }
        if text == "0" {
            return Ok(Self::Millis(0));
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
            .map(Self::Millis)
            .ok_or_else(|| {
                format!("duration \"{text}\" is too long; use \"forever\" to wait without limit")
            })
    }

    /// The duration in `lit`; an invalid one is an error at the literal.
    fn from_lit(lit: &LitStr) -> Result<Self> {
        Self::from_text(&lit.value()).map_err(|e| syn::Error::new(lit.span(), e))
    }
}

impl Parse for DurationArg {
    /// Reads a string literal holding a duration.
    fn parse(input: ParseStream) -> Result<Self> {
        Self::from_lit(&input.parse()?)
    }
}

impl ToTokens for DurationArg {
    /// Writes the `Duration` expression (of `core`: no crate path needed).
    fn to_tokens(&self, tokens: &mut TokenStream) {
        tokens.extend(match self {
            Self::Millis(millis) => quote!(::core::time::Duration::from_millis(#millis)),
            Self::Forever => quote!(::core::time::Duration::MAX),
        });
    }
}

/// `min_hold = "..."`: how long the lock is kept at least, in milliseconds. Never
/// `"forever"`. As tokens, a `Duration` expression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MinHold {
    millis: u64,
}

impl Parse for MinHold {
    /// Reads a duration literal that is not `"forever"`.
    fn parse(input: ParseStream) -> Result<Self> {
        let lit: LitStr = input.parse()?;
        match DurationArg::from_lit(&lit)? {
            DurationArg::Millis(millis) => Ok(MinHold { millis }),
            DurationArg::Forever => Err(syn::Error::new(
                lit.span(),
                "min_hold cannot be \"forever\": the lock would never be released",
            )),
        }
    }
}

impl ToTokens for MinHold {
    /// Writes the `Duration` expression.
    fn to_tokens(&self, tokens: &mut TokenStream) {
        DurationArg::Millis(self.millis).to_tokens(tokens);
    }
}

/// `once_per = "..."`: the period of a job's ticks, in milliseconds (more than zero, not
/// `"forever"`), with the span of its value.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Period {
    pub(crate) millis: u64,
    pub(crate) span: Span,
}

impl Parse for Period {
    /// Reads a duration literal that is neither `"0"` nor `"forever"`.
    fn parse(input: ParseStream) -> Result<Self> {
        let lit: LitStr = input.parse()?;
        let refuse = |why: &str| Err(syn::Error::new(lit.span(), why));
        match DurationArg::from_lit(&lit)? {
            DurationArg::Millis(0) => refuse(
                "once_per = \"0\" has no ticks: give the job's period, such as \"1m\" or \"24h\"",
            ),
            DurationArg::Forever => refuse(
                "once_per cannot be \"forever\": give the job's period, such as \"1m\" or \"24h\"",
            ),
            DurationArg::Millis(millis) => Ok(Period {
                millis,
                span: lit.span(),
            }),
        }
    }
}

/// `offset = "..."`: how far a `once_per` job's ticks are from the multiples of its
/// period, in milliseconds, with the span of its value.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Offset {
    pub(crate) millis: u64,
    pub(crate) span: Span,
}

impl Parse for Offset {
    /// Reads a duration literal that is not `"forever"`.
    fn parse(input: ParseStream) -> Result<Self> {
        let lit: LitStr = input.parse()?;
        match DurationArg::from_lit(&lit)? {
            DurationArg::Millis(millis) => Ok(Offset {
                millis,
                span: lit.span(),
            }),
            DurationArg::Forever => Err(syn::Error::new(
                lit.span(),
                "offset cannot be \"forever\": give where the ticks fall within the period, \
                 such as \"12h\" for a daily job at noon UTC",
            )),
        }
    }
}

/// What to do when the lock is not acquired within the timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OnBusy {
    /// Return the error (converted with `From`) without running the body.
    Error,
    /// Return the return type's skipped value without running the body.
    Skip,
}

/// `on_busy = "..."`, with the span of its value: errors about the choice point there.
pub(crate) struct OnBusyArg {
    pub(crate) value: OnBusy,
    pub(crate) span: Span,
}

impl Parse for OnBusyArg {
    /// Reads `"error"` or `"skip"`.
    fn parse(input: ParseStream) -> Result<Self> {
        let lit: LitStr = input.parse()?;
        let value = match lit.value().as_str() {
            "error" => OnBusy::Error,
            "skip" => OnBusy::Skip,
            other => {
                return Err(syn::Error::new(
                    lit.span(),
                    format!("invalid on_busy value \"{other}\": expected \"error\" or \"skip\""),
                ))
            }
        };
        Ok(OnBusyArg {
            value,
            span: lit.span(),
        })
    }
}

/// What to do when the lock is lost while the body runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OnLost {
    /// Let the body run on (the loss is logged).
    Continue,
    /// Drop the body where it stands and give up as on a busy lock (async bodies only).
    Cancel,
}

/// `on_lost = "..."`, with the span of its value: errors about the choice point there.
pub(crate) struct OnLostArg {
    pub(crate) value: OnLost,
    pub(crate) span: Span,
}

impl Parse for OnLostArg {
    /// Reads `"cancel"` or `"continue"`.
    fn parse(input: ParseStream) -> Result<Self> {
        let lit: LitStr = input.parse()?;
        let value = match lit.value().as_str() {
            "cancel" => OnLost::Cancel,
            "continue" => OnLost::Continue,
            other => {
                return Err(syn::Error::new(
                    lit.span(),
                    format!(
                        "invalid on_lost value \"{other}\": expected \"cancel\" or \"continue\""
                    ),
                ))
            }
        };
        Ok(OnLostArg {
            value,
            span: lit.span(),
        })
    }
}

/// `permits = N`: a semaphore of N permits (at least 1) instead of the lock, with the span
/// of N.
pub(crate) struct Permits {
    pub(crate) count: u32,
    pub(crate) span: Span,
}

impl Parse for Permits {
    /// Reads a whole number from 1 to `u32::MAX`.
    fn parse(input: ParseStream) -> Result<Self> {
        let lit: LitInt = input.parse()?;
        let count: u32 = lit.base10_parse().map_err(|_| {
            syn::Error::new(
                lit.span(),
                "permits must be a whole number from 1 to 4294967295",
            )
        })?;
        if count == 0 {
            return Err(syn::Error::new(
                lit.span(),
                "permits = 0 would never let the function run: give at least 1",
            ));
        }
        Ok(Permits {
            count,
            span: lit.span(),
        })
    }
}

/// `crate = ...`: a path (`crate = pals_renamed`) or, as serde and tokio write it, a string
/// holding one (`crate = "pals_renamed"`).
fn crate_path(input: ParseStream) -> Result<Path> {
    if !input.peek(LitStr) {
        return input.call(Path::parse_mod_style);
    }
    let lit: LitStr = input.parse()?;
    lit.parse::<Path>().map_err(|_| {
        syn::Error::new(
            lit.span(),
            format!(
                "invalid crate path \"{}\": expected the path of the pals crate, such as `crate = pals_renamed`",
                lit.value()
            ),
        )
    })
}

/// A `{ident}` placeholder of a lock-name template.
pub(crate) struct Placeholder {
    pub(crate) name: String,
}

/// The placeholders of `template`; `{{` and `}}` are literal braces.
fn placeholders(template: &str) -> std::result::Result<Vec<Placeholder>, String> {
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
            '{' => found.push(placeholder(&mut chars)?),
            '}' => {
                return Err("unmatched `}` in the lock name; write `}}` for a literal brace".into())
            }
            _ => {}
        }
    }
    Ok(found)
}

/// The placeholder whose `{` was just read from `chars`, up to and with its `}`.
fn placeholder(chars: &mut impl Iterator<Item = char>) -> std::result::Result<Placeholder, String> {
    let mut written = String::new();
    loop {
        match chars.next() {
            Some('}') => break,
            Some(c) => written.push(c),
            None => {
                return Err("unclosed `{` in the lock name; write `{{` for a literal brace".into())
            }
        }
    }
    // `{name}` or `{name:spec}` (`{id:?}`, `{n:04}`): the spec goes to format!.
    let name = match written.split_once(':') {
        Some((name, _spec)) => name,
        None => &written,
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
    Ok(Placeholder {
        name: name.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error message for `args`, which must not parse.
    fn error(args: &str) -> String {
        match syn::parse_str::<Args>(args) {
            Ok(_) => panic!("{args:?} parsed"),
            Err(error) => error.to_string(),
        }
    }

    /// The duration parser's answers, good and bad.
    #[test]
    fn durations() {
        let parse = DurationArg::from_text;
        assert_eq!(parse("0"), Ok(DurationArg::Millis(0)));
        assert_eq!(parse("300ms"), Ok(DurationArg::Millis(300)));
        assert_eq!(parse("5s"), Ok(DurationArg::Millis(5_000)));
        assert_eq!(parse("2m"), Ok(DurationArg::Millis(120_000)));
        assert_eq!(parse("1h"), Ok(DurationArg::Millis(3_600_000)));
        assert_eq!(parse("forever"), Ok(DurationArg::Forever));
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
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    /// Durations become `Duration` expressions of `core`, which needs no crate path.
    #[test]
    fn durations_as_tokens() {
        let tokens = |d: DurationArg| d.to_token_stream().to_string();
        assert_eq!(
            tokens(DurationArg::Millis(300)),
            ":: core :: time :: Duration :: from_millis (300u64)"
        );
        assert_eq!(
            tokens(DurationArg::Forever),
            ":: core :: time :: Duration :: MAX"
        );
    }

    /// The placeholders a template names, and the templates that are refused.
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

    /// Every argument, read into its typed value.
    #[test]
    fn arguments() {
        let args: Args = syn::parse_str(
            r#"name = "job-{id}", timeout = "5s", on_busy = "skip", on_lost = "cancel",
               shared = true, fenced = false, permits = 3, locker = &LOCKER,
               min_hold = "1m", once_per = "24h", offset = "2h", crate = "pals_renamed","#,
        )
        .unwrap();
        assert_eq!(args.name.unwrap().lit().value(), "job-{id}");
        assert_eq!(args.timeout, Some(DurationArg::Millis(5_000)));
        assert_eq!(args.on_busy.map(|a| a.value), Some(OnBusy::Skip));
        assert_eq!(args.on_lost.map(|a| a.value), Some(OnLost::Cancel));
        assert_eq!((args.shared, args.fenced), (Some(true), Some(false)));
        assert_eq!(args.permits.map(|p| p.count), Some(3));
        assert!(args.locker.is_some());
        assert_eq!(args.min_hold, Some(MinHold { millis: 60_000 }));
        assert_eq!(args.once_per.map(|p| p.millis), Some(86_400_000));
        assert_eq!(args.offset.map(|o| o.millis), Some(7_200_000));
        let krate = args.krate.unwrap();
        assert_eq!(krate.to_token_stream().to_string(), "pals_renamed");
        assert!(syn::parse_str::<Args>("").unwrap().name.is_none());
        let path: Args = syn::parse_str("crate = ::a::b").unwrap();
        assert_eq!(
            path.krate.unwrap().to_token_stream().to_string(),
            ":: a :: b"
        );
    }

    /// The argument list's own errors: each says what is wrong and what to write.
    #[test]
    fn argument_errors() {
        let unknown = "unknown argument of #[pals::exclusive]; valid arguments are: \
                       name, timeout, on_busy, on_lost, shared, fenced, permits, locker, \
                       min_hold, once_per, offset, crate";
        for args in [
            "timeot = \"5s\"",
            "name::x = \"a\"",
            "r#name = \"a\"",
            "self = 1",
        ] {
            assert_eq!(error(args), unknown, "{args}");
        }
        assert_eq!(
            error("timeout = \"1s\", timeout = \"x\""),
            "duplicate argument `timeout`"
        );
        assert_eq!(
            error("on_lost = \"continue\", on_lost = \"cancel\""),
            "duplicate argument `on_lost`"
        );
        assert_eq!(
            error("crate, name = \"a\""),
            "`crate` needs a value: `crate = ...`"
        );
        assert_eq!(error("shared"), "`shared` needs a value: `shared = ...`");
        assert_eq!(error("name(\"a\")"), "expected `=`");
        assert_eq!(error("name = \"a\" \"b\""), "expected `,`");
        assert_eq!(
            error("\"a\""),
            "unexpected literal in nested attribute, expected ident"
        );
        assert_eq!(
            error("name = \"\"").split(':').next(),
            Some("the lock name is empty")
        );
        assert!(error("timeout = \"5 seconds\"").starts_with("invalid duration \"5 seconds\": use"));
        assert_eq!(
            error("min_hold = \"forever\""),
            "min_hold cannot be \"forever\": the lock would never be released"
        );
        assert!(error("once_per = \"0\"").starts_with("once_per = \"0\" has no ticks"));
        assert!(error("once_per = \"forever\"").starts_with("once_per cannot be \"forever\""));
        assert!(error("once_per = \"1 day\"").starts_with("invalid duration \"1 day\""));
        assert!(error("offset = \"forever\"").starts_with("offset cannot be \"forever\""));
        assert!(error("on_busy = \"wait\"").starts_with("invalid on_busy value \"wait\""));
        assert!(error("on_lost = \"abort\"").starts_with("invalid on_lost value \"abort\""));
        assert!(error("permits = 0").starts_with("permits = 0 would never"));
        assert!(error("permits = 5000000000").starts_with("permits must be a whole number"));
        assert_eq!(error("permits = \"3\""), "expected integer literal");
        assert!(error("crate = \"not a path\"").starts_with("invalid crate path \"not a path\""));
    }
}

/// Fuzzing the parsers with arbitrary input: never a panic, always a clear answer.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Any text is a duration or an error that quotes it.
        #[test]
        fn any_duration_text_is_parsed_or_explained(text in ".{0,24}") {
            match DurationArg::from_text(&text) {
                Ok(_) => {}
                Err(message) => prop_assert!(message.contains(&format!("\"{text}\"")), "{message}"),
            }
        }

        /// A whole number with a unit is that many milliseconds.
        #[test]
        fn whole_numbers_with_units_parse_exactly(n in 0u64..1_000_000, unit in prop::sample::select(vec!["ms", "s", "m", "h"])) {
            let per_unit = match unit { "ms" => 1, "s" => 1_000, "m" => 60_000, _ => 3_600_000 };
            prop_assert_eq!(DurationArg::from_text(&format!("{n}{unit}")), Ok(DurationArg::Millis(n * per_unit)));
        }

        /// Any template gives placeholders it contains, or an error.
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

        /// A template built from names gives those names back, in order.
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

        /// Any list of argument-like pieces is read or refused with an error; never a panic.
        #[test]
        fn any_argument_list_is_parsed_or_explained(
            pieces in prop::collection::vec(prop::sample::select(vec![
                "name", "timeout", "on_busy", "on_lost", "shared", "fenced", "permits",
                "locker", "min_hold", "once_per", "offset", "crate", "other", "::", "=", ",", "\"5s\"", "\"skip\"",
                "\"cancel\"", "\"{a}\"", "\"\"", "0", "3", "true", "&LOCKER", "(1)",
            ]), 0..12),
        ) {
            if let Ok(tokens) = pieces.join(" ").parse::<TokenStream>() {
                if let Err(error) = syn::parse2::<Args>(tokens) {
                    prop_assert!(!error.to_string().is_empty());
                }
            }
        }
    }
}
