//! Parses and validates `#[idempotent(...)]`. Everything here runs before any code is
//! generated, so `expand` receives a configuration that is known to be valid.

use proc_macro2::Span;
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

/// One part of the key: an argument or a field path rooted at one, such as `order.id`.
pub(crate) struct KeyPart {
    /// The expression as written in the key string (spans point at the string).
    pub(crate) expr: Expr,
    /// The argument it starts from.
    pub(crate) root: String,
    /// Whether it is the whole argument (not a field of it).
    pub(crate) whole: bool,
}

/// A function parameter that is not `self`.
pub(crate) struct Param {
    pub(crate) ident: Ident,
    pub(crate) ty: Type,
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
    pub(crate) fingerprinted: Vec<Param>,
    pub(crate) ttl_ms: u64,
    pub(crate) lease_ms: u64,
    pub(crate) store: Option<Expr>,
    pub(crate) namespace: Option<LitStr>,
    pub(crate) on_in_flight: InFlight,
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

impl Config {
    pub(crate) fn new(args: Args, function: &ItemFn) -> syn::Result<Config> {
        let mut errors = Errors::default();
        let signature = &function.sig;

        if signature.asyncness.is_none() {
            errors.push(syn::Error::new_spanned(
                signature.fn_token,
                "`#[idempotent]` goes on an `async fn`; make this function `async`",
            ));
        }

        let return_type = match &signature.output {
            ReturnType::Default => {
                errors.push(syn::Error::new_spanned(
                    &signature.ident,
                    "an `#[idempotent]` function must return `Result<T, E>`; this one returns `()`",
                ));
                None
            }
            ReturnType::Type(_, ty) => match &**ty {
                Type::Path(_) => Some((**ty).clone()),
                other => {
                    errors.push(syn::Error::new_spanned(
                        other,
                        "an `#[idempotent]` function must return `Result<T, E>`",
                    ));
                    None
                }
            },
        };

        let mut params = Vec::new();
        let mut has_receiver = false;
        for input in &signature.inputs {
            match input {
                FnArg::Receiver(_) => has_receiver = true,
                FnArg::Typed(typed) => match &*typed.pat {
                    Pat::Ident(pat) if pat.subpat.is_none() => params.push(Param {
                        ident: pat.ident.clone(),
                        ty: (*typed.ty).clone(),
                    }),
                    other => errors.push(syn::Error::new_spanned(
                        other,
                        "`#[idempotent]` needs a plain name for every argument; destructure it inside the body",
                    )),
                },
            }
        }
        let names: Vec<String> = params.iter().map(|p| p.ident.to_string()).collect();
        let name_list = describe_names(&names, has_receiver);

        let key = match &args.key {
            None => {
                errors.push(syn::Error::new(
                    Span::call_site(),
                    "missing `key`: name the arguments that identify the operation, such as `key = \"order_id, action\"`",
                ));
                Vec::new()
            }
            Some(literal) => parse_key(literal, &names, has_receiver, &name_list, &mut errors),
        };

        let ttl_ms = match &args.ttl {
            Some(literal) => parse_duration_option(literal, "ttl", &mut errors),
            None => 24 * 60 * 60 * 1000,
        };
        let lease_ms = match &args.lease {
            Some(literal) => parse_duration_option(literal, "lease", &mut errors),
            None => 30 * 1000,
        };

        let mut skipped: Vec<String> = Vec::new();
        if let Some(literal) = &args.skip {
            for (ident, span) in split_names(literal) {
                if ident.is_empty() {
                    errors.push(syn::Error::new(
                        span,
                        "`skip` has an empty name; write `skip = \"db, client\"`",
                    ));
                } else if !names.contains(&ident) {
                    errors.push(syn::Error::new(
                        span,
                        format!("`skip` names `{ident}`, which is not an argument of this function; {name_list}"),
                    ));
                } else if skipped.contains(&ident) {
                    errors.push(syn::Error::new(
                        span,
                        format!("`{ident}` appears twice in `skip`"),
                    ));
                } else if key.iter().any(|part| part.whole && part.root == ident) {
                    errors.push(syn::Error::new(
                        span,
                        format!("`{ident}` is part of the key and is never fingerprinted; remove it from `skip`"),
                    ));
                } else {
                    skipped.push(ident);
                }
            }
        }

        // `store = arg` names the store argument: it is not part of the request.
        let store_param = match &args.store {
            Some(Expr::Path(path)) if path.qself.is_none() => {
                path.path.get_ident().map(Ident::to_string)
            }
            _ => None,
        };

        if let Some(literal) = &args.namespace {
            if literal.value().trim().is_empty() {
                errors.push(syn::Error::new_spanned(
                    literal,
                    "`namespace` is empty; write `namespace = \"orders.charge\"`",
                ));
            }
        }

        let on_in_flight = match &args.on_in_flight {
            None => InFlight::Wait,
            Some(literal) => {
                match literal.value().as_str() {
                    "wait" => InFlight::Wait,
                    "reject" => InFlight::Reject,
                    other => {
                        errors.push(syn::Error::new_spanned(
                        literal,
                        format!("unknown `on_in_flight` policy `{other}`; use \"wait\" or \"reject\""),
                    ));
                        InFlight::Wait
                    }
                }
            }
        };

        let krate = match &args.krate {
            None => syn::parse_quote!(::idempotent_core),
            Some(literal) => match literal.parse::<syn::Path>() {
                Ok(path) => path,
                Err(_) => {
                    errors.push(syn::Error::new_spanned(
                        literal,
                        "`crate` takes a path, such as `crate = \"my_idempotent\"`",
                    ));
                    syn::parse_quote!(::idempotent_core)
                }
            },
        };

        let mut fingerprinted = Vec::new();
        for param in params {
            let name = param.ident.to_string();
            let in_key = key.iter().any(|part| part.whole && part.root == name);
            let is_store = store_param.as_deref() == Some(name.as_str());
            if in_key || is_store || skipped.contains(&name) {
                continue;
            }
            if let Some((offender, reason)) = non_deterministic_type(&param.ty) {
                errors.push(syn::Error::new_spanned(
                    offender,
                    format!(
                        "`{name}` is fingerprinted, but {reason}, so every retry would be rejected as a payload mismatch; add it to `skip = \"{name}\"`"
                    ),
                ));
            }
            fingerprinted.push(param);
        }

        // Key arguments with a type that can never be deterministic get a precise message
        // here; other non-`KeyPart` types are caught by the trait bound in the expansion.
        for part in key.iter().filter(|part| part.whole) {
            let Some(param) = signature.inputs.iter().find_map(|input| match input {
                FnArg::Typed(typed) => match &*typed.pat {
                    Pat::Ident(pat) if pat.ident == part.root => Some(&typed.ty),
                    _ => None,
                },
                FnArg::Receiver(_) => None,
            }) else {
                continue;
            };
            if let Some((offender, reason)) = non_deterministic_type(param) {
                errors.push(syn::Error::new_spanned(
                    offender,
                    format!("`{}` cannot be part of the key: {reason}", part.root),
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
            cache_errors: args.cache_errors.is_some_and(|b| b.value),
            return_type,
        })
    }
}

fn describe_names(names: &[String], has_receiver: bool) -> String {
    let mut all: Vec<String> = Vec::new();
    if has_receiver {
        all.push("`self`".to_owned());
    }
    all.extend(names.iter().map(|n| format!("`{n}`")));
    if all.is_empty() {
        "the function takes no arguments".to_owned()
    } else {
        format!("the arguments are {}", all.join(", "))
    }
}

/// Splits a comma-separated list of names, keeping the literal's span for each (stable Rust
/// cannot point inside a string literal).
fn split_names(literal: &LitStr) -> Vec<(String, Span)> {
    literal
        .value()
        .split(',')
        .map(|name| (name.trim().to_owned(), literal.span()))
        .collect()
}

fn parse_key(
    literal: &LitStr,
    names: &[String],
    has_receiver: bool,
    name_list: &str,
    errors: &mut Errors,
) -> Vec<KeyPart> {
    if literal.value().trim().is_empty() {
        errors.push(syn::Error::new_spanned(
            literal,
            "`key` is empty; name at least one argument, such as `key = \"order_id\"`",
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
        let text = quote::ToTokens::to_token_stream(&expr)
            .to_string()
            .replace(' ', "");
        let root = match key_root(&expr) {
            Ok(root) => root,
            Err(message) => {
                errors.push(syn::Error::new_spanned(literal, message));
                continue;
            }
        };
        let known = if root == "self" {
            has_receiver
        } else {
            names.contains(&root)
        };
        if !known {
            errors.push(syn::Error::new_spanned(
                literal,
                format!(
                    "`key` names `{root}`, which is not an argument of this function; {name_list}"
                ),
            ));
            continue;
        }
        if seen.contains(&text) {
            errors.push(syn::Error::new_spanned(
                literal,
                format!("`{text}` appears twice in `key`"),
            ));
            continue;
        }
        seen.push(text);
        let whole = matches!(expr, Expr::Path(_));
        if whole && root == "self" {
            errors.push(syn::Error::new_spanned(
                literal,
                "`self` cannot be a key part as a whole; name a field, such as `key = \"self.tenant_id, order_id\"`",
            ));
            continue;
        }
        parts.push(KeyPart { expr, root, whole });
    }
    parts
}

/// The argument a key expression starts from, or why the expression is not allowed.
fn key_root(expr: &Expr) -> Result<String, String> {
    let rendered = || {
        quote::ToTokens::to_token_stream(expr)
            .to_string()
            .replace(' ', "")
    };
    match expr {
        Expr::Path(path) if path.qself.is_none() && path.attrs.is_empty() => {
            match path.path.get_ident() {
                Some(ident) => Ok(ident.to_string()),
                None if path.path.segments.len() == 1 && path.path.segments[0].ident == "self" => {
                    Ok("self".to_owned())
                }
                None => Err(format!(
                    "`{}` is not an argument; key parts are argument names or field paths such as `order.id`",
                    rendered()
                )),
            }
        }
        Expr::Field(field) => key_root(&field.base),
        Expr::Call(_) | Expr::MethodCall(_) | Expr::Macro(_) => Err(format!(
            "`{}` is a call: a key must be computed from the arguments alone, and a call such as `Utc::now()`, `Uuid::new_v4()` or `rand::random()` returns a different value on every retry",
            rendered()
        )),
        Expr::Lit(_) => Err(format!(
            "`{}` is a literal; constants add nothing to a key (use `namespace` to scope keys)",
            rendered()
        )),
        _ => Err(format!(
            "`{}` is not allowed in `key`; key parts are argument names or field paths such as `order.id`",
            rendered()
        )),
    }
}

fn parse_duration_option(literal: &LitStr, name: &str, errors: &mut Errors) -> u64 {
    match parse_duration_ms(&literal.value()) {
        Ok(0) => {
            errors.push(syn::Error::new_spanned(
                literal,
                format!("`{name}` must be greater than zero"),
            ));
            1
        }
        Ok(ms) => ms,
        Err(problem) => {
            errors.push(syn::Error::new_spanned(
                literal,
                format!("invalid `{name}`: {problem}"),
            ));
            1
        }
    }
}

/// Parses `"24h"`, `"1h30m"`, `"500ms"` into milliseconds.
pub(crate) fn parse_duration_ms(text: &str) -> Result<u64, String> {
    const EXAMPLES: &str =
        "write a duration such as \"30s\", \"24h\" or \"1h30m\" (units ms, s, m, h, d)";
    if text.is_empty() {
        return Err(format!("it is empty; {EXAMPLES}"));
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
                "expected a number at `{}`; {EXAMPLES}",
                &text[digits_start..]
            ));
        }
        let number: u64 = text[digits_start..i]
            .parse()
            .map_err(|_| format!("`{}` is too large", &text[digits_start..i]))?;
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
            "" => return Err(format!("`{number}` has no unit; {EXAMPLES}")),
            other => return Err(format!("unknown unit `{other}`; use ms, s, m, h or d")),
        };
        let part = number
            .checked_mul(factor)
            .ok_or_else(|| format!("`{text}` overflows"))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| format!("`{text}` overflows"))?;
    }
    Ok(total)
}

/// Names found in types that can never give the same key on a retry, with the reason.
fn non_deterministic_type(ty: &Type) -> Option<(&Ident, &'static str)> {
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
        if TIMESTAMPS.contains(&name.as_str()) {
            found = Some((ident, "a timestamp changes on every retry"));
        } else if HASHED.contains(&name.as_str()) {
            found = Some((
                ident,
                "a `HashMap`/`HashSet` iterates in a different order in every process (use `BTreeMap`/`BTreeSet`)",
            ));
        } else if RANDOM.contains(&name.as_str()) {
            found = Some((
                ident,
                "a random generator gives different values on every call",
            ));
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
    use super::parse_duration_ms;

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
}
