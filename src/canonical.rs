//! fedmsg's canonical JSON: `fedmsg.encoding.dumps`, byte for byte.
//!
//! fedmsg signs the canonical form of an envelope, so this must match Python's
//! `json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=True)`:
//! keys sorted by code point, no whitespace, non-ASCII and control characters as
//! lowercase `\uXXXX` (surrogate pairs above the BMP), integers written exactly as
//! they came (any size), floats in Python's `repr` form (`1.0`, `1e-05`, `1e+16`),
//! `NaN`/`Infinity` accepted and kept, duplicate keys resolved "last one wins".
//!
//! Two entry points: [`canonicalize`] transcodes any JSON text (it never goes
//! through `f64` for integers, so big integers survive), and [`to_canonical_string`]
//! encodes a `serde_json::Value` built in Rust.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Nesting deeper than this is rejected instead of risking the stack.
pub const MAX_DEPTH: usize = 512;

/// Why a text could not be canonicalized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid JSON at byte {offset}: {reason}")]
pub struct CanonicalError {
    /// Byte offset in the input where parsing stopped.
    pub offset: usize,
    /// What was expected there.
    pub reason: &'static str,
}

/// Transcodes JSON text into fedmsg's canonical form.
pub fn canonicalize(input: &[u8]) -> Result<String, CanonicalError> {
    let mut parser = Parser { input, pos: 0 };
    let node = parser.value(0)?;
    parser.skip_ws();
    if parser.pos != input.len() {
        return Err(parser.error("trailing characters after the JSON value"));
    }
    let mut out = String::with_capacity(input.len());
    node.write(&mut out);
    Ok(out)
}

/// A top-level field of a body read for signature validation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Field<'a> {
    /// The body has no such key.
    Absent,
    /// A JSON string.
    Text(Cow<'a, str>),
    /// Any other JSON value.
    Other,
}

impl<'a> Field<'a> {
    fn of(node: Node<'a>) -> Field<'a> {
        match node {
            Node::Str(text) => Field::Text(text),
            _ => Field::Other,
        }
    }
}

/// What fedmsg's x509 validation reads of a body, from one parse: `crypto`,
/// `signature`, `certificate`, and the bytes the signature covers (the
/// canonical JSON of the body without `signature` and `certificate`; every
/// other key, `crypto` and `seq_id` included, stays).
#[derive(Debug)]
pub(crate) struct SignedBody<'a> {
    /// `crypto`: the signing backend.
    pub crypto: Field<'a>,
    /// `signature`: base64 of the RSA signature.
    pub signature: Field<'a>,
    /// `certificate`: base64 of the signer's PEM certificate.
    pub certificate: Field<'a>,
    /// `fedmsg.encoding.dumps(strip_credentials(body))`.
    pub signed: String,
}

/// Reads a JSON object body for signature validation (see [`SignedBody`]).
pub(crate) fn signed_body(input: &[u8]) -> Result<SignedBody<'_>, CanonicalError> {
    let mut parser = Parser { input, pos: 0 };
    let node = parser.value(0)?;
    parser.skip_ws();
    if parser.pos != input.len() {
        return Err(parser.error("trailing characters after the JSON value"));
    }
    let Node::Object(mut entries) = node else {
        return Err(CanonicalError {
            offset: 0,
            reason: "a JSON object",
        });
    };
    // Entries are sorted and unique (see `Parser::object`).
    let mut take = |key: &str| match entries.binary_search_by(|(k, _)| k.as_ref().cmp(key)) {
        Ok(index) => Field::of(entries.remove(index).1),
        Err(_) => Field::Absent,
    };
    let signature = take("signature");
    let certificate = take("certificate");
    let crypto = match entries.binary_search_by(|(k, _)| k.as_ref().cmp("crypto")) {
        Ok(index) => match &entries[index].1 {
            Node::Str(text) => Field::Text(text.clone()),
            _ => Field::Other,
        },
        Err(_) => Field::Absent,
    };
    let mut signed = String::with_capacity(input.len());
    Node::Object(entries).write(&mut signed);
    Ok(SignedBody {
        crypto,
        signature,
        certificate,
        signed,
    })
}

