//! Parses and validates `#[idempotent(...)]`. Everything here runs before any code is
//! generated, so `expand` receives a configuration that is known to be valid.

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Expr, FnArg, Ident, ItemFn, LitBool, LitStr, Pat, ReturnType, Token, Type};

mod kw {
    syn::custom_keyword!(key);
    syn::custom_keyword!(ttl);
    syn::custom_keyword!(lease);
    syn::custom_keyword!(store);
    syn::custom_keyword!(namespace);
    syn::custom_keyword!(skip);
    syn::custom_keyword!(on_in_flight);
    syn::custom_keyword!(on_store_error);
    syn::custom_keyword!(cache_errors);
}

/// The attribute's arguments as written, before they are checked against the function.
#[derive(Default)]
pub(crate) struct Args {
    key: Option<LitStr>,
    ttl: Option<LitStr>,
    lease: Option<LitStr>,
    store: Option<Expr>,
    namespace: Option<LitStr>,
    skip: Option<LitStr>,
    on_in_flight: Option<LitStr>,
    on_store_error: Option<LitStr>,
    cache_errors: Option<LitBool>,
    krate: Option<LitStr>,
}

fn set_once<T>(slot: &mut Option<T>, value: T, keyword: Span, name: &str) -> syn::Result<()> {
    if slot.is_some() {
        return Err(syn::Error::new(
            keyword,
            format!("duplicate option `{name}`; give each option once"),
        ));
    }
    *slot = Some(value);
    Ok(())
}

const OPTIONS: &[&str] = &[
    "key",
    "ttl",
    "lease",
    "store",
    "namespace",
    "skip",
    "on_in_flight",
    "on_store_error",
    "cache_errors",
    "crate",
];

fn unknown_option(ident: &Ident) -> syn::Error {
    let name = ident.unraw().to_string();
    let known: Vec<String> = OPTIONS.iter().map(|&o| o.to_owned()).collect();
    let hint = match closest(&name, &known) {
        Some(option) => format!("did you mean `{option}`? "),
        None => String::new(),
    };
    let list = OPTIONS
        .iter()
        .map(|o| format!("`{o}`"))
        .collect::<Vec<_>>()
        .join(", ");
    syn::Error::new(
        ident.span(),
        format!("unknown option `{name}`; {hint}the options are {list}"),
    )
}

fn string_value(input: ParseStream<'_>, name: &str, example: &str) -> syn::Result<LitStr> {
    input.parse::<LitStr>().map_err(|error| {
        syn::Error::new(
            error.span(),
            format!("`{name}` takes a string, such as `{name} = {example}`"),
        )
    })
}

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = Args::default();
        while !input.is_empty() {
            let lookahead = input.lookahead1();
            if lookahead.peek(kw::key) {
                let keyword = input.parse::<kw::key>()?.span;
                input.parse::<Token![=]>()?;
                let value = string_value(input, "key", "\"order_id, action\"")?;
                set_once(&mut args.key, value, keyword, "key")?;
            } else if lookahead.peek(kw::ttl) {
                let keyword = input.parse::<kw::ttl>()?.span;
                input.parse::<Token![=]>()?;
                let value = string_value(input, "ttl", "\"24h\"")?;
                set_once(&mut args.ttl, value, keyword, "ttl")?;
            } else if lookahead.peek(kw::lease) {
                let keyword = input.parse::<kw::lease>()?.span;
                input.parse::<Token![=]>()?;
                let value = string_value(input, "lease", "\"30s\"")?;
                set_once(&mut args.lease, value, keyword, "lease")?;
            } else if lookahead.peek(kw::store) {
                let keyword = input.parse::<kw::store>()?.span;
                input.parse::<Token![=]>()?;
                let value = input.parse::<Expr>()?;
                set_once(&mut args.store, value, keyword, "store")?;
            } else if lookahead.peek(kw::namespace) {
                let keyword = input.parse::<kw::namespace>()?.span;
                input.parse::<Token![=]>()?;
                let value = string_value(input, "namespace", "\"orders.charge\"")?;
                set_once(&mut args.namespace, value, keyword, "namespace")?;
            } else if lookahead.peek(kw::skip) {
                let keyword = input.parse::<kw::skip>()?.span;
                input.parse::<Token![=]>()?;
                let value = string_value(input, "skip", "\"db, client\"")?;
                set_once(&mut args.skip, value, keyword, "skip")?;
            } else if lookahead.peek(kw::on_store_error) {
                let keyword = input.parse::<kw::on_store_error>()?.span;
                input.parse::<Token![=]>()?;
                let value = string_value(input, "on_store_error", "\"fail_open\"")?;
                set_once(&mut args.on_store_error, value, keyword, "on_store_error")?;
            } else if lookahead.peek(kw::on_in_flight) {
                let keyword = input.parse::<kw::on_in_flight>()?.span;
                input.parse::<Token![=]>()?;
                let value = string_value(input, "on_in_flight", "\"reject\"")?;
                set_once(&mut args.on_in_flight, value, keyword, "on_in_flight")?;
            } else if lookahead.peek(kw::cache_errors) {
                let keyword = input.parse::<kw::cache_errors>()?.span;
                input.parse::<Token![=]>()?;
                let value = input.parse::<LitBool>().map_err(|error| {
                    syn::Error::new(
                        error.span(),
                        "`cache_errors` takes `true` or `false`, such as `cache_errors = true`",
                    )
                })?;
                set_once(&mut args.cache_errors, value, keyword, "cache_errors")?;
            } else if lookahead.peek(Token![crate]) {
                let keyword = input.parse::<Token![crate]>()?.span;
                input.parse::<Token![=]>()?;
                let value = string_value(input, "crate", "\"my_idempotent\"")?;
                set_once(&mut args.krate, value, keyword, "crate")?;
            } else if input.peek(Ident::peek_any) {
                let ident = input.call(Ident::parse_any)?;
                return Err(unknown_option(&ident));
            } else {
                return Err(lookahead.error());
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(args)
    }
}

