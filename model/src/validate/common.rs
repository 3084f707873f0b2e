//! Checks every kind shares: names (RFC 1123 labels and subdomains), hosts (Istio's wildcard domain
//! rules, IPs, CIDRs), labels, durations, percentages, ports, counts, header names and values, RE2
//! regular expressions, `StringMatch`, `exportTo` and object metadata; plus [`HostIndex`], which
//! finds hosts that cover one another without comparing every pair.
//!
//! Pure functions return `Err(detail)` with the text that follows `Invalid value: <value>: `;
//! `check_*` functions write into [`Findings`] themselves.

use super::findings::{Findings, Shown};
use super::path::FieldPath;
use crate::resource::{Duration, ObjectMeta, StringMatch};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

/// Longest RFC 1123 label.
pub(crate) const LABEL_MAX: usize = 63;
/// Longest RFC 1123 subdomain.
pub(crate) const SUBDOMAIN_MAX: usize = 253;
/// Longest host name Istio accepts.
pub(crate) const HOST_MAX: usize = 255;
/// Longest regular expression Istio accepts.
pub(crate) const REGEX_MAX: usize = 1024;
/// The largest protobuf `Duration` (10 000 years), the bound of every duration field.
const DURATION_MAX_SECS: u64 = 315_576_000_000;

const LABEL_HELP: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name', or '123-abc')";
const SUBDOMAIN_HELP: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com')";
const WILDCARD_HELP: &str =
    "a wildcard '*' is only allowed as the whole first label (e.g. \"*.example.com\")";

fn is_lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

fn label_chars_ok(s: &str, alnum: fn(u8) -> bool) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(&first), Some(&last)) => {
            alnum(first) && alnum(last) && b.iter().all(|&c| alnum(c) || c == b'-')
        }
        _ => false,
    }
}

/// Whether `s` is a lowercase RFC 1123 label (namespaces, subset names, port names, Gateway names).
pub(crate) fn is_dns1123_label(s: &str) -> bool {
    s.len() <= LABEL_MAX && label_chars_ok(s, is_lower_alnum)
}

/// Checks a lowercase RFC 1123 label.
pub(crate) fn dns1123_label(s: &str) -> Result<(), String> {
    if s.len() > LABEL_MAX {
        return Err(format!("must be no more than {LABEL_MAX} characters"));
    }
    if !label_chars_ok(s, is_lower_alnum) {
        return Err(LABEL_HELP.to_string());
    }
    Ok(())
}

/// Checks a lowercase RFC 1123 subdomain (most object names).
pub(crate) fn dns1123_subdomain(s: &str) -> Result<(), String> {
    if s.len() > SUBDOMAIN_MAX {
        return Err(format!("must be no more than {SUBDOMAIN_MAX} characters"));
    }
    if !s
        .split('.')
        .all(|part| label_chars_ok(part, is_lower_alnum))
    {
        return Err(SUBDOMAIN_HELP.to_string());
    }
    Ok(())
}

/// A DNS label in a host name: letters of either case, digits and '-', at most 63 characters.
fn is_host_label(s: &str) -> bool {
    s.len() <= LABEL_MAX && label_chars_ok(s, |b| b.is_ascii_alphanumeric())
}

/// Istio's `labels.IsDNS1123Label`: unlike Kubernetes, letters of either case (gateway names and
/// namespaces in references, subset names, `sourceNamespace`).
pub(crate) fn is_istio_label(s: &str) -> bool {
    is_host_label(s)
}

/// Istio's `agent.ValidateFQDN`: at most 255 characters, labels of letters, digits and '-', a
/// top-level domain that is not a number, an optional trailing dot.
pub(crate) fn check_istio_fqdn(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".to_string());
    }
    if s.len() > HOST_MAX {
        return Err(format!("must be no more than {HOST_MAX} characters"));
    }
    let parts: Vec<&str> = s.split('.').collect();
    if let Some(tld) = parts.last() {
        // Go's strconv.Atoi, as Istio checks it: an optional sign, then digits.
        if tld.parse::<i64>().is_ok() {
            return Err(format!(
                "the top-level domain {tld:?} may not be all-numeric"
            ));
        }
    }
    for (i, label) in parts.iter().enumerate() {
        if i + 1 == parts.len() && label.is_empty() {
            break;
        }
        if !is_host_label(label) {
            return Err(host_label_error(label));
        }
    }
    Ok(())
}

