//! The label-selector grammar of Kubernetes, for a CatalogSource's
//! `pullsecret-injector.io/namespace-selector` annotation: the text form (`=`, `==`, `!=`, `in`,
//! `notin`, `key`, `!key`, comma-separated) or a JSON `LabelSelector`. A selector that does not
//! parse is an error: the caller treats it as matching nothing, never as matching everything.

use std::collections::BTreeSet;

use kube::core::{Expression, Selector};

pub fn parse(text: &str) -> Result<Selector, String> {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    if text.trim_start().starts_with('{') {
        let selector: LabelSelector = serde_json::from_str(text).map_err(|e| e.to_string())?;
        return Selector::try_from(selector).map_err(|e| e.to_string());
    }
    let mut expressions = Vec::new();
    for term in terms(text)? {
        expressions.push(expression(term)?);
    }
    Ok(expressions.into_iter().collect())
}

/// The comma-separated terms, commas inside a `( ... )` set not counted.
fn terms(text: &str) -> Result<Vec<&str>, String> {
    let (mut terms, mut depth, mut start) = (Vec::new(), 0usize, 0);
    for (at, c) in text.char_indices() {
        match c {
            '(' if depth == 0 => depth = 1,
            ')' if depth == 1 => depth = 0,
            '(' | ')' => return Err(format!("unbalanced parentheses in {text:?}")),
            ',' if depth == 0 => {
                terms.push(text[start..at].trim());
                start = at + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("unbalanced parentheses in {text:?}"));
    }
    terms.push(text[start..].trim());
    if terms.iter().any(|t| t.is_empty()) && !(terms.len() == 1 && text.trim().is_empty()) {
        return Err(format!("empty term in {text:?}"));
    }
    Ok(terms.into_iter().filter(|t| !t.is_empty()).collect())
}

fn expression(term: &str) -> Result<Expression, String> {
    if let Some(key) = term.strip_prefix('!') {
        return Ok(Expression::DoesNotExist(key_of(key.trim(), term)?));
    }
    for (operator, make) in [
        ("!=", Expression::NotEqual as fn(String, String) -> Expression),
        ("==", Expression::Equal),
        ("=", Expression::Equal),
    ] {
        if let Some((key, value)) = term.split_once(operator) {
            return Ok(make(key_of(key.trim(), term)?, value_of(value.trim(), term)?));
        }
    }
    if let Some(open) = term.find('(') {
        let (head, set) = (term[..open].trim(), &term[open..]);
        let values = set
            .strip_prefix('(')
            .and_then(|s| s.strip_suffix(')'))
            .ok_or_else(|| format!("a set must end the term: {term:?}"))?;
        let values: BTreeSet<String> = values.split(',').map(|v| value_of(v.trim(), term)).collect::<Result<_, _>>()?;
        let words: Vec<&str> = head.split_whitespace().collect();
        return match words.as_slice() {
            [key, "in"] => Ok(Expression::In(key_of(key, term)?, values)),
            [key, "notin"] => Ok(Expression::NotIn(key_of(key, term)?, values)),
            _ => Err(format!("expected `key in (...)` or `key notin (...)`: {term:?}")),
        };
    }
    Ok(Expression::Exists(key_of(term, term)?))
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63 characters.
fn key_of(key: &str, term: &str) -> Result<String, String> {
    let name = key.rsplit_once('/').map_or(
        key,
        |(prefix, name)| {
            if prefix.is_empty() || prefix.len() > 253 { "" } else { name }
        },
    );
    let prefix_ok = key.rsplit_once('/').is_none_or(|(prefix, _)| {
        prefix.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
    });
    if !prefix_ok || !valid_name(name, false) {
        return Err(format!("invalid label key {key:?} in {term:?}"));
    }
    Ok(key.to_string())
}

fn value_of(value: &str, term: &str) -> Result<String, String> {
    if !valid_name(value, true) {
        return Err(format!("invalid label value {value:?} in {term:?}"));
    }
    Ok(value.to_string())
}

/// At most 63 of `[A-Za-z0-9._-]`, beginning and ending alphanumeric (empty only for values).
fn valid_name(name: &str, may_be_empty: bool) -> bool {
    if name.is_empty() {
        return may_be_empty;
    }
    let alphanumeric = |c: char| c.is_ascii_alphanumeric();
    name.len() <= 63
        && name.chars().all(|c| alphanumeric(c) || matches!(c, '.' | '_' | '-'))
        && name.starts_with(alphanumeric)
        && name.ends_with(alphanumeric)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kube::core::SelectorExt;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn matches(selector: &str, pairs: &[(&str, &str)]) -> bool {
        parse(selector).unwrap_or_else(|e| panic!("{selector}: {e}")).matches(&labels(pairs))
    }

    /// The examples of the Kubernetes documentation ("Labels and Selectors").
    #[test]
    fn equality_based_requirements() {
        assert!(matches("environment = production", &[("environment", "production")]));
        assert!(matches("environment==production", &[("environment", "production")]));
        assert!(!matches("environment = production", &[("environment", "qa")]));
        assert!(matches("tier != frontend", &[("tier", "backend")]));
        assert!(matches("tier != frontend", &[]), "!= matches objects without the key");
        assert!(!matches("tier != frontend", &[("tier", "frontend")]));
        assert!(matches("environment=production,tier!=frontend", &[("environment", "production"), ("tier", "db")]));
        assert!(!matches(
            "environment=production,tier!=frontend",
            &[("environment", "production"), ("tier", "frontend")]
        ));
    }

    #[test]
    fn set_based_requirements() {
        assert!(matches("environment in (production, qa)", &[("environment", "qa")]));
        assert!(!matches("environment in (production, qa)", &[("environment", "dev")]));
        assert!(matches("tier notin (frontend, backend)", &[("tier", "db")]));
        assert!(matches("tier notin (frontend, backend)", &[]));
        assert!(!matches("tier notin (frontend,backend)", &[("tier", "backend")]));
        assert!(matches("partition", &[("partition", "a")]));
        assert!(!matches("partition", &[]));
        assert!(matches("!partition", &[("other", "a")]));
        assert!(!matches("!partition", &[("partition", "a")]));
        assert!(matches(
            "partition in (customerA, customerB),environment!=qa",
            &[("partition", "customerA"), ("environment", "prod")]
        ));
        assert!(matches("app.kubernetes.io/part-of in (x)", &[("app.kubernetes.io/part-of", "x")]));
        assert!(matches("env!=prod", &[("env", "dev")]), "the case that used to be read as the key `env!`");
    }

    #[test]
    fn json_selectors_are_read_too() {
        let json =
            r#"{"matchLabels":{"tier":"prod"},"matchExpressions":[{"key":"zone","operator":"NotIn","values":["x"]}]}"#;
        assert!(matches(json, &[("tier", "prod"), ("zone", "y")]));
        assert!(!matches(json, &[("tier", "prod"), ("zone", "x")]));
    }

    #[test]
    fn what_does_not_parse_is_an_error() {
        for bad in [
            "env!",
            "in (a)",
            "key in (a",
            "key in a",
            "key notin",
            "=v",
            "a,,b",
            "key = bad value",
            "key in (a,b))",
            "-key",
            "{broken",
            "key = (a)",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} must not parse");
        }
    }
}