/// The error for `#[idempotent]` on something that is not a function with a body, at the
/// keyword that says what it is.
pub(crate) fn not_a_function(item: proc_macro2::TokenStream) -> syn::Error {
    let misplaced = |token: &dyn quote::ToTokens, what: &str| {
        syn::Error::new_spanned(
            token,
            format!(
                "`#[idempotent]` goes on an `async fn`, not on {what}; put it on the function that performs the operation"
            ),
        )
    };
    if let Ok(declaration) = syn::parse2::<syn::TraitItemFn>(item.clone()) {
        return syn::Error::new_spanned(
            declaration.sig.fn_token,
            "`#[idempotent]` needs the function's body; put it on the `async fn` in the `impl`, not on the declaration",
        );
    }
    match syn::parse2::<syn::Item>(item) {
        Ok(syn::Item::Struct(item)) => misplaced(&item.struct_token, "a struct"),
        Ok(syn::Item::Enum(item)) => misplaced(&item.enum_token, "an enum"),
        Ok(syn::Item::Union(item)) => misplaced(&item.union_token, "a union"),
        Ok(syn::Item::Impl(item)) => misplaced(
            &item.impl_token,
            "an `impl` block (put it on each method that needs it)",
        ),
        Ok(syn::Item::Trait(item)) => misplaced(&item.trait_token, "a trait"),
        Ok(syn::Item::Mod(item)) => misplaced(&item.mod_token, "a module"),
        Ok(syn::Item::Const(item)) => misplaced(&item.const_token, "a constant"),
        Ok(syn::Item::Static(item)) => misplaced(&item.static_token, "a static"),
        Ok(syn::Item::Type(item)) => misplaced(&item.type_token, "a type alias"),
        Ok(syn::Item::Use(item)) => misplaced(&item.use_token, "a `use` declaration"),
        Ok(syn::Item::ExternCrate(item)) => misplaced(&item.extern_token, "an `extern crate`"),
        Ok(syn::Item::ForeignMod(item)) => misplaced(&item.abi, "an `extern` block"),
        _ => syn::Error::new(
            Span::call_site(),
            "`#[idempotent]` goes on an `async fn`; put it on the function that performs the operation",
        ),
    }
}

/// One part of the key: an argument or a field path rooted at one, such as `order.id`.
pub(crate) struct KeyPart {
    /// The expression as written in the key string (spans point at the string).
    pub(crate) expr: Expr,
    /// For a whole argument, that argument (the expansion points errors at its type); `None`
    /// for a field path such as `order.id` or `self.tenant`.
    pub(crate) param: Option<Param>,
}

/// A function parameter that is not `self`.
#[derive(Clone)]
pub(crate) struct Param {
    pub(crate) ident: Ident,
    pub(crate) ty: Type,
}

