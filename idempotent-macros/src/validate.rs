//! Checks the options against the function, one function per option, and yields a [`Config`]
//! that is known to be valid: `expand` makes no decision that can fail.
//!
//! Every problem is collected, so one compile reports all of them, in the order the checks
//! run here; each error points at the token to change.

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::{Expr, Ident, ItemFn, LitBool, LitStr, Type};

use crate::duration::{DurationError, parse_duration_ms};
use crate::function::{Function, Names, Param};
use crate::key::{KeyItem, parse_key};
use crate::options::Options;
use crate::unstable::unstable_type;

/// A validated configuration: every name resolves, every duration is in range.
pub(crate) struct Config {
    pub(crate) krate: syn::Path,
    pub(crate) key: Vec<KeyItem>,
    pub(crate) fingerprinted: Vec<Fingerprinted>,
    /// `None`: the runtime's default (`CallOptions::new()`), which the macro does not repeat.
    pub(crate) ttl_ms: Option<u64>,
    pub(crate) lease_ms: Option<u64>,
    pub(crate) store: Option<Expr>,
    /// `transaction = "tx"`: the name the body's transaction is bound to. `store` is then set.
    pub(crate) transaction: Option<Ident>,
    pub(crate) scope: Option<LitStr>,
    pub(crate) on_in_flight: InFlight,
    /// Whether the body runs unprotected when the store fails (`on_store_error = "fail_open"`).
    pub(crate) fail_open: bool,
    pub(crate) cache_errors: bool,
    pub(crate) return_type: Type,
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

/// Collects errors so that one compile reports every problem, not just the first.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(existing) => existing.combine(error),
            None => self.0 = Some(error),
        }
    }

    pub(crate) fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

impl Config {
    pub(crate) fn new(options: Options, function: &ItemFn) -> syn::Result<Config> {
        let mut errors = Errors::default();
        let function = Function::check(function, &mut errors);
        let names = &function.names;

        let key = key(options.key.as_ref(), &function, &mut errors);
        // The arguments the key uses whole (`order_id`): the key covers all of them, so they
        // are not fingerprinted.
        let keyed: Vec<String> = key
            .iter()
            .filter_map(|item| item.param.as_ref())
            .map(|param| param.ident.unraw().to_string())
            .collect();
        // The arguments the key reads through a field (`order.id`), other than `self`. The key
        // covers that field only: the rest of the argument is fingerprinted like any other
        // argument, so a retry with the same `order.id` but another `order.amount` is a payload
        // mismatch rather than a replay of a result computed for other inputs.
        let field_keyed: Vec<String> = key
            .iter()
            .filter_map(KeyItem::field_root)
            .filter(|root| root != "self" && !keyed.contains(root))
            .collect();

        let ttl_ms = options
            .ttl
            .as_ref()
            .map(|literal| ttl(literal, &mut errors));
        let lease_ms = options
            .lease
            .as_ref()
            .map(|literal| lease(literal, &mut errors));
        let skipped = skip(options.skip.as_ref(), names, &keyed, &mut errors);
        let store_param = options.store.as_ref().and_then(store);
        scope(options.scope.as_ref(), names, &function.name, &mut errors);
        let on_in_flight = on_in_flight(options.on_in_flight.as_ref(), &mut errors);
        let fail_open = on_store_error(options.on_store_error.as_ref(), &mut errors);
        let krate = krate(options.krate.as_ref(), &mut errors);
        let cache_errors = cache_errors(options.cache_errors.as_ref());
        let transaction = options.transaction.as_ref().and_then(|literal| {
            transaction(
                literal,
                &Transactional {
                    store: options.store.as_ref(),
                    cache_errors: options.cache_errors.as_ref().filter(|_| cache_errors),
                    fail_open: options.on_store_error.as_ref().filter(|_| fail_open),
                    names,
                },
                &mut errors,
            )
        });

        let fingerprinted = fingerprinted(
            &function.params,
            &Arguments {
                keyed: &keyed,
                field_keyed: &field_keyed,
                skipped: &skipped,
                store: store_param.as_deref(),
            },
            &mut errors,
        );
        key_types(&key, &mut errors);

        errors.finish()?;
        let Some(return_type) = function.return_type else {
            // Unreachable: a missing return type was pushed as an error above.
            return Err(syn::Error::new(Span::call_site(), "missing return type"));
        };
        Ok(Config {
            krate,
            key,
            fingerprinted,
            ttl_ms,
            lease_ms,
            store: options.store,
            transaction,
            scope: options.scope,
            on_in_flight,
            fail_open,
            cache_errors,
            return_type,
        })
    }
}

/// `key`: required; its items name arguments (see `key.rs`).
fn key(literal: Option<&LitStr>, function: &Function, errors: &mut Errors) -> Vec<KeyItem> {
    match literal {
        None => {
            errors.push(syn::Error::new(
                Span::call_site(),
                format!(
                    "missing `key`: name the arguments that identify the operation, such as `key = \"{}\"`",
                    function.names.example_key()
                ),
            ));
            Vec::new()
        }
        Some(literal) => parse_key(literal, function, errors),
    }
}

