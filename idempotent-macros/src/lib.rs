//! The `#[idempotent]` attribute. Depend on `idempotent-core`, which re-exports it with its
//! documentation; this crate only parses, validates and expands.
//!
//! - `options`: the options table and the parser of the attribute's arguments;
//! - `validate`: one check per option, against the function (`function`), its key expressions
//!   (`key`), durations (`duration`) and the types that can never repeat (`unstable`), giving a
//!   valid `Config`;
//! - `expand`: the generated function, a call into `idempotent_core::__private`, with the
//!   module-level check (`module_level`) and the spans that put errors on the user's tokens
//!   (`spans`).

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

/// See `idempotent_core::idempotent` for the reference documentation.
#[proc_macro_attribute]
pub fn idempotent(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::attribute(args.into(), item.into()).into()
}