/// An argument that goes into the request fingerprint.
pub(crate) struct Fingerprinted {
    pub(crate) param: Param,
    /// Whether the key reads a field of it (`order.id`): it is then fingerprinted whole, and a
    /// type that is not a `KeyPart` gets a message that says why.
    pub(crate) field_keyed: bool,
}

/// Whether the on-in-flight policy is to wait or to reject.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum InFlight {
    Wait,
    Reject,
}

/// A validated configuration: every name resolves, every duration is in range.
pub(crate) struct Config {
    pub(crate) krate: syn::Path,
    pub(crate) key: Vec<KeyPart>,
    pub(crate) fingerprinted: Vec<Fingerprinted>,
    /// `None`: the runtime's default (`CallOptions::new()`), which the macro does not repeat.
    pub(crate) ttl_ms: Option<u64>,
    pub(crate) lease_ms: Option<u64>,
    pub(crate) store: Option<Expr>,
    pub(crate) namespace: Option<LitStr>,
    pub(crate) on_in_flight: InFlight,
    /// Whether the body runs unprotected when the store fails (`on_store_error = "fail_open"`).
    pub(crate) fail_open: bool,
    pub(crate) cache_errors: bool,
    pub(crate) return_type: Type,
}

/// Collects errors so that one compile reports every problem, not just the first.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(existing) => existing.combine(error),
            None => self.0 = Some(error),
        }
    }

    fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

/// The function's arguments, as the messages name them.
struct Names {
    params: Vec<Ident>,
    /// The receiver's `self`, if there is one.
    receiver: Option<Ident>,
}

impl Names {
    /// The parameter's own name token, for `self` or an argument.
    fn binding(&self, name: &str) -> Option<&Ident> {
        if name == "self" {
            self.receiver.as_ref()
        } else {
            self.params.iter().find(|p| p.unraw() == name)
        }
    }

    fn contains(&self, name: &str) -> bool {
        self.binding(name).is_some()
    }

    /// "did you mean `x`? the arguments are `a`, `b`" for a name that is not an argument.
    fn describe_unknown(&self, name: &str) -> String {
        let mut all: Vec<String> = Vec::new();
        if self.receiver.is_some() {
            all.push("self".to_owned());
        }
        all.extend(self.params.iter().map(|p| p.unraw().to_string()));
        let hint = match closest(name, &all) {
            Some(candidate) => format!("did you mean `{candidate}`? "),
            None => String::new(),
        };
        if all.is_empty() {
            return "this function takes no arguments".to_owned();
        }
        let list = all
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ");
        format!("{hint}the arguments are {list}")
    }
}

