//! YAML read as kubectl reads it: YAML 1.1 scalars (`yes`/`on` booleans, `0`-prefixed octals) and
//! duplicate keys refused, as Go's yaml.v2 does, parsed by `serde-saphyr`.
//!
//! One place where yaml.v2 and YAML 1.2 (every maintained Rust parser) part: inside a flow
//! collection, yaml.v2 ends a plain scalar at `:` only when a blank follows, so
//! `addresses: [1.2.3.4, 2001:db8::]` holds the string `2001:db8::`, where YAML 1.2 reads
//! `{"2001:db8:": null}`. Istio users copy such lists from docs that kubectl accepts, so before
//! parsing, such a scalar (a `:` right before `,`, `]` or `}`) is quoted. Nothing else is rewritten.

use serde_json::Value;

/// Where and why a YAML text does not parse (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

fn options() -> serde_saphyr::Options {
    let mut o = serde_saphyr::Options::default();
    o.legacy_octal_numbers = true;
    o.with_snippet = false;
    o
}

fn error(e: &serde_saphyr::Error) -> YamlError {
    let (line, column) = e.location().map_or((1, 1), |l| {
        (
            usize::try_from(l.line()).unwrap_or(1).max(1),
            usize::try_from(l.column()).unwrap_or(1).max(1),
        )
    });
    YamlError {
        line,
        column,
        message: plain_message(&e.to_string()),
    }
}

/// The message without the parser's own `error: line L column C: ` prefix (the location is kept
/// apart) and without the advice about parser options, which mean nothing to a user.
fn plain_message(s: &str) -> String {
    let first = s.lines().next().unwrap_or(s);
    let mut m = first.strip_prefix("error: ").unwrap_or(first);
    if let Some(rest) = m.strip_prefix("line ") {
        if let Some(i) = rest.find(": ") {
            if rest[..i].contains(" column ") {
                m = &rest[i + 2..];
            }
        }
    }
    if let Some(i) = m.rfind(" at line ") {
        if m[i..].contains(", column ") {
            m = &m[..i];
        }
    }
    let m = match m.find(", set DuplicateKeyPolicy") {
        Some(i) => &m[..i],
        None => m,
    };
    m.trim().to_string()
}

/// Every document of a YAML stream; empty documents are dropped.
pub fn documents(text: &str) -> Result<Vec<Value>, YamlError> {
    let text = quote_flow_colons(text);
    let docs: Vec<Value> =
        serde_saphyr::from_multiple_with_options(&text, options()).map_err(|e| error(&e))?;
    Ok(docs.into_iter().filter(|v| !v.is_null()).collect())
}

/// One YAML document.
pub fn document(text: &str) -> Result<Value, YamlError> {
    let text = quote_flow_colons(text);
    serde_saphyr::from_str_with_options(&text, options()).map_err(|e| error(&e))
}

