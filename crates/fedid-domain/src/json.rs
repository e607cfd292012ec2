//! A strict JSON reader for envelopes: RFC 8259 plus the I-JSON rules that
//! RFC 8785 assumes (PROTOCOL.md section 3). serde_json alone keeps the last
//! of duplicate members and forgets how an integer was written, so both are
//! checked here while reading, in one pass.

use serde_json::{Map, Number, Value};

/// Nesting this deep is refused outright, whatever the member: it bounds
/// recursion. The payload has its own, lower limit.
const MAX_NESTING: usize = 128;

/// Why a body is not the I-JSON that section 3 requires.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// Not JSON, at this byte offset.
    #[error("malformed JSON at byte {0}")]
    Syntax(usize),
    /// A member name appears twice in one object.
    #[error("duplicate member name {0:?}")]
    DuplicateMember(String),
    /// A lone surrogate escape, at this byte offset.
    #[error("lone surrogate escape at byte {0}")]
    LoneSurrogate(usize),
    /// A number that is not finite, or an integer literal that a double cannot hold, at this byte offset.
    #[error("number at byte {0} is not a finite double, or an integer literal not exactly a double")]
    Number(usize),
    /// Nested deeper than the reader allows.
    #[error("nesting deeper than {MAX_NESTING}")]
    TooDeep,
}

/// A parsed document, with what the value alone cannot tell: which members
/// of the top-level object hold a number not written as an integer literal
/// (`1.0`, `1e0`), so version members can insist on integer literals.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// The value read.
    pub value: Value,
    /// Top-level members whose value was a number written with a fraction or an exponent.
    pub non_integer_members: Vec<String>,
}

/// Parses one JSON text under the I-JSON rules.
pub fn parse_strict(input: &[u8]) -> Result<Value, JsonError> {
    parse_document(input).map(|doc| doc.value)
}

/// Parses one JSON text under the I-JSON rules, keeping literal facts.
pub fn parse_document(input: &[u8]) -> Result<Document, JsonError> {
    let text = std::str::from_utf8(input).map_err(|e| JsonError::Syntax(e.valid_up_to()))?;
    let mut reader = Reader {
        text,
        bytes: input,
        pos: 0,
        last_number_integer: false,
        non_integer_members: Vec::new(),
    };
    reader.skip_ws();
    let value = reader.value(0)?;
    reader.skip_ws();
    if reader.pos != input.len() {
        return Err(JsonError::Syntax(reader.pos));
    }
    Ok(Document {
        value,
        non_integer_members: reader.non_integer_members,
    })
}

struct Reader<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    last_number_integer: bool,
    non_integer_members: Vec<String>,
}

impl Reader<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), JsonError> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(JsonError::Syntax(self.pos))
        }
    }

    fn literal(&mut self, word: &str, value: Value) -> Result<Value, JsonError> {
        if self.bytes[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(JsonError::Syntax(self.pos))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, JsonError> {
        match self.peek() {
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => self.string().map(Value::String),
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'n') => self.literal("null", Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(JsonError::Syntax(self.pos)),
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, JsonError> {
        if depth > MAX_NESTING {
            return Err(JsonError::TooDeep);
        }
        self.expect(b'{')?;
        let mut map = Map::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Object(map));
        }
        loop {
            self.skip_ws();
            let key = self.string()?;
            self.skip_ws();
            self.expect(b':')?;
            self.skip_ws();
            let value = self.value(depth)?;
            if depth == 1 && value.is_number() && !self.last_number_integer {
                self.non_integer_members.push(key.clone());
            }
            if map.contains_key(&key) {
                return Err(JsonError::DuplicateMember(key));
            }
            map.insert(key, value);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Value::Object(map));
                }
                _ => return Err(JsonError::Syntax(self.pos)),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, JsonError> {
        if depth > MAX_NESTING {
            return Err(JsonError::TooDeep);
        }
        self.expect(b'[')?;
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        loop {
            self.skip_ws();
            items.push(self.value(depth)?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(JsonError::Syntax(self.pos)),
            }
        }
    }

    fn hex4(&mut self) -> Result<u16, JsonError> {
        let digits = self
            .text
            .get(self.pos..self.pos + 4)
            .ok_or(JsonError::Syntax(self.pos))?;
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(JsonError::Syntax(self.pos));
        }
        self.pos += 4;
        u16::from_str_radix(digits, 16).map_err(|_| JsonError::Syntax(self.pos))
    }

    fn string(&mut self) -> Result<String, JsonError> {
        self.expect(b'"')?;
        let mut out = String::new();
        loop {
            let start = self.pos;
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            // Input is valid UTF-8 and we stop only at ASCII bytes, so this slice is on char boundaries.
            out.push_str(&self.text[start..self.pos]);
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let escape = self.peek().ok_or(JsonError::Syntax(self.pos))?;
                    self.pos += 1;
                    match escape {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => out.push(self.unicode_escape(start)?),
                        _ => return Err(JsonError::Syntax(self.pos - 1)),
                    }
                }
                _ => return Err(JsonError::Syntax(self.pos)),
            }
        }
    }

    fn unicode_escape(&mut self, at: usize) -> Result<char, JsonError> {
        let unit = self.hex4()?;
        let code = match unit {
            0xD800..=0xDBFF => {
                if !self.bytes[self.pos..].starts_with(b"\\u") {
                    return Err(JsonError::LoneSurrogate(at));
                }
                self.pos += 2;
                let low = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&low) {
                    return Err(JsonError::LoneSurrogate(at));
                }
                0x10000 + ((u32::from(unit) - 0xD800) << 10) + (u32::from(low) - 0xDC00)
            }
            0xDC00..=0xDFFF => return Err(JsonError::LoneSurrogate(at)),
            _ => u32::from(unit),
        };
        char::from_u32(code).ok_or(JsonError::LoneSurrogate(at))
    }

    fn number(&mut self) -> Result<Value, JsonError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        let int_start = self.pos;
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                while self.peek().is_some_and(|b| b.is_ascii_digit()) {
                    self.pos += 1;
                }
            }
            _ => return Err(JsonError::Syntax(self.pos)),
        }
        let int_end = self.pos;
        let mut integer_literal = true;
        if self.peek() == Some(b'.') {
            integer_literal = false;
            self.pos += 1;
            self.digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            integer_literal = false;
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            self.digits()?;
        }
        self.last_number_integer = integer_literal;
        let literal = &self.text[start..self.pos];
        let double: f64 = literal.parse().map_err(|_| JsonError::Syntax(start))?;
        if !double.is_finite() {
            return Err(JsonError::Number(start));
        }
        if integer_literal {
            let digits = &self.text[int_start..int_end];
            // Up to 15 digits is always below 2^53: exact without checking.
            if digits.len() > 15 && !integer_literal_lossless(digits, double.abs()) {
                return Err(JsonError::Number(start));
            }
            if let Ok(v) = literal.parse::<i64>() {
                return Ok(Value::Number(Number::from(v)));
            }
            if let Ok(v) = literal.parse::<u64>() {
                return Ok(Value::Number(Number::from(v)));
            }
        }
        Number::from_f64(double)
            .map(Value::Number)
            .ok_or(JsonError::Number(start))
    }

    fn digits(&mut self) -> Result<(), JsonError> {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        if self.pos == start {
            Err(JsonError::Syntax(self.pos))
        } else {
            Ok(())
        }
    }
}

