//! Rewriting the function by its plan: take the lock, run the body, release however the
//! body ends.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::Ident;

use crate::parse::OnBusy;
use crate::plan::{LockName, Plan};

/// The function of `plan`, rewritten: its attributes, visibility and signature as written,
/// its body wrapped in the lock.
pub(crate) fn expand(plan: &Plan) -> TokenStream {
    let expansion = Expansion::new(plan);
    let body = match plan.is_async() {
        true => expansion.async_body(),
        false => expansion.sync_body(),
    };
    let Plan {
        outer_attrs,
        inner_attrs,
        vis,
        sig,
        ..
    } = plan;
    quote! {
        #(#outer_attrs)*
        #vis #sig {
            #(#inner_attrs)*
            #body
        }
    }
}

/// The generated code's internal locals. They are hygienic (mixed-site): the body cannot
/// see them, nor clash with them.
struct Locals {
    scope: Ident,
    output: Ident,
    locker: Ident,
    name: Ident,
    spec: Ident,
    error: Ident,
    lock: Ident,
    panic: Ident,
    ended: Ident,
}

impl Locals {
    /// The locals, each made once for the whole expansion.
    fn new() -> Self {
        Locals {
            scope: local("__pals_scope"),
            output: local("__pals_output"),
            locker: local("__pals_locker"),
            name: local("__pals_name"),
            spec: local("__pals_spec"),
            error: local("__pals_error"),
            lock: local("__pals_lock"),
            panic: local("__pals_panic"),
            ended: local("__pals_ended"),
        }
    }
}

/// A hygienic local of the generated code: the body cannot see it, nor clash with it.
fn local(name: &str) -> Ident {
    Ident::new(name, Span::mixed_site())
}

/// One function's expansion: its plan, and what every piece of the generated code uses.
struct Expansion<'a> {
    plan: &'a Plan,
    locals: Locals,
    /// The path of the pals crate (`crate = path`, or `::pals`), at the call site.
    krate: TokenStream,
    /// The same path reported at the return type: code whose errors are about the return
    /// type (it cannot carry the error, has no skipped value) points there.
    krate_at_return: TokenStream,
}

impl<'a> Expansion<'a> {
    /// The expansion of `plan`.
    fn new(plan: &'a Plan) -> Self {
        Expansion {
            plan,
            locals: Locals::new(),
            krate: krate_at(plan, Span::call_site()),
            krate_at_return: krate_at(plan, plan.output.span),
        }
    }

