//! `FieldPath`: the location of a field in Kubernetes notation (`spec.http[0].route[1].weight`,
//! `spec.http[0].match[0].headers[x-foo]`, `data[tls.crt]`), built one step at a time.

use std::fmt;

/// A field location. Cheap to extend: every step returns a new path, so a parent can be reused for
/// each of its children.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FieldPath(String);

impl FieldPath {
    /// A path of one top-level field (`spec`, `metadata`, `data`).
    pub fn root(name: &str) -> Self {
        FieldPath(name.to_string())
    }

    /// The child field `name` (`spec` → `spec.http`).
    pub fn field(&self, name: &str) -> Self {
        let mut s = String::with_capacity(self.0.len() + 1 + name.len());
        s.push_str(&self.0);
        if !s.is_empty() {
            s.push('.');
        }
        s.push_str(name);
        FieldPath(s)
    }

    /// The list element `i` (`spec.http` → `spec.http[0]`).
    pub fn index(&self, i: usize) -> Self {
        FieldPath(format!("{}[{i}]", self.0))
    }

    /// The map entry `key` (`headers` → `headers[x-foo]`), as Kubernetes writes map keys.
    pub fn key(&self, key: &str) -> Self {
        FieldPath(format!("{}[{key}]", self.0))
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_kubernetes_paths() {
        let http = FieldPath::root("spec").field("http").index(0);
        assert_eq!(
            http.field("route").index(1).field("weight").as_str(),
            "spec.http[0].route[1].weight"
        );
        assert_eq!(
            http.field("match")
                .index(0)
                .field("headers")
                .key("x-foo")
                .to_string(),
            "spec.http[0].match[0].headers[x-foo]"
        );
        assert_eq!(
            FieldPath::root("data").key("tls.crt").as_str(),
            "data[tls.crt]"
        );
    }
}
