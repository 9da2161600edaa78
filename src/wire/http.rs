//! HTTP/1.1 pieces both the relay and the peer need: header lookup, the
//! Content-Length rule and reason phrases. Pure functions over parsed heads.

use std::borrow::Cow;
use std::fmt;

/// A header as a parser or a parsed request holds it: a name and a raw value.
pub trait HeaderField {
    /// The header's name as sent.
    fn name(&self) -> &str;
    /// The header's value as sent (possibly not UTF-8).
    fn value(&self) -> &[u8];
}

impl HeaderField for httparse::Header<'_> {
    fn name(&self) -> &str {
        self.name
    }
    fn value(&self) -> &[u8] {
        self.value
    }
}

impl HeaderField for (String, String) {
    fn name(&self) -> &str {
        &self.0
    }
    fn value(&self) -> &[u8] {
        self.1.as_bytes()
    }
}

/// Every value of the headers called `name` (compared ignoring ASCII case), in order.
pub fn values<'a, 'n, H: HeaderField>(
    headers: &'a [H],
    name: &'n str,
) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n, H> {
    headers
        .iter()
        .filter(move |h| h.name().eq_ignore_ascii_case(name))
        .map(|h| h.value())
}

/// The first `name` header's value, trimmed; `None` if absent or not UTF-8.
pub fn header<'a, H: HeaderField>(headers: &'a [H], name: &str) -> Option<&'a str> {
    values(headers, name)
        .next()
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::trim)
}

/// The first `name` header's value, trimmed, with bytes that are not UTF-8
/// replaced: for values that must then parse, so a bad byte is refused
/// rather than taken for an absent header.
pub fn header_lossy<'a, H: HeaderField>(headers: &'a [H], name: &str) -> Option<Cow<'a, str>> {
    values(headers, name)
        .next()
        .map(|v| match String::from_utf8_lossy(v) {
            Cow::Borrowed(text) => Cow::Borrowed(text.trim()),
            Cow::Owned(text) => Cow::Owned(text.trim().to_owned()),
        })
}

/// True when any `name` header lists `token` (comma-separated, any case).
pub fn has_token<H: HeaderField>(headers: &[H], name: &str, token: &str) -> bool {
    values(headers, name)
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Why a head's Content-Length cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadLength {
    /// Several Content-Length headers with different values.
    Conflicting,
    /// A value that is not ASCII digits only.
    NotDigits,
    /// Digits beyond what this machine can count.
    TooLarge,
}

impl fmt::Display for BadLength {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BadLength::Conflicting => "conflicting Content-Length headers",
            BadLength::NotDigits => "bad Content-Length",
            BadLength::TooLarge => "Content-Length too large",
        })
    }
}

/// The body length a head announces: `None` without a Content-Length.
///
/// Digits only: `+3` or `0x3` parse as numbers in some stacks and not in
/// others, which is how requests get smuggled past proxies. Repeated headers
/// must agree to the letter.
pub fn content_length<H: HeaderField>(headers: &[H]) -> Result<Option<usize>, BadLength> {
    let mut lengths = values(headers, "Content-Length");
    let Some(first) = lengths.next() else {
        return Ok(None);
    };
    if lengths.any(|other| other != first) {
        return Err(BadLength::Conflicting);
    }
    let text = std::str::from_utf8(first)
        .map_err(|_| BadLength::NotDigits)?
        .trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BadLength::NotDigits);
    }
    text.parse::<usize>()
        .map(Some)
        .map_err(|_| BadLength::TooLarge)
}

/// The reason phrase for the statuses the relay and the host listener write.
pub fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[track_caller]
    fn check_length(list: &[(&str, &str)], expected: Result<Option<usize>, BadLength>) {
        assert_eq!(content_length(&pairs(list)), expected, "{list:?}");
    }

    #[test]
    fn content_length_takes_digits_only() {
        check_length(&[], Ok(None));
        check_length(&[("Content-Length", "0")], Ok(Some(0)));
        check_length(&[("content-length", "42")], Ok(Some(42)));
        check_length(
            &[("Content-Length", "3"), ("Content-Length", "3")],
            Ok(Some(3)),
        );
        check_length(
            &[("Content-Length", "3"), ("Content-Length", "4")],
            Err(BadLength::Conflicting),
        );
        for bad in ["+3", "0x3", "-1", "3 4", "", "3.0"] {
            check_length(&[("Content-Length", bad)], Err(BadLength::NotDigits));
        }
        check_length(
            &[("Content-Length", "99999999999999999999999999")],
            Err(BadLength::TooLarge),
        );
    }

    #[test]
    fn headers_are_found_ignoring_case() {
        let list = pairs(&[("Connection", "keep-alive, Upgrade"), ("X-A", " one ")]);
        assert_eq!(header(&list, "x-a"), Some("one"));
        assert_eq!(header(&list, "X-B"), None);
        assert!(has_token(&list, "connection", "upgrade"));
        assert!(!has_token(&list, "connection", "close"));
        let raw = [httparse::Header {
            name: "Jet-Version",
            value: b"\xff2",
        }];
        assert_eq!(header(&raw, "jet-version"), None);
        assert_eq!(
            header_lossy(&raw, "jet-version").as_deref(),
            Some("\u{fffd}2")
        );
    }
}