/// An integer literal is kept when reading it as a double loses nothing:
/// the double is exactly the literal, or the literal is exactly what RFC 8785
/// writes for that double (so every wire form fedid emits reads back; see
/// docs/contract-notes.md).
fn integer_literal_lossless(digits: &str, magnitude: f64) -> bool {
    if format!("{magnitude:.0}") == digits {
        return true;
    }
    Number::from_f64(magnitude).is_some_and(|n| {
        serde_json_canonicalizer::to_vec(&Value::Number(n)).is_ok_and(|text| text == digits.as_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ordinary_json() {
        let v = parse_strict(br#" {"a": [1, -2.5, true, false, null, "x\u00e9\ud83d\ude00\n"], "b": {}} "#).unwrap();
        assert_eq!(v["a"][5], Value::String("xé😀\n".into()));
        assert_eq!(v["a"][1], serde_json::json!(-2.5));
    }

    #[test]
    fn refuses_duplicates_surrogates_and_inexact_numbers() {
        assert!(matches!(
            parse_strict(br#"{"a":1,"a":2}"#),
            Err(JsonError::DuplicateMember(_))
        ));
        assert!(matches!(
            parse_strict(br#"{"a":{"b":1,"b":1}}"#),
            Err(JsonError::DuplicateMember(_))
        ));
        assert!(matches!(
            parse_strict(br#"["\ud800"]"#),
            Err(JsonError::LoneSurrogate(_))
        ));
        assert!(matches!(
            parse_strict(br#"["\udc00x"]"#),
            Err(JsonError::LoneSurrogate(_))
        ));
        assert!(matches!(
            parse_strict(br#"["\ud800\u0041"]"#),
            Err(JsonError::LoneSurrogate(_))
        ));
        assert!(matches!(parse_strict(b"[9007199254740993]"), Err(JsonError::Number(_))));
        assert!(matches!(
            parse_strict(b"[100000000000000000001]"),
            Err(JsonError::Number(_))
        ));
        assert!(matches!(parse_strict(b"[1e400]"), Err(JsonError::Number(_))));
        assert!(matches!(parse_strict(b"[-1e400]"), Err(JsonError::Number(_))));
        assert!(parse_strict(b"[100000000000000000000, 9007199254740992, -9007199254740991, 1e-400, -0]").is_ok());
        assert!(
            parse_strict(b"[1000000000000000000000]").is_ok(),
            "10^21 is exactly a double"
        );
        assert!(
            parse_strict(b"[123456789012345680000]").is_ok(),
            "what RFC 8785 writes for 1.2345678901234568e20"
        );
        assert!(parse_strict(b"[123456789012345680001]").is_err());
    }

    #[test]
    fn refuses_malformed_text() {
        for bad in [
            &b"{"[..],
            b"{\"a\"}",
            b"[1,]",
            b"[01]",
            b"[1.]",
            b"[.5]",
            b"[+1]",
            b"[1e]",
            b"\"\x01\"",
            b"[tru]",
            b"{} {}",
            b"\"\\x\"",
            b"[\"\xff\"]",
            b"",
            b"[-]",
            b"{'a':1}",
            b"[NaN]",
            b"[Infinity]",
        ] {
            assert!(parse_strict(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn bounds_nesting() {
        let deep = format!("{}{}", "[".repeat(MAX_NESTING + 1), "]".repeat(MAX_NESTING + 1));
        assert_eq!(parse_strict(deep.as_bytes()), Err(JsonError::TooDeep));
        let ok = format!("{}{}", "[".repeat(MAX_NESTING), "]".repeat(MAX_NESTING));
        assert!(parse_strict(ok.as_bytes()).is_ok());
    }
}
