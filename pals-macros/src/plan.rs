//! Checking the arguments against the function, into the plan the expansion follows.

use proc_macro2::{Span, TokenStream};
use quote::{quote, ToTokens};
use syn::spanned::Spanned;
use syn::visit::Visit;
use syn::{
    AttrStyle, Attribute, Block, Expr, FnArg, Ident, ItemFn, LitStr, Pat, Path, ReturnType,
    Signature, Type, Visibility,
};

use crate::parse::{Args, DurationArg, MinHold, NameTemplate, OnBusy, OnBusyArg, OnLost, Period};

/// Everything the expansion needs, checked: the function's parts, the lock to take, and
/// what the function returns when it does not run its body.
pub(crate) struct Plan {
    /// The function's outer attributes (doc comments, `#[must_use]`, ...), kept on it.
    pub(crate) outer_attrs: Vec<Attribute>,
    /// Inner attributes (`#![allow(...)]`) were parsed with the function's; they go back at
    /// the top of its body.
    pub(crate) inner_attrs: Vec<Attribute>,
    pub(crate) vis: Visibility,
    pub(crate) sig: Signature,
    pub(crate) block: Box<Block>,
    pub(crate) output: Output,
    pub(crate) on_busy: OnBusy,
    /// `on_lost = "cancel"` (on an async function): the body is dropped if the lock is lost.
    pub(crate) cancel_on_lost: bool,
    pub(crate) name: LockName,
    /// `locker = EXPR`, or `None` for the global locker.
    pub(crate) locker: Option<Expr>,
    pub(crate) timeout: Option<DurationArg>,
    pub(crate) shared: bool,
    pub(crate) fenced: bool,
    /// The semaphore's permits, or 0 for a lock.
    pub(crate) permits: u32,
    pub(crate) min_hold: Option<MinHold>,
    /// `once_per = "..."` (and `offset`): the period and the offset of the job's ticks, in
    /// milliseconds.
    pub(crate) once_per: Option<(u64, u64)>,
    /// `crate = path`: the path of the pals crate in the generated code (default `::pals`).
    pub(crate) krate: Option<Path>,
}

impl Plan {
    /// Checks `args` against `function`, in a fixed order: the first problem is the error.
    pub(crate) fn new(args: Args, function: ItemFn) -> syn::Result<Self> {
        if let Some(constness) = &function.sig.constness {
            return Err(syn::Error::new(
                constness.span(),
                "#[pals::exclusive] cannot go on a `const fn`: taking a lock is not possible at compile time",
            ));
        }
        let output = Output::of(&function.sig);
        let once_per = once_per(&args, &output)?;
        let on_busy = on_busy(args.on_busy.as_ref(), &output, once_per.is_some())?;
        let cancel_on_lost = cancel_on_lost(&args, &function.sig)?;
        check_permits(&args)?;
        let name = LockName::new(args.name.as_ref(), &function.sig)?;
        let ItemFn {
            attrs,
            vis,
            sig,
            block,
        } = function;
        let (inner_attrs, outer_attrs) = attrs
            .into_iter()
            .partition(|attr| matches!(attr.style, AttrStyle::Inner(_)));
        Ok(Plan {
            outer_attrs,
            inner_attrs,
            vis,
            sig,
            block,
            output,
            on_busy,
            cancel_on_lost,
            name,
            locker: args.locker,
            // A skip is what the caller wants at once: waiting first would run the body
            // again after the holder. An explicit timeout still waits.
            timeout: match (args.timeout, on_busy) {
                (None, OnBusy::Skip) => Some(DurationArg::Millis(0)),
                (timeout, _) => timeout,
            },
            shared: args.shared.unwrap_or(false),
            fenced: args.fenced.unwrap_or(false),
            permits: args.permits.map_or(0, |permits| permits.count),
            min_hold: args.min_hold,
            once_per,
            krate: args.krate,
        })
    }

    /// Whether the function is an `async fn`.
    pub(crate) fn is_async(&self) -> bool {
        self.sig.asyncness.is_some()
    }
}

/// The function's return type, as the expansion uses it.
pub(crate) struct Output {
    /// The type as written; `()` when the function declares none.
    pub(crate) ty: TokenStream,
    /// Where errors about the return type point: the type, or the function's name when it
    /// declares none.
    pub(crate) span: Span,
    /// Whether the type contains an `impl Trait`: it has no skipped value, and cannot be
    /// named in a type hint.
    pub(crate) opaque: bool,
    /// Whether the function returns `()`, declared or not.
    pub(crate) unit: bool,
}