impl Config {
    pub(crate) fn new(args: Args, function: &ItemFn) -> syn::Result<Config> {
        let mut errors = Errors::default();
        let signature = &function.sig;
        let fn_name = signature.ident.unraw().to_string();

        if signature.asyncness.is_none() {
            errors.push(syn::Error::new_spanned(
                signature.fn_token,
                format!("`#[idempotent]` needs an `async fn`; write `async fn {fn_name}`"),
            ));
        }

        let return_type = match &signature.output {
            ReturnType::Default => {
                errors.push(syn::Error::new_spanned(
                    &signature.ident,
                    format!(
                        "`{fn_name}` returns `()`, but an `#[idempotent]` function must return `Result<T, E>`; write `-> Result<(), idempotent_core::Error>` or use your own error type"
                    ),
                ));
                None
            }
            ReturnType::Type(_, ty) => match &**ty {
                Type::Path(_) => Some((**ty).clone()),
                other => {
                    errors.push(syn::Error::new_spanned(
                        other,
                        format!(
                            "`{fn_name}` must return `Result<T, E>`, spelled as a type path such as `Result<Receipt, idempotent_core::Error>` or an alias of it"
                        ),
                    ));
                    None
                }
            },
        };

        let mut params = Vec::new();
        let mut receiver = None;
        for input in &signature.inputs {
            match input {
                FnArg::Receiver(arg) => receiver = Some(Ident::new("self", arg.self_token.span)),
                FnArg::Typed(typed) => match &*typed.pat {
                    Pat::Ident(pat) if pat.subpat.is_none() => params.push(Param {
                        ident: pat.ident.clone(),
                        ty: (*typed.ty).clone(),
                    }),
                    other => errors.push(syn::Error::new_spanned(
                        other,
                        "`#[idempotent]` needs a plain name for every argument, so that `key` and `skip` can refer to it; bind this one to a name and destructure it in the body",
                    )),
                },
            }
        }
        let names = Names {
            params: params.iter().map(|p| p.ident.clone()).collect(),
            receiver,
        };

        let key = match &args.key {
            None => {
                errors.push(syn::Error::new(
                    Span::call_site(),
                    format!(
                        "missing `key`: name the arguments that identify the operation, such as `key = \"{}\"`",
                        example_key(&names)
                    ),
                ));
                Vec::new()
            }
            Some(literal) => parse_key(literal, &params, &names, &mut errors),
        };
        // The arguments the key uses whole (`order_id`): the key covers all of them, so they
        // are not fingerprinted.
        let keyed: Vec<String> = key
            .iter()
            .filter_map(|part| part.param.as_ref())
            .map(|param| param.ident.unraw().to_string())
            .collect();
        // The arguments the key reads through a field (`order.id`), other than `self`. The key
        // covers that field only: the rest of the argument is fingerprinted like any other
        // argument, so a retry with the same `order.id` but another `order.amount` is a payload
        // mismatch rather than a replay of a result computed for other inputs.
        let field_keyed: Vec<String> = key
            .iter()
            .filter(|part| part.param.is_none())
            .filter_map(|part| key_root(&part.expr).ok())
            .filter(|root| root != "self" && !keyed.contains(root))
            .collect();

        let ttl_ms = args
            .ttl
            .as_ref()
            .map(|literal| parse_duration_option(literal, "ttl", "24h", &mut errors));
        let lease_ms = args
            .lease
            .as_ref()
            .map(|literal| parse_lease(literal, &mut errors));

        let mut skipped: Vec<String> = Vec::new();
        if let Some(literal) = &args.skip {
            for name in split_names(literal) {
                let span = literal.span();
                if name.is_empty() {
                    errors.push(syn::Error::new(
                        span,
                        "`skip` has an empty name; list argument names separated by commas, such as `skip = \"db, client\"`",
                    ));
                } else if name == "self" {
                    errors.push(syn::Error::new(
                        span,
                        "`self` is never fingerprinted; remove it from `skip`",
                    ));
                } else if !names.contains(&name) {
                    errors.push(syn::Error::new(
                        span,
                        format!(
                            "`skip` names `{name}`, which is not an argument of this function; {}",
                            names.describe_unknown(&name)
                        ),
                    ));
                } else if skipped.contains(&name) {
                    errors.push(syn::Error::new(
                        span,
                        format!("`{name}` appears twice in `skip`; remove one"),
                    ));
                } else if keyed.contains(&name) {
                    errors.push(syn::Error::new(
                        span,
                        format!(
                            "`{name}` is part of the key, so it is never fingerprinted; remove it from `skip`"
                        ),
                    ));
                } else {
                    skipped.push(name);
                }
            }
        }

        // `store = arg` (or `&*arg`, `arg.clone()`, ...) names the store argument: it is not
        // part of the request.
        let store_param = args.store.as_ref().and_then(store_root);

        // Methods of two types in one module can share a name; with the default namespace
        // they would share records (one type's result replayed for the other). The type is not
        // visible to an attribute on the method, and `type_name::<Self>()` is not stable across
        // compiler versions (a persisted key must be), so a method names its namespace.
        if let (Some(receiver), None) = (&names.receiver, &args.namespace) {
            errors.push(syn::Error::new_spanned(
                receiver,
                format!(
                    "`#[idempotent]` on a method needs `namespace = \"...\"`, such as `namespace = \"orders.{fn_name}\"`: the default (module path and function name) would be shared with same-named methods of other types in this module"
                ),
            ));
        }

        if let Some(literal) = &args.namespace {
            if literal.value().trim().is_empty() {
                errors.push(syn::Error::new_spanned(
                    literal,
                    format!(
                        "`namespace` is empty; remove it to use the default (module path and function name), or name it, such as `namespace = \"orders.{fn_name}\"`"
                    ),
                ));
            }
        }

        let on_in_flight = match &args.on_in_flight {
            None => InFlight::Wait,
            Some(literal) => match literal.value().as_str() {
                "wait" => InFlight::Wait,
                "reject" => InFlight::Reject,
                other => {
                    errors.push(syn::Error::new_spanned(
                        literal,
                        format!(
                            "unknown `on_in_flight` policy `{other}`; use `on_in_flight = \"wait\"` or `on_in_flight = \"reject\"`"
                        ),
                    ));
                    InFlight::Wait
                }
            },
        };

        let fail_open = match &args.on_store_error {
            None => false,
            Some(literal) => match literal.value().as_str() {
                "fail_closed" => false,
                "fail_open" => true,
                other => {
                    errors.push(syn::Error::new_spanned(
                        literal,
                        format!(
                            "unknown `on_store_error` policy `{other}`; use `on_store_error = \"fail_closed\"` (the default) or `on_store_error = \"fail_open\"`"
                        ),
                    ));
                    false
                }
            },
        };

        let krate = match &args.krate {
            None => syn::parse_quote!(::idempotent_core),
            Some(literal) => match literal.parse::<syn::Path>() {
                Ok(path) => path,
                Err(_) => {
                    errors.push(syn::Error::new_spanned(
                        literal,
                        format!(
                            "`{}` is not a path; `crate` names where `idempotent_core` is, such as `crate = \"my_idempotent\"` or `crate = \"::deps::idempotent_core\"`",
                            literal.value()
                        ),
                    ));
                    syn::parse_quote!(::idempotent_core)
                }
            },
        };

        let mut fingerprinted = Vec::new();
        for param in params {
            let name = param.ident.unraw().to_string();
            let is_store = store_param.as_deref() == Some(name.as_str());
            if keyed.contains(&name) || is_store || skipped.contains(&name) {
                continue;
            }
            let field_keyed = field_keyed.contains(&name);
            if let Some((offender, unstable)) = unstable_type(&param.ty) {
                let mut skip = skipped.clone();
                skip.push(name.clone());
                let skip = skip.join(", ");
                let what = unstable.describe(offender);
                let message = match unstable {
                    Unstable::Timestamp | Unstable::Random => format!(
                        "`{name}` is fingerprinted, but {what}, so every retry would be rejected as a payload mismatch; leave it out with `skip = \"{skip}\"`"
                    ),
                    Unstable::Hashed => format!(
                        "`{name}` is fingerprinted, but {what}, so a retry served by another process would be rejected as a payload mismatch; {}, or leave it out with `skip = \"{skip}\"`",
                        unstable.fix(offender)
                    ),
                };
                errors.push(syn::Error::new_spanned(offender, message));
            }
            fingerprinted.push(Fingerprinted { param, field_keyed });
        }

        // Key arguments with a type that can never be deterministic get a precise message
        // here; other non-`KeyPart` types are caught by the trait bound in the expansion.
        for part in &key {
            let Some(param) = &part.param else {
                continue;
            };
            if let Some((offender, unstable)) = unstable_type(&param.ty) {
                errors.push(syn::Error::new_spanned(
                    offender,
                    format!(
                        "`{}` cannot be part of the key: {}; {}",
                        param.ident.unraw(),
                        unstable.describe(offender),
                        unstable.fix(offender)
                    ),
                ));
            }
        }

        errors.finish()?;
        let Some(return_type) = return_type else {
            // Unreachable: a missing return type was pushed as an error above.
            return Err(syn::Error::new(Span::call_site(), "missing return type"));
        };
        Ok(Config {
            krate,
            key,
            fingerprinted,
            ttl_ms,
            lease_ms,
            store: args.store,
            namespace: args.namespace,
            on_in_flight,
            fail_open,
            cache_errors: args.cache_errors.is_some_and(|b| b.value),
            return_type,
        })
    }
}

