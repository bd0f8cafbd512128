//! The fast path for request headers: a hand-written scanner for the JSON
//! the common client writes, with `serde_json` as the fallback for
//! everything else.
//!
//! Tensor data is most of a JSON body, and reading it through serde costs
//! a visitor call and a correctly rounded float parse per element. This
//! scanner reads the request's structure and its tensor data directly;
//! the small values around them (`id`, `parameters`, `outputs`, unknown
//! fields) it still hands to `serde_json`, one value at a time.
//!
//! The contract is narrow on purpose: [`scan_request`] either returns
//! exactly what the serde decoder in [`crate::request`] would have built
//! from the same bytes, or `None`, and then that decoder runs from the
//! start. Whatever the scanner is unsure of (an escaped key, data before
//! its datatype, a number it cannot read exactly, any syntax error) it
//! gives up on, so every error message, every limit and every corner of
//! JSON stays the serde decoder's; a body costs at most one wasted partial
//! scan on the way there.

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Map, Number, Value};

use crate::DataType;
use crate::json_tensors::{
    INITIAL_CAPACITY, JsonData, Sink, WireData, WireTensor, declared_count, read_ahead,
};
use crate::request::{WireRequest, WireRequestedOutput};
use crate::tensor::{Element, JsonScalar, for_datatype};

/// Deepest array nesting read inside one tensor's data, and deepest
/// nesting of a value handed to serde. The scanner's own levels (request,
/// tensor list, tensor) add three; serde refuses 128 levels, and staying
/// far below that keeps the scanner from accepting what serde would refuse.
const MAX_NESTING: usize = 64;

/// Powers of ten that an `f64` holds exactly.
const EXACT_POWERS_OF_TEN: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// The request header in `json`, if the scanner can read all of it (see
/// the module comment).
pub(crate) fn scan_request(json: &[u8], max_elements: u64) -> Option<WireRequest<'_>> {
    let mut scanner = Scanner { json, pos: 0 };
    let mut id = None;
    let mut parameters = None;
    let mut inputs = None;
    let mut outputs = None;
    scanner.object(|scanner, key| match key {
        "id" => fill(&mut id, scanner.serde::<Option<String>>()?),
        "parameters" => fill(
            &mut parameters,
            scanner.serde::<Option<Map<String, Value>>>()?,
        ),
        "inputs" => fill(&mut inputs, scanner.tensors(max_elements)?),
        "outputs" => fill(
            &mut outputs,
            scanner.serde::<Option<Vec<WireRequestedOutput>>>()?,
        ),
        _ => scanner.serde::<IgnoredAny>().map(drop),
    })?;
    if scanner.peek().is_some() {
        return None;
    }
    Some(WireRequest {
        id: id.flatten(),
        parameters: parameters.flatten(),
        inputs: inputs?,
        outputs: outputs.flatten(),
    })
}

/// Fills a field seen for the first time; a repeated field is left to
/// serde, which refuses it.
fn fill<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value);
    Some(())
}

struct Scanner<'a> {
    json: &'a [u8],
    pos: usize,
}

impl<'a> Scanner<'a> {
    /// The next byte that is not JSON whitespace, not consumed.
    fn peek(&mut self) -> Option<u8> {
        while let Some(&byte) = self.json.get(self.pos) {
            if !matches!(byte, b' ' | b'\n' | b'\r' | b'\t') {
                return Some(byte);
            }
            self.pos += 1;
        }
        None
    }

