//! Types that can never give the same key or fingerprint on a retry: timestamps
//! (`SystemTime`, `Instant`, chrono and time types), random number generators, and
//! `HashMap`/`HashSet` (their iteration order differs between processes).
//!
//! The names are recognised in the written type, so the message can say why and what to do at
//! the offending name. Anything else that is not a `KeyPart` is caught by a trait bound in the
//! expansion, with the more general message of `KeyPart`'s `on_unimplemented`.

use syn::{Ident, Type};

/// Why a type can never give the same key or fingerprint on a retry.
#[derive(Clone, Copy)]
pub(crate) enum Unstable {
    Timestamp,
    Hashed,
    Random,
}

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

impl Unstable {
    /// The message for a key argument `param` whose type contains `ty`.
    pub(crate) fn in_key(self, param: &str, ty: &Ident) -> String {
        format!(
            "`{param}` cannot be part of the key: {}; {}",
            self.describe(ty),
            self.fix(ty)
        )
    }

    /// The message for a field `field` of a type with `#[derive(KeyPart)]`, whose type
    /// contains `ty`.
    pub(crate) fn in_field(self, field: &str, ty: &Ident) -> String {
        format!(
            "field `{field}` cannot be part of a key: {}; {}, or leave the field out with `#[key_part(skip)]`",
            self.describe(ty),
            self.fix(ty)
        )
    }

    /// The message for a fingerprinted argument `param` whose type contains `ty`; `skip` is
    /// the `skip` list that would leave it out.
    pub(crate) fn in_fingerprint(self, param: &str, ty: &Ident, skip: &str) -> String {
        let what = self.describe(ty);
        match self {
            Unstable::Timestamp | Unstable::Random => format!(
                "`{param}` is fingerprinted, but {what}, so every retry would be rejected as a payload mismatch; leave it out with `skip = \"{skip}\"`"
            ),
            Unstable::Hashed => format!(
                "`{param}` is fingerprinted, but {what}, so a retry served by another process would be rejected as a payload mismatch; {}, or leave it out with `skip = \"{skip}\"`",
                self.fix(ty)
            ),
        }
    }

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
pub(crate) fn unstable_type(ty: &Type) -> Option<(&Ident, Unstable)> {
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
    use super::unstable_type;

    fn offender(ty: &str) -> Option<String> {
        let ty: syn::Type = syn::parse_str(ty).expect("a type");
        unstable_type(&ty).map(|(ident, _)| ident.to_string())
    }

    #[test]
    fn finds_the_name_anywhere_in_the_type() {
        assert_eq!(
            offender("std::time::SystemTime").as_deref(),
            Some("SystemTime")
        );
        assert_eq!(offender("&[Option<Instant>]").as_deref(), Some("Instant"));
        assert_eq!(
            offender("(u64, chrono::DateTime<Utc>)").as_deref(),
            Some("DateTime")
        );
        assert_eq!(offender("Vec<HashSet<u8>>").as_deref(), Some("HashSet"));
        assert_eq!(offender("[ThreadRng; 2]").as_deref(), Some("ThreadRng"));
        assert_eq!(offender("BTreeMap<String, u64>"), None);
        assert_eq!(offender("&str"), None);
    }
}