/// Quotes the plain scalars of flow collections that end in `:` right before `,`, `]` or `}`
/// (module doc). Quoted scalars, comments and block scalars are left as they are; only the line
/// of such a scalar changes, by its two quotes.
fn quote_flow_colons(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains(":]") && !text.contains(":,") && !text.contains(":}") {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    let mut depth = 0usize;
    // Inside a block scalar: lines indented deeper than this belong to it.
    let mut block_indent: Option<usize> = None;
    let mut quote: Option<char> = None;
    for line in text.split_inclusive('\n') {
        let indent = line.len() - line.trim_start_matches(' ').len();
        if let Some(b) = block_indent {
            if line.trim().is_empty() || indent > b {
                out.push_str(line);
                continue;
            }
            block_indent = None;
        }
        let mut rest = line;
        let mut written = String::new();
        // The start (in `written`) of the current flow token, if one is open.
        let mut token_start: Option<usize> = None;
        let mut prev: char = ' ';
        while let Some(c) = rest.chars().next() {
            rest = &rest[c.len_utf8()..];
            if let Some(q) = quote {
                written.push(c);
                if c == q {
                    if q == '\'' && rest.starts_with('\'') {
                        written.push('\'');
                        rest = &rest[1..];
                    } else {
                        quote = None;
                    }
                } else if q == '"' && c == '\\' {
                    if let Some(n) = rest.chars().next() {
                        written.push(n);
                        rest = &rest[n.len_utf8()..];
                    }
                }
                prev = c;
                continue;
            }
            if c == '#' && (prev == ' ' || prev == '\t' || written.trim().is_empty()) {
                written.push(c);
                written.push_str(rest);
                break;
            }
            match c {
                '"' | '\'' if starts_scalar(&written) => {
                    quote = Some(c);
                    written.push(c);
                }
                '[' | '{' if depth > 0 || starts_scalar(&written) => {
                    depth += 1;
                    token_start = None;
                    written.push(c);
                }
                ']' | '}' | ',' if depth > 0 => {
                    if let Some(s) = token_start.take() {
                        quote_token(&mut written, s);
                    }
                    if c != ',' {
                        depth -= 1;
                    }
                    written.push(c);
                }
                '|' | '>' if depth == 0 && is_block_indicator(&written, rest) => {
                    written.push(c);
                    block_indent = Some(indent);
                }
                _ => {
                    if depth > 0 {
                        if c == ':' && matches!(rest.chars().next(), Some(' ' | '\t' | '\n' | '\r'))
                        {
                            // `key: value` inside a flow mapping: the value is a token of its own.
                            token_start = None;
                        } else if token_start.is_none() && !c.is_whitespace() {
                            token_start = Some(written.len());
                        }
                    }
                    written.push(c);
                }
            }
            prev = c;
        }
        out.push_str(&written);
    }
    std::borrow::Cow::Owned(out)
}

/// A quote opens a quoted scalar only where a scalar may start: at the start of the line, or
/// after a blank that follows an indicator (`it's` is plain text, `key: 'x'` is quoted).
fn starts_scalar(before: &str) -> bool {
    let b = before.trim_end_matches([' ', '\t']);
    (b.len() < before.len() || b.ends_with(['[', '{', ',']))
        && (b.is_empty() || b.ends_with([':', '-', '[', '{', ',', '?']))
        || b.is_empty()
}

/// `|` or `>` starting a block scalar: after `key:` or `-` (or alone), followed only by chomping
/// and indentation indicators and an optional comment.
fn is_block_indicator(before: &str, after: &str) -> bool {
    let b = before.trim_end();
    let starts_value = b.is_empty() || b.ends_with(':') || b.ends_with('-');
    let a = after.trim_start_matches(['+', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9']);
    let a = a.trim_start_matches([' ', '\t']);
    starts_value
        && (a.is_empty() || a.starts_with('\n') || a.starts_with('\r') || a.starts_with('#'))
}

/// Quotes `written[start..]` (trailing blanks stay outside) when it is a plain scalar ending in `:`.
fn quote_token(written: &mut String, start: usize) {
    let token = &written[start..];
    let trimmed = token.trim_end();
    let plain = !trimmed.starts_with(['&', '*', '!', '?', '|', '>', '@', '`', '%']);
    if !plain || !trimmed.ends_with(':') {
        return;
    }
    let tail = token[trimmed.len()..].to_string();
    let mut quoted = String::with_capacity(trimmed.len() + 2);
    quoted.push('"');
    for ch in trimmed.chars() {
        if ch == '"' || ch == '\\' {
            quoted.push('\\');
        }
        quoted.push(ch);
    }
    quoted.push('"');
    written.truncate(start);
    written.push_str(&quoted);
    written.push_str(&tail);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ipv6_addresses_in_flow_lists_are_strings_as_kubectl_reads_them() {
        let v = document("addresses: [1.2.3.4, 001:db8::]\n").expect("parses");
        assert_eq!(v, json!({"addresses": ["1.2.3.4", "001:db8::"]}));
        let v = document("a: {b: fd00::, c: [::]}\n").expect("parses");
        assert_eq!(v, json!({"a": {"b": "fd00::", "c": ["::"]}}));
        let v = document("addresses: [\"x:\", 'y:', 2001:db8::1]\n").expect("parses");
        assert_eq!(v, json!({"addresses": ["x:", "y:", "2001:db8::1"]}));
    }

    #[test]
    fn block_scalars_and_comments_are_not_rewritten() {
        let text = "a: |\n  [x:]\nb: c # [y:]\nc: it's [z:] {w:}\nd: 'it''s [v:]'\n";
        let v = document(text).expect("parses");
        assert_eq!(
            v,
            json!({"a": "[x:]\n", "b": "c", "c": "it's [z:] {w:}", "d": "it's [v:]"})
        );
    }

    #[test]
    fn yaml_1_1_scalars_as_in_go_yaml_v2() {
        let v = document("a: yes\nb: off\nc: 0777\nd: \"yes\"\ne: 80\n").expect("parses");
        assert_eq!(
            v,
            json!({"a": true, "b": false, "c": 511, "d": "yes", "e": 80})
        );
    }

    #[test]
    fn errors_have_line_and_column_and_a_plain_message() {
        let e = document("a:\n  b: 1\n c: 2\n").expect_err("bad indentation");
        assert_eq!((e.line, e.column), (3, 2));
        assert!(!e.message.contains("line"), "{}", e.message);
        let e = document("a: 1\na: 2\n").expect_err("duplicate key");
        assert_eq!(e.line, 2);
        assert!(e.message.contains("duplicate"), "{}", e.message);
        assert!(!e.message.contains("DuplicateKeyPolicy"), "{}", e.message);
    }

    #[test]
    fn several_documents_and_empty_ones() {
        let v = documents("a: 1\n---\n---\nb: 2\n").expect("parses");
        assert_eq!(v, vec![json!({"a": 1}), json!({"b": 2})]);
    }
}
