//! Generates the expanded function from a validated [`Config`]. The generated body is a call
//! into `idempotent_core::__private`; no algorithm is spelled out here.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Ident, ItemFn};

use crate::attr::{Config, InFlight};

pub(crate) fn expand(config: Config, function: ItemFn) -> TokenStream {
    let Config {
        krate,
        key,
        fingerprinted,
        ttl_ms,
        lease_ms,
        store,
        namespace,
        on_in_flight,
        cache_errors,
        return_type,
    } = config;
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = function;
    let private = quote!(#krate::__private);

    let namespace = match namespace {
        Some(literal) => quote!(#literal),
        None => {
            let name = sig.ident.to_string();
            quote!(::core::concat!(::core::module_path!(), "::", #name))
        }
    };

    // Each part is written through a function whose bound is spanned at the argument's type
    // (or, for field paths, at the key string), so a type that is not a `KeyPart` is reported
    // once, where the user can fix it.
    let key_parts = key.iter().map(|part| {
        let expr = &part.expr;
        let span = part_span(part.whole, &part.root, &sig).unwrap_or_else(|| expr.span());
        let respanned = respan_root(expr, part.whole, span);
        quote_spanned! {span=>
            #private::key_part(&mut __idem_key_builder, &#respanned);
        }
    });

    let fingerprint = if fingerprinted.is_empty() {
        quote!(#private::Fingerprint::NONE)
    } else {
        let fields = fingerprinted.iter().map(|param| {
            let name = param.ident.to_string();
            let ident = Ident::new(&name, param.ty.span());
            quote_spanned! {param.ty.span()=>
                #private::fingerprint_part(&mut __idem_fingerprint_builder, #name, &#ident);
            }
        });
        quote!({
            let mut __idem_fingerprint_builder = #private::Fingerprint::builder();
            #(#fields)*
            __idem_fingerprint_builder.finish()
        })
    };

    let store_binding = match store {
        Some(expr) => quote!(let __idem_store_value = &(#expr);),
        None => quote!(let __idem_store_value = &#private::default_store();),
    };

    let in_flight = match on_in_flight {
        InFlight::Wait => quote!(#private::OnInFlight::Wait),
        InFlight::Reject => quote!(#private::OnInFlight::Reject),
    };

    let ret_span = return_type.span();
    let (runner, output_check) = if cache_errors {
        (
            quote!(run_caching_errors),
            quote_spanned! {ret_span=>
                #private::assert_output::<#return_type>();
                #private::assert_error_storable::<#return_type>();
            },
        )
    } else {
        (
            quote!(run),
            quote_spanned! {ret_span=> #private::assert_output::<#return_type>(); },
        )
    };
    let run = quote_spanned! {ret_span=> #private::#runner::<#return_type, _> };

    quote! {
        #(#attrs)*
        #vis #sig {
            #output_check
            let __idem_key = {
                let mut __idem_key_builder = #private::IdempotencyKey::builder(#namespace);
                #(#key_parts)*
                __idem_key_builder.finish()
            };
            let __idem_fingerprint = #fingerprint;
            #store_binding
            let __idem_store: &dyn #private::IdempotencyStore = {
                use #private::AsStore as _;
                __idem_store_value.__idempotent_as_store()
            };
            const __IDEM_OPTIONS: #private::CallOptions = #private::CallOptions::new()
                .ttl(#private::Duration::from_millis(#ttl_ms))
                .lease(#private::Duration::from_millis(#lease_ms))
                .on_in_flight(#in_flight);
            #run(
                __idem_store,
                #namespace,
                __idem_key,
                __idem_fingerprint,
                &__IDEM_OPTIONS,
                async #block,
            )
            .await
        }
    }
}

/// The span of a whole-argument key part's declared type.
fn part_span(whole: bool, root: &str, sig: &syn::Signature) -> Option<Span> {
    if !whole {
        return None;
    }
    sig.inputs.iter().find_map(|input| match input {
        syn::FnArg::Typed(typed) => match &*typed.pat {
            syn::Pat::Ident(pat) if pat.ident == root => Some(typed.ty.span()),
            _ => None,
        },
        syn::FnArg::Receiver(_) => None,
    })
}

/// A whole-argument key part re-spanned at its type, so errors land there.
fn respan_root(expr: &syn::Expr, whole: bool, span: Span) -> TokenStream {
    match expr {
        syn::Expr::Path(path) if whole => match path.path.get_ident() {
            Some(ident) => {
                let ident = Ident::new(&ident.to_string(), span);
                quote!(#ident)
            }
            None => quote!(#expr),
        },
        _ => quote!(#expr),
    }
}
