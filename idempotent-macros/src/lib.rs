//! The `#[idempotent]` attribute. Depend on `idempotent-core`, which re-exports it with its
//! documentation; this crate only parses, validates and expands.

mod attr;
mod expand;

use proc_macro::TokenStream;

/// See `idempotent_core::idempotent` for the reference documentation.
#[proc_macro_attribute]
pub fn idempotent(args: TokenStream, item: TokenStream) -> TokenStream {
    let function = match syn::parse::<syn::ItemFn>(item.clone()) {
        Ok(function) => function,
        Err(_) => {
            let mut output = attr::not_a_function(item.clone().into()).to_compile_error();
            output.extend(proc_macro2::TokenStream::from(item));
            return output.into();
        }
    };
    let config = syn::parse::<attr::Args>(args).and_then(|args| attr::Config::new(args, &function));
    match config {
        Ok(config) => expand::expand(config, function).into(),
        Err(error) => {
            // Keep the function itself so call sites and IDEs still see it and only the
            // attribute's own error is reported.
            let mut output = error.to_compile_error();
            output.extend(quote::quote!(#function));
            output.into()
        }
    }
}