/// Istio's wildcard label: `*`, `*foo`, `*-foo`, or a plain label.
fn is_wildcard_label(s: &str) -> bool {
    if s.len() > LABEL_MAX {
        return false;
    }
    if s == "*" {
        return true;
    }
    match s.strip_prefix('*') {
        Some(rest) => is_host_label(rest.strip_prefix('-').unwrap_or(rest)),
        None => is_host_label(s),
    }
}

fn host_label_error(label: &str) -> String {
    if label.is_empty() {
        return "must not contain an empty label (a leading dot or \"..\")".to_string();
    }
    format!("label {label:?} must consist of letters, digits or '-', start and end with a letter or digit, and have at most {LABEL_MAX} characters")
}

/// Istio's `ValidateWildcardDomain`: a host name whose first label may be a wildcard.
pub(crate) fn check_wildcard_domain(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("must not be empty".to_string());
    }
    if host.len() > HOST_MAX {
        return Err(format!("must be no more than {HOST_MAX} characters"));
    }
    if host.contains(':') {
        return Err("must be a host name without a port".to_string());
    }
    if host.contains('/') {
        return Err("must be a host name, without '/'".to_string());
    }
    let (first, rest) = host.split_once('.').unwrap_or((host, ""));
    if rest.contains('*') || (first.contains('*') && !is_wildcard_label(first)) {
        return Err(WILDCARD_HELP.to_string());
    }
    if !is_wildcard_label(first) {
        return Err(host_label_error(first));
    }
    if rest.is_empty() {
        return Ok(());
    }
    let parts: Vec<&str> = rest.split('.').collect();
    if let Some(tld) = parts.last() {
        if !tld.is_empty() && tld.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "the top-level domain {tld:?} may not be all-numeric"
            ));
        }
    }
    for (i, label) in parts.iter().enumerate() {
        // A trailing dot (`example.com.`) is allowed.
        if i + 1 == parts.len() && label.is_empty() {
            break;
        }
        if !is_host_label(label) {
            return Err(host_label_error(label));
        }
    }
    Ok(())
}

/// A host name without wildcards (endpoint and tunnel addresses).
pub(crate) fn check_fqdn(host: &str) -> Result<(), String> {
    if host.contains('*') {
        return Err("must not contain a wildcard".to_string());
    }
    check_wildcard_domain(host)
}

/// Whether `host` starts with a wildcard label.
pub(crate) fn is_wildcard(host: &str) -> bool {
    host.starts_with('*')
}

/// Whether `s` is an IPv4 or IPv6 address.
pub(crate) fn is_ip(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
}

/// Checks an IP address or a CIDR range (`10.0.0.0/8`, `2001:db8::/32`).
pub(crate) fn check_ip_or_cidr(s: &str) -> Result<(), String> {
    let help = || "must be an IP address or a CIDR range (e.g. \"10.0.0.0/8\")".to_string();
    let (addr, bits) = match s.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    let ip: IpAddr = addr.parse().map_err(|_| help())?;
    if let Some(bits) = bits {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        match bits.parse::<u8>() {
            Ok(n) if n <= max && !bits.starts_with('+') => {}
            _ => return Err(format!("the prefix length must be between 0 and {max}")),
        }
    }
    Ok(())
}

/// Checks a `unix://` address: `unix:///absolute/path` or `unix://@abstract`.
pub(crate) fn check_unix_address(s: &str) -> Result<(), String> {
    match s.strip_prefix("unix://") {
        Some(path) if path.starts_with('/') && path.len() > 1 => Ok(()),
        Some(path) if path.starts_with('@') && path.len() > 1 => Ok(()),
        _ => {
            Err("a unix address must be unix:///absolute/path or unix://@abstract-name".to_string())
        }
    }
}

/// Hosts indexed so that the entries covering a host are found with one lookup per distinct wildcard
/// suffix length (Istio's `Name.SubsetOf`; `*` covers every host). Names compare case-insensitively.
#[derive(Debug, Default)]
pub(crate) struct HostIndex {
    exact: HashMap<String, Vec<usize>>,
    /// The part after the `*` of wildcard hosts (`.example.com` for `*.example.com`).
    suffixes: HashMap<String, Vec<usize>>,
    suffix_lens: BTreeSet<usize>,
}