/// `ttl`: a positive duration.
fn ttl(literal: &LitStr, errors: &mut Errors) -> u64 {
    match parse_duration_ms(&literal.value()) {
        Ok(0) => {
            errors.push(syn::Error::new_spanned(
                literal,
                "`ttl` is zero; give a positive duration, such as `ttl = \"24h\"`",
            ));
            1
        }
        Ok(ms) => ms,
        Err(error) => {
            errors.push(duration_error("ttl", "24h", literal, error));
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
fn lease(literal: &LitStr, errors: &mut Errors) -> u64 {
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
        Err(error) => {
            errors.push(duration_error("lease", "30s", literal, error));
            MIN_LEASE_MS
        }
    }
}

/// "invalid `ttl`: ..., such as `ttl = \"24h\"`", or, for a duration written in a form the
/// attribute does not take, exactly what to write instead.
fn duration_error(
    option: &str,
    example: &str,
    literal: &LitStr,
    error: DurationError,
) -> syn::Error {
    let message = match error {
        DurationError::Problem(problem) => {
            format!("invalid `{option}`: {problem}, such as `{option} = \"{example}\"`")
        }
        DurationError::Rewrite { problem, write } => {
            let write: Vec<String> = write
                .iter()
                .map(|value| format!("`{option} = \"{value}\"`"))
                .collect();
            format!(
                "invalid `{option}`: {problem}; write {}",
                write.join(" or ")
            )
        }
    };
    syn::Error::new_spanned(literal, message)
}

/// `skip`: arguments of this function, each once, none of them `self` or used whole by the
/// key. Returns the names that pass.
fn skip(
    literal: Option<&LitStr>,
    names: &Names,
    keyed: &[String],
    errors: &mut Errors,
) -> Vec<String> {
    let mut skipped: Vec<String> = Vec::new();
    let Some(literal) = literal else {
        return skipped;
    };
    // Errors point at the whole literal: stable Rust cannot point inside a string literal, so
    // the messages name the culprit.
    let span = literal.span();
    for name in literal.value().split(',').map(str::trim) {
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
        } else if !names.contains(name) {
            errors.push(syn::Error::new(
                span,
                format!(
                    "`skip` names `{name}`, which is not an argument of this function; {}",
                    names.describe_unknown(name)
                ),
            ));
        } else if skipped.iter().any(|skipped| skipped == name) {
            errors.push(syn::Error::new(
                span,
                format!("`{name}` appears twice in `skip`; remove one"),
            ));
        } else if keyed.iter().any(|keyed| keyed == name) {
            errors.push(syn::Error::new(
                span,
                format!(
                    "`{name}` is part of the key, so it is never fingerprinted; remove it from `skip`"
                ),
            ));
        } else {
            skipped.push(name.to_owned());
        }
    }
    skipped
}

/// `store`: any expression (the compiler checks that it is a store). Returns the argument it
/// reads from, such as `store` in `store`, `&**store` or `store.clone()`, and `app` in
/// `app.pg`, `&*app.stores.orders` or `app.store()`: that argument holds the store, it is the
/// service's state rather than part of the request (as `self` is for `store = self.store`),
/// and is not fingerprinted.
fn store(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Path(path) if path.qself.is_none() => {
            path.path.get_ident().map(|ident| ident.unraw().to_string())
        }
        Expr::Reference(reference) => store(&reference.expr),
        Expr::Unary(unary) => store(&unary.expr),
        Expr::Paren(paren) => store(&paren.expr),
        Expr::Group(group) => store(&group.expr),
        Expr::MethodCall(call) => store(&call.receiver),
        Expr::Field(field) => store(&field.base),
        Expr::Index(index) => store(&index.expr),
        Expr::Try(attempt) => store(&attempt.expr),
        _ => None,
    }
}

/// What `transaction` is checked against.
struct Transactional<'a> {
    store: Option<&'a Expr>,
    /// `cache_errors = true`, if given.
    cache_errors: Option<&'a LitBool>,
    /// `on_store_error = "fail_open"`, if given.
    fail_open: Option<&'a LitStr>,
    names: &'a Names,
}

/// `transaction = "tx"`: a name that is not an argument, with `store` given, and neither
/// `cache_errors` nor fail-open (a transaction's record commits with the body's writes or not
/// at all). Returns the name.
fn transaction(
    literal: &LitStr,
    options: &Transactional<'_>,
    errors: &mut Errors,
) -> Option<Ident> {
    let name = literal.value();
    let ident = match syn::parse_str::<Ident>(&name) {
        // The literal's span: the body, written next to the attribute, names it.
        Ok(mut ident) => {
            ident.set_span(literal.span());
            ident
        }
        Err(_) => {
            errors.push(syn::Error::new_spanned(
                literal,
                format!(
                    "`{name}` is not a name; `transaction` names the body's transaction, such as `transaction = \"tx\"`"
                ),
            ));
            return None;
        }
    };
    let mut ok = true;
    if name == "self" || options.names.contains(&name) {
        errors.push(syn::Error::new_spanned(
            literal,
            format!(
                "`{name}` is already an argument of this function; the transaction is a name of its own that the body uses, such as `transaction = \"tx\"`"
            ),
        ));
        ok = false;
    }
    if options.store.is_none() {
        errors.push(syn::Error::new_spanned(
            literal,
            format!(
                "`transaction = \"{name}\"` needs `store = ...`, the `PostgresStore` whose transaction the body runs in, such as `store = self.db`"
            ),
        ));
        ok = false;
    }
    if let Some(cache_errors) = options.cache_errors {
        errors.push(syn::Error::new_spanned(
            cache_errors,
            "`cache_errors = true` cannot be used with `transaction`: an `Err` rolls the body's writes back, and a replay of it would report a result whose effects never happened; remove `cache_errors`",
        ));
        ok = false;
    }
    if let Some(fail_open) = options.fail_open {
        errors.push(syn::Error::new_spanned(
            fail_open,
            "`on_store_error = \"fail_open\"` cannot be used with `transaction`: the body's writes commit with its record or not at all, so when the store cannot record the result there is no result to return; remove `on_store_error`",
        ));
        ok = false;
    }
    ok.then_some(ident)
}