    /// The function's path: the default lock name, and the function that messages name.
    fn function_path(&self) -> TokenStream {
        let ident = &self.plan.sig.ident;
        quote!(::core::concat!(
            ::core::module_path!(),
            "::",
            ::core::stringify!(#ident)
        ))
    }

    /// The expression for the lock name: the template with its placeholders formatted in,
    /// or `module_path::function` by default.
    fn lock_name(&self) -> TokenStream {
        let krate = &self.krate;
        match &self.plan.name {
            LockName::FunctionPath => self.function_path(),
            LockName::Literal(name) => quote!(#name),
            LockName::Format {
                template,
                arguments,
            } => {
                // The values are the parameters' own identifiers (with their hygiene), so
                // a function written by a macro_rules! macro formats its own arguments.
                let names = arguments
                    .iter()
                    .map(|a| Ident::new(&a.to_string(), template.span()));
                let template = syn::LitStr::new(&template.value(), template.span());
                quote!(
                    &#krate::__private::format!(#template, #(#names = #arguments),*)
                )
            }
        }
    }

    /// The expression for the locker: `locker = EXPR` (a `&Locker`, checked where it is
    /// written), or the global one.
    fn locker(&self) -> TokenStream {
        let (krate, locker) = (&self.krate, &self.locals.locker);
        match &self.plan.locker {
            Some(expr) => quote_spanned! {expr.span()=> {
                let #locker: &#krate::Locker = #expr;
                ::core::result::Result::<&#krate::Locker, #krate::Error>::Ok(#locker)
            }},
            None => quote!(#krate::__private::global()),
        }
    }

    /// The `LockSpec` the runtime takes: the lock's settings and the function's path.
    fn lock_spec(&self) -> TokenStream {
        let plan = self.plan;
        let krate = &self.krate;
        let timeout = optional(plan.timeout.as_ref());
        let min_hold = optional(plan.min_hold.as_ref());
        let (shared, fenced, permits) = (plan.shared, plan.fenced, plan.permits);
        let function_path = self.function_path();
        let skip_when_busy = plan.on_busy == OnBusy::Skip;
        let once_per = match plan.once_per {
            Some((period, offset)) => quote!(::core::option::Option::Some((
                ::core::time::Duration::from_millis(#period),
                ::core::time::Duration::from_millis(#offset),
            ))),
            None => quote!(::core::option::Option::None),
        };
        quote! {
            #krate::__private::LockSpec {
                timeout: #timeout,
                shared: #shared,
                fenced: #fenced,
                permits: #permits,
                min_hold: #min_hold,
                function: #function_path,
                skip_when_busy: #skip_when_busy,
                once_per: #once_per,
            }
        }
    }

    /// The statements that take the lock into the `scope` local, or return without running
    /// the body.
    fn take_lock(&self) -> TokenStream {
        let Locals {
            scope,
            locker,
            name,
            spec,
            ..
        } = &self.locals;
        let krate = &self.krate;
        let (locker_expr, name_expr, lock_spec) =
            (self.locker(), self.lock_name(), self.lock_spec());
        // A once_per function claims its tick: one more way not to run, the tick ran.
        let (acquire, outcome, ran) = match self.plan.once_per.is_some() {
            true => ("claim", quote!(Claimed), Some(self.ran_arm())),
            false => ("acquire", quote!(Acquired), None),
        };
        let acquire = match self.plan.is_async() {
            true => {
                let acquire = Ident::new(acquire, Span::call_site());
                quote!(#krate::__private::#acquire(#locker, #name, #spec).await)
            }
            false => {
                let acquire = Ident::new(&format!("blocking_{acquire}"), Span::call_site());
                quote!(#krate::__private::#acquire(#locker, #name, #spec))
            }
        };
        let (busy, failed) = match self.plan.on_busy {
            OnBusy::Error => self.error_arms(&outcome),
            OnBusy::Skip => self.skip_arms(&outcome),
        };
        quote! {
            let #locker = #locker_expr;
            let #name: &str = #name_expr;
            let #spec = #lock_spec;
            let #scope = match #acquire {
                #krate::__private::#outcome::Entered(#scope) => #scope,
                #busy
                #ran
                #failed
            };
        }
    }

    /// The match arm for a once_per call whose tick ran already: logged and skipped.
    fn ran_arm(&self) -> TokenStream {
        let krate = &self.krate_at_return;
        let spec = &self.locals.spec;
        let span = self.plan.output.span;
        let skipped = quote_spanned!(span=> #krate::__private::skipped_return());
        quote! {
            #krate::__private::Claimed::Ran => {
                #krate::__private::log_tick_ran(&#spec);
                return #skipped;
            }
        }
    }

    /// What the function returns instead of running its body (a busy lock, a lost one):
    /// the error, or the skipped value. Spanned at the return type, so a type that cannot
    /// carry it is reported there.
    fn give_up(&self) -> TokenStream {
        let (krate, error) = (&self.krate_at_return, &self.locals.error);
        let span = self.plan.output.span;
        match self.plan.on_busy {
            OnBusy::Error => quote_spanned!(span=> #krate::__private::error_return(#error)),
            OnBusy::Skip => quote_spanned!(span=> #krate::__private::skipped_return()),
        }
    }

    /// The match arms for a busy lock and a failed acquire with on_busy = "error": both
    /// return the error.
    fn error_arms(&self, outcome: &TokenStream) -> (TokenStream, TokenStream) {
        let (krate, error) = (&self.krate, &self.locals.error);
        let give_up = self.give_up();
        (
            quote!(#krate::__private::#outcome::Busy(#error) => return #give_up,),
            quote!(#krate::__private::#outcome::Failed(#error, _) => return #give_up,),
        )
    }

    /// The match arms for a busy lock and a failed acquire with on_busy = "skip": a busy
    /// lock is logged and skipped, a failure resolved by the return type.
    fn skip_arms(&self, outcome: &TokenStream) -> (TokenStream, TokenStream) {
        let Locals {
            error, spec, lock, ..
        } = &self.locals;
        let krate = &self.krate_at_return;
        let skipped = self.give_up();
        let resolved = self.resolved_failure();
        (
            quote! {
                #krate::__private::#outcome::Busy(#error) => {
                    #krate::__private::log_busy_skip(&#error, &#spec);
                    return #skipped;
                }
            },
            quote!(#krate::__private::#outcome::Failed(#error, #lock) => return #resolved,),
        )
    }

    /// What a failed acquire returns with on_busy = "skip". Returned as an error where the
    /// return type can carry one; else a misconfiguration panics, and any other failure is
    /// logged and skipped.
    fn resolved_failure(&self) -> TokenStream {
        let Locals {
            error, spec, lock, ..
        } = &self.locals;
        let (krate, span) = (&self.krate_at_return, self.plan.output.span);
        let return_type = &self.plan.output.ty;
        let skipped = self.give_up();
        quote_spanned!(span=> {
            #[allow(unused_imports)]
            use #krate::__private::{ReturnFailure as _, SkipFailure as _};
            match (&&#krate::__private::OnFailure::<#return_type>::new())
                .resolve(#error, &#lock, &#spec)
            {
                #krate::__private::Resolved::Return(#error) => #error,
                #krate::__private::Resolved::Skip => #skipped,
            }
        })
    }

    /// The body of an async function: take the lock, run the body, release the lock
    /// returning the body's value.
    fn async_body(&self) -> TokenStream {
        let Locals { scope, output, .. } = &self.locals;
        let take_lock = self.take_lock();
        let run_body = self.run_async_body();
        if self.plan.once_per.is_some() {
            return self.async_run(&take_lock, &run_body);
        }
        quote! {
            #take_lock
            let #output = #run_body;
            // Released in the tail expression: clippy's significant_drop_tightening (nursery)
            // reads a release awaited in a statement before the tail as a guard kept longer
            // than needed.
            #scope.release_returning(#output).await
        }
    }

    /// A never-taken `return` of the declared type, for a block (async, or a closure) whose
    /// `return`s and `?`s need its output type (as tracing does). An `impl Trait` cannot be
    /// named there, and gets none.
    fn type_hint(&self) -> Option<TokenStream> {
        (!self.plan.output.opaque).then(|| {
            let hint = local("__pals_return_type_hint");
            let return_type = &self.plan.output.ty;
            quote! {
                #[allow(unreachable_code, clippy::diverging_sub_expression, clippy::needless_return)]
                if false {
                    let #hint: #return_type = loop {};
                    return #hint;
                }
            }
        })
    }

    /// The async function's body as a future: in an inner async block, so that its result
    /// can be kept while the release is awaited. A once_per body's future ends with its
    /// panic, if it panics, to be written down.
    fn body_future(&self) -> TokenStream {
        let (krate, scope) = (&self.krate, &self.locals.scope);
        let type_hint = self.type_hint();
        let stmts = &self.plan.block.stmts;
        let body = quote!(async move { #type_hint #(#stmts)* });
        // A fenced body reads its token with pals::current_fence().
        let body = match self.plan.fenced {
            true => quote!(#krate::__private::with_fence(&#scope, #body)),
            false => body,
        };
        match self.plan.once_per.is_some() {
            true => quote!(#krate::__private::caught(#body)),
            false => body,
        }
    }

    /// The expression that runs the async body to its value.
    fn run_async_body(&self) -> TokenStream {
        let body = self.body_future();
        if !self.plan.cancel_on_lost {
            return quote!(#body.await);
        }
        // If the lock is lost, the body is dropped where it stands and the function returns
        // the LockLost error (or, with on_busy = "skip", the skipped value).
        let Locals {
            scope,
            output,
            error,
            ..
        } = &self.locals;
        let krate = &self.krate_at_return;
        let on_lost = self.give_up();
        quote! {
            match #krate::__private::unless_lost(&#scope, #body).await {
                ::core::result::Result::Ok(#output) => #output,
                ::core::result::Result::Err(#error) => {
                    let _ = &#error;
                    return #on_lost;
                }
            }
        }
    }

    /// The body of an async once_per function: claim the tick, run the body, write down how
    /// it ended (its value, or its panic, which then goes on) and release the lock.
    fn async_run(&self, take_lock: &TokenStream, run_body: &TokenStream) -> TokenStream {
        let Locals {
            scope,
            output,
            panic,
            ended,
            ..
        } = &self.locals;
        let ended_by = self.ended_by();
        quote! {
            #take_lock
            let #output = match #run_body {
                ::core::result::Result::Ok(#output) => #output,
                ::core::result::Result::Err(#panic) => match #scope.resume_panic(#panic).await {},
            };
            let #ended = #ended_by;
            #scope.finish_returning(#ended, #output).await
        }
    }

    /// The body of a sync once_per function: claim the tick, run the body in a closure (so
    /// that its `return`s and `?`s give its value too), write down how it ended and release
    /// the lock.
    fn sync_run(&self, take_lock: &TokenStream, fence_scope: Option<TokenStream>) -> TokenStream {
        let Locals {
            scope,
            output,
            panic,
            ended,
            ..
        } = &self.locals;
        let krate = &self.krate;
        let type_hint = self.type_hint();
        let stmts = &self.plan.block.stmts;
        let ended_by = self.ended_by();
        quote! {
            #take_lock
            #fence_scope
            let #output = match #krate::__private::caught_sync(move || { #type_hint #(#stmts)* }) {
                ::core::result::Result::Ok(#output) => #output,
                ::core::result::Result::Err(#panic) => match #scope.blocking_resume_panic(#panic) {},
            };
            let #ended = #ended_by;
            #scope.blocking_finish_returning(#ended, #output)
        }
    }

    /// How the body's value says its run ended: an `Err` failed, anything else succeeded
    /// (chosen by the value's type at this call site).
    fn ended_by(&self) -> TokenStream {
        let (krate, output, ended) = (&self.krate, &self.locals.output, &self.locals.ended);
        // The borrows choose the impl (autoref specialisation): none is needless.
        quote! {{
            #[allow(unused_imports)]
            use #krate::__private::{EndedAny as _, EndedDebug as _, EndedDisplay as _, EndedErr as _};
            #[allow(clippy::needless_borrow)]
            let #ended = (&&&&#krate::__private::Classify(&#output)).ended();
            #ended
        }}
    }

    /// The body of a sync function: take the lock, run the body in place, release the lock.
    fn sync_body(&self) -> TokenStream {
        // A sync body runs in place. Its value is taken before the lock is released, so
        // that temporaries of its last expression drop while the lock is still held; an
        // early `return`, `?` or panic releases it as the scope unwinds.
        // (A body that always returns, such as the one #[tokio::test] makes, leaves the
        // release below unreachable: it then happens as the scope ends.)
        let Locals { scope, output, .. } = &self.locals;
        let krate = &self.krate;
        let take_lock = self.take_lock();
        // A fenced body reads its token with pals::current_fence().
        let fence_scope = self.plan.fenced.then(|| {
            let fence = local("__pals_fence");
            quote!(let #fence = #krate::__private::SyncFence::enter(&#scope);)
        });
        if self.plan.once_per.is_some() {
            return self.sync_run(&take_lock, fence_scope);
        }
        let block = &self.plan.block;
        quote! {
            #take_lock
            #fence_scope
            #[allow(unused_braces, clippy::diverging_sub_expression)]
            let #output = #block;
            #[allow(unreachable_code, clippy::needless_return)]
            return {
                ::core::mem::drop(#scope);
                #output
            };
        }
    }
}

/// `Some(value)` or `None`, as an `Option` expression.
fn optional(value: Option<&impl ToTokens>) -> TokenStream {
    match value {
        Some(value) => quote!(::core::option::Option::Some(#value)),
        None => quote!(::core::option::Option::None),
    }
}

/// The path of the pals crate (`crate = path`, or `::pals`), reported at `span`.
fn krate_at(plan: &Plan, span: Span) -> TokenStream {
    match &plan.krate {
        Some(path) => located_at(&path.to_token_stream(), span),
        None => quote_spanned!(span=> ::pals),
    }
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