impl HostIndex {
    pub fn new<'a>(hosts: impl IntoIterator<Item = &'a str>) -> Self {
        let mut ix = HostIndex::default();
        for (i, h) in hosts.into_iter().enumerate() {
            let h = h.to_ascii_lowercase();
            match h.strip_prefix('*') {
                Some(suffix) => {
                    ix.suffix_lens.insert(suffix.len());
                    ix.suffixes.entry(suffix.to_string()).or_default().push(i);
                }
                None => ix.exact.entry(h).or_default().push(i),
            }
        }
        ix
    }

    /// The indexes of the entries that contain every name `host` stands for (including `host`
    /// itself when it is an entry).
    pub fn covering(&self, host: &str) -> Vec<usize> {
        let h = host.to_ascii_lowercase();
        let (tail, wild) = match h.strip_prefix('*') {
            Some(t) => (t, true),
            None => (h.as_str(), false),
        };
        let mut out = Vec::new();
        if !wild {
            if let Some(ix) = self.exact.get(tail) {
                out.extend(ix);
            }
        }
        for &len in &self.suffix_lens {
            if len > tail.len() {
                break;
            }
            let Some(end) = tail.get(tail.len() - len..) else {
                continue;
            };
            if let Some(ix) = self.suffixes.get(end) {
                out.extend(ix);
            }
        }
        out
    }
}

/// Reports every later copy of a name seen before (compared case-insensitively; empty names are
/// skipped). `what` names the list in the message (`port names`).
pub(crate) fn check_unique<'a>(
    f: &mut Findings,
    items: impl IntoIterator<Item = (FieldPath, &'a str)>,
    what: &str,
) {
    let mut seen: HashMap<String, FieldPath> = HashMap::new();
    for (path, value) in items {
        if value.is_empty() {
            continue;
        }
        let key = value.to_ascii_lowercase();
        match seen.get(&key) {
            Some(first) => f.duplicate(
                &path,
                value,
                format!("{what} must be unique; already used by {first}"),
            ),
            None => {
                seen.insert(key, path);
            }
        }
    }
}

/// Kubernetes label keys (`[prefix/]name`) and values, in `path[key]`.
pub(crate) fn check_labels(f: &mut Findings, path: &FieldPath, labels: &BTreeMap<String, String>) {
    for (k, v) in labels {
        let p = path.key(k);
        if let Err(e) = qualified_name(k) {
            f.invalid(&p, k.as_str(), format!("label key: {e}"));
        }
        if let Err(e) = label_value(v) {
            f.invalid(&p, v.as_str(), format!("label value: {e}"));
        }
    }
}

fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'
}

fn name_part_ok(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(&first), Some(&last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter().all(|&c| is_name_char(c))
        }
        _ => false,
    }
}

/// A Kubernetes qualified name (`example.com/name`), as label and annotation keys are.
pub(crate) fn qualified_name(s: &str) -> Result<(), String> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            return Err("prefix part must be non-empty".to_string());
        }
        if let Err(e) = dns1123_subdomain(prefix) {
            return Err(format!("prefix part {e}"));
        }
    }
    if name.is_empty() {
        return Err("name part must be non-empty".to_string());
    }
    if name.len() > LABEL_MAX {
        return Err(format!(
            "name part must be no more than {LABEL_MAX} characters"
        ));
    }
    if !name_part_ok(name) {
        return Err("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName', or 'my.name', or '123-abc')".to_string());
    }
    Ok(())
}

/// A Kubernetes label value: empty, or up to 63 name characters.
pub(crate) fn label_value(s: &str) -> Result<(), String> {
    if s.len() > LABEL_MAX {
        return Err(format!("must be no more than {LABEL_MAX} characters"));
    }
    if !s.is_empty() && !name_part_ok(s) {
        return Err("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue', or 'my_value', or '12345')".to_string());
    }
    Ok(())
}