/// Encodes a `serde_json::Value` in fedmsg's canonical form.
pub fn to_canonical_string(value: &serde_json::Value) -> String {
    let mut out = String::with_capacity(128);
    write_value(&mut out, value);
    out
}

/// Encodes a JSON object (an envelope) in fedmsg's canonical form, without
/// copying it into a `Value` first.
pub(crate) fn map_to_canonical_string(map: &serde_json::Map<String, serde_json::Value>) -> String {
    let mut out = String::with_capacity(128);
    write_object(&mut out, map);
    out
}

fn write_value(out: &mut String, value: &serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                let _ = write!(out, "{i}");
            } else if let Some(u) = n.as_u64() {
                let _ = write!(out, "{u}");
            } else {
                write_python_float(out, n.as_f64().unwrap_or(f64::NAN));
            }
        }
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => write_object(out, map),
    }
}

fn write_object(out: &mut String, map: &serde_json::Map<String, serde_json::Value>) {
    // Sorted explicitly: serde_json's map keeps insertion order when another
    // crate in the build turns on its `preserve_order` feature.
    let mut entries: Vec<(&String, &serde_json::Value)> = map.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out.push('{');
    for (i, (key, item)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(out, key);
        out.push(':');
        write_value(out, item);
    }
    out.push('}');
}

