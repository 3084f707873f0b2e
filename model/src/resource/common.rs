//! The envelope (`apiVersion`, `kind`, `metadata`) and the small value types every kind shares.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The API group of the networking kinds.
pub const NETWORKING_GROUP: &str = "networking.istio.io";
/// The `apiVersion` values accepted for networking kinds; the first is the one served back.
pub const NETWORKING_VERSIONS: [&str; 3] = ["v1", "v1beta1", "v1alpha3"];

/// Kubernetes object metadata: the subset a gateway outside Kubernetes keeps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    /// Server-side apply's field ownership (`manager`, `operation`, `fieldsV1`, …), kept as the
    /// server wrote it; the admin API computes it, validation never looks at it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub managed_fields: Vec<serde_json::Value>,
}

impl ObjectMeta {
    /// The namespace, `default` when unset.
    pub fn namespace(&self) -> &str {
        match self.namespace.as_deref() {
            Some(ns) if !ns.is_empty() => ns,
            _ => "default",
        }
    }
}

/// A networking object: envelope plus a typed `spec`. `status` is accepted on input and ignored: the
/// server computes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Object<S> {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: S,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

/// Istio's `Percent`: a double in 0..=100.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Percent {
    #[serde(default)]
    pub value: f64,
}

/// A duration as written (`"1.5s"`, `"100ms"`); [`Duration::parse`] checks and converts it, so that a
/// bad value is a validation error that names the field rather than a decode error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Duration(pub String);

/// Why a duration string is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("invalid duration {0:?}: use a number with a unit among h, m, s, ms, us, ns (e.g. \"1.5s\", \"100ms\")")]
    Syntax(String),
    #[error("duration is too large")]
    Overflow,
}

impl Duration {
    /// Parses Go-style durations (`1h30m`, `0.5s`, `250ms`) into a std duration.
    pub fn parse(&self) -> Result<std::time::Duration, DurationError> {
        parse_duration(&self.0)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses a Go-style duration string (a sequence of decimal numbers, each with a unit).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, DurationError> {
    let err = || DurationError::Syntax(s.to_string());
    let t = s.trim();
    if t.is_empty() {
        return Err(err());
    }
    if t == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    let bytes = t.as_bytes();
    let mut i = 0;
    let mut total: u128 = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
            i += 1;
        }
        let num = &t[start..i];
        if num.is_empty() || num.matches('.').count() > 1 || num == "." {
            return Err(err());
        }
        let ustart = i;
        while i < bytes.len() && !(bytes[i].is_ascii_digit() || bytes[i] == b'.') {
            i += 1;
        }
        let unit_ns: u128 = match &t[ustart..i] {
            "h" => 3_600_000_000_000,
            "m" => 60_000_000_000,
            "s" => 1_000_000_000,
            "ms" => 1_000_000,
            "us" | "µs" => 1_000,
            "ns" => 1,
            _ => return Err(err()),
        };
        let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
        let int_v: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| DurationError::Overflow)?
        };
        let mut v = int_v.checked_mul(unit_ns).ok_or(DurationError::Overflow)?;
        let mut scale = unit_ns;
        for c in frac_part.bytes().take(18) {
            scale /= 10;
            v += u128::from(c - b'0') * scale;
        }
        total = total.checked_add(v).ok_or(DurationError::Overflow)?;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| DurationError::Overflow)?;
    Ok(std::time::Duration::new(
        secs,
        (total % 1_000_000_000) as u32,
    ))
}

/// A port selector `{number}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortSelector {
    #[serde(default)]
    pub number: i64,
}

/// A label selector `{matchLabels}` (DestinationRule `workloadSelector`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        let d = |s: &str| parse_duration(s).map(|d| d.as_nanos());
        assert_eq!(d("1.5s"), Ok(1_500_000_000));
        assert_eq!(d("100ms"), Ok(100_000_000));
        assert_eq!(d("1h30m"), Ok(5_400_000_000_000));
        assert_eq!(d("0s"), Ok(0));
        assert_eq!(d(".5s"), Ok(500_000_000));
        assert!(d("5").is_err());
        assert!(d("abc").is_err());
        assert!(d("").is_err());
        assert!(d("1.2.3s").is_err());
        assert!(d("5d").is_err());
    }
}