/// A duration field: parses, at least 1ms (or exactly 0 when `zero_ok`), whole milliseconds.
/// Returns the value when it is acceptable.
pub(crate) fn check_duration(
    f: &mut Findings,
    path: &FieldPath,
    d: &Duration,
    zero_ok: bool,
) -> Option<std::time::Duration> {
    let v = match d.parse() {
        Ok(v) => v,
        Err(crate::resource::DurationError::Overflow) => {
            f.invalid(path, d.0.as_str(), "duration is too large");
            return None;
        }
        Err(_) => {
            f.invalid(
                path,
                d.0.as_str(),
                "not a duration: use a number with a unit among h, m, s, ms, us, ns (e.g. \"1.5s\", \"100ms\")",
            );
            return None;
        }
    };
    if v.is_zero() && zero_ok {
        return Some(v);
    }
    if v < std::time::Duration::from_millis(1) {
        let min = if zero_ok {
            "must be 0s or at least 1ms"
        } else {
            "must be at least 1ms"
        };
        f.invalid(path, d.0.as_str(), min);
        return None;
    }
    if v.subsec_nanos() % 1_000_000 != 0 {
        f.invalid(
            path,
            d.0.as_str(),
            "only durations to ms precision are supported",
        );
        return None;
    }
    if v.as_secs() > DURATION_MAX_SECS {
        f.invalid(
            path,
            d.0.as_str(),
            format!("must be at most {DURATION_MAX_SECS}s"),
        );
        return None;
    }
    Some(v)
}

/// An integer percentage (deprecated fields, outlier percentages): 0..=100.
pub(crate) fn check_int_percent(f: &mut Findings, path: &FieldPath, v: i64) {
    if !(0..=100).contains(&v) {
        f.invalid(path, &v, "must be between 0 and 100, inclusive");
    }
}

/// A port number: 1..=65535.
pub(crate) fn check_port(f: &mut Findings, path: &FieldPath, n: i64) {
    if !(1..=65535).contains(&n) {
        f.invalid(path, &n, "must be between 1 and 65535, inclusive");
    }
}

/// A count that is an `int32` in Istio's protos: 0..=2147483647.
pub(crate) fn check_i32_count(f: &mut Findings, path: &FieldPath, v: i64) {
    if v < 0 {
        f.invalid(path, &v, "must be >= 0");
    } else if v > i64::from(i32::MAX) {
        f.invalid(path, &v, format!("must be <= {}", i32::MAX));
    }
}

/// A count that is a `uint32` in Istio's protos: 0..=4294967295.
pub(crate) fn check_u32_count(f: &mut Findings, path: &FieldPath, v: i64) {
    if v < 0 {
        f.invalid(path, &v, "must be >= 0");
    } else if v > i64::from(u32::MAX) {
        f.invalid(path, &v, format!("must be <= {}", u32::MAX));
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// An HTTP token (RFC 9110 `tchar`s): header names in matches, CORS header lists.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

/// A header value (also anything that ends up in one: redirect targets, authorities): no control
/// characters but TAB.
pub(crate) fn check_header_value(f: &mut Findings, path: &FieldPath, v: &str) {
    if v.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        f.invalid(
            path,
            v,
            "may not contain control characters (other than TAB)",
        );
    }
}

/// Istio's `ValidateHTTPHeaderValue`: no control characters but TAB, and a well-formed Envoy
/// header formatter (`%VAR%`, `%VAR(args)%`, `%%` for a literal `%`).
pub(crate) fn check_header_value_format(f: &mut Findings, path: &FieldPath, v: &str) {
    if v.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        f.invalid(
            path,
            v,
            "may not contain control characters (other than TAB)",
        );
    } else if let Err(e) = envoy_header_formatter(v) {
        f.invalid(
            path,
            v,
            format!("not a valid Envoy header value: {e} (write a literal % as %%)"),
        );
    }
}