    /// Consumes `byte`, the next byte that is not whitespace.
    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.pos += 1)
    }

    /// Reads an object, calling `field` with the scanner just past each
    /// key's colon; `field` must consume the value.
    fn object(&mut self, mut field: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            let key = self.plain_string()?;
            self.eat(b':')?;
            field(self, key)?;
            if !self.another(b'}')? {
                return Some(());
            }
        }
    }

    /// Reads a list, calling `element` with the scanner at each element;
    /// `element` must consume it.
    fn list(&mut self, mut element: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.eat(b'[')?;
        if self.eat(b']').is_some() {
            return Some(());
        }
        loop {
            element(self)?;
            if !self.another(b']')? {
                return Some(());
            }
        }
    }

    /// Past a field or an element: whether another follows (a comma,
    /// consumed) or the object or list ends (`close`, consumed).
    fn another(&mut self, close: u8) -> Option<bool> {
        let byte = self.peek()?;
        if byte != b',' && byte != close {
            return None;
        }
        self.pos += 1;
        Some(byte == b',')
    }

    /// A string without escapes or control characters (serde unescapes the
    /// one and refuses the other).
    fn plain_string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.pos;
        let rest = self.json.get(start..)?;
        let len = rest.iter().position(|&byte| byte == b'"')?;
        let text = rest.get(..len)?;
        if text.iter().any(|&byte| byte == b'\\' || byte < 0x20) {
            return None;
        }
        self.pos = start + len + 1;
        std::str::from_utf8(text).ok()
    }

    /// One value read by serde, as the serde decoder would read it there.
    fn serde<T: Deserialize<'a>>(&mut self) -> Option<T> {
        self.peek()?;
        let rest = self.json.get(self.pos..)?;
        let mut stream = serde_json::Deserializer::from_slice(rest).into_iter::<T>();
        let value = stream.next()?.ok()?;
        let end = stream.byte_offset();
        // serde's depth limit counts from the top of the document, which a
        // value read here would not; a deep one goes back to serde whole.
        if nesting(rest.get(..end)?) > MAX_NESTING {
            return None;
        }
        self.pos += end;
        Some(value)
    }

    /// The tensor list; data is read while the elements the tensors
    /// declare, together, stay within `max_elements` (as
    /// [`crate::json_tensors::TensorsSeed`] reads it).
    fn tensors(&mut self, max_elements: u64) -> Option<Vec<WireTensor<'a>>> {
        let mut tensors: Vec<WireTensor<'a>> = Vec::new();
        let mut declared: u64 = 0;
        self.list(|scanner| {
            let tensor = scanner.tensor(max_elements.saturating_sub(declared))?;
            let count = declared_count(&tensor.shape).unwrap_or(0);
            declared = declared.saturating_add(count);
            tensors.push(tensor);
            Some(())
        })?;
        Some(tensors)
    }

    /// One tensor, its data read if it declares at most `budget` elements.
    fn tensor(&mut self, budget: u64) -> Option<WireTensor<'a>> {
        let mut name = None;
        let mut shape: Option<Vec<Number>> = None;
        let mut datatype: Option<&str> = None;
        let mut parameters = None;
        let mut data = None;
        self.object(|scanner, key| match key {
            "name" => fill(&mut name, scanner.plain_string()?),
            "shape" => fill(&mut shape, scanner.shape()?),
            "datatype" => fill(&mut datatype, scanner.plain_string()?),
            "parameters" => fill(
                &mut parameters,
                scanner.serde::<Option<Map<String, Value>>>()?,
            ),
            "data" => {
                // Data before its datatype and shape, beyond the element
                // limit, or of a datatype without typed storage is kept as
                // raw text by serde, to be read afterwards.
                let (datatype, expected) = read_ahead(datatype, shape.as_deref(), budget)?;
                fill(&mut data, scanner.data(datatype, expected)?)
            }
            _ => scanner.serde::<IgnoredAny>().map(drop),
        })?;
        Some(WireTensor {
            name: name?.to_owned(),
            shape: shape?,
            datatype: datatype?.to_owned(),
            parameters: parameters.flatten(),
            data: data.map(WireData::Read),
        })
    }

    /// A shape of plain non-negative integers (anything else, serde reads
    /// and the decoder names what is wrong).
    fn shape(&mut self) -> Option<Vec<Number>> {
        let mut dims = Vec::new();
        self.list(
            |scanner| match scanner.peek().and_then(|_| scanner.number())? {
                JsonScalar::Unsigned(dim) => {
                    dims.push(Number::from(dim));
                    Some(())
                }
                _ => None,
            },
        )?;
        Some(dims)
    }

    /// A tensor's data as `datatype`: a number, a boolean or nested arrays
    /// of them, flattened into the same [`Sink`] serde's reader fills.
    fn data(&mut self, datatype: DataType, expected: u64) -> Option<JsonData> {
        let capacity = usize::try_from(expected.min(INITIAL_CAPACITY)).unwrap_or(usize::MAX);
        for_datatype!(
            datatype,
            T => {
                let mut sink = Sink::<T>::new(expected, capacity);
                self.elements(&mut sink)?;
                Some(sink.finish())
            },
            _ => None
        )
    }

    /// Feeds every element of one value to `sink`, without recursion.
    fn elements<T: Element>(&mut self, sink: &mut Sink<T>) -> Option<()> {
        let mut depth = 0usize;
        loop {
            // At a value.
            match self.peek()? {
                b'[' => {
                    self.pos += 1;
                    depth += 1;
                    if depth > MAX_NESTING {
                        return None;
                    }
                    if self.peek()? != b']' {
                        continue;
                    }
                    self.pos += 1;
                    depth -= 1;
                }
                b't' => {
                    self.literal(b"true")?;
                    sink.push(JsonScalar::Bool(true));
                }
                b'f' => {
                    self.literal(b"false")?;
                    sink.push(JsonScalar::Bool(false));
                }
                _ => sink.push(self.number()?),
            }
            // Past a value: close finished arrays, then on to the next.
            loop {
                if depth == 0 {
                    return Some(());
                }
                if self.another(b']')? {
                    break;
                }
                depth -= 1;
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.pos.checked_add(word.len())?;
        (self.json.get(self.pos..end)? == word).then(|| self.pos = end)
    }

    /// A JSON number as serde reads it for `deserialize_any`: a plain
    /// integer as `Unsigned` or `Signed`, anything with a fraction or an
    /// exponent as the correctly rounded `Float` (the workspace builds
    /// serde_json with `float_roundtrip`). Integers of 19 digits and more
    /// (where serde switches to floats), `-0` (a float to serde) and
    /// non-finite results are left to serde. What follows the number is
    /// the caller's to check: serde would refuse `01` or `1x`, and so does
    /// every caller, finding no delimiter after the `0` or the `1`.
    #[inline]
    fn number(&mut self) -> Option<JsonScalar> {
        let json = self.json;
        let start = self.pos;
        let mut pos = start;
        let negative = json.get(pos) == Some(&b'-');
        if negative {
            pos += 1;
        }
        let mut mantissa: u64 = 0;
        let mut digits = match json.get(pos) {
            Some(b'0') => {
                pos += 1;
                1
            }
            Some(b'1'..=b'9') => {
                let end = read_digits(json, pos, &mut mantissa);
                let count = end - pos;
                pos = end;
                count
            }
            _ => return None,
        };
        let mut exponent: i64 = 0;
        let mut is_float = false;
        if json.get(pos) == Some(&b'.') {
            is_float = true;
            pos += 1;
            let fraction_start = pos;
            pos = read_digits(json, pos, &mut mantissa);
            let fraction_digits = pos - fraction_start;
            if fraction_digits == 0 {
                return None;
            }
            digits += fraction_digits;
            exponent -= i64::try_from(fraction_digits).ok()?;
        }
        if let Some(b'e' | b'E') = json.get(pos) {
            is_float = true;
            pos += 1;
            let exponent_negative = match json.get(pos) {
                Some(b'-') => {
                    pos += 1;
                    true
                }
                Some(b'+') => {
                    pos += 1;
                    false
                }
                _ => false,
            };
            let exponent_start = pos;
            let mut written: i64 = 0;
            while let Some(&digit @ b'0'..=b'9') = json.get(pos) {
                // Past this the value is 0, infinite or a long-form parse
                // anyway; the cap only keeps the sum from overflowing.
                if written < 1_000_000 {
                    written = written * 10 + i64::from(digit - b'0');
                }
                pos += 1;
            }
            if pos == exponent_start {
                return None;
            }
            exponent += if exponent_negative { -written } else { written };
        }
        self.pos = pos;
        if !is_float {
            return match (digits > 18, negative) {
                (true, _) => None,
                (false, false) => Some(JsonScalar::Unsigned(mantissa)),
                (false, true) if mantissa == 0 => None,
                (false, true) => Some(JsonScalar::Signed(-i64::try_from(mantissa).ok()?)),
            };
        }
        // Clinger's fast path: a mantissa and a power of ten that are both
        // exact in an f64 give the correctly rounded value in one
        // multiplication or division. (The digit count includes leading
        // zeros, so it may refuse a mantissa it could take, never the
        // other way.)
        let power = usize::try_from(exponent.unsigned_abs()).ok()?;
        let value = match EXACT_POWERS_OF_TEN.get(power) {
            Some(&scale) if digits <= 19 && mantissa <= 1 << 53 => {
                let magnitude = if exponent < 0 {
                    mantissa as f64 / scale
                } else {
                    mantissa as f64 * scale
                };
                if negative { -magnitude } else { magnitude }
            }
            // The standard library's parse is correctly rounded too.
            _ => std::str::from_utf8(json.get(start..pos)?)
                .ok()?
                .parse::<f64>()
                .ok()?,
        };
        value.is_finite().then_some(JsonScalar::Float(value))
    }
}

/// Reads the decimal digits from `pos` on into `mantissa` (wrapping past
/// 19 digits, which the caller counts), returning where they end. Eight
/// bytes are looked at together: a float's digits are read in one or two
/// steps of a handful of operations instead of a loop over each.
fn read_digits(json: &[u8], mut pos: usize, mantissa: &mut u64) -> usize {
    while let Some(word) = word_at(json, pos) {
        let count = leading_digits(word);
        if count == 0 {
            return pos;
        }
        *mantissa = mantissa
            .wrapping_mul(POWERS_OF_TEN[count])
            .wrapping_add(digits_value(word, count));
        pos += count;
        // A float's fraction of eight digits usually ends here: one byte
        // tells, without reading another word.
        if count < 8 || !json.get(pos).is_some_and(u8::is_ascii_digit) {
            return pos;
        }
    }
    // The last few bytes of the text, one at a time.
    while let Some(&digit @ b'0'..=b'9') = json.get(pos) {
        *mantissa = mantissa
            .wrapping_mul(10)
            .wrapping_add(u64::from(digit - b'0'));
        pos += 1;
    }
    pos
}

/// `10^n` for the digit counts [`read_digits`] takes at once.
const POWERS_OF_TEN: [u64; 9] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
];

