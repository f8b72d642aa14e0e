//! The `#[idempotent]` attribute and `#[derive(KeyPart)]`. Depend on `idempotent-core`, which
//! re-exports both with their documentation; this crate only parses, validates and expands.
//!
//! - `options`: the options table and the parser of the attribute's arguments;
//! - `validate`: one check per option, against the function (`function`), its key expressions
//!   (`key`), durations (`duration`) and the types that can never repeat (`unstable`), giving a
//!   valid `Config`;
//! - `expand`: the generated function, a call into `idempotent_core::__private`, with the
//!   module-level check (`module_level`) and the spans that put errors on the user's tokens
//!   (`spans`);
//! - `derive`: `#[derive(KeyPart)]`, the canonical encoding of a struct or enum.

mod derive;
mod duration;
mod expand;
mod function;
mod key;
mod module_level;
mod options;
mod spans;
mod suggest;
mod unstable;
mod validate;

use proc_macro::TokenStream;

// The documentation of both entry points is on their re-exports in `idempotent_core`, where
// its examples compile; a doc comment here would be appended to it.

#[allow(missing_docs)]
#[proc_macro_attribute]
pub fn idempotent(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::attribute(args.into(), item.into()).into()
}

#[allow(missing_docs)]
#[proc_macro_derive(KeyPart, attributes(key_part))]
pub fn derive_key_part(input: TokenStream) -> TokenStream {
    derive::derive(input.into()).into()
}
