//! Key expressions: the comma-separated arguments and field paths of `key = "..."`, parsed
//! with the string's spans, and the rules for what may appear there (arguments and field
//! paths rooted at one; no calls, literals or other expressions).

use syn::ext::IdentExt;
use syn::punctuated::Punctuated;
use syn::{Expr, Ident, LitStr, Token};

use crate::function::{Function, Param};
use crate::validate::Errors;

/// One item of the key: an argument or a field path rooted at one, such as `order.id`.
pub(crate) struct KeyItem {
    /// The expression as written in the key string (spans point at the string).
    pub(crate) expr: Expr,
    /// For a whole argument, that argument (the expansion points errors at its type); `None`
    /// for a field path such as `order.id` or `self.tenant`.
    pub(crate) param: Option<Param>,
}

impl KeyItem {
    /// The argument a field path reads from (`order` in `order.id`, `self` in `self.tenant`);
    /// `None` for a whole argument.
    pub(crate) fn field_root(&self) -> Option<String> {
        match self.param {
            Some(_) => None,
            None => key_root(&self.expr).ok(),
        }
    }
}

/// The items of `key = "..."`; each item that breaks a rule goes to `errors` instead.
pub(crate) fn parse_key(
    literal: &LitStr,
    function: &Function,
    errors: &mut Errors,
) -> Vec<KeyItem> {
    let names = &function.names;
    if literal.value().trim().is_empty() {
        errors.push(syn::Error::new_spanned(
            literal,
            format!(
                "`key` is empty; name the arguments that identify the operation, such as `key = \"{}\"`",
                names.example_key()
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
    let mut items: Vec<KeyItem> = Vec::new();
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
            function.param(&root).cloned()
        } else {
            None
        };
        let mut expr = expr;
        if !whole {
            bind_root(&mut expr, names.binding(&root));
        }
        items.push(KeyItem { expr, param });
    }
    items
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
            "`{}` in `key` is a literal, which adds nothing to a key; give the function a `scope = \"...\"` instead",
            render(expr)
        )),
        _ => Err(format!(
            "`{}` is not allowed in `key`; name arguments or field paths only, such as `key = \"order.id\"`",
            render(expr)
        )),
    }
}

/// `a.b` with the spaces `quote` puts between tokens removed, for messages.
fn render(expr: &Expr) -> String {
    quote::ToTokens::to_token_stream(expr)
        .to_string()
        .replace(' ', "")
}

#[cfg(test)]
mod tests {
    use super::key_root;

    fn root(text: &str) -> Result<String, String> {
        key_root(&syn::parse_str(text).expect("an expression"))
    }

    fn refused(text: &str) -> String {
        root(text).expect_err("refused")
    }

    #[test]
    fn roots() {
        assert_eq!(root("order_id"), Ok("order_id".to_owned()));
        assert_eq!(root("order.customer.id"), Ok("order".to_owned()));
        assert_eq!(root("self.tenant"), Ok("self".to_owned()));
        assert_eq!(root("r#type"), Ok("type".to_owned()));
        assert!(refused("Utc::now()").contains("the call `Utc::now()`"));
        assert!(refused("order.id()").contains("the call"));
        assert!(refused("\"x\"").contains("is a literal"));
        assert!(refused("a::b").contains("is not an argument"));
        assert!(refused("a + b").contains("is not allowed"));
    }
}
