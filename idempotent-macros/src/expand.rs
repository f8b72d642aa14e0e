//! Generates the expanded function from a validated [`Config`]. The generated body is a call
//! into `idempotent_core::__private`; no algorithm is spelled out here.
//!
//! Hygiene: every path is absolute (`::core::...`, `<crate>::__private::...`, where `<crate>`
//! is the `crate = "..."` option or `::idempotent_core`), traits are used through `__private`
//! only, and every local is prefixed `__idem_`.
//!
//! Spans: every trait bound is asserted where the user can fix it, once. A parameter's type is
//! named in a turbofish with its own tokens, so an argument that is not a `KeyPart` is
//! reported at its declared type; a field path at the key string; the return type's bounds at
//! the return type's name (see below). Tokens of these calls carry the user's spans, so the
//! compiler sees one span per check and reports an unmet bound once.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::ItemFn;
use syn::ext::IdentExt;

use crate::function::not_a_function;
use crate::module_level::ModuleLevelCheck;
use crate::options::Options;
use crate::spans::{PartArg, edges, relocate, respan, return_type_token};
use crate::validate::{Config, InFlight};

/// The attribute: parse, validate, generate. On an error, the function is still emitted next
/// to it, so call sites and IDEs see it and only the attribute's own error is reported.
pub(crate) fn attribute(args: TokenStream, item: TokenStream) -> TokenStream {
    let function = match syn::parse2::<ItemFn>(item.clone()) {
        Ok(function) => function,
        Err(_) => {
            let mut output = not_a_function(item.clone()).to_compile_error();
            output.extend(item);
            return output;
        }
    };
    match syn::parse2::<Options>(args).and_then(|options| Config::new(options, &function)) {
        Ok(config) => expand(config, function),
        Err(error) => {
            let mut output = error.to_compile_error();
            output.extend(function.into_token_stream());
            output
        }
    }
}

