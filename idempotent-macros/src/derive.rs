//! `#[derive(KeyPart)]`: the canonical encoding of a struct or enum, written field by field.
//!
//! - A struct encodes as the tuple of its fields, in declaration order (`begin_tuple` with the
//!   field count, then each field); a unit struct as `()`. With `#[key_part(transparent)]`, a
//!   struct of one field encodes as that field.
//! - An enum variant encodes as `begin_variant(name, field count)`, then its fields in
//!   declaration order. The name (or `#[key_part(rename = "...")]`) is the tag, not the
//!   position: reordering or inserting variants keeps every key, and two variants can never
//!   swap records.
//! - `#[key_part(skip)]` leaves a field out (it is not counted either).
//!
//! Each field is written as `<FieldType as KeyPart>::write_key_part(...)` with the field type's
//! own tokens, so a field type that is not a `KeyPart` is one error at that type. A field type
//! that can never repeat (a timestamp, a `HashMap`) is refused here, at its name, with the
//! messages of `unstable`. Each type parameter gets a `KeyPart` bound.
//!
//! On an error, an impl with an empty body is still emitted next to it, so that the places
//! that use the type as a key part report nothing more.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Attribute, Data, DeriveInput, Fields, Ident, LitStr, Member, Type};

use crate::suggest::{did_you_mean, list};
use crate::unstable::unstable_type;
use crate::validate::Errors;

/// The derive: parse, check, generate.
pub(crate) fn derive(input: TokenStream) -> TokenStream {
    let input = match syn::parse2::<DeriveInput>(input) {
        Ok(input) => input,
        Err(error) => return error.to_compile_error(),
    };
    let mut errors = Errors::default();
    let container = Container::check(&input, &mut errors);
    let krate = container
        .krate
        .clone()
        .unwrap_or_else(|| syn::parse_quote!(::idempotent_core));
    let body = body(&input, &container, &krate, &mut errors);
    match errors.finish() {
        Ok(()) => implementation(&input, &krate, body),
        Err(error) => {
            let mut output = error.to_compile_error();
            output.extend(implementation(&input, &krate, quote!(let _ = __idem_out;)));
            output
        }
    }
}

/// `impl KeyPart for Type { fn write_key_part(&self, out) { <body> } }`, with a `KeyPart`
/// bound on each type parameter.
fn implementation(input: &DeriveInput, krate: &syn::Path, body: TokenStream) -> TokenStream {
    let mut generics = input.generics.clone();
    let bounded: Vec<Ident> = generics
        .type_params()
        .map(|param| param.ident.clone())
        .collect();
    if !bounded.is_empty() {
        let where_clause = generics.make_where_clause();
        for ident in bounded {
            where_clause
                .predicates
                .push(syn::parse_quote!(#ident: #krate::KeyPart));
        }
    }
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();
    let ident = &input.ident;
    quote! {
        #[automatically_derived]
        impl #impl_generics #krate::KeyPart for #ident #ty_generics #where_clause {
            fn write_key_part(&self, __idem_out: &mut #krate::KeyWriter<'_>) {
                #body
            }
        }
    }
}

/// Where a `#[key_part(...)]` attribute is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    Struct,
    Enum,
    Field,
    Variant,
}

impl Place {
    fn describe(self) -> &'static str {
        match self {
            Place::Struct => "a struct",
            Place::Enum => "an enum",
            Place::Field => "a field",
            Place::Variant => "an enum variant",
        }
    }

    /// The options that go here.
    fn options(self) -> &'static [&'static str] {
        match self {
            Place::Struct => &["crate", "transparent"],
            Place::Enum => &["crate"],
            Place::Field => &["skip"],
            Place::Variant => &["rename"],
        }
    }
}

/// Every option, and where it goes, for the message about one in the wrong place.
const OPTIONS: &[(&str, &str)] = &[
    ("crate", "the struct or enum"),
    ("transparent", "a struct with one field"),
    ("skip", "a field"),
    ("rename", "an enum variant"),
];

/// The `#[key_part(...)]` options given at one place, each at most once.
#[derive(Default)]
struct Given {
    krate: Option<syn::Path>,
    transparent: Option<Span>,
    skip: Option<Span>,
    rename: Option<LitStr>,
}