/// Istio's port (`validateHeaderValue`) of Envoy's header formatter parser: where a value is not a
/// literal, a `%VARIABLE%` or a `%VARIABLE(arguments)%`, with `%%` standing for `%`.
pub(crate) fn envoy_header_formatter(v: &str) -> Result<(), &'static str> {
    #[derive(PartialEq)]
    enum State {
        Literal,
        VariableName,
        ExpectArray,
        ExpectString,
        String,
        ExpectArrayDelimiterOrEnd,
        ExpectArgsEnd,
        ExpectVariableEnd,
    }
    let b = v.as_bytes();
    let mut state = State::Literal;
    let mut pos = 0;
    while pos < b.len() {
        let ch = b[pos];
        let has_next = pos + 1 < b.len();
        match state {
            State::Literal => {
                if ch == b'%' {
                    if !has_next {
                        return Err("unescaped % at the end");
                    }
                    if b[pos + 1] == b'%' {
                        pos += 1;
                    } else {
                        state = State::VariableName;
                    }
                }
            }
            State::VariableName => {
                if ch == b'%' {
                    state = State::Literal;
                } else if ch == b'(' {
                    state = State::ExpectArray;
                }
            }
            State::ExpectArray => {
                if ch == b'[' {
                    state = State::ExpectString;
                } else if ch != b' ' {
                    state = State::String;
                }
            }
            State::ExpectArrayDelimiterOrEnd => {
                if ch == b',' {
                    state = State::ExpectString;
                } else if ch == b']' {
                    state = State::ExpectArgsEnd;
                } else if ch != b' ' {
                    return Err("expecting ',', ']' or a space in the arguments");
                }
            }
            State::ExpectString => {
                if ch == b'"' {
                    state = State::String;
                } else if ch != b' ' {
                    return Err("expecting '\"' in the arguments");
                }
            }
            State::String => {
                if ch == b'\\' {
                    if !has_next {
                        return Err("unterminated backslash in the arguments");
                    }
                    pos += 1;
                } else if ch == b')' {
                    state = State::ExpectVariableEnd;
                } else if ch == b'"' {
                    state = State::ExpectArrayDelimiterOrEnd;
                }
            }
            State::ExpectArgsEnd => {
                if ch == b')' {
                    state = State::ExpectVariableEnd;
                } else if ch != b' ' {
                    return Err("expecting ')' or a space after the arguments");
                }
            }
            State::ExpectVariableEnd => {
                if ch == b'%' {
                    state = State::Literal;
                } else if ch != b' ' {
                    return Err("expecting '%' or a space after the arguments");
                }
            }
        }
        pos += 1;
    }
    if state != State::Literal {
        return Err("unterminated %VARIABLE% expression");
    }
    Ok(())
}

/// The text of a regex error, on one line.
fn regex_error_text(e: &regex::Error) -> String {
    match e {
        regex::Error::Syntax(s) => s
            .lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix("error: "))
            .unwrap_or(s.as_str())
            .to_string(),
        regex::Error::CompiledTooBig(n) => {
            format!("the compiled expression exceeds the size limit of {n} bytes")
        }
        other => other.to_string().replace('\n', " "),
    }
}

/// An RE2 regular expression: non-empty, at most 1024 bytes, compiles. Returns whether it is usable.
pub(crate) fn check_regex(f: &mut Findings, path: &FieldPath, re: &str) -> bool {
    if re.is_empty() {
        f.invalid(path, re, "must not be empty");
        return false;
    }
    if re.len() > REGEX_MAX {
        f.too_long(
            path,
            format!(
                "may not be more than {REGEX_MAX} bytes (it has {})",
                re.len()
            ),
        );
        return false;
    }
    match regex::Regex::new(re) {
        Ok(_) => true,
        Err(e) => {
            f.invalid(
                path,
                re,
                format!(
                    "not a valid RE2 regular expression: {}",
                    regex_error_text(&e)
                ),
            );
            false
        }
    }
}

/// "a and b", "a, b and c".
pub(crate) fn join_and(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// Where a `StringMatch` is used, which decides what Istio checks in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MatchRule {
    /// `match.uri`: an empty prefix is allowed (it matches every path, as in Envoy); only a regex
    /// is checked.
    Uri,
    /// `scheme`, `method`, `authority`, `headers` and `queryParams`: no empty prefix, a valid
    /// regex; `{}` (no member) is allowed (for headers and query parameters it means "present").
    Value,
    /// `withoutHeaders`: like [`MatchRule::Value`], but `regex: "*"` means "present".
    WithoutHeader,
    /// `corsPolicy.allowOrigins`: exactly one member, not empty.
    CorsOrigin,
}

