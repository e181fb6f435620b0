//! Rewriting the function: take the lock, run the body, release however the body ends.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::visit::Visit;
use syn::{AttrStyle, FnArg, Ident, ItemFn, LitStr, Pat, ReturnType, Type};

use crate::parse::{placeholders, Args, OnBusy, Wait};

pub(crate) fn expand(args: Args, function: ItemFn) -> syn::Result<TokenStream> {
    if let Some(constness) = &function.sig.constness {
        return Err(syn::Error::new(
            constness.span(),
            "#[pals::exclusive] cannot go on a `const fn`: taking a lock is not possible at compile time",
        ));
    }
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = &function;
    let is_async = sig.asyncness.is_some();
    let ident = &sig.ident;
    // The path of the pals crate: `crate = path`, or `::pals`.
    let krate_at = |span: Span| match &args.krate {
        Some(path) => located_at(&path.to_token_stream(), span),
        None => quote_spanned!(span=> ::pals),
    };
    let krate = krate_at(Span::call_site());
    // Inner attributes (`#![allow(...)]`) were parsed with the function's; they go back
    // at the top of its body.
    let (inner_attrs, outer_attrs): (Vec<_>, Vec<_>) = attrs
        .iter()
        .partition(|attr| matches!(attr.style, AttrStyle::Inner(_)));
    let (return_type, return_span, opaque_return, unit_return) = match &sig.output {
        ReturnType::Default => (quote!(()), sig.ident.span(), false, true),
        ReturnType::Type(_, ty) => (
            ty.to_token_stream(),
            ty.span(),
            contains_impl_trait(ty),
            matches!(&**ty, Type::Tuple(tuple) if tuple.elems.is_empty()),
        ),
    };
    // A function that returns nothing cannot report a busy lock: it skips by default.
    let on_busy = match args.on_busy {
        Some((OnBusy::Error, span)) if unit_return => {
            return Err(syn::Error::new(
                span,
                "on_busy = \"error\" needs a return type that can carry the error, and `()` \
                 cannot: return a `Result<_, E>` where `E: From<pals::Error>`, or use \
                 on_busy = \"skip\" (the default for a function that returns nothing)",
            ));
        }
        Some((on_busy, _)) => on_busy,
        None if unit_return => OnBusy::Skip,
        None => OnBusy::Error,
    };
    if opaque_return && on_busy == OnBusy::Skip {
        let span = args.on_busy.map_or(return_span, |(_, span)| span);
        return Err(syn::Error::new(
            span,
            "on_busy = \"skip\" needs a return type with a skipped value, and an `impl Trait` \
             return type has none; name the type, or use on_busy = \"error\"",
        ));
    }

    if let (Some(span), false) = (args.cancel_on_lost, is_async) {
        return Err(syn::Error::new(
            span,
            "on_lost = \"cancel\" needs an async function: a sync body cannot be interrupted \
             (a lost lock is logged at error level instead)",
        ));
    }

    if let Some((_, span)) = args.permits {
        let clash = match (args.shared, args.fenced) {
            (Some(true), _) => Some("a semaphore permit has no shared mode: drop `shared = true`"),
            (_, Some(true)) => Some("semaphore permits are not fenced: drop `fenced = true`"),
            _ => None,
        };
        if let Some(clash) = clash {
            return Err(syn::Error::new(span, clash));
        }
    }

    // Internal locals are hygienic: the body cannot see them, nor clash with them.
    let local = |name: &str| Ident::new(name, Span::mixed_site());
    let (held, output, locker, name, spec, error, lock) = (
        local("__pals_held"),
        local("__pals_output"),
        local("__pals_locker"),
        local("__pals_name"),
        local("__pals_spec"),
        local("__pals_error"),
        local("__pals_lock"),
    );

    // The function's path: the default lock name, and the function that messages name.
    let function_path = quote!(::core::concat!(
        ::core::module_path!(),
        "::",
        ::core::stringify!(#ident)
    ));
    let name_expr = lock_name(&args, &function, &krate, &function_path)?;
    let locker_expr = match &args.locker {
        Some(expr) => quote_spanned! {expr.span()=> {
            let #locker: &#krate::Locker = #expr;
            ::core::result::Result::<&#krate::Locker, #krate::Error>::Ok(#locker)
        }},
        None => quote!(#krate::__private::global()),
    };
    let timeout = match args.timeout {
        None => quote!(::core::option::Option::None),
        Some(Wait::Millis(ms)) => {
            quote!(::core::option::Option::Some(#krate::__private::Duration::from_millis(#ms)))
        }
        Some(Wait::Forever) => quote!(::core::option::Option::Some(
            #krate::__private::Duration::MAX
        )),
    };
    let min_hold = match args.min_hold {
        None => quote!(::core::option::Option::None),
        Some(ms) => {
            quote!(::core::option::Option::Some(#krate::__private::Duration::from_millis(#ms)))
        }
    };
    let shared = args.shared.unwrap_or(false);
    let fenced = args.fenced.unwrap_or(false);
    let permits = args.permits.map_or(0, |(permits, _)| permits);
    let skip_when_busy = on_busy == OnBusy::Skip;

    // What the function returns instead of running its body (a busy lock, a lost one).
    // Spanned at the return type, so a type that cannot carry it is reported there.
    let krate_at_return = krate_at(return_span);
    let give_up = match on_busy {
        OnBusy::Error => {
            quote_spanned!(return_span=> #krate_at_return::__private::error_return(#error))
        }
        OnBusy::Skip => quote_spanned!(return_span=> #krate_at_return::__private::skipped_return()),
    };
    let (busy, failed) = match on_busy {
        OnBusy::Error => (
            quote!(#krate::__private::Acquired::Busy(#error) => return #give_up,),
            quote!(#krate::__private::Acquired::Failed(#error, _) => return #give_up,),
        ),
        OnBusy::Skip => {
            let krate = &krate_at_return;
            let skipped = &give_up;
            // Returned as an error where the return type can carry one; else a
            // misconfiguration panics, and any other failure is logged and skipped.
            let resolved = quote_spanned!(return_span=> {
                #[allow(unused_imports)]
                use #krate::__private::{ReturnFailure as _, SkipFailure as _};
                match (&&#krate::__private::OnFailure::<#return_type>::new())
                    .resolve(#error, &#lock, &#spec)
                {
                    #krate::__private::Resolved::Return(#error) => #error,
                    #krate::__private::Resolved::Skip => #skipped,
                }
            });
            (
                quote! {
                    #krate::__private::Acquired::Busy(#error) => {
                        #krate::__private::log_busy_skip(&#error, &#spec);
                        return #skipped;
                    }
                },
                quote!(#krate::__private::Acquired::Failed(#error, #lock) => return #resolved,),
            )
        }
    };

    let acquire = if is_async {
        quote!(#krate::__private::acquire(#locker, #name, #spec).await)
    } else {
        quote!(#krate::__private::blocking_acquire(#locker, #name, #spec))
    };
    let take_lock = quote! {
        let #locker = #locker_expr;
        let #name: &str = #name_expr;
        let #spec = #krate::__private::LockSpec {
            timeout: #timeout,
            shared: #shared,
            fenced: #fenced,
            permits: #permits,
            min_hold: #min_hold,
            function: #function_path,
            skip_when_busy: #skip_when_busy,
        };
        let #held = match #acquire {
            #krate::__private::Acquired::Held(#held) => #held,
            #busy
            #failed
        };
    };

    let body = if is_async {
        // The body runs in an inner async block so that its result can be kept while the
        // release is awaited. Its `return`s and `?`s need the block's output type: a
        // never-taken `return` of the declared type tells the compiler (as tracing does).
        let type_hint = (!opaque_return).then(|| {
            let hint = local("__pals_return_type_hint");
            quote! {
                #[allow(unreachable_code, clippy::diverging_sub_expression, clippy::needless_return)]
                if false {
                    let #hint: #return_type = loop {};
                    return #hint;
                }
            }
        });
        let stmts = &block.stmts;
        let run_body = quote!(async move { #type_hint #(#stmts)* });
        // A fenced body reads its token with pals::current_fence().
        let run_body = match fenced {
            true => quote!(#krate::__private::with_fence(&#held, #run_body)),
            false => run_body,
        };
        let run_body = match args.cancel_on_lost {
            None => quote!(#run_body.await),
            // If the lock is lost, the body is dropped where it stands and the function
            // returns the LockLost error (or, with on_busy = "skip", the skipped value).
            Some(_) => {
                let on_lost = &give_up;
                quote! {
                    match #krate_at_return::__private::unless_lost(&#held, #run_body).await {
                        ::core::result::Result::Ok(#output) => #output,
                        ::core::result::Result::Err(#error) => {
                            let _ = &#error;
                            return #on_lost;
                        }
                    }
                }
            }
        };
        quote! {
            #take_lock
            let #output = #run_body;
            // Released in the tail expression: clippy's significant_drop_tightening (nursery)
            // reads a release awaited in a statement before the tail as a guard kept longer
            // than needed.
            #held.release_returning(#output).await
        }
    } else {
        // A sync body runs in place. Its value is taken before the lock is released, so
        // that temporaries of its last expression drop while the lock is still held; an
        // early `return`, `?` or panic releases it as the scope unwinds.
        // (A body that always returns, such as the one #[tokio::test] makes, leaves the
        // release below unreachable: it then happens as the scope ends.)
        let fence_scope = fenced.then(|| {
            let scope = local("__pals_fence_scope");
            quote!(let #scope = #krate::__private::SyncFence::enter(&#held);)
        });
        quote! {
            #take_lock
            #fence_scope
            #[allow(unused_braces, clippy::diverging_sub_expression)]
            let #output = #block;
            #[allow(unreachable_code, clippy::needless_return)]
            return {
                ::core::mem::drop(#held);
                #output
            };
        }
    };

    Ok(quote! {
        #(#outer_attrs)*
        #vis #sig {
            #(#inner_attrs)*
            #body
        }
    })
}

/// The expression for the lock name: the template with its placeholders formatted in, or
/// `module_path::function` by default.
fn lock_name(
    args: &Args,
    function: &ItemFn,
    krate: &TokenStream,
    function_path: &TokenStream,
) -> syn::Result<TokenStream> {
    let Some(template) = &args.name else {
        return Ok(function_path.clone());
    };
    let found = placeholders(&template.value()).map_err(|e| syn::Error::new(template.span(), e))?;
    if found.is_empty() {
        return Ok(quote!(#template));
    }
    let arguments = argument_idents(function);
    let mut named: Vec<&Ident> = Vec::new();
    for placeholder in found {
        let Some(argument) = arguments.iter().find(|a| ***a == placeholder.name) else {
            let hint = if placeholder.name == "self" {
                "the receiver cannot be formatted into the lock name; pass what the name needs \
                 as an argument"
                    .to_string()
            } else if arguments.is_empty() {
                "the function has no named arguments".to_string()
            } else {
                let listed: Vec<String> = arguments.iter().map(|a| a.to_string()).collect();
                format!("its arguments are: {}", listed.join(", "))
            };
            return Err(syn::Error::new(
                template.span(),
                format!(
                    "`{{{}}}` in the lock name is not an argument of `{}`; {hint}",
                    placeholder.name, function.sig.ident
                ),
            ));
        };
        if !named.contains(argument) {
            named.push(argument);
        }
    }
    // The values are the parameters' own identifiers (with their hygiene), so a function
    // written by a macro_rules! macro formats its own arguments.
    let names = named
        .iter()
        .map(|a| Ident::new(&a.to_string(), template.span()));
    let template = LitStr::new(&template.value(), template.span());
    Ok(quote!(
        &#krate::__private::format!(#template, #(#names = #named),*)
    ))
}

/// The function's arguments bound to a plain identifier.
fn argument_idents(function: &ItemFn) -> Vec<&Ident> {
    function
        .sig
        .inputs
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

fn contains_impl_trait(ty: &Type) -> bool {
    struct Finder(bool);
    impl<'ast> Visit<'ast> for Finder {
        fn visit_type_impl_trait(&mut self, _: &'ast syn::TypeImplTrait) {
            self.0 = true;
        }
    }
    let mut finder = Finder(false);
    finder.visit_type(ty);
    finder.0
}

/// `tokens` reported at `span` (for errors about the return type), resolved as before.
fn located_at(tokens: &TokenStream, span: Span) -> TokenStream {
    tokens
        .clone()
        .into_iter()
        .map(|mut token| {
            if let proc_macro2::TokenTree::Group(group) = &token {
                let mut respanned =
                    proc_macro2::Group::new(group.delimiter(), located_at(&group.stream(), span));
                respanned.set_span(group.span().located_at(span));
                token = respanned.into();
            } else {
                token.set_span(token.span().located_at(span));
            }
            token
        })
        .collect()
}