impl Given {
    fn parse(attrs: &[Attribute], place: Place, errors: &mut Errors) -> Given {
        let mut given = Given::default();
        let mut seen: Vec<String> = Vec::new();
        for attr in attrs.iter().filter(|attr| attr.path().is_ident("key_part")) {
            let parsed = attr.parse_nested_meta(|meta| {
                let name = match meta.path.get_ident() {
                    Some(ident) => ident.unraw().to_string(),
                    None => String::new(),
                };
                if !OPTIONS.iter().any(|(known, _)| *known == name) {
                    let here = place.options();
                    return Err(meta.error(format!(
                        "unknown `key_part` option `{}`; {}the options on {} are {}",
                        quote::ToTokens::to_token_stream(&meta.path)
                            .to_string()
                            .replace(' ', ""),
                        did_you_mean(&name, here),
                        place.describe(),
                        list(here)
                    )));
                }
                if !place.options().contains(&name.as_str()) {
                    let goes = OPTIONS
                        .iter()
                        .find(|(known, _)| *known == name)
                        .map_or("", |(_, goes)| goes);
                    return Err(meta.error(format!(
                        "`{name}` goes on {goes}, not on {}",
                        place.describe()
                    )));
                }
                if seen.contains(&name) {
                    return Err(meta.error(format!(
                        "duplicate `key_part` option `{name}`; give each option once"
                    )));
                }
                seen.push(name.clone());
                match name.as_str() {
                    "crate" => {
                        let literal: LitStr = meta.value()?.parse().map_err(|error| {
                            syn::Error::new(
                                error.span(),
                                "`crate` takes a string, such as `#[key_part(crate = \"my_idempotent\")]`",
                            )
                        })?;
                        match literal.parse::<syn::Path>() {
                            Ok(path) => given.krate = Some(path),
                            Err(_) => errors.push(syn::Error::new_spanned(
                                &literal,
                                format!(
                                    "`{}` is not a path; `crate` names where `idempotent_core` is, such as `#[key_part(crate = \"my_idempotent\")]`",
                                    literal.value()
                                ),
                            )),
                        }
                    }
                    "rename" => {
                        let literal: LitStr = meta.value()?.parse().map_err(|error| {
                            syn::Error::new(
                                error.span(),
                                "`rename` takes a string, such as `#[key_part(rename = \"Shipped\")]`",
                            )
                        })?;
                        given.rename = Some(literal);
                    }
                    flag => {
                        if !meta.input.is_empty() && !meta.input.peek(syn::Token![,]) {
                            return Err(meta.error(format!(
                                "`{flag}` takes no value; write `#[key_part({flag})]`"
                            )));
                        }
                        let span = meta.path.span();
                        if flag == "skip" {
                            given.skip = Some(span);
                        } else {
                            given.transparent = Some(span);
                        }
                    }
                }
                Ok(())
            });
            if let Err(error) = parsed {
                errors.push(error);
            }
        }
        given
    }
}

/// The options on the struct or enum itself.
struct Container {
    krate: Option<syn::Path>,
    transparent: Option<Span>,
}

impl Container {
    fn check(input: &DeriveInput, errors: &mut Errors) -> Container {
        let place = match input.data {
            Data::Enum(_) => Place::Enum,
            _ => Place::Struct,
        };
        let given = Given::parse(&input.attrs, place, errors);
        Container {
            krate: given.krate,
            transparent: given.transparent,
        }
    }
}

/// A field that is written: how to reach it and its type.
struct Written<'a> {
    access: TokenStream,
    ty: &'a Type,
}

/// The fields of a struct or variant that are written, in declaration order; skipped fields
/// are left out, and a field type that can never repeat is an error at its name.
/// `bind(index, member)` gives the expression that reaches a field.
fn written_fields<'a>(
    fields: &'a Fields,
    errors: &mut Errors,
    mut bind: impl FnMut(usize, &Member) -> TokenStream,
) -> Vec<Written<'a>> {
    let mut written = Vec::new();
    for (index, field) in fields.iter().enumerate() {
        let given = Given::parse(&field.attrs, Place::Field, errors);
        if given.skip.is_some() {
            continue;
        }
        let member = match &field.ident {
            Some(ident) => Member::Named(ident.clone()),
            None => Member::Unnamed(syn::Index::from(index)),
        };
        if let Some((offender, unstable)) = unstable_type(&field.ty) {
            let name = match &field.ident {
                Some(ident) => ident.unraw().to_string(),
                None => index.to_string(),
            };
            errors.push(syn::Error::new_spanned(
                offender,
                unstable.in_field(&name, offender),
            ));
        }
        written.push(Written {
            access: bind(index, &member),
            ty: &field.ty,
        });
    }
    written
}

