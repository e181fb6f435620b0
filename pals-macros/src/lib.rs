//! Procedural macros for [pals](https://docs.rs/pals-pg): the `#[pals::exclusive]` attribute.
//!
//! Use it through the `pals` crate (`#[pals::exclusive(...)]`); its documentation is there.
//!
//! The attribute works in phases: `parse` reads the arguments into typed values, `plan`
//! checks them against the function into one plan, and `expand` writes the function from
//! the plan, piece by piece.
#![forbid(unsafe_code)]
#![warn(unreachable_pub)]
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

mod expand;
mod parse;
mod plan;

use proc_macro::TokenStream;

/// Makes a function fleet-exclusive: it takes a PostgreSQL advisory lock before the body
/// runs and releases it however the body ends. See `pals::exclusive` for the arguments.
#[proc_macro_attribute]
pub fn exclusive(args: TokenStream, item: TokenStream) -> TokenStream {
    let args = match syn::parse::<parse::Args>(args) {
        Ok(args) => args,
        Err(error) => return with_item(error, item),
    };
    let function = match function(item.clone()) {
        Ok(function) => function,
        Err(error) => return with_item(error, item),
    };
    match plan::Plan::new(args, function) {
        Ok(plan) => expand::expand(&plan).into(),
        Err(error) => with_item(error, item),
    }
}

/// The item the attribute is on, read as a function.
fn function(item: TokenStream) -> syn::Result<syn::ItemFn> {
    syn::parse::<syn::ItemFn>(item.clone()).map_err(|error| {
        // An item that is not a function (a struct, a trait method without a body, ...)
        // gets the explanation; anything else is a function syn cannot read, and its
        // own error says where.
        match syn::parse::<syn::Item>(item) {
            Ok(syn::Item::Fn(_)) | Err(_) => error,
            Ok(other) => syn::Error::new_spanned(
                other,
                "#[pals::exclusive] goes on a function (a free function or a method) with a body",
            ),
        }
    })
}

/// The error, and the function unchanged: callers of the function see no second error.
fn with_item(error: syn::Error, item: TokenStream) -> TokenStream {
    let error = error.to_compile_error();
    let item = proc_macro2::TokenStream::from(item);
    quote::quote!(#error #item).into()
}
