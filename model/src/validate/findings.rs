//! The collector every check writes into: errors as Kubernetes causes with Kubernetes' message
//! prefixes (`Invalid value: …`, `Required value: …`), warnings as `<field path>: <text>`.
//!
//! Values shown in messages are quoted like Go's `%q` for strings and cut after
//! [`MAX_SHOWN_CHARS`] characters, so that a huge body never ends up in an error message.

use super::path::FieldPath;
use super::{Reason, Report, Violation};
use std::fmt::Display;

/// How many characters of a string value a message repeats.
pub(crate) const MAX_SHOWN_CHARS: usize = 80;

/// A value as it appears after `Invalid value: ` or `Duplicate value: `.
pub(crate) trait Shown {
    fn shown(&self) -> String;
}

impl Shown for str {
    fn shown(&self) -> String {
        match self.char_indices().nth(MAX_SHOWN_CHARS) {
            Some((cut, _)) => format!("{:?}...", self.get(..cut).unwrap_or_default()),
            None => format!("{self:?}"),
        }
    }
}

impl Shown for String {
    fn shown(&self) -> String {
        self.as_str().shown()
    }
}

impl Shown for i64 {
    fn shown(&self) -> String {
        self.to_string()
    }
}

impl Shown for usize {
    fn shown(&self) -> String {
        self.to_string()
    }
}

impl Shown for f64 {
    fn shown(&self) -> String {
        self.to_string()
    }
}

/// A value that must not be repeated (private key material): shown as `"<redacted>"`.
pub(crate) struct Redacted;

impl Shown for Redacted {
    fn shown(&self) -> String {
        "\"<redacted>\"".to_string()
    }
}

/// Errors and warnings found so far, in the order the fields were visited.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    errors: Vec<Violation>,
    warnings: Vec<String>,
}

impl Findings {
    fn push(&mut self, path: &FieldPath, reason: Reason, message: String) {
        self.errors.push(Violation {
            field: path.to_string(),
            reason,
            message,
        });
    }

    /// `Invalid value: <value>: <detail>`.
    pub fn invalid<V: Shown + ?Sized>(
        &mut self,
        path: &FieldPath,
        value: &V,
        detail: impl Display,
    ) {
        let message = format!("Invalid value: {}: {detail}", value.shown());
        self.push(path, Reason::FieldValueInvalid, message);
    }

    /// `Required value: <what is needed>`.
    pub fn required(&mut self, path: &FieldPath, detail: impl Display) {
        self.push(
            path,
            Reason::FieldValueRequired,
            format!("Required value: {detail}"),
        );
    }

    /// `Duplicate value: <value>: <detail>` (the detail names the first occurrence).
    pub fn duplicate<V: Shown + ?Sized>(
        &mut self,
        path: &FieldPath,
        value: &V,
        detail: impl Display,
    ) {
        let message = format!("Duplicate value: {}: {detail}", value.shown());
        self.push(path, Reason::FieldValueDuplicate, message);
    }

    /// `Unsupported value: <value>: supported values: "a", "b"`.
    pub fn not_supported<V: Shown + ?Sized>(
        &mut self,
        path: &FieldPath,
        value: &V,
        supported: &[&str],
    ) {
        let list = supported
            .iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let message = format!(
            "Unsupported value: {}: supported values: {list}",
            value.shown()
        );
        self.push(path, Reason::FieldValueNotSupported, message);
    }

    /// Like [`Findings::not_supported`], with a free-form description of what is supported.
    pub fn not_supported_text<V: Shown + ?Sized>(
        &mut self,
        path: &FieldPath,
        value: &V,
        supported: impl Display,
    ) {
        let message = format!(
            "Unsupported value: {}: supported values: {supported}",
            value.shown()
        );
        self.push(path, Reason::FieldValueNotSupported, message);
    }

    /// `Forbidden: <detail>` (the detail names the conflict).
    pub fn forbidden(&mut self, path: &FieldPath, detail: impl Display) {
        self.push(
            path,
            Reason::FieldValueForbidden,
            format!("Forbidden: {detail}"),
        );
    }

    /// `Too long: <detail>` (`may not be more than 1024 bytes`, `must have at most 256 items`).
    pub fn too_long(&mut self, path: &FieldPath, detail: impl Display) {
        self.push(
            path,
            Reason::FieldValueTooLong,
            format!("Too long: {detail}"),
        );
    }

    /// A warning about `path`: `<path>: <text>`.
    pub fn warn(&mut self, path: &FieldPath, text: impl Display) {
        self.warnings.push(format!("{path}: {text}"));
    }

    /// A warning about a path already rendered as text (from outside the validator).
    pub fn warn_text(&mut self, path: &str, text: impl Display) {
        self.warnings.push(format!("{path}: {text}"));
    }

    pub fn into_report(self) -> Report {
        Report {
            errors: self.errors,
            warnings: self.warnings,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_cut_at_a_char_boundary() {
        let s = "é".repeat(200);
        let shown = s.shown();
        assert!(shown.ends_with("\"..."), "{shown}");
        assert_eq!(shown.chars().filter(|c| *c == 'é').count(), MAX_SHOWN_CHARS);
        assert_eq!("a\nb".shown(), "\"a\\nb\"");
        assert_eq!((-10i64).shown(), "-10");
        assert_eq!(0.00001f64.shown(), "0.00001");
    }
}
