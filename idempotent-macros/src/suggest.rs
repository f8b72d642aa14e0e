//! "Did you mean ...?": the closest known name to a misspelt one, for unknown options and for
//! names in `key` and `skip` that are not arguments.

/// "did you mean `ttl`? " when `name` is a likely typo of one of `candidates`, else "".
pub(crate) fn did_you_mean<S: AsRef<str>>(name: &str, candidates: &[S]) -> String {
    match closest(name, candidates) {
        Some(candidate) => format!("did you mean `{candidate}`? "),
        None => String::new(),
    }
}

/// "`a`, `b`, `c`", for messages that list what is allowed.
pub(crate) fn list<S: AsRef<str>>(names: &[S]) -> String {
    names
        .iter()
        .map(|name| format!("`{}`", name.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The candidate closest to `name` by edit distance, if it is close enough to be a typo.
pub(crate) fn closest<'a, S: AsRef<str>>(name: &str, candidates: &'a [S]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|candidate| (edit_distance(name, candidate.as_ref()), candidate.as_ref()))
        .filter(|&(distance, _)| distance > 0 && distance <= 1.max(name.len() / 3))
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, candidate)| candidate)
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

#[cfg(test)]
mod tests {
    use super::{closest, did_you_mean, edit_distance, list};

    #[test]
    fn suggestions() {
        assert_eq!(edit_distance("acton", "action"), 1);
        assert_eq!(edit_distance("", "ab"), 2);
        assert_eq!(edit_distance("tll", "ttl"), 1);
        assert_eq!(edit_distance("scope", "scope"), 0);
        let names = ["order_id".to_owned(), "action".to_owned()];
        assert_eq!(closest("acton", &names), Some("action"));
        assert_eq!(closest("orderid", &names), Some("order_id"));
        assert_eq!(closest("client", &names), None);
        assert_eq!(did_you_mean("acton", &names), "did you mean `action`? ");
        assert_eq!(did_you_mean("client", &names), "");
        assert_eq!(list(&names), "`order_id`, `action`");
    }
}