const HIGH_NIBBLES: u64 = 0xF0F0_F0F0_F0F0_F0F0;
const ZEROS: u64 = 0x3030_3030_3030_3030;

/// The eight bytes at `pos` as one little-endian word (the byte at `pos`
/// lowest).
fn word_at(json: &[u8], pos: usize) -> Option<u64> {
    let bytes: [u8; 8] = json.get(pos..pos.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// How many of the word's bytes, from the lowest, are decimal digits.
fn leading_digits(word: u64) -> usize {
    // A byte is a digit when its high nibble is 3 and adding 6 to it does
    // not carry out of its low nibble (0x3A..=0x3F would). A carry or
    // borrow between bytes only runs upwards, from a byte that is not a
    // digit, so it cannot hide the first one that is not.
    let not_digit = ((word & HIGH_NIBBLES) ^ ZEROS)
        | ((word.wrapping_add(0x0606_0606_0606_0606) & HIGH_NIBBLES) ^ ZEROS);
    (not_digit.trailing_zeros() / 8) as usize
}

/// The value of the first `count` (1 to 8) bytes of `word`, all digits.
fn digits_value(word: u64, count: usize) -> u64 {
    // Digit k in byte k, the first (most significant) lowest. Shifted to
    // the top bytes, the digits get zero digits in front of them and the
    // bytes after them (and any borrow the subtraction took from those)
    // fall off the end.
    let unused = 8 * (8 - count.clamp(1, 8));
    let digits = word.wrapping_sub(ZEROS) << unused;
    // Pair neighbours: byte 2i becomes 10 * digit 2i + digit 2i+1.
    let pairs = digits.wrapping_mul(10).wrapping_add(digits >> 8);
    // Bytes 0 and 4 weighted by 10^6 and 10^2, bytes 2 and 6 by 10^4 and
    // 1: each product lands in the high half, which holds the sum.
    const PAIRS_0_4: u64 = 0x0000_00FF_0000_00FF;
    let high = (pairs & PAIRS_0_4).wrapping_mul(100 + (1_000_000 << 32));
    let low = ((pairs >> 16) & PAIRS_0_4).wrapping_mul(1 + (10_000 << 32));
    high.wrapping_add(low) >> 32
}

/// The deepest array or object nesting in a JSON value's text.
fn nesting(json: &[u8]) -> usize {
    let mut depth = 0usize;
    let mut deepest = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in json {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    // Test helpers panic on purpose: a failed expectation is a failed test.
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use proptest::prelude::*;

    use super::*;
    use crate::request::read_request;
    use crate::{InferRequest, Tensor, TensorData, encode_request};

    const LIMIT: u64 = 1 << 20;

    /// Whether the scanner read `json`; panics if what it read differs from
    /// what serde reads, or if it read what serde refuses.
    fn scanned(json: &str) -> bool {
        let Some(fast) = scan_request(json.as_bytes(), LIMIT) else {
            return false;
        };
        match read_request(json.as_bytes(), LIMIT) {
            Ok(slow) => assert_eq!(format!("{fast:?}"), format!("{slow:?}"), "{json}"),
            Err(error) => panic!("the scanner read what serde refuses ({error}): {json}"),
        }
        true
    }

    fn body(data: &str) -> String {
        format!(r#"{{"inputs":[{{"name":"x","shape":[2],"datatype":"FP32","data":{data}}}]}}"#)
    }

    #[test]
    fn what_clients_write_is_scanned_as_serde_reads_it() {
        let bodies = [
            body("[0.5, 1e-3]"),
            body("[[1],[2]]"),
            body("[-0.0, 3.4028234663852886e38]"),
            body("[1, 2, 3]"),
            body("[]"),
            body("7"),
            r#" { "id" : "a\"b" , "parameters" : {"timeout": 5, "x": [{"y": null}]},
                 "inputs" : [ { "name" : "x" , "shape" : [ 2 , 1 ] , "datatype" : "INT64" ,
                 "data" : [ [ -3 ] , [ 4 ] ] , "other" : {"deep": [1, [2]]} } ] ,
                 "outputs" : [{"name": "y", "parameters": {"binary_data": true}}], "extra": 1 } "#
                .to_owned(),
            r#"{"inputs":[{"name":"b","shape":[3],"datatype":"BOOL","data":[true,false,1]}]}"#
                .to_owned(),
            r#"{"inputs":[{"name":"i","shape":[1],"datatype":"INT8","data":[1.5]}]}"#.to_owned(),
            r#"{"inputs":[{"name":"i","shape":[1],"datatype":"UINT8","data":[300]}]}"#.to_owned(),
            r#"{"inputs":[{"name":"x","shape":[4],"datatype":"FP32","parameters":{"binary_data_size":16}}]}"#
                .to_owned(),
            r#"{"inputs":[],"id":null,"parameters":null,"outputs":null}"#.to_owned(),
            r#"{"inputs":[{"name":"é","shape":[1],"datatype":"FP64","data":[1E+2]}],"":{}}"#
                .to_owned(),
        ];
        for json in &bodies {
            assert!(scanned(json), "left to serde: {json}");
        }
    }

    #[test]
    fn anything_unusual_is_left_to_serde() {
        let data_first =
            r#"{"inputs":[{"data":[1,2],"name":"x","shape":[2],"datatype":"FP32"}]}"#.to_owned();
        let escaped_key =
            r#"{"in\u0070uts":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]}"#.to_owned();
        let repeated = r#"{"inputs":[],"inputs":[]}"#.to_owned();
        let half_float =
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP16","data":[1]}]}"#.to_owned();
        let deep_data = body(&format!("{}1{}", "[".repeat(70), "]".repeat(70)));
        let deep_parameters = format!(
            r#"{{"parameters":{{"a":{}1{}}},"inputs":[]}}"#,
            "[".repeat(100),
            "]".repeat(100)
        );
        let mut bodies = vec![
            data_first,
            escaped_key,
            repeated,
            half_float,
            deep_data,
            deep_parameters,
            r#"{"inputs":[]} x"#.to_owned(),
            r#"{"inputs":[{"name":"x\ty","shape":[1],"datatype":"FP32","data":[1]}]}"#.to_owned(),
            r#"{"inputs":[{"name":"x","shape":[-1],"datatype":"FP32","data":[1]}]}"#.to_owned(),
            r#"{"id":"x"}"#.to_owned(),
            "[]".to_owned(),
            String::new(),
        ];
        for data in [
            "[1,2,]",
            "[01]",
            "[1.]",
            "[.5]",
            "[+1]",
            "[-]",
            "[1e]",
            "[-0]",
            "[1e400]",
            "[NaN]",
            "[1x]",
            "[truex]",
            "null",
            "[null]",
            "[\"1\"]",
            "[{}]",
            "[1 2]",
            "[1",
            "[1]]",
            "[12345678901234567890]",
            "[1234567890123456789]",
        ] {
            bodies.push(body(data));
        }
        for json in &bodies {
            assert!(!scanned(json), "scanned: {json}");
        }
    }

    #[test]
    fn digits_are_read_eight_bytes_at_a_time() {
        let word = |text: &[u8]| word_at(text, 0).unwrap();
        assert_eq!(leading_digits(word(b"12345678")), 8);
        assert_eq!(leading_digits(word(b"1234567,")), 7);
        assert_eq!(leading_digits(word(b"1/345678")), 1);
        assert_eq!(leading_digits(word(b":2345678")), 0);
        assert_eq!(leading_digits(word(b"12e45678")), 2);
        assert_eq!(leading_digits(word(b"9\xff\xfa45678")), 1);
        assert_eq!(digits_value(word(b"12345678"), 8), 12_345_678);
        assert_eq!(digits_value(word(b"99999999"), 8), 99_999_999);
        assert_eq!(digits_value(word(b"0123]}]}"), 4), 123);
        assert_eq!(digits_value(word(b"7,000000"), 1), 7);
        for text in [
            &b"1234567890123,"[..],
            b"12345678",
            b"123",
            b"0.5",
            b"123456789012345678901234",
        ] {
            let mut mantissa = 0u64;
            let end = read_digits(text, 0, &mut mantissa);
            let expected = text.iter().take_while(|b| b.is_ascii_digit()).count();
            assert_eq!(end, expected, "{text:?}");
            let value = text[..end].iter().fold(0u64, |acc, &d| {
                acc.wrapping_mul(10).wrapping_add(u64::from(d - b'0'))
            });
            assert_eq!(mantissa, value, "{text:?}");
        }
    }

    #[test]
    fn data_past_the_element_limit_is_left_to_serde() {
        let json = body("[1, 2]");
        assert!(scan_request(json.as_bytes(), 2).is_some());
        assert!(scan_request(json.as_bytes(), 1).is_none());
    }

    #[test]
    fn invalid_utf8_in_a_name_is_left_to_serde() {
        let mut json = body("[1, 2]").into_bytes();
        let at = json.iter().position(|&byte| byte == b'x').unwrap();
        json[at] = 0xff;
        assert!(scan_request(&json, LIMIT).is_none());
        assert!(read_request(&json, LIMIT).is_err());
    }

    /// Numbers as clients print them: serde's shortest forms of the f64
    /// and of the f32 nearest to it, Rust's exponent notation (shortest and
    /// with 26 digits), fixed notation with 12 decimals.
    fn spellings(value: f64) -> Vec<String> {
        let nearest_f32 = Some(value as f32).filter(|v| v.is_finite());
        [
            Some(serde_json::to_string(&value).unwrap()),
            nearest_f32.map(|v| serde_json::to_string(&v).unwrap()),
            Some(format!("{value:e}")),
            Some(format!("{value:.25e}")),
            Some(format!("{value:.12}")),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    fn tensor_body(datatype: &str, numbers: &[String]) -> String {
        format!(
            r#"{{"inputs":[{{"name":"x","shape":[{}],"datatype":"{datatype}","data":[{}]}}]}}"#,
            numbers.len(),
            numbers.join(", ")
        )
    }

    proptest! {
        #[test]
        fn numbers_read_as_serde_reads_them(
            value in prop::num::f64::NORMAL | prop::num::f64::SUBNORMAL | prop::num::f64::ZERO,
            integer in -999_999_999_999_999_999i64..=999_999_999_999_999_999,
            datatype in prop::sample::select(vec!["FP32", "FP64", "INT64", "UINT64"]),
        ) {
            prop_assert!(scanned(&tensor_body(datatype, &spellings(value))));
            prop_assert!(scanned(&tensor_body(datatype, &[integer.to_string()])));
        }

        #[test]
        fn encoded_requests_are_scanned(values in prop::collection::vec(any::<f32>().prop_filter("finite", |v| v.is_finite()), 1..64)) {
            let request = InferRequest {
                id: Some("r".into()),
                inputs: vec![Tensor { name: "x".into(), shape: vec![values.len() as u64], data: TensorData::Fp32(values) }],
                ..InferRequest::default()
            };
            let encoded = encode_request(&request, false).unwrap();
            prop_assert!(scanned(std::str::from_utf8(&encoded.bytes).unwrap()));
        }

        /// Bodies mangled at random: whatever the scanner accepts, serde
        /// accepts and reads the same.
        #[test]
        fn mangled_bodies_never_read_differently(
            cut in 0usize..120,
            insert in prop::sample::select(vec![
                "", ",", "]", "[", "{", "}", "\"", ":", "-", ".", "e", "0", "1e5", " ", "\\",
                "null", "true", "\"data\":[1]", ",\"x\":1", "\u{e9}",
            ]),
            remove in 0usize..3,
        ) {
            let template = r#"{"id":"r","inputs":[{"name":"x","shape":[2,1],"datatype":"INT32","data":[[1],[-2]]}],"outputs":[{"name":"y"}]}"#;
            let cut = template.char_indices().map(|(i, _)| i).nth(cut % template.len()).unwrap_or(0);
            let end = (cut + remove).min(template.len());
            let json = format!("{}{insert}{}", &template[..cut], &template[end..]);
            scanned(&json);
        }
    }
}
