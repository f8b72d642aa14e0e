//! The check that a function without `scope` is the module-level item of its name.

use proc_macro2::TokenStream;
use quote::{ToTokens, quote, quote_spanned};
use syn::Ident;
use syn::ext::IdentExt;

use crate::spans::respan;

/// The check that a function using the default scope (module path and function name) is
/// the module-level item of its name. A nested function (in a function body) or an associated
/// function has the same default scope as the module-level function of its name, and would
/// share its records; the attribute cannot see what encloses the function, so the compiler
/// checks it:
///
/// - next to the function, a hidden constant named after it, whose type carries a number that
///   identifies this expansion: `const __idempotent_without_scope_<name>_must_be_a_module_level_fn:
///   Scope<ID>`;
/// - in the body, `module_level::<ID, _>(self::<that constant>)`.
///
/// `self::` is the enclosing module. For a module-level function it finds this expansion's own
/// constant. For a nested function it finds nothing (the constant is in the enclosing block: a
/// resolution error whose text, the constant's name, says what is wrong) or the constant of the
/// module-level function of the same name, whose number differs (the message of
/// `__private::ModuleLevel`). In an `impl` the constant is an associated item that `self::`
/// never finds, with the same two outcomes, so associated functions without `self` name their
/// scope like methods do.
///
/// The number is a hash of the function's tokens and of its name's span (the position in the
/// source), so two same-named functions in one module get different numbers, even when a
/// `macro_rules!` writes the same tokens twice; the same source always gives the same number,
/// so builds stay reproducible. It is never persisted (only this expansion compares it with
/// itself), so another compiler version may render tokens or spans differently without
/// consequence. `core::any::type_name` of a local item would also tell nested functions apart,
/// but its output is not stable across compiler versions, and a scope is persisted.
pub(crate) struct ModuleLevelCheck {
    pub(crate) item: TokenStream,
    pub(crate) check: TokenStream,
}

impl ModuleLevelCheck {
    pub(crate) fn new(
        attrs: &[syn::Attribute],
        sig: &syn::Signature,
        block: &syn::Block,
        krate: &syn::Path,
    ) -> Self {
        let name = &sig.ident;
        // The constant lives where the function's name lives (same hygiene, including in
        // `macro_rules!` expansions) and errors about it point at the name.
        let span = name.span();
        let constant = Ident::new(
            &format!(
                "__idempotent_without_scope_{}_must_be_a_module_level_fn",
                name.unraw()
            ),
            span,
        );
        let id = fnv1a(&[
            name.unraw().to_string().as_bytes(),
            format!("{span:?}").as_bytes(),
            sig.to_token_stream().to_string().as_bytes(),
            block.to_token_stream().to_string().as_bytes(),
        ]);
        let id = proc_macro2::Literal::u64_suffixed(id);
        let private = respan(quote!(#krate::__private), span);
        // `#[cfg]` on the function applies to its constant too: two cfg-gated variants of one
        // function must not define two constants.
        let cfgs = attrs.iter().filter(|attr| attr.path().is_ident("cfg"));
        let item = quote_spanned! {span=>
            #(#cfgs)*
            #[doc(hidden)]
            #[allow(dead_code, non_upper_case_globals)]
            const #constant: #private::Scope<#id> = #private::Scope;
        };
        let check = quote_spanned! {span=>
            #private::module_level::<#id, _>(self::#constant);
        };
        ModuleLevelCheck { item, check }
    }
}

/// 64-bit FNV-1a over the concatenation of `parts`, each followed by a separator.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &byte in part.iter().chain(&[0xff]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}