/// A `StringMatch` as Istio's `validateStringMatch`, `validateStringMatchRegexp` and
/// `validateAllowOrigins` check it; two members at once are refused, as Istio's decoder refuses
/// two members of a oneof.
pub(crate) fn check_string_match(
    f: &mut Findings,
    path: &FieldPath,
    m: &StringMatch,
    rule: MatchRule,
) {
    let set: Vec<(&str, &str)> = [
        ("exact", m.exact.as_deref()),
        ("prefix", m.prefix.as_deref()),
        ("regex", m.regex.as_deref()),
    ]
    .into_iter()
    .filter_map(|(name, v)| v.map(|v| (name, v)))
    .collect();
    if set.len() > 1 {
        let names: Vec<&str> = set.iter().map(|(n, _)| *n).collect();
        f.forbidden(
            path,
            format!(
                "{} are mutually exclusive: set only one of exact, prefix or regex",
                join_and(&names)
            ),
        );
    }
    if rule == MatchRule::CorsOrigin {
        match set.first() {
            None => f.required(path, "one of exact, prefix or regex"),
            Some((name, "")) => {
                f.invalid(&path.field(name), "", "an allowed origin must not be empty")
            }
            Some(_) => {}
        }
    }
    if let Some(p) = &m.prefix {
        if p.is_empty() && matches!(rule, MatchRule::Value | MatchRule::WithoutHeader) {
            f.invalid(&path.field("prefix"), p.as_str(), "must not be empty");
        }
    }
    if let Some(r) = &m.regex {
        let presence = rule == MatchRule::WithoutHeader && r == "*";
        let empty_origin = rule == MatchRule::CorsOrigin && r.is_empty();
        if !presence && !empty_origin {
            check_regex(f, &path.field("regex"), r);
        }
    }
}

/// `exportTo`: `*`, `.`, a namespace, or (ServiceEntry only) `~`; no duplicates (`.` and the own
/// namespace are the same); `*` and `~` must be alone.
pub(crate) fn check_export_to(
    f: &mut Findings,
    path: &FieldPath,
    list: &[String],
    own_namespace: &str,
    allow_none: bool,
) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, e) in list.iter().enumerate() {
        let p = path.index(i);
        match e.as_str() {
            "*" | "." => {}
            "~" if allow_none => {}
            "~" => f.invalid(
                &p,
                e.as_str(),
                "\"~\" (no namespace) is only allowed in a ServiceEntry",
            ),
            ns => {
                if let Err(err) = dns1123_label(ns) {
                    let allowed = if allow_none {
                        "\"*\", \".\", \"~\" or a namespace name"
                    } else {
                        "\"*\", \".\" or a namespace name"
                    };
                    f.invalid(&p, ns, format!("must be {allowed}: {err}"));
                }
            }
        }
        let key = if e == "." { own_namespace } else { e.as_str() };
        match seen.get(key) {
            Some(&first) => f.duplicate(
                &p,
                e.as_str(),
                format!("same namespace as {}", path.index(first)),
            ),
            None => {
                seen.insert(key, i);
            }
        }
    }
    if list.len() > 1 {
        for (i, e) in list.iter().enumerate() {
            let what = match e.as_str() {
                "*" => "\"*\" (every namespace)",
                "~" if allow_none => "\"~\" (no namespace)",
                _ => continue,
            };
            f.forbidden(
                &path.index(i),
                format!("{what} may not be combined with other entries"),
            );
        }
    }
}

/// How `metadata.name` is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameRule {
    /// An RFC 1123 subdomain (most kinds).
    Subdomain,
    /// An RFC 1123 label: no dots (Gateway).
    Label,
}

/// `metadata`: name required and well formed, namespace a label, labels and annotation keys valid.
pub(crate) fn check_metadata(f: &mut Findings, meta: &ObjectMeta, rule: NameRule) {
    let p = FieldPath::root("metadata");
    let np = p.field("name");
    if meta.name.is_empty() {
        f.required(&np, "name is required");
    } else {
        let r = match rule {
            NameRule::Subdomain => dns1123_subdomain(&meta.name),
            NameRule::Label => dns1123_label(&meta.name)
                .map_err(|e| format!("a Gateway name must be an RFC 1123 label (no dots): {e}")),
        };
        if let Err(e) = r {
            f.invalid(&np, meta.name.as_str(), e);
        }
    }
    if let Some(ns) = &meta.namespace {
        if !ns.is_empty() {
            if let Err(e) = dns1123_label(ns) {
                f.invalid(&p.field("namespace"), ns.as_str(), e);
            }
        }
    }
    check_labels(f, &p.field("labels"), &meta.labels);
    for k in meta.annotations.keys() {
        if let Err(e) = qualified_name(k) {
            f.invalid(
                &p.field("annotations").key(k),
                k.as_str(),
                format!("annotation key: {e}"),
            );
        }
    }
}