/// `scope`: not empty; required on a method.
fn scope(literal: Option<&LitStr>, names: &Names, fn_name: &str, errors: &mut Errors) {
    // Methods of two types in one module can share a name; with the default scope
    // they would share records (one type's result replayed for the other). The type is not
    // visible to an attribute on the method, and `type_name::<Self>()` is not stable across
    // compiler versions (a persisted key must be), so a method names its scope.
    if let (Some(receiver), None) = (&names.receiver, literal) {
        errors.push(syn::Error::new_spanned(
            receiver,
            format!(
                "`#[idempotent]` on a method needs `scope = \"...\"`, such as `scope = \"orders.{fn_name}\"`: the default (module path and function name) would be shared with same-named methods of other types in this module"
            ),
        ));
    }
    if let Some(literal) = literal {
        if literal.value().trim().is_empty() {
            errors.push(syn::Error::new_spanned(
                literal,
                format!(
                    "`scope` is empty; remove it to use the default (module path and function name), or name it, such as `scope = \"orders.{fn_name}\"`"
                ),
            ));
        }
    }
}

/// `on_in_flight`: `"wait"` (the default) or `"reject"`.
fn on_in_flight(literal: Option<&LitStr>, errors: &mut Errors) -> InFlight {
    let Some(literal) = literal else {
        return InFlight::Wait;
    };
    match literal.value().as_str() {
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
    }
}

/// `on_store_error`: `"fail_closed"` (the default) or `"fail_open"`. Returns whether it fails
/// open.
fn on_store_error(literal: Option<&LitStr>, errors: &mut Errors) -> bool {
    let Some(literal) = literal else {
        return false;
    };
    match literal.value().as_str() {
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
    }
}

/// `crate`: a path; `::idempotent_core` by default.
fn krate(literal: Option<&LitStr>, errors: &mut Errors) -> syn::Path {
    let Some(literal) = literal else {
        return syn::parse_quote!(::idempotent_core);
    };
    match literal.parse::<syn::Path>() {
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
    }
}

/// `cache_errors`: `true` or `false` (the default); whether the error type is serializable
/// is checked by the compiler in the expansion.
fn cache_errors(literal: Option<&LitBool>) -> bool {
    literal.is_some_and(|literal| literal.value)
}

/// What the key and the options say about the arguments.
struct Arguments<'a> {
    /// Used whole by the key.
    keyed: &'a [String],
    /// Read through a field by the key.
    field_keyed: &'a [String],
    skipped: &'a [String],
    /// The `store` argument.
    store: Option<&'a str>,
}

/// The fingerprinted arguments: every one that the key does not use whole and that is neither
/// skipped nor the store. A type that can never repeat is an error at its name.
fn fingerprinted(
    params: &[Param],
    arguments: &Arguments<'_>,
    errors: &mut Errors,
) -> Vec<Fingerprinted> {
    let mut fingerprinted = Vec::new();
    for param in params {
        let name = param.ident.unraw().to_string();
        let is_store = arguments.store == Some(name.as_str());
        if arguments.keyed.contains(&name) || is_store || arguments.skipped.contains(&name) {
            continue;
        }
        if let Some((offender, unstable)) = unstable_type(&param.ty) {
            let mut skip = arguments.skipped.to_vec();
            skip.push(name.clone());
            let message = unstable.in_fingerprint(&name, offender, &skip.join(", "));
            errors.push(syn::Error::new_spanned(offender, message));
        }
        fingerprinted.push(Fingerprinted {
            param: param.clone(),
            field_keyed: arguments.field_keyed.contains(&name),
        });
    }
    fingerprinted
}

/// Key arguments with a type that can never repeat get a precise message here; other
/// non-`KeyPart` types are caught by the trait bound in the expansion.
fn key_types(key: &[KeyItem], errors: &mut Errors) {
    for param in key.iter().filter_map(|item| item.param.as_ref()) {
        if let Some((offender, unstable)) = unstable_type(&param.ty) {
            let message = unstable.in_key(&param.ident.unraw().to_string(), offender);
            errors.push(syn::Error::new_spanned(offender, message));
        }
    }
}
