//! Where generated tokens point. Every bound the expansion asserts is reported where the user
//! can fix it, once: these helpers give generated tokens the spans of the user's tokens.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::Ident;

use crate::function::Param;

/// A parameter passed as `&T` to a `__private` helper generic over `T`, where `T` is the
/// parameter's type without its outer reference. Named in a turbofish, `T` is the subject of
/// an unmet bound (so the message of the helper's marker trait applies, not that of `&T`), and
/// the compiler reports it once, at the type as the user wrote it.
pub(crate) struct PartArg<'a> {
    pub(crate) first: Span,
    pub(crate) last: Span,
    /// `T`, unless it cannot be named in a turbofish (`impl Trait`; `dyn Trait` would get a
    /// different default lifetime there), in which case the argument decides.
    referent: Option<&'a syn::Type>,
    arg: TokenStream,
}

impl<'a> PartArg<'a> {
    pub(crate) fn new(param: &'a Param) -> Self {
        let (first, last) = edges(&param.ty);
        // The name keeps its own hygiene: it must resolve to the parameter even when the
        // function comes from a `macro_rules!` expansion.
        let mut ident: Ident = param.ident.clone();
        ident.set_span(ident.span().located_at(last));
        let (referent, arg) = match peel_groups(&param.ty) {
            syn::Type::Reference(reference) => (&*reference.elem, quote!(#ident)),
            other => (other, quote_spanned!(first=> &#ident)),
        };
        let referent = (!names_anonymous_type(referent)).then_some(referent);
        PartArg {
            first,
            last,
            referent,
            arg,
        }
    }

    /// `function::<T>(leading arg)`.
    pub(crate) fn call(&self, function: TokenStream, leading: TokenStream) -> TokenStream {
        let arg = &self.arg;
        match self.referent {
            Some(referent) => quote_spanned!(self.last=> #function::<#referent>(#leading #arg)),
            None => quote_spanned!(self.last=> #function(#leading #arg)),
        }
    }
}

/// A type without the invisible groups a `macro_rules!` fragment is wrapped in.
fn peel_groups(ty: &syn::Type) -> &syn::Type {
    match ty {
        syn::Type::Group(group) => peel_groups(&group.elem),
        other => other,
    }
}

/// Whether a type contains `impl Trait` or `dyn Trait`.
fn names_anonymous_type(ty: &syn::Type) -> bool {
    fn scan(tokens: TokenStream) -> bool {
        tokens.into_iter().any(|tt| match tt {
            TokenTree::Ident(ident) => ident == "impl" || ident == "dyn",
            TokenTree::Group(group) => scan(group.stream()),
            _ => false,
        })
    }
    scan(ty.to_token_stream())
}

/// The token errors about the return type point at: the name of the type.
pub(crate) fn return_type_token(ty: &syn::Type) -> Span {
    match ty {
        syn::Type::Path(path) => match path.path.segments.last() {
            Some(segment) => segment.ident.span(),
            None => edges(ty).0,
        },
        _ => edges(ty).0,
    }
}

/// The spans of the first and last token of `tokens`.
pub(crate) fn edges(tokens: &impl ToTokens) -> (Span, Span) {
    let mut iter = tokens.to_token_stream().into_iter();
    let first = iter.next().map_or_else(Span::call_site, |tt| tt.span());
    let last = iter.last().map_or(first, |tt| tt.span());
    (first, last)
}

/// The same tokens, shown at `span` but resolved as before.
pub(crate) fn relocate(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut tt| {
            if let TokenTree::Group(group) = &tt {
                let mut inner =
                    proc_macro2::Group::new(group.delimiter(), relocate(group.stream(), span));
                inner.set_span(group.span().located_at(span));
                return TokenTree::Group(inner);
            }
            tt.set_span(tt.span().located_at(span));
            tt
        })
        .collect()
}

/// The same tokens, every one of them at `span`.
pub(crate) fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut tt| {
            if let TokenTree::Group(group) = &tt {
                let mut inner =
                    proc_macro2::Group::new(group.delimiter(), respan(group.stream(), span));
                inner.set_span(span);
                return TokenTree::Group(inner);
            }
            tt.set_span(span);
            tt
        })
        .collect()
}