/// `<FieldType as KeyPart>::write_key_part(<access>, out);` with the type's own tokens, so an
/// unmet bound is reported once, at the field's type.
fn write(field: &Written<'_>, krate: &syn::Path) -> TokenStream {
    let ty = field.ty;
    let access = &field.access;
    let at = Span::call_site().located_at(ty.span());
    quote_spanned! {at=>
        <#ty as #krate::KeyPart>::write_key_part(#access, __idem_out);
    }
}

fn count(n: usize) -> proc_macro2::Literal {
    proc_macro2::Literal::usize_unsuffixed(n)
}

/// The body of `write_key_part`.
fn body(
    input: &DeriveInput,
    container: &Container,
    krate: &syn::Path,
    errors: &mut Errors,
) -> TokenStream {
    match &input.data {
        Data::Struct(data) => {
            let fields = written_fields(&data.fields, errors, |_, member| quote!(&self.#member));
            if let Some(span) = container.transparent {
                if fields.len() != 1 || data.fields.len() != 1 {
                    errors.push(syn::Error::new(
                        span,
                        format!(
                            "`transparent` encodes a struct as its one field, and `{}` has {} fields{}; remove `transparent` to encode it as the tuple of its fields",
                            input.ident.unraw(),
                            data.fields.len(),
                            if fields.len() == data.fields.len() {
                                ""
                            } else {
                                " (counting skipped ones)"
                            },
                        ),
                    ));
                    return quote!();
                }
                return write(&fields[0], krate);
            }
            let n = count(fields.len());
            let writes = fields.iter().map(|field| write(field, krate));
            quote! {
                #krate::KeyWriter::begin_tuple(__idem_out, #n);
                #(#writes)*
            }
        }
        Data::Enum(data) => {
            let mut tags: Vec<(String, String)> = Vec::new();
            let mut arms = Vec::new();
            for variant in &data.variants {
                let given = Given::parse(&variant.attrs, Place::Variant, errors);
                let name = variant.ident.unraw().to_string();
                let tag = given
                    .rename
                    .as_ref()
                    .map_or_else(|| name.clone(), LitStr::value);
                if let Some((other, _)) = tags.iter().find(|(_, seen)| *seen == tag) {
                    let message = format!(
                        "the variants `{other}` and `{name}` would both be tagged `{tag}`, and share their keys; give `{name}` a tag of its own with `#[key_part(rename = \"...\")]`"
                    );
                    errors.push(match &given.rename {
                        Some(literal) => syn::Error::new_spanned(literal, message),
                        None => syn::Error::new_spanned(&variant.ident, message),
                    });
                }
                tags.push((name, tag.clone()));
                let fields = written_fields(&variant.fields, errors, |index, _| {
                    let binding = format_ident!("__idem_field_{index}");
                    quote!(#binding)
                });
                let ident = &variant.ident;
                let pattern = match &variant.fields {
                    Fields::Named(named) => {
                        let members = named.named.iter().enumerate().map(|(index, field)| {
                            let ident = &field.ident;
                            let binding = format_ident!("__idem_field_{index}");
                            quote!(#ident: #binding)
                        });
                        quote!(Self::#ident { #(#members,)* })
                    }
                    Fields::Unnamed(unnamed) => {
                        let bindings = (0..unnamed.unnamed.len())
                            .map(|index| format_ident!("__idem_field_{index}"));
                        quote!(Self::#ident(#(#bindings,)*))
                    }
                    Fields::Unit => quote!(Self::#ident),
                };
                let n = count(fields.len());
                let writes = fields.iter().map(|field| write(field, krate));
                // Skipped fields are bound too (one pattern for every field); they are unused.
                arms.push(quote! {
                    #[allow(unused_variables)]
                    #pattern => {
                        #krate::KeyWriter::begin_variant(__idem_out, #tag, #n);
                        #(#writes)*
                    }
                });
            }
            if arms.is_empty() {
                // No value of an enum without variants exists.
                return quote! {
                    let _ = __idem_out;
                    match *self {}
                };
            }
            quote! {
                match self {
                    #(#arms)*
                }
            }
        }
        Data::Union(data) => {
            errors.push(syn::Error::new_spanned(
                data.union_token,
                "`#[derive(KeyPart)]` works on structs and enums, not unions: a union does not say which of its fields holds the value; implement `KeyPart` by hand",
            ));
            quote!()
        }
    }
}