impl Output {
    /// The return type of `sig`.
    fn of(sig: &Signature) -> Self {
        match &sig.output {
            ReturnType::Default => Output {
                ty: quote!(()),
                span: sig.ident.span(),
                opaque: false,
                unit: true,
            },
            ReturnType::Type(_, ty) => Output {
                ty: ty.to_token_stream(),
                span: ty.span(),
                opaque: contains_impl_trait(ty),
                unit: matches!(&**ty, Type::Tuple(tuple) if tuple.elems.is_empty()),
            },
        }
    }
}

/// Whether `ty` contains an `impl Trait` anywhere.
fn contains_impl_trait(ty: &Type) -> bool {
    /// Visits a type, noting whether it met an `impl Trait`.
    struct Finder(bool);
    impl<'ast> Visit<'ast> for Finder {
        /// Notes the `impl Trait`.
        fn visit_type_impl_trait(&mut self, _: &'ast syn::TypeImplTrait) {
            self.0 = true;
        }
    }
    let mut finder = Finder(false);
    finder.visit_type(ty);
    finder.0
}

/// The period and offset of a `once_per` job, checked against the other arguments and the
/// return type; `None` without `once_per`.
fn once_per(args: &Args, output: &Output) -> syn::Result<Option<(u64, u64)>> {
    let Some(Period { millis, span }) = args.once_per else {
        return match &args.offset {
            Some(offset) => Err(syn::Error::new(
                offset.span,
                "offset moves the ticks of a once_per job: add once_per = \"...\", or drop offset",
            )),
            None => Ok(None),
        };
    };
    let clash = if args.permits.is_some() {
        Some("once_per runs one body per tick; permits = N lets N run at once: choose one")
    } else if args.shared == Some(true) {
        Some("once_per needs the exclusive lock: drop `shared = true`")
    } else if args.min_hold.is_some() {
        Some(
            "once_per needs no min_hold: every replica skips a tick that ran, however late it \
             fires; drop min_hold",
        )
    } else if output.opaque {
        Some(
            "once_per needs a return type with a skipped value (what a call whose tick ran \
             already returns), and an `impl Trait` return type has none; name the type",
        )
    } else {
        None
    };
    if let Some(clash) = clash {
        return Err(syn::Error::new(span, clash));
    }
    let offset = args.offset.map_or(0, |offset| offset.millis);
    if let Some(offset) = args.offset.filter(|offset| offset.millis >= millis) {
        return Err(syn::Error::new(
            offset.span,
            "offset must be less than the period of once_per: it says where the ticks fall \
             within the period",
        ));
    }
    Ok(Some((millis, offset)))
}

/// What the function does when the lock is busy: as written, or by default `skip` for a
/// function that returns nothing (it cannot report a busy lock) or runs `once_per` (a busy
/// lock is another replica running the job), and `error` for others.
fn on_busy(written: Option<&OnBusyArg>, output: &Output, once_per: bool) -> syn::Result<OnBusy> {
    let on_busy = match written {
        Some(OnBusyArg {
            value: OnBusy::Error,
            span,
        }) if output.unit => {
            return Err(syn::Error::new(
                *span,
                "on_busy = \"error\" needs a return type that can carry the error, and `()` \
                 cannot: return a `Result<_, E>` where `E: From<pals::Error>`, or use \
                 on_busy = \"skip\" (the default for a function that returns nothing)",
            ));
        }
        Some(written) => written.value,
        None if output.unit || once_per => OnBusy::Skip,
        None => OnBusy::Error,
    };
    if output.opaque && on_busy == OnBusy::Skip {
        let span = written.map_or(output.span, |written| written.span);
        return Err(syn::Error::new(
            span,
            "on_busy = \"skip\" needs a return type with a skipped value, and an `impl Trait` \
             return type has none; name the type, or use on_busy = \"error\"",
        ));
    }
    Ok(on_busy)
}