/// Writes a string as Python's `json.dumps(ensure_ascii=True)` does.
pub fn write_string(out: &mut String, s: &str) {
    out.push('"');
    let bytes = s.as_bytes();
    let mut run_start = 0;
    for (i, ch) in s.char_indices() {
        let plain = matches!(ch, ' '..='~') && ch != '"' && ch != '\\';
        if plain {
            continue;
        }
        out.push_str(&s[run_start..i]);
        run_start = i + ch.len_utf8();
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            _ => {
                let mut units = [0u16; 2];
                for unit in ch.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push_str(&s[run_start..bytes.len()]);
    out.push('"');
}

/// Writes a float as Python's `float.__repr__` (shortest round trip), with
/// `NaN`/`Infinity`/`-Infinity` as Python's json module writes them.
pub fn write_python_float(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
        return;
    }
    if value.is_infinite() {
        out.push_str(if value > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    }
    if value.is_sign_negative() {
        out.push('-');
    }
    let magnitude = value.abs();
    if magnitude == 0.0 {
        out.push_str("0.0");
        return;
    }
    // `{:e}` gives the shortest round-trip digits: "1.2345678901234568e17", "1e-5".
    let sci = format!("{magnitude:e}");
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if (-4..16).contains(&exponent) {
        let point = exponent + 1; // digits before the decimal point
        if point <= 0 {
            out.push_str("0.");
            for _ in 0..-point {
                out.push('0');
            }
            out.push_str(&digits);
        } else if point as usize >= digits.len() {
            out.push_str(&digits);
            for _ in 0..(point as usize - digits.len()) {
                out.push('0');
            }
            out.push_str(".0");
        } else {
            out.push_str(&digits[..point as usize]);
            out.push('.');
            out.push_str(&digits[point as usize..]);
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let sign = if exponent < 0 { '-' } else { '+' };
        let _ = write!(out, "e{sign}{:02}", exponent.abs());
    }
}

/// A parsed JSON value that borrows from the input where it can.
enum Node<'a> {
    Literal(&'static str),
    /// An integer, kept as the text it was written with.
    Int(&'a str),
    Float(f64),
    Str(Cow<'a, str>),
    Array(Vec<Node<'a>>),
    Object(Vec<(Cow<'a, str>, Node<'a>)>),
}

impl Node<'_> {
    fn write(&self, out: &mut String) {
        match self {
            Node::Literal(text) => out.push_str(text),
            Node::Int(text) => {
                // Python reads "-0" as the int 0 and writes it back as "0".
                if text.bytes().all(|b| b == b'-' || b == b'0') {
                    out.push('0');
                } else {
                    out.push_str(text);
                }
            }
            Node::Float(f) => write_python_float(out, *f),
            Node::Str(s) => write_string(out, s),
            Node::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Node::Object(entries) => {
                out.push('{');
                for (i, (key, item)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_string(out, key);
                    out.push(':');
                    item.write(out);
                }
                out.push('}');
            }
        }
    }
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn error(&self, reason: &'static str) -> CanonicalError {
        CanonicalError {
            offset: self.pos,
            reason,
        }
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.input.get(self.pos) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, literal: &str) -> bool {
        if self.input[self.pos..].starts_with(literal.as_bytes()) {
            self.pos += literal.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Result<Node<'a>, CanonicalError> {
        if depth > MAX_DEPTH {
            return Err(self.error("nesting deeper than 512 levels"));
        }
        self.skip_ws();
        match self.input.get(self.pos) {
            None => Err(self.error("a value, found the end of the input")),
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => Ok(Node::Str(self.string()?)),
            Some(b't') if self.eat("true") => Ok(Node::Literal("true")),
            Some(b'f') if self.eat("false") => Ok(Node::Literal("false")),
            Some(b'n') if self.eat("null") => Ok(Node::Literal("null")),
            Some(b'N') if self.eat("NaN") => Ok(Node::Literal("NaN")),
            Some(b'I') if self.eat("Infinity") => Ok(Node::Literal("Infinity")),
            Some(b'-') if self.input[self.pos..].starts_with(b"-Infinity") => {
                self.pos += "-Infinity".len();
                Ok(Node::Literal("-Infinity"))
            }
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.error("a JSON value")),
        }
    }

    fn object(&mut self, depth: usize) -> Result<Node<'a>, CanonicalError> {
        self.pos += 1;
        let mut entries: Vec<(Cow<'a, str>, Node<'a>)> = Vec::new();
        self.skip_ws();
        if self.input.get(self.pos) == Some(&b'}') {
            self.pos += 1;
            return Ok(Node::Object(entries));
        }
        loop {
            self.skip_ws();
            if self.input.get(self.pos) != Some(&b'"') {
                return Err(self.error("a string key"));
            }
            let key = self.string()?;
            self.skip_ws();
            if self.input.get(self.pos) != Some(&b':') {
                return Err(self.error("':' after an object key"));
            }
            self.pos += 1;
            let item = self.value(depth + 1)?;
            entries.push((key, item));
            self.skip_ws();
            match self.input.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    break;
                }
                _ => return Err(self.error("',' or '}' in an object")),
            }
        }
        // Stable sort, then keep the last of each run of equal keys: Python's dict
        // keeps the last value given for a duplicated key.
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut deduped: Vec<(Cow<'a, str>, Node<'a>)> = Vec::with_capacity(entries.len());
        for entry in entries {
            match deduped.last_mut() {
                Some(last) if last.0 == entry.0 => *last = entry,
                _ => deduped.push(entry),
            }
        }
        Ok(Node::Object(deduped))
    }

    fn array(&mut self, depth: usize) -> Result<Node<'a>, CanonicalError> {
        self.pos += 1;
        let mut items = Vec::new();
        self.skip_ws();
        if self.input.get(self.pos) == Some(&b']') {
            self.pos += 1;
            return Ok(Node::Array(items));
        }
        loop {
            items.push(self.value(depth + 1)?);
            self.skip_ws();
            match self.input.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Node::Array(items));
                }
                _ => return Err(self.error("',' or ']' in an array")),
            }
        }
    }

    fn number(&mut self) -> Result<Node<'a>, CanonicalError> {
        let start = self.pos;
        let bytes = self.input;
        if bytes.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        match bytes.get(self.pos) {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                while let Some(b'0'..=b'9') = bytes.get(self.pos) {
                    self.pos += 1;
                }
            }
            _ => return Err(self.error("a digit")),
        }
        let mut is_float = false;
        if bytes.get(self.pos) == Some(&b'.') {
            is_float = true;
            self.pos += 1;
            if !matches!(bytes.get(self.pos), Some(b'0'..=b'9')) {
                return Err(self.error("a digit after the decimal point"));
            }
            while let Some(b'0'..=b'9') = bytes.get(self.pos) {
                self.pos += 1;
            }
        }
        if let Some(b'e' | b'E') = bytes.get(self.pos) {
            is_float = true;
            self.pos += 1;
            if let Some(b'+' | b'-') = bytes.get(self.pos) {
                self.pos += 1;
            }
            if !matches!(bytes.get(self.pos), Some(b'0'..=b'9')) {
                return Err(self.error("a digit in the exponent"));
            }
            while let Some(b'0'..=b'9') = bytes.get(self.pos) {
                self.pos += 1;
            }
        }
        // The slice holds only ASCII digits, signs, '.', 'e'.
        let text = std::str::from_utf8(&bytes[start..self.pos]).unwrap_or("0");
        if is_float {
            // Rust's parser is correctly rounded, as Python's is; overflow gives inf.
            Ok(Node::Float(text.parse().unwrap_or(f64::NAN)))
        } else {
            Ok(Node::Int(text))
        }
    }

    fn string(&mut self) -> Result<Cow<'a, str>, CanonicalError> {
        self.pos += 1; // opening quote
        let start = self.pos;
        // Fast path: no escapes.
        loop {
            match self.input.get(self.pos) {
                None => return Err(self.error("a closing quote")),
                Some(b'"') => {
                    let raw = &self.input[start..self.pos];
                    self.pos += 1;
                    return std::str::from_utf8(raw).map(Cow::Borrowed).map_err(|_| {
                        CanonicalError {
                            offset: start,
                            reason: "valid UTF-8 in a string",
                        }
                    });
                }
                Some(b'\\') => break,
                Some(0..=0x1f) => return Err(self.error("no raw control character in a string")),
                Some(_) => self.pos += 1,
            }
        }
        let mut buf: Vec<u8> = self.input[start..self.pos].to_vec();
        loop {
            match self.input.get(self.pos) {
                None => return Err(self.error("a closing quote")),
                Some(b'"') => {
                    self.pos += 1;
                    return String::from_utf8(buf)
                        .map(Cow::Owned)
                        .map_err(|_| CanonicalError {
                            offset: start,
                            reason: "valid UTF-8 in a string",
                        });
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let escaped = match self.input.get(self.pos) {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            self.pos += 1;
                            let ch = self.unicode_escape()?;
                            let mut tmp = [0u8; 4];
                            buf.extend_from_slice(ch.encode_utf8(&mut tmp).as_bytes());
                            continue;
                        }
                        _ => return Err(self.error("a valid escape sequence")),
                    };
                    self.pos += 1;
                    buf.push(escaped as u8);
                }
                Some(0..=0x1f) => return Err(self.error("no raw control character in a string")),
                Some(&b) => {
                    buf.push(b);
                    self.pos += 1;
                }
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, CanonicalError> {
        let digits = self
            .input
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| self.error("four hex digits after \\u"))?;
        let text =
            std::str::from_utf8(digits).map_err(|_| self.error("four hex digits after \\u"))?;
        let value =
            u32::from_str_radix(text, 16).map_err(|_| self.error("four hex digits after \\u"))?;
        self.pos += 4;
        Ok(value)
    }

    /// Reads the XXXX of a `\uXXXX` escape (and a trailing low surrogate if needed).
    fn unicode_escape(&mut self) -> Result<char, CanonicalError> {
        let first = self.hex4()?;
        let code = if (0xD800..0xDC00).contains(&first) {
            if !self.input[self.pos..].starts_with(b"\\u") {
                return Err(self.error("a low surrogate after a high surrogate"));
            }
            self.pos += 2;
            let second = self.hex4()?;
            if !(0xDC00..0xE000).contains(&second) {
                return Err(self.error("a low surrogate after a high surrogate"));
            }
            0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
        } else if (0xDC00..0xE000).contains(&first) {
            return Err(self.error("no lone low surrogate"));
        } else {
            first
        };
        char::from_u32(code).ok_or_else(|| self.error("a valid code point"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(text: &str) -> String {
        canonicalize(text.as_bytes()).unwrap()
    }

    #[test]
    fn matches_the_spec_example_from_the_real_encoder() {
        let input = r#"{"b":[1.0,0.1,1e-05,1.2345678901234568e+17,1e15,1e16,-0.0,Infinity,1000000000000000000000000000000],"a":"\u007f\b\f\u2028","z":[],"B":1,"a2":{},"é":1}"#;
        assert_eq!(
            canon(input),
            r#"{"B":1,"a":"\u007f\b\f\u2028","a2":{},"b":[1.0,0.1,1e-05,1.2345678901234568e+17,1000000000000000.0,1e+16,-0.0,Infinity,1000000000000000000000000000000],"z":[],"\u00e9":1}"#
        );
    }

    #[test]
    fn python_float_repr() {
        let cases: &[(f64, &str)] = &[
            (1.0, "1.0"),
            (0.1, "0.1"),
            (1.5, "1.5"),
            (1e-5, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (0.0001, "0.0001"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (123456789.125, "123456789.125"),
            (1.2345678901234568e17, "1.2345678901234568e+17"),
            (-2.5, "-2.5"),
            (-0.0, "-0.0"),
            (1e100, "1e+100"),
            (5e-324, "5e-324"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
        ];
        for (value, expected) in cases {
            let mut out = String::new();
            write_python_float(&mut out, *value);
            assert_eq!(&out, expected, "repr of {value:?}");
        }
    }

    #[test]
    fn numbers_keep_their_kind() {
        assert_eq!(canon("[1E5, -0, 1e400, 7]"), "[100000.0,0,Infinity,7]");
    }

    #[test]
    fn strings_escape_like_ensure_ascii() {
        assert_eq!(
            canon(r#""tab\there\nnewline \"q\" back\\slash / 😀 \u0001""#),
            r#""tab\there\nnewline \"q\" back\\slash / \ud83d\ude00 \u0001""#
        );
    }

    #[test]
    fn duplicate_keys_keep_the_last_value() {
        assert_eq!(canon(r#"{"a":1,"b":2,"a":3}"#), r#"{"a":3,"b":2}"#);
    }

    #[test]
    fn whitespace_from_relay_reserialisation_is_removed() {
        assert_eq!(
            canon(r#"{"i": 1, "msg": {"log": "hello via relay"}}"#),
            r#"{"i":1,"msg":{"log":"hello via relay"}}"#
        );
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        for bad in [
            "",
            "{",
            "[1,",
            "{\"a\" 1}",
            "\"\\x\"",
            "01",
            "1.",
            "\"\\ud800\"",
            "nul",
            "[1] x",
            "\"\u{1}\"",
        ] {
            assert!(canonicalize(bad.as_bytes()).is_err(), "{bad:?} should fail");
        }
        let deep = "[".repeat(MAX_DEPTH + 10);
        assert!(canonicalize(deep.as_bytes()).is_err());
    }

    #[test]
    fn value_encoding_matches_text_transcoding() {
        let text = r#"{"z":{"y":[1,2.5,"é",null,true]},"a":-3}"#;
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(to_canonical_string(&value), canon(text));
    }
}
