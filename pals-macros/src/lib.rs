//! Procedural macros for [pals](https://docs.rs/pals): the `#[pals::exclusive]` attribute.
//!
//! Use it through the `pals` crate (`#[pals::exclusive(...)]`); its documentation is there.

mod expand;
mod parse;

use proc_macro::TokenStream;

/// Makes a function fleet-exclusive: it takes a PostgreSQL advisory lock before the body
/// runs and releases it however the body ends. See `pals::exclusive` for the arguments.
#[proc_macro_attribute]
pub fn exclusive(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut parsed = parse::Args::default();
    let parser = syn::meta::parser(|meta| parsed.parse(meta));
    if let Err(error) = syn::parse::Parser::parse(parser, args) {
        return with_item(error, item);
    }
    let function = match syn::parse::<syn::ItemFn>(item.clone()) {
        Ok(function) => function,
        Err(error) => {
            // An item that is not a function (a struct, a trait method without a body, ...)
            // gets the explanation; anything else is a function syn cannot read, and its
            // own error says where.
            let error = match syn::parse::<syn::Item>(item.clone()) {
                Ok(syn::Item::Fn(_)) | Err(_) => error,
                Ok(other) => syn::Error::new_spanned(
                    other,
                    "#[pals::exclusive] goes on a function (a free function or a method) with a body",
                ),
            };
            return with_item(error, item);
        }
    };
    match expand::expand(parsed, function) {
        Ok(tokens) => tokens.into(),
        Err(error) => with_item(error, item),
    }
}

/// The error, and the function unchanged: callers of the function see no second error.
fn with_item(error: syn::Error, item: TokenStream) -> TokenStream {
    let error = error.to_compile_error();
    let item = proc_macro2::TokenStream::from(item);
    quote::quote!(#error #item).into()
}