fn expand(config: Config, function: ItemFn) -> TokenStream {
    let Config {
        krate,
        key,
        fingerprinted,
        ttl_ms,
        lease_ms,
        store,
        transaction,
        scope,
        on_in_flight,
        fail_open,
        cache_errors,
        return_type,
    } = config;
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = function;
    // `<crate>::__private` with every token at `span`. It is an absolute path (or the user's
    // own `crate = "..."` path, written where the user's code is), so it resolves the same
    // with any span; a span of the user's code lets an expression made of it and the user's
    // tokens cover exactly those tokens.
    let private = |span: Span| respan(quote!(#krate::__private), span);
    let here = quote!(#krate::__private);

    let (scope, module_level) = match scope {
        Some(literal) => (quote!(#literal), None),
        None => {
            let name = sig.ident.unraw().to_string();
            (
                quote!(::core::concat!(::core::module_path!(), "::", #name)),
                Some(ModuleLevelCheck::new(&attrs, &sig, &block, &krate)),
            )
        }
    };
    let (module_level_item, module_level_check) = match &module_level {
        Some(check) => (Some(&check.item), Some(&check.check)),
        None => (None, None),
    };

    let key_parts = key.iter().map(|item| match &item.param {
        // A whole argument: a type that is not a `KeyPart` is reported at its declared type.
        Some(param) => {
            let part = PartArg::new(param);
            let path = private(part.first);
            let call = part.call(quote!(#path::key_part), quote!(&mut __idem_key_builder,));
            quote_spanned!(part.last=> #call;)
        }
        // A field path: at the key string it was written in.
        None => {
            let expr = &item.expr;
            let (first, last) = edges(expr);
            let path = private(first);
            // The builder is ours: its name keeps the expansion's hygiene.
            let builder = quote!(&mut __idem_key_builder);
            quote_spanned! {last=>
                #path::key_part(#builder, &#expr);
            }
        }
    });

    // The function's generic arguments. The key is the same for every instantiation (a key
    // derived from `type_name` would change with the compiler and run bodies again after an
    // upgrade), so they go into the fingerprint: another instantiation with the same key is a
    // payload mismatch, never a replay of a value of another type. `type_name` may change
    // between compiler versions too; a retry across such an upgrade is then a mismatch, which
    // fails safe. Lifetimes do not change what the body computes.
    let generic_fields: Vec<TokenStream> = sig
        .generics
        .params
        .iter()
        .filter_map(|param| match param {
            syn::GenericParam::Type(param) => {
                let ident = &param.ident;
                let name = format!("<{}>", ident.unraw());
                Some(quote! {
                    #here::fingerprint_type::<#ident>(&mut __idem_fingerprint_builder, #name);
                })
            }
            syn::GenericParam::Const(param) => {
                let ident = &param.ident;
                let name = format!("<{}>", ident.unraw());
                Some(quote! {
                    #here::fingerprint_part(&mut __idem_fingerprint_builder, #name, &#ident);
                })
            }
            syn::GenericParam::Lifetime(_) => None,
        })
        // `impl Trait` arguments are anonymous type parameters: their type is read from the
        // argument.
        .chain(sig.inputs.iter().filter_map(|input| match input {
            syn::FnArg::Typed(typed) if contains_impl_trait(&typed.ty) => match &*typed.pat {
                syn::Pat::Ident(pat) => {
                    let ident = &pat.ident;
                    let name = format!("<impl {}>", ident.unraw());
                    Some(quote! {
                        #here::fingerprint_type_of_val(&mut __idem_fingerprint_builder, #name, &#ident);
                    })
                }
                _ => None,
            },
            _ => None,
        }))
        .collect();

    let fingerprint = if fingerprinted.is_empty() && generic_fields.is_empty() {
        quote!(#here::Fingerprint::NONE)
    } else {
        let fields = fingerprinted.iter().map(|field| {
            let name = field.param.ident.unraw().to_string();
            let part = PartArg::new(&field.param);
            let path = private(part.first);
            // An argument keyed by one of its fields has its own bound, whose message says why
            // the rest of it is fingerprinted.
            let function = if field.field_keyed {
                quote!(#path::fingerprint_field_keyed)
            } else {
                quote!(#path::fingerprint_part)
            };
            let call = part.call(function, quote!(&mut __idem_fingerprint_builder, #name,));
            quote_spanned!(part.last=> #call;)
        });
        quote!({
            let mut __idem_fingerprint_builder = #here::Fingerprint::builder();
            #(#fields)*
            #(#generic_fields)*
            __idem_fingerprint_builder.finish()
        })
    };

    // The store expression is evaluated once per call and borrowed for the whole call; like
    // any `let`, this drops the expression's other temporaries (a lock guard) at once. A store,
    // a reference to one and an `Arc` or `Box` of one are all stores; anything else is
    // reported at the expression, with the message of `__private::Store` (or, with
    // `transaction`, of `__private::TransactionalStore`).
    let generated = |at: Span| Span::call_site().located_at(at);
    let (store_value, store) = match &store {
        Some(expr) if transaction.is_some() => {
            let (first, last) = edges(expr);
            let borrowed = quote_spanned!(generated(first)=> &);
            let grouped = quote_spanned!(generated(last)=> (#expr));
            let backend =
                quote_spanned!(generated(first)=> <_ as #here::TransactionalStore>::backend);
            let argument = quote_spanned!(generated(last)=> (__idem_store_ref));
            (
                quote! {
                    let __idem_store_ref = #borrowed #grouped;
                    let __idem_store_value = #backend #argument;
                },
                quote!(__idem_store_value),
            )
        }
        Some(expr) => {
            let (first, last) = edges(expr);
            // The borrow is shown at the expression (it lasts the whole call).
            let borrowed = quote_spanned!(generated(first)=> &);
            let grouped = quote_spanned!(generated(last)=> (#expr));
            (
                quote! {
                    let __idem_store_value: &dyn #here::Store = #borrowed #grouped;
                },
                quote!(#here::Store::store(__idem_store_value)),
            )
        }
        None => (
            quote!(let __idem_store_value = #here::default_store();),
            quote!(&*__idem_store_value),
        ),
    };

    let on_store_error = if fail_open {
        quote!(#here::OnStoreError::FailOpen)
    } else {
        quote!(#here::OnStoreError::FailClosed)
    };
    let in_flight = match on_in_flight {
        InFlight::Wait => quote!(#here::OnInFlight::Wait),
        InFlight::Reject => quote!(#here::OnInFlight::Reject),
    };

    // The return type's bounds are all on the runner's call (`__private::run`), with the
    // messages of `__private`'s marker traits, and no other call repeats them: in an
    // incremental build, the compiler reports an unmet bound once per call that needs it, even
    // at one token. The call, its `.await` and `finish` are shown at one token of the return
    // type, the name of the type (`Result`, or an alias such as `Res`), which is where the
    // user fixes it.
    let ret = return_type_token(&return_type);
    let ret_path = private(ret);
    // The compiler reports a bound on a generic argument at that argument's tokens.
    let return_type = relocate(return_type.to_token_stream(), ret);
    let (checked, runner, finish) = if cache_errors {
        (
            quote_spanned!(ret=> CachingResult),
            quote_spanned!(ret=> run_caching_errors),
            quote_spanned!(ret=> finish_caching_errors),
        )
    } else {
        (
            quote_spanned!(ret=> IdempotentResult),
            quote_spanned!(ret=> run),
            quote_spanned!(ret=> finish),
        )
    };
    // The body becomes an async block, shown where the body is (borrow errors name it). It is
    // awaited inside the engine's future, which is awaited in the function's own body: no
    // other future wraps it.
    let body_async =
        quote_spanned!(Span::call_site().located_at(block.brace_token.span.join())=> async);
    let run = match &transaction {
        // The body receives the transaction: an `async` closure whose parameter has the name
        // `transaction` gives, and the type of the store's connection.
        Some(tx) => {
            let in_transaction = quote! {
                #here::transaction_scope(#scope, &__idem_key, __idem_fingerprint, &__IDEM_OPTIONS)
            };
            quote_spanned! {ret=>
                {
                    let __idem_types = <#return_type as #ret_path::#checked>::types();
                    #ret_path::finish(
                        __idem_types,
                        #ret_path::run_in_transaction(__idem_types, #store, #in_transaction, #body_async |#tx| #block).await,
                    )
                }
            }
        }
        None => {
            let body = quote!(#body_async #block);
            let call = quote! {
                #here::call(#store, #scope, &__idem_key, __idem_fingerprint, &__IDEM_OPTIONS)
            };
            quote_spanned! {ret=>
                {
                    let __idem_types = <#return_type as #ret_path::#checked>::types();
                    #ret_path::#finish(__idem_types, #ret_path::#runner(__idem_types, #call, #body).await)
                }
            }
        }
    };

    // Only the durations the attribute sets; the others keep `CallOptions`' defaults.
    let ttl = ttl_ms.map(|ms| quote!(.ttl(#here::Duration::from_millis(#ms))));
    let lease = lease_ms.map(|ms| quote!(.lease(#here::Duration::from_millis(#ms))));

    quote! {
        #module_level_item
        #(#attrs)*
        #vis #sig {
            #module_level_check
            const __IDEM_OPTIONS: #here::CallOptions = #here::CallOptions::new()
                #ttl
                #lease
                .on_in_flight(#in_flight)
                .on_store_error(#on_store_error);
            let __idem_key = {
                let mut __idem_key_builder = #here::IdempotencyKey::builder(#scope);
                #(#key_parts)*
                __idem_key_builder.finish()
            };
            let __idem_fingerprint = #fingerprint;
            #store_value
            #run
        }
    }
}

/// Whether a type contains `impl Trait`, which makes the function generic.
fn contains_impl_trait(ty: &syn::Type) -> bool {
    fn scan(tokens: TokenStream) -> bool {
        tokens.into_iter().any(|tt| match tt {
            TokenTree::Ident(ident) => ident == "impl",
            TokenTree::Group(group) => scan(group.stream()),
            _ => false,
        })
    }
    scan(ty.to_token_stream())
}