/// Whether the body is cancelled when the lock is lost; only an async body can be.
fn cancel_on_lost(args: &Args, sig: &Signature) -> syn::Result<bool> {
    match &args.on_lost {
        Some(on_lost) if on_lost.value == OnLost::Cancel => {
            if sig.asyncness.is_none() {
                return Err(syn::Error::new(
                    on_lost.span,
                    "on_lost = \"cancel\" needs an async function: a sync body cannot be \
                     interrupted (a lost lock is logged at error level instead)",
                ));
            }
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Refuses `permits` with `shared = true` or `fenced = true`: a semaphore has neither.
fn check_permits(args: &Args) -> syn::Result<()> {
    let Some(permits) = &args.permits else {
        return Ok(());
    };
    let clash = match (args.shared, args.fenced) {
        (Some(true), _) => "a semaphore permit has no shared mode: drop `shared = true`",
        (_, Some(true)) => "semaphore permits are not fenced: drop `fenced = true`",
        _ => return Ok(()),
    };
    Err(syn::Error::new(permits.span, clash))
}

/// The lock name, as the expansion writes it.
pub(crate) enum LockName {
    /// `module_path::function`: no `name` argument.
    FunctionPath,
    /// A name without placeholders, as written.
    Literal(LitStr),
    /// A template formatted with the function's arguments it names (each once, in the
    /// order they first appear).
    Format {
        template: LitStr,
        arguments: Vec<Ident>,
    },
}

impl LockName {
    /// The lock name of the function `sig` with the `name` argument `written`; every
    /// placeholder must be one of its arguments.
    fn new(written: Option<&NameTemplate>, sig: &Signature) -> syn::Result<Self> {
        let Some(template) = written else {
            return Ok(LockName::FunctionPath);
        };
        let found = template.placeholders()?;
        let template = template.lit();
        if found.is_empty() {
            return Ok(LockName::Literal(template.clone()));
        }
        let arguments = argument_idents(sig);
        let mut named: Vec<Ident> = Vec::new();
        for placeholder in found {
            let Some(argument) = arguments.iter().find(|a| ***a == placeholder.name) else {
                return Err(not_an_argument(&placeholder.name, template, sig));
            };
            if !named.contains(argument) {
                named.push((*argument).clone());
            }
        }
        Ok(LockName::Format {
            template: template.clone(),
            arguments: named,
        })
    }
}

/// The error for a placeholder that is not an argument of the function, with what the
/// function has instead.
fn not_an_argument(placeholder: &str, template: &LitStr, sig: &Signature) -> syn::Error {
    let arguments = argument_idents(sig);
    let hint = if placeholder == "self" {
        "the receiver cannot be formatted into the lock name; pass what the name needs as an \
         argument"
            .to_string()
    } else if arguments.is_empty() {
        "the function has no named arguments".to_string()
    } else {
        let listed: Vec<String> = arguments.iter().map(|a| a.to_string()).collect();
        format!("its arguments are: {}", listed.join(", "))
    };
    syn::Error::new(
        template.span(),
        format!(
            "`{{{placeholder}}}` in the lock name is not an argument of `{}`; {hint}",
            sig.ident
        ),
    )
}

/// The function's arguments bound to a plain identifier.
fn argument_idents(sig: &Signature) -> Vec<&Ident> {
    sig.inputs
        .iter()
        .filter_map(|input| match input {
            FnArg::Typed(typed) => match &*typed.pat {
                Pat::Ident(pat) => Some(&pat.ident),
                _ => None,
            },
            FnArg::Receiver(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plan for `function` with the arguments `args`, or its error message.
    fn plan(args: &str, function: &str) -> Result<Plan, String> {
        let args: Args = syn::parse_str(args).map_err(|e| format!("args: {e}"))?;
        let function: ItemFn = syn::parse_str(function).map_err(|e| format!("fn: {e}"))?;
        Plan::new(args, function).map_err(|e| e.to_string())
    }

    /// The error message for `function` with `args`, which must be refused.
    fn error(args: &str, function: &str) -> String {
        match plan(args, function) {
            Ok(_) => panic!("{args:?} on {function:?} was accepted"),
            Err(error) => error,
        }
    }

    /// The defaults: a unit function skips, others return the error.
    #[test]
    fn on_busy_defaults() {
        let on_busy = |function: &str| plan("", function).unwrap().on_busy;
        assert_eq!(on_busy("fn f() {}"), OnBusy::Skip);
        assert_eq!(on_busy("async fn f() -> () {}"), OnBusy::Skip);
        assert_eq!(on_busy("fn f() -> Result<(), E> { Ok(()) }"), OnBusy::Error);
        assert_eq!(on_busy("fn f() -> impl Sized { 1 }"), OnBusy::Error);
        let written = plan("on_busy = \"skip\"", "fn f() -> Option<u8> { None }").unwrap();
        assert_eq!(written.on_busy, OnBusy::Skip);
    }

    /// A skip without a timeout does not wait; a timeout given waits, skip or not.
    #[test]
    fn timeout_defaults() {
        let timeout = |args: &str, function: &str| plan(args, function).unwrap().timeout;
        let result = "fn f() -> Result<(), E> { Ok(()) }";
        assert_eq!(timeout("", "fn f() {}"), Some(DurationArg::Millis(0)));
        assert_eq!(
            timeout("on_busy = \"skip\"", result),
            Some(DurationArg::Millis(0))
        );
        assert_eq!(timeout("", result), None);
        assert_eq!(
            timeout("timeout = \"5s\"", "fn f() {}"),
            Some(DurationArg::Millis(5000))
        );
        assert_eq!(
            timeout("once_per = \"1m\"", result),
            Some(DurationArg::Millis(0))
        );
        let waits = "once_per = \"1m\", on_busy = \"error\"";
        assert_eq!(timeout(waits, result), None);
    }

    /// once_per: its defaults, and what it refuses beside it.
    #[test]
    fn once_per_checks() {
        let result = "fn f() -> Result<(), E> { Ok(()) }";
        let job = plan("once_per = \"24h\", offset = \"12h\"", result).unwrap();
        assert_eq!(job.once_per, Some((86_400_000, 43_200_000)));
        assert_eq!(job.on_busy, OnBusy::Skip);
        assert!(plan("once_per = \"1m\"", "fn f() {}")
            .unwrap()
            .once_per
            .is_some());
        assert!(error("offset = \"1h\"", result).starts_with("offset moves the ticks"));
        assert!(
            error("once_per = \"1h\", offset = \"1h\"", result).starts_with("offset must be less")
        );
        assert!(error("once_per = \"1h\", permits = 2", result).contains("choose one"));
        assert!(error("once_per = \"1h\", shared = true", result).contains("exclusive lock"));
        assert!(error("once_per = \"1h\", min_hold = \"1s\"", result).contains("needs no min_hold"));
        let opaque = "fn f() -> Result<impl Sized, E> { Ok(1) }";
        assert!(error("once_per = \"1h\"", opaque).contains("skipped value"));
    }

    /// The checks against the function, each with its message.
    #[test]
    fn refusals() {
        assert!(error("", "const fn f() -> u32 { 1 }").contains("cannot go on a `const fn`"));
        assert!(error("on_busy = \"error\"", "fn f() {}").starts_with("on_busy = \"error\" needs"));
        let opaque = "fn f() -> Box<impl Sized> { Box::new(1) }";
        assert!(error("on_busy = \"skip\"", opaque).starts_with("on_busy = \"skip\" needs"));
        let sync = "fn f() -> Result<(), E> { Ok(()) }";
        assert!(error("on_lost = \"cancel\"", sync).starts_with("on_lost = \"cancel\" needs"));
        assert!(!plan("on_lost = \"continue\"", sync).unwrap().cancel_on_lost);
        let cancel = plan("on_lost = \"cancel\"", &format!("async {sync}")).unwrap();
        assert!(cancel.cancel_on_lost);
        assert!(error("permits = 2, shared = true", sync).contains("no shared mode"));
        assert!(error("permits = 2, fenced = true", sync).contains("not fenced"));
        assert_eq!(
            plan("permits = 2, shared = false", sync).unwrap().permits,
            2
        );
        assert_eq!(plan("shared = true", sync).unwrap().permits, 0);
    }

    /// The first problem in the fixed order is the one reported.
    #[test]
    fn first_problem_wins() {
        let message = error(
            "name = \"{\", on_busy = \"error\", on_lost = \"cancel\"",
            "const fn f() {}",
        );
        assert!(message.contains("const fn"), "{message}");
        let message = error("name = \"{\", on_lost = \"cancel\"", "fn f() {}");
        assert!(message.starts_with("on_lost"), "{message}");
        let message = error("name = \"{\"", "fn f() {}");
        assert!(message.starts_with("unclosed `{`"), "{message}");
    }

    /// Placeholders name arguments; each argument is formatted once.
    #[test]
    fn lock_names() {
        let name = |args: &str, function: &str| plan(args, function).unwrap().name;
        assert!(matches!(name("", "fn f() {}"), LockName::FunctionPath));
        assert!(matches!(
            name("name = \"job\"", "fn f() {}"),
            LockName::Literal(_)
        ));
        let LockName::Format { arguments, .. } = name(
            "name = \"{b}-{a:?}-{b}\"",
            "fn f(a: u8, b: u8, (c, d): (u8, u8)) {}",
        ) else {
            panic!("not a template");
        };
        assert_eq!(arguments, ["b", "a"]);
    }

    /// A placeholder that is not an argument says what the function has.
    #[test]
    fn placeholders_that_are_not_arguments() {
        assert_eq!(
            error("name = \"{tenant}\"", "fn job(tenant_id: u32) {}"),
            "`{tenant}` in the lock name is not an argument of `job`; its arguments are: tenant_id"
        );
        assert!(
            error("name = \"{a}\"", "fn job() {}").ends_with("the function has no named arguments")
        );
        let method = "fn job(&self, (a, b): (u8, u8)) {}";
        assert!(error("name = \"{self}\"", method).contains("the receiver cannot be formatted"));
        assert!(error("name = \"{a}\"", method).ends_with("the function has no named arguments"));
    }
}
