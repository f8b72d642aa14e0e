//! The attribute's options as written. One table names each option, the form of its value and
//! an example; it drives parsing, the "given twice" check and the suggestion for an unknown
//! name, so a new option is one line here (and its check in `validate`).
//!
//! Nothing here knows what an option means: `validate` checks the values against the function.

use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::{Expr, Ident, LitBool, LitStr, Token};

use crate::suggest::{did_you_mean, list};

/// Declares the options: `field: ValueType = "name", example "value";`. Generates [`Options`]
/// (one slot per option), [`NAMES`] and the dispatch from a name to its slot.
macro_rules! options {
    ($( $(#[$doc:meta])* $field:ident: $ty:ty = $name:literal, example $example:literal; )*) => {
        /// The attribute's options as written, each given at most once, before they are checked
        /// against the function.
        #[derive(Default)]
        pub(crate) struct Options {
            $( $(#[$doc])* pub(crate) $field: Option<$ty>, )*
        }

        /// Every option's name, in the order messages list them.
        pub(crate) const NAMES: &[&str] = &[$($name),*];

        impl Options {
            /// Parses the value of option `name`, after its `=`, into its slot.
            fn parse_value(&mut self, name: &Ident, input: ParseStream<'_>) -> syn::Result<()> {
                $(
                    if name == $name {
                        let value = <$ty as Value>::parse(input, $name, $example)?;
                        return set_once(&mut self.$field, value, name);
                    }
                )*
                Err(unknown_option(name))
            }

            /// The names of the options that are set.
            #[cfg(test)]
            fn given(&self) -> Vec<&'static str> {
                let mut given = Vec::new();
                $( if self.$field.is_some() { given.push($name); } )*
                given
            }

            /// Each option with its example value: `key = "order_id, action"`.
            #[cfg(test)]
            fn examples() -> Vec<(&'static str, &'static str)> {
                vec![$( ($name, $example) ),*]
            }
        }
    };
}

options! {
    /// `key = "order_id, action"`: the arguments or field paths that identify the operation.
    key: LitStr = "key", example "\"order_id, action\"";
    /// `ttl = "24h"`: how long a result is replayed.
    ttl: LitStr = "ttl", example "\"24h\"";
    /// `lease = "30s"`: how long a claim holds without a heartbeat.
    lease: LitStr = "lease", example "\"30s\"";
    /// `store = <expr>`: the store, evaluated on every call.
    store: Expr = "store", example "self.store";
    /// `transaction = "tx"`: run the body in the store's transaction, bound to `tx`.
    transaction: LitStr = "transaction", example "\"tx\"";
    /// `scope = "orders.charge"`: the scope of the function's records.
    scope: LitStr = "scope", example "\"orders.charge\"";
    /// `skip = "db, client"`: arguments left out of the fingerprint.
    skip: LitStr = "skip", example "\"db, client\"";
    /// `on_in_flight = "wait" | "reject"`.
    on_in_flight: LitStr = "on_in_flight", example "\"reject\"";
    /// `on_store_error = "fail_closed" | "fail_open"`.
    on_store_error: LitStr = "on_store_error", example "\"fail_open\"";
    /// `cache_errors = true`: store and replay `Err` results too.
    cache_errors: LitBool = "cache_errors", example "true";
    /// `crate = "path"`: where `idempotent_core` is.
    krate: LitStr = "crate", example "\"my_idempotent\"";
}

impl Parse for Options {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut options = Options::default();
        while !input.is_empty() {
            // `crate` is a keyword: `parse_any` accepts it as a name like any other.
            if !input.peek(Ident::peek_any) {
                return Err(not_an_option(input));
            }
            let name = input.call(Ident::parse_any)?;
            if !NAMES.iter().any(|known| name == known) {
                return Err(unknown_option(&name));
            }
            input.parse::<Token![=]>()?;
            options.parse_value(&name, input)?;
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(options)
    }
}

/// The form an option's value takes (after its `=`), and what to write instead when it is
/// written otherwise.
trait Value: Sized {
    fn parse(input: ParseStream<'_>, name: &str, example: &str) -> syn::Result<Self>;
}

impl Value for LitStr {
    fn parse(input: ParseStream<'_>, name: &str, example: &str) -> syn::Result<Self> {
        input.parse::<LitStr>().map_err(|error| {
            syn::Error::new(
                error.span(),
                format!("`{name}` takes a string, such as `{name} = {example}`"),
            )
        })
    }
}

impl Value for LitBool {
    fn parse(input: ParseStream<'_>, name: &str, example: &str) -> syn::Result<Self> {
        input.parse::<LitBool>().map_err(|error| {
            syn::Error::new(
                error.span(),
                format!("`{name}` takes `true` or `false`, such as `{name} = {example}`"),
            )
        })
    }
}

impl Value for Expr {
    /// Any expression; what it must be (a store) is checked by the compiler in the expansion.
    fn parse(input: ParseStream<'_>, _name: &str, _example: &str) -> syn::Result<Self> {
        input.parse::<Expr>()
    }
}

/// Fills `slot` with the value of option `name`, at `name` if it was given before.
fn set_once<T>(slot: &mut Option<T>, value: T, name: &Ident) -> syn::Result<()> {
    if slot.is_some() {
        return Err(syn::Error::new(
            name.span(),
            format!("duplicate option `{name}`; give each option once"),
        ));
    }
    *slot = Some(value);
    Ok(())
}

/// The error for a token where an option's name belongs, such as the key written on its own
/// (`#[idempotent("order_id")]`).
fn not_an_option(input: ParseStream<'_>) -> syn::Error {
    let example = match input.fork().parse::<LitStr>() {
        Ok(literal) => format!("key = {}", literal.token()),
        Err(_) => "key = \"order_id\"".to_owned(),
    };
    input.error(format!(
        "expected the name of an option, such as `{example}`; the options are {}",
        list(NAMES)
    ))
}

fn unknown_option(name: &Ident) -> syn::Error {
    let name_text = name.unraw().to_string();
    syn::Error::new(
        name.span(),
        format!(
            "unknown option `{name_text}`; {}the options are {}",
            did_you_mean(&name_text, NAMES),
            list(NAMES)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::{NAMES, Options};

    fn parse(text: &str) -> syn::Result<Options> {
        syn::parse_str::<Options>(text)
    }

    fn error(text: &str) -> String {
        match parse(text) {
            Ok(_) => panic!("`{text}` parsed"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn the_table_names_each_option_once() {
        for (i, name) in NAMES.iter().enumerate() {
            assert!(!NAMES[..i].contains(name), "`{name}` is in the table twice");
        }
        assert_eq!(Options::examples().len(), NAMES.len());
    }

    #[test]
    fn every_option_parses() {
        for (name, example) in Options::examples() {
            let options = parse(&format!("{name} = {example}"))
                .unwrap_or_else(|error| panic!("`{name} = {example}`: {error}"));
            assert_eq!(options.given(), [name]);
        }
        let all = Options::examples()
            .iter()
            .map(|(name, example)| format!("{name} = {example}"))
            .collect::<Vec<_>>()
            .join(", ");
        let options = parse(&format!("{all},")).expect("every option, and a trailing comma");
        assert_eq!(options.given(), NAMES);
        assert!(parse("").expect("no options").given().is_empty());
    }

    #[test]
    fn each_duplicate_is_caught() {
        for (name, example) in Options::examples() {
            assert_eq!(
                error(&format!("{name} = {example}, {name} = {example}")),
                format!("duplicate option `{name}`; give each option once"),
            );
        }
        // Between other options, and with another value.
        assert_eq!(
            error("ttl = \"1h\", key = \"id\", ttl = \"2h\""),
            "duplicate option `ttl`; give each option once"
        );
    }

    #[test]
    fn each_unknown_option_gets_its_suggestion() {
        let typos = [
            ("kye", "key"),
            ("tll", "ttl"),
            ("leese", "lease"),
            ("stor", "store"),
            ("transacton", "transaction"),
            ("scop", "scope"),
            ("skp", "skip"),
            ("on_inflight", "on_in_flight"),
            ("on_store_eror", "on_store_error"),
            ("cache_error", "cache_errors"),
            ("krate", "crate"),
        ];
        assert_eq!(typos.len(), NAMES.len(), "a typo for every option");
        let list = "the options are `key`, `ttl`, `lease`, `store`, `transaction`, `scope`, `skip`, `on_in_flight`, `on_store_error`, `cache_errors`, `crate`";
        for (typo, option) in typos {
            assert_eq!(
                error(&format!("{typo} = \"x\"")),
                format!("unknown option `{typo}`; did you mean `{option}`? {list}"),
            );
        }
        assert_eq!(
            error("retries = 3"),
            format!("unknown option `retries`; {list}")
        );
    }

    #[test]
    fn values_of_the_wrong_form() {
        assert_eq!(
            error("ttl = 5"),
            "`ttl` takes a string, such as `ttl = \"24h\"`"
        );
        assert_eq!(
            error("cache_errors = \"yes\""),
            "`cache_errors` takes `true` or `false`, such as `cache_errors = true`"
        );
        assert_eq!(error("key \"id\""), "expected `=`");
        assert_eq!(error("key = \"id\" ttl = \"1h\""), "expected `,`");
        let list = "the options are `key`, `ttl`, `lease`, `store`, `transaction`, `scope`, `skip`, `on_in_flight`, `on_store_error`, `cache_errors`, `crate`";
        assert_eq!(
            error("\"order_id\""),
            format!("expected the name of an option, such as `key = \"order_id\"`; {list}")
        );
        assert_eq!(
            error("key = \"id\", 42"),
            format!("expected the name of an option, such as `key = \"order_id\"`; {list}")
        );
    }
}