/// Decodes a protobuf JSON `bytes` value: standard or URL-safe base64, padded or not (what proto3
/// JSON parsers accept). Translation must decode `directResponse.body.bytes` with this too.
pub fn decode_proto_bytes(s: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    use base64::Engine as _;
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|e| e.decode(s).ok())
}

/// Shows a list of names as `"a", "b"` (for messages).
pub(crate) fn quoted_list<S: AsRef<str>>(items: &[S]) -> String {
    items
        .iter()
        .map(|s| s.as_ref().shown())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_domains() {
        for ok in [
            "*",
            "*.example.com",
            "example.com",
            "Example.COM",
            "reviews",
            "*foo.example.com",
            "*-foo.example.com",
            "example.com.",
            "a-b.c1",
        ] {
            assert_eq!(check_wildcard_domain(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "foo.*.com",
            "foo*.com",
            "exa_mple.com",
            "-a.com",
            "a..com",
            "10.0.0.1",
            "example.123",
            ".",
            "*.*.com",
        ] {
            assert!(check_wildcard_domain(bad).is_err(), "{bad}");
        }
        assert!(check_wildcard_domain(&"a".repeat(256)).is_err());
        assert!(check_wildcard_domain(&format!("{}.com", "a".repeat(64))).is_err());
    }

    #[test]
    fn names_and_labels() {
        assert!(dns1123_label("my-name").is_ok());
        assert!(dns1123_label("My-name").is_err());
        assert!(dns1123_label("a.b").is_err());
        assert!(dns1123_label(&"a".repeat(64)).is_err());
        assert!(dns1123_subdomain("a.b-c.d").is_ok());
        assert!(dns1123_subdomain("a..b").is_err());
        assert!(qualified_name("app.kubernetes.io/name").is_ok());
        assert!(qualified_name("/name").is_err());
        assert!(qualified_name("a/b/c").is_err());
        assert!(label_value("").is_ok());
        assert!(label_value("v1.2_x").is_ok());
        assert!(label_value("-v1").is_err());
    }

    #[test]
    fn cidrs() {
        assert!(check_ip_or_cidr("10.0.0.0/8").is_ok());
        assert!(check_ip_or_cidr("::1").is_ok());
        assert!(check_ip_or_cidr("2001:db8::/129").is_err());
        assert!(check_ip_or_cidr("10.0.0.0/33").is_err());
        assert!(check_ip_or_cidr("10.0.0.0/+8").is_err());
        assert!(check_ip_or_cidr("example.com").is_err());
    }

    #[test]
    fn host_index_finds_covering_hosts() {
        let hosts = ["a.foo.com", "*.foo.com", "*", "b.bar.com", "*.x.foo.com"];
        let ix = HostIndex::new(hosts.iter().copied());
        let mut c = ix.covering("a.foo.com");
        c.sort_unstable();
        assert_eq!(c, vec![0, 1, 2]);
        let mut c = ix.covering("*.x.foo.com");
        c.sort_unstable();
        assert_eq!(c, vec![1, 2, 4]);
        assert_eq!(ix.covering("*.bar.com"), vec![2]);
        assert!(HostIndex::new(["a.com"]).covering("é.a.com").is_empty());
    }

    #[test]
    fn proto_bytes() {
        assert_eq!(decode_proto_bytes("aGk="), Some(b"hi".to_vec()));
        assert_eq!(decode_proto_bytes("aGk"), Some(b"hi".to_vec()));
        assert_eq!(decode_proto_bytes("_-8"), Some(vec![0xff, 0xef]));
        assert_eq!(decode_proto_bytes("not base64!"), None);
    }
}
