//! Small encoding helpers the fake needs and that the crate's dependency list does not cover:
//! base64, percent encoding, `application/x-www-form-urlencoded` parsing, CSV quoting and random
//! identifiers. None of them panics on any input, since their inputs come from the network.

use std::borrow::Cow;

/// Standard base64 alphabet (RFC 4648 §4), used for SAS-style signatures containing `+` and `/`.
const B64_STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
/// URL-safe base64 alphabet (RFC 4648 §5), used for opaque tokens and link ids.
const B64_URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Encodes `data` as base64; `url_safe` picks the alphabet, `pad` whether `=` padding is added.
pub(crate) fn base64(data: &[u8], url_safe: bool, pad: bool) -> String {
    let alphabet = if url_safe { B64_URL } else { B64_STD };
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..4 {
            if i < chars {
                let idx = ((n >> (18 - 6 * i)) & 0x3f) as usize;
                out.push(char::from(alphabet[idx]));
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

/// `n` random bytes from the thread-local `fastrand` generator (the fake needs unpredictability
/// against accidental reuse, not cryptographic strength).
pub(crate) fn random_bytes(n: usize) -> Vec<u8> {
    (0..n).map(|_| fastrand::u8(..)).collect()
}

/// A random URL-safe identifier of `n_bytes` bytes of entropy, without padding.
pub(crate) fn random_id(n_bytes: usize) -> String {
    base64(&random_bytes(n_bytes), true, false)
}

/// Percent-encodes everything except RFC 3986 unreserved characters, so the value can sit in a
/// query string byte for byte.
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Value of one hexadecimal digit, if it is one.
fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes one form-urlencoded component the way ASP.NET and Entra ID do: `+` is a space, `%XX`
/// is a byte, a malformed escape is kept literally, invalid UTF-8 is replaced.
pub(crate) fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex_val);
                let lo = bytes.get(i + 2).copied().and_then(hex_val);
                if let (Some(hi), Some(lo)) = (hi, lo) {
                    out.push((hi << 4) | lo);
                    i += 3;
                } else {
                    out.push(b'%');
                    i += 1;
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses an `application/x-www-form-urlencoded` string (a request body or a query string) into
/// decoded `(name, value)` pairs, in order, keeping duplicates.
pub(crate) fn parse_form(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|part| !part.is_empty())
        .map(|part| match part.split_once('=') {
            Some((k, v)) => (form_decode(k), form_decode(v)),
            None => (form_decode(part), String::new()),
        })
        .collect()
}

/// First value of parameter `name` in parsed form pairs.
pub(crate) fn form_get<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Quotes a CSV field when it contains a separator, a quote or a line break (RFC 4180).
pub(crate) fn csv_field(s: &str) -> Cow<'_, str> {
    if s.contains([',', '"', '\r', '\n']) {
        Cow::Owned(format!("\"{}\"", s.replace('"', "\"\"")))
    } else {
        Cow::Borrowed(s)
    }
}

/// Escapes text for an XML element body.
pub(crate) fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The mixed-case name Graph's JSON (beta) uses for a product type that the CSV writes in upper
/// case. Known products get their real spelling; other upper-case names are title-cased; names
/// that already contain lower case are kept as they are.
pub(crate) fn json_product_name(product_type: &str) -> String {
    const KNOWN: &[(&str, &str)] = &[
        (
            "MICROSOFT 365 APPS FOR ENTERPRISE",
            "Microsoft 365 Apps for enterprise",
        ),
        (
            "MICROSOFT 365 APPS FOR BUSINESS",
            "Microsoft 365 Apps for business",
        ),
        (
            "PROJECT ONLINE DESKTOP CLIENT",
            "Project Online Desktop Client",
        ),
        ("VISIO ONLINE PLAN 2", "Visio Online Plan 2"),
        (
            "MICROSOFT EXCEL ADVANCED ANALYTICS",
            "Microsoft Excel Advanced Analytics",
        ),
        ("OFFICE 365 PROPLUS", "Office 365 ProPlus"),
    ];
    let upper = product_type.to_uppercase();
    if let Some((_, mixed)) = KNOWN.iter().find(|(u, _)| *u == upper) {
        return (*mixed).to_string();
    }
    if product_type.chars().any(char::is_lowercase) {
        return product_type.to_string();
    }
    product_type
        .split(' ')
        .map(|word| {
            let mut chars = word.chars();
            match chars.next() {
                Some(first) => first
                    .to_uppercase()
                    .chain(chars.flat_map(char::to_lowercase))
                    .collect(),
                None => String::new(),
            }
        })
        .collect::<Vec<String>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, expected) in cases {
            assert_eq!(base64(input.as_bytes(), false, true), expected);
            assert_eq!(
                base64(input.as_bytes(), true, false),
                expected.trim_end_matches('=')
            );
        }
        assert_eq!(base64(&[0xfb, 0xff], false, true), "+/8=");
        assert_eq!(base64(&[0xfb, 0xff], true, false), "-_8");
    }

    #[test]
    fn form_round_trip_and_malformed_escapes() {
        let raw = "a+b/c=d&é";
        assert_eq!(form_decode(&percent_encode(raw)), raw);
        assert_eq!(form_decode("a+b%2Bc"), "a b+c");
        assert_eq!(form_decode("100%"), "100%");
        assert_eq!(form_decode("%zz%4"), "%zz%4");
        assert_eq!(form_decode("%FF"), "\u{FFFD}");
        let pairs = parse_form("a=1&&b&c=x%3Dy&a=2");
        assert_eq!(form_get(&pairs, "a"), Some("1"));
        assert_eq!(form_get(&pairs, "b"), Some(""));
        assert_eq!(form_get(&pairs, "c"), Some("x=y"));
        assert_eq!(form_get(&pairs, "d"), None);
    }

    #[test]
    fn csv_xml_and_names() {
        assert_eq!(csv_field("PLAIN"), "PLAIN");
        assert_eq!(csv_field("A,\"B\""), "\"A,\"\"B\"\"\"");
        assert_eq!(xml_escape("<a&'\">"), "&lt;a&amp;&apos;&quot;&gt;");
        assert_eq!(
            json_product_name("MICROSOFT 365 APPS FOR ENTERPRISE"),
            "Microsoft 365 Apps for enterprise"
        );
        assert_eq!(json_product_name("SOME NEW PRODUCT"), "Some New Product");
        assert_eq!(
            json_product_name("Office 365 ProPlus"),
            "Office 365 ProPlus"
        );
        assert_eq!(json_product_name("Custom thing"), "Custom thing");
    }
}
