//! The annotated item: what it must be (an `async fn` returning a `Result`, with a plain name
//! for every argument), and its arguments as `key`, `skip` and the messages name them.

use proc_macro2::{Span, TokenStream};
use syn::ext::IdentExt;
use syn::{FnArg, Ident, ItemFn, Pat, ReturnType, Type};

use crate::suggest::{did_you_mean, list};
use crate::validate::Errors;

/// The error for `#[idempotent]` on something that is not a function with a body, at the
/// keyword that says what it is.
pub(crate) fn not_a_function(item: TokenStream) -> syn::Error {
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

/// A function parameter that is not `self`.
#[derive(Clone)]
pub(crate) struct Param {
    pub(crate) ident: Ident,
    pub(crate) ty: Type,
}

/// What the options are checked against: the function's name, return type and arguments.
pub(crate) struct Function {
    /// The name as messages show it (without `r#`).
    pub(crate) name: String,
    /// `None` when it is not a `Result` spelled as a type path (an error was pushed).
    pub(crate) return_type: Option<Type>,
    pub(crate) params: Vec<Param>,
    pub(crate) names: Names,
}

impl Function {
    /// Checks that the function can be made idempotent; each problem goes to `errors`.
    pub(crate) fn check(function: &ItemFn, errors: &mut Errors) -> Function {
        let signature = &function.sig;
        let name = signature.ident.unraw().to_string();

        if signature.asyncness.is_none() {
            errors.push(syn::Error::new_spanned(
                signature.fn_token,
                format!("`#[idempotent]` needs an `async fn`; write `async fn {name}`"),
            ));
        }

        let return_type = match &signature.output {
            ReturnType::Default => {
                errors.push(syn::Error::new_spanned(
                    &signature.ident,
                    format!(
                        "`{name}` returns `()`, but an `#[idempotent]` function must return `Result<T, E>`; write `-> Result<(), idempotent_core::Error>` or use your own error type"
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
                            "`{name}` must return `Result<T, E>`, spelled as a type path such as `Result<Receipt, idempotent_core::Error>` or an alias of it"
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
        Function {
            name,
            return_type,
            params,
            names,
        }
    }

    /// The parameter named `name` (not `self`).
    pub(crate) fn param(&self, name: &str) -> Option<&Param> {
        self.params.iter().find(|param| param.ident.unraw() == name)
    }
}

/// The function's arguments, as the messages name them.
pub(crate) struct Names {
    params: Vec<Ident>,
    /// The receiver's `self`, if there is one.
    pub(crate) receiver: Option<Ident>,
}

impl Names {
    /// The parameter's own name token, for `self` or an argument.
    pub(crate) fn binding(&self, name: &str) -> Option<&Ident> {
        if name == "self" {
            self.receiver.as_ref()
        } else {
            self.params.iter().find(|p| p.unraw() == name)
        }
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.binding(name).is_some()
    }

    /// "did you mean `x`? the arguments are `a`, `b`" for a name that is not an argument.
    pub(crate) fn describe_unknown(&self, name: &str) -> String {
        let mut all: Vec<String> = Vec::new();
        if self.receiver.is_some() {
            all.push("self".to_owned());
        }
        all.extend(self.params.iter().map(|p| p.unraw().to_string()));
        if all.is_empty() {
            return "this function takes no arguments".to_owned();
        }
        format!(
            "{}the arguments are {}",
            did_you_mean(name, &all),
            list(&all)
        )
    }

    /// A plausible `key` for this function, for messages.
    pub(crate) fn example_key(&self) -> String {
        self.params
            .first()
            .map_or_else(|| "order_id".to_owned(), |p| p.unraw().to_string())
    }
}