/// The variable a `store` expression reads from, such as `store` in `&**store` or
/// `store.clone()`.
fn store_root(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Path(path) if path.qself.is_none() => {
            path.path.get_ident().map(|ident| ident.unraw().to_string())
        }
        Expr::Reference(reference) => store_root(&reference.expr),
        Expr::Unary(unary) => store_root(&unary.expr),
        Expr::Paren(paren) => store_root(&paren.expr),
        Expr::Group(group) => store_root(&group.expr),
        Expr::MethodCall(call) => store_root(&call.receiver),
        _ => None,
    }
}

/// A plausible `key` for this function, for messages.
fn example_key(names: &Names) -> String {
    names
        .params
        .first()
        .map_or_else(|| "order_id".to_owned(), |p| p.unraw().to_string())
}

/// The candidate closest to `name` by edit distance, if it is close enough to be a typo.
fn closest<'a>(name: &str, candidates: &'a [String]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|candidate| (edit_distance(name, candidate), candidate))
        .filter(|&(distance, _)| distance > 0 && distance <= 1.max(name.len() / 3))
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, candidate)| candidate.as_str())
}

/// Levenshtein distance where swapping two adjacent characters also counts as one edit.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut rows = vec![vec![0_usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let substitution = rows[i - 1][j - 1] + usize::from(a[i - 1] != b[j - 1]);
            let mut best = substitution.min(rows[i - 1][j] + 1).min(rows[i][j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

/// Splits a comma-separated list of names. Errors about them point at the whole literal:
/// stable Rust cannot point inside a string literal, so the messages name the culprit.
fn split_names(literal: &LitStr) -> Vec<String> {
    literal
        .value()
        .split(',')
        .map(|name| name.trim().to_owned())
        .collect()
}

/// `a.b` with the spaces `quote` puts between tokens removed, for messages.
fn render(expr: &Expr) -> String {
    quote::ToTokens::to_token_stream(expr)
        .to_string()
        .replace(' ', "")
}

fn parse_key(
    literal: &LitStr,
    params: &[Param],
    names: &Names,
    errors: &mut Errors,
) -> Vec<KeyPart> {
    if literal.value().trim().is_empty() {
        errors.push(syn::Error::new_spanned(
            literal,
            format!(
                "`key` is empty; name the arguments that identify the operation, such as `key = \"{}\"`",
                example_key(names)
            ),
        ));
        return Vec::new();
    }
    let exprs = match literal.parse_with(Punctuated::<Expr, Token![,]>::parse_terminated) {
        Ok(exprs) => exprs,
        Err(_) => {
            errors.push(syn::Error::new_spanned(
                literal,
                "`key` must be a comma-separated list of argument names or field paths, such as `key = \"order.id, action\"`",
            ));
            return Vec::new();
        }
    };
    let mut parts: Vec<KeyPart> = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for expr in exprs {
        let text = render(&expr);
        let root = match key_root(&expr) {
            Ok(root) => root,
            Err(message) => {
                errors.push(syn::Error::new_spanned(literal, message));
                continue;
            }
        };
        if root == "self" && names.receiver.is_none() {
            errors.push(syn::Error::new_spanned(
                literal,
                format!(
                    "`key` names `{text}`, but this function has no `self` argument; {}",
                    names.describe_unknown(&root)
                ),
            ));
            continue;
        }
        if !names.contains(&root) {
            errors.push(syn::Error::new_spanned(
                literal,
                format!(
                    "`key` names `{root}`, which is not an argument of this function; {}",
                    names.describe_unknown(&root)
                ),
            ));
            continue;
        }
        if seen.contains(&text) {
            errors.push(syn::Error::new_spanned(
                literal,
                format!("`{text}` appears twice in `key`; remove one"),
            ));
            continue;
        }
        seen.push(text);
        let whole = matches!(expr, Expr::Path(_));
        if whole && root == "self" {
            errors.push(syn::Error::new_spanned(
                literal,
                "`self` cannot be a key part as a whole; name its fields, such as `key = \"self.tenant_id, order_id\"`",
            ));
            continue;
        }
        let param = if whole {
            params
                .iter()
                .find(|param| param.ident.unraw() == root)
                .cloned()
        } else {
            None
        };
        let mut expr = expr;
        if !whole {
            bind_root(&mut expr, names.binding(&root));
        }
        parts.push(KeyPart { expr, param });
    }
    parts
}

/// Makes the root of a field path the parameter itself. The key string names parameters by
/// name, but its tokens have the string's hygiene, which differs from the parameter's when the
/// function comes from a `macro_rules!` expansion.
fn bind_root(expr: &mut Expr, binding: Option<&Ident>) {
    match expr {
        Expr::Field(field) => bind_root(&mut field.base, binding),
        Expr::Path(path) => {
            if let (Some(segment), Some(binding)) = (path.path.segments.first_mut(), binding) {
                let mut ident = binding.clone();
                ident.set_span(binding.span().located_at(segment.ident.span()));
                segment.ident = ident;
            }
        }
        _ => {}
    }
}

/// The argument a key expression starts from, or why the expression is not allowed.
fn key_root(expr: &Expr) -> Result<String, String> {
    match expr {
        Expr::Path(path) if path.qself.is_none() && path.attrs.is_empty() => {
            match path.path.get_ident() {
                Some(ident) => Ok(ident.unraw().to_string()),
                None => Err(format!(
                    "`{}` in `key` is not an argument; name arguments or field paths only, such as `key = \"order.id\"`",
                    render(expr)
                )),
            }
        }
        Expr::Field(field) if field.attrs.is_empty() => key_root(&field.base),
        Expr::Call(_) | Expr::MethodCall(_) | Expr::Macro(_) => Err(format!(
            "`key` cannot contain the call `{}`: a call runs again on every retry and can return a new value each time; name arguments or field paths only, such as `key = \"order.id\"`",
            render(expr)
        )),
        Expr::Lit(_) => Err(format!(
            "`{}` in `key` is a literal, which adds nothing to a key; scope keys with `namespace = \"...\"` instead",
            render(expr)
        )),
        _ => Err(format!(
            "`{}` is not allowed in `key`; name arguments or field paths only, such as `key = \"order.id\"`",
            render(expr)
        )),
    }
}

fn parse_duration_option(literal: &LitStr, name: &str, example: &str, errors: &mut Errors) -> u64 {
    match parse_duration_ms(&literal.value()) {
        Ok(0) => {
            errors.push(syn::Error::new_spanned(
                literal,
                format!(
                    "`{name}` is zero; give a positive duration, such as `{name} = \"{example}\"`"
                ),
            ));
            1
        }
        Ok(ms) => ms,
        Err(problem) => {
            errors.push(syn::Error::new_spanned(
                literal,
                format!("invalid `{name}`: {problem}, such as `{name} = \"{example}\"`"),
            ));
            1
        }
    }
}

/// The shortest `lease` the attribute accepts, in milliseconds: the same value as the
/// runtime's `idempotent_core::MIN_LEASE` (one second), which refuses shorter leases at run time.
/// The heartbeat renews a claim every `lease / 3`; a shorter lease runs out on a loaded machine
/// before the renewal reaches the store, and a duplicate then runs the body a second time.
const MIN_LEASE_MS: u64 = 1_000;

/// `lease`: a duration of at least [`MIN_LEASE_MS`].
fn parse_lease(literal: &LitStr, errors: &mut Errors) -> u64 {
    match parse_duration_ms(&literal.value()) {
        Ok(ms) if ms >= MIN_LEASE_MS => ms,
        // Zero is below the minimum too: one message says what to write.
        Ok(_) => {
            errors.push(syn::Error::new_spanned(
                literal,
                "`lease` must be at least 1s: the heartbeat renews the claim every lease/3 and must reach the store before it runs out, even on a loaded machine; write `lease = \"1s\"` or longer",
            ));
            MIN_LEASE_MS
        }
        Err(problem) => {
            errors.push(syn::Error::new_spanned(
                literal,
                format!("invalid `lease`: {problem}, such as `lease = \"30s\"`"),
            ));
            MIN_LEASE_MS
        }
    }
}

/// Parses `"24h"`, `"1h30m"`, `"500ms"` into milliseconds. An error completes the sentence
/// "invalid `ttl`: ..., such as `ttl = \"24h\"`".
pub(crate) fn parse_duration_ms(text: &str) -> Result<u64, String> {
    const UNITS: &str = "units `ms`, `s`, `m`, `h` and `d`";
    if text.is_empty() {
        return Err(format!("it is empty; write a number and a unit ({UNITS})"));
    }
    let bytes = text.as_bytes();
    let mut total: u64 = 0;
    let mut i = 0;
    while i < bytes.len() {
        let digits_start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == digits_start {
            return Err(format!(
                "expected a number at `{}`; write a number and a unit ({UNITS})",
                &text[digits_start..]
            ));
        }
        let digits = &text[digits_start..i];
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = &text[unit_start..i];
        let factor: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => {
                return Err(format!("`{digits}` has no unit; add one of the {UNITS}"));
            }
            other => {
                return Err(format!("unknown unit `{other}`; use one of the {UNITS}"));
            }
        };
        let too_long = || format!("`{text}` is too long to represent; use a shorter duration");
        let number: u64 = digits.parse().map_err(|_| too_long())?;
        let part = number.checked_mul(factor).ok_or_else(too_long)?;
        total = total.checked_add(part).ok_or_else(too_long)?;
    }
    Ok(total)
}

/// Why a type can never give the same key or fingerprint on a retry.
#[derive(Clone, Copy)]
enum Unstable {
    Timestamp,
    Hashed,
    Random,
}

impl Unstable {
    /// "a `SystemTime` changes on every retry"
    fn describe(self, ty: &Ident) -> String {
        match self {
            Unstable::Timestamp => format!("{} `{ty}` changes on every retry", article(ty)),
            Unstable::Hashed => format!(
                "{} `{ty}` iterates in a different order in every process",
                article(ty)
            ),
            Unstable::Random => format!(
                "{} `{ty}` gives a different value on every call",
                article(ty)
            ),
        }
    }

    /// What to do instead, for a key part.
    fn fix(self, ty: &Ident) -> String {
        match self {
            Unstable::Timestamp | Unstable::Random => "key on values the caller sends again with every retry, such as an order id or a request id".to_owned(),
            Unstable::Hashed => {
                let ordered = if ty == "HashSet" { "BTreeSet" } else { "BTreeMap" };
                format!("use a `{ordered}`, which iterates in order")
            }
        }
    }
}

/// "a" or "an", for a type name.
fn article(ty: &Ident) -> &'static str {
    let vowel = ty
        .to_string()
        .starts_with(|c: char| "AEIOUaeiou".contains(c));
    if vowel { "an" } else { "a" }
}

/// The first name in a type that can never give the same key on a retry, and why.
fn unstable_type(ty: &Type) -> Option<(&Ident, Unstable)> {
    const TIMESTAMPS: &[&str] = &[
        "SystemTime",
        "Instant",
        "DateTime",
        "NaiveDateTime",
        "OffsetDateTime",
        "PrimitiveDateTime",
        "UtcDateTime",
        "Timestamp",
        "Zoned",
    ];
    const HASHED: &[&str] = &["HashMap", "HashSet"];
    const RANDOM: &[&str] = &["ThreadRng", "StdRng", "SmallRng", "OsRng"];
    let mut found = None;
    visit_type_idents(ty, &mut |ident| {
        if found.is_some() {
            return;
        }
        let name = ident.to_string();
        let name = name.as_str();
        if TIMESTAMPS.contains(&name) {
            found = Some((ident, Unstable::Timestamp));
        } else if HASHED.contains(&name) {
            found = Some((ident, Unstable::Hashed));
        } else if RANDOM.contains(&name) {
            found = Some((ident, Unstable::Random));
        }
    });
    found
}

fn visit_type_idents<'a>(ty: &'a Type, visit: &mut impl FnMut(&'a Ident)) {
    match ty {
        Type::Path(path) => {
            for segment in &path.path.segments {
                visit(&segment.ident);
                if let syn::PathArguments::AngleBracketed(args) = &segment.arguments {
                    for arg in &args.args {
                        if let syn::GenericArgument::Type(inner) = arg {
                            visit_type_idents(inner, visit);
                        }
                    }
                }
            }
        }
        Type::Reference(reference) => visit_type_idents(&reference.elem, visit),
        Type::Slice(slice) => visit_type_idents(&slice.elem, visit),
        Type::Array(array) => visit_type_idents(&array.elem, visit),
        Type::Paren(paren) => visit_type_idents(&paren.elem, visit),
        Type::Group(group) => visit_type_idents(&group.elem, visit),
        Type::Tuple(tuple) => {
            for elem in &tuple.elems {
                visit_type_idents(elem, visit);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::{closest, edit_distance, parse_duration_ms};

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("24h"), Ok(86_400_000));
        assert_eq!(parse_duration_ms("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("2d"), Ok(172_800_000));
        assert_eq!(parse_duration_ms("0s"), Ok(0));
        assert!(parse_duration_ms("").is_err());
        assert!(parse_duration_ms("10").is_err());
        assert!(parse_duration_ms("10w").is_err());
        assert!(parse_duration_ms("h").is_err());
        assert!(parse_duration_ms("99999999999999999999d").is_err());
        assert!(parse_duration_ms("18446744073709551615d").is_err());
    }

    #[test]
    fn suggestions() {
        assert_eq!(edit_distance("acton", "action"), 1);
        assert_eq!(edit_distance("", "ab"), 2);
        assert_eq!(edit_distance("tll", "ttl"), 1);
        assert_eq!(edit_distance("namespace", "namespace"), 0);
        let names = ["order_id".to_owned(), "action".to_owned()];
        assert_eq!(closest("acton", &names), Some("action"));
        assert_eq!(closest("orderid", &names), Some("order_id"));
        assert_eq!(closest("client", &names), None);
    }
}
