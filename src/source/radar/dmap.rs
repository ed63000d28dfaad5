//! DMAP records, the self-describing binary format of SuperDARN data (fitacf records here), and
//! [`parse`], the decoder the radar feeds run on every record.
//!
//! Layout (RST `codebase/general/src.lib/dmap.1.25/src/dmap.c`, `DataMapEncodeBuffer` and
//! `DataMapDecodeBuffer`; the same in SuperDARNCanada/dmap `src/parser.rs`), every number
//! little-endian:
//! - header: code (`DATACODE`, 0x0001_0001; not checked, as neither reader checks it), total
//!   size in bytes (the header included), scalar count, array count: `i32` each;
//! - each scalar: name (NUL-terminated), type byte, value (a string value is NUL-terminated);
//! - each array: name (NUL-terminated), type byte, dimension count (`i32`, at least 1), the
//!   dimensions (`i32` each, RST order: fastest-varying first), then the elements; a string
//!   array holds that many NUL-terminated strings back to back.
//!
//! Type bytes (RST `dmap.h`): 1 `char`, 2 `short`, 3 `int`, 4 `float`, 8 `double`, 9 string,
//! 10 `long`, 16 `uchar`, 17 `ushort`, 18 `uint`, 19 `ulong`. 255 (a nested record) is not
//! accepted: no radar record uses it.
//!
//! Invariants: no panic and no allocation beyond what the input justifies. Every count and
//! dimension is checked against the bytes left before anything is allocated (a scalar takes at
//! least 3 bytes, an array at least 10, an element at least its width), the header size must
//! equal the input length and the fields must end exactly there; a violation is a
//! [`DmapError`] naming the byte offset. The decoded [`Array::values`] are one [`Value`] (32
//! bytes) per element, so the decoded record is at most about 32 times the input.
//!
//! Thread: pure, any thread (a radar feed's thread).
//!
//! This file is over the soft 300-line ceiling because the decoder, its test-side writer and
//! the tests of each malformed case belong together.

/// `DATACODE` of RST's `dmap.h`: the code [`write`] puts in the header.
pub const DATACODE: i32 = 0x0001_0001;

/// Bytes in a record header (code, size, scalar count, array count).
pub const HEADER_BYTES: usize = 16;

/// Longest scalar or array name accepted, in bytes, NUL excluded. Default 255: real names are
/// under 16 (`noise.sky`, `x_sd_phi`); RST itself has no limit. Bounds the name allocation.
pub const MAX_NAME_BYTES: usize = 255;

/// Most dimensions an array may have. Default 8: fitacf arrays have 1, rawacf 3.
pub const MAX_DIMS: usize = 8;

/// Fewest bytes a scalar takes: an empty name's NUL, the type byte, a one-byte value.
const MIN_SCALAR_BYTES: usize = 3;

/// Fewest bytes an array takes: NUL, type byte, dimension count, one dimension.
const MIN_ARRAY_BYTES: usize = 10;

/// Why bytes are not a DMAP record: always the peer's fault (a corrupt or hostile feed). The
/// caller drops the record, counts it and goes on with the next one. Offsets are from the start
/// of the record. No variant allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DmapError {
    /// The input ends inside `what`, which starts at `offset`.
    #[error("record truncated: {what} at byte {offset} runs past the end")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Where it starts.
        offset: usize,
    },
    /// The header's size is below the header's own 16 bytes or is not the input's length.
    #[error("record size {size} in the header, but {actual} bytes are there")]
    SizeMismatch {
        /// The size the header states.
        size: i32,
        /// The bytes available.
        actual: usize,
    },
    /// A scalar or array count is negative or more than the bytes left could hold.
    #[error("{what} {count} at byte {offset} is negative or more than the record can hold")]
    BadCount {
        /// Which count.
        what: &'static str,
        /// The count stated.
        count: i32,
        /// Where it is.
        offset: usize,
    },
    /// A type byte names no DMAP type this decoder accepts.
    #[error("unknown type byte {code} at byte {offset}")]
    BadType {
        /// The type byte.
        code: u8,
        /// Where it is.
        offset: usize,
    },
    /// A name or string value has no terminating NUL before the end of the record.
    #[error("{what} at byte {offset} has no terminating NUL")]
    Unterminated {
        /// What was being read.
        what: &'static str,
        /// Where it starts.
        offset: usize,
    },
    /// A name is longer than [`MAX_NAME_BYTES`] or not UTF-8.
    #[error("name at byte {offset} is too long or not UTF-8")]
    BadName {
        /// Where it starts.
        offset: usize,
    },
    /// An array's dimension count is below 1 or above [`MAX_DIMS`].
    #[error("dimension count {count} at byte {offset} is not in 1..={MAX_DIMS}")]
    BadDimCount {
        /// The count stated.
        count: i32,
        /// Where it is.
        offset: usize,
    },
    /// An array dimension is negative.
    #[error("negative dimension {dim} at byte {offset}")]
    BadDim {
        /// The dimension stated.
        dim: i32,
        /// Where it is.
        offset: usize,
    },
    /// An array's elements cannot fit in the bytes left (or their count overflows).
    #[error("array whose dimensions end at byte {offset} needs more bytes than the record has")]
    ArrayTooLarge {
        /// Where its elements would start.
        offset: usize,
    },
    /// The fields end before the size the header states.
    #[error("fields end at byte {offset}, before the record size {size}")]
    TrailingBytes {
        /// Where the fields end.
        offset: usize,
        /// The record size.
        size: usize,
    },
}

/// One decoded value of a DMAP scalar, or one element of an array.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `DMAP_CHAR` (type 1), `i8`.
    I8(i8),
    /// `DMAP_SHORT` (type 2), `i16`.
    I16(i16),
    /// `DMAP_INT` (type 3), `i32`.
    I32(i32),
    /// `DMAP_LONG` (type 10), `i64`.
    I64(i64),
    /// `DMAP_UCHAR` (type 16), `u8`.
    U8(u8),
    /// `DMAP_USHORT` (type 17), `u16`.
    U16(u16),
    /// `DMAP_UINT` (type 18), `u32`.
    U32(u32),
    /// `DMAP_ULONG` (type 19), `u64`.
    U64(u64),
    /// `DMAP_FLOAT` (type 4), `f32`.
    F32(f32),
    /// `DMAP_DOUBLE` (type 8), `f64`.
    F64(f64),
    /// `DMAP_STRING` (type 9), NUL-terminated; kept as bytes (not necessarily UTF-8).
    Str(Vec<u8>),
}

impl Value {
    /// The DMAP type byte of this value (see the module doc).
    pub fn type_code(&self) -> u8 {
        match self {
            Value::I8(_) => 1,
            Value::I16(_) => 2,
            Value::I32(_) => 3,
            Value::F32(_) => 4,
            Value::F64(_) => 8,
            Value::Str(_) => 9,
            Value::I64(_) => 10,
            Value::U8(_) => 16,
            Value::U16(_) => 17,
            Value::U32(_) => 18,
            Value::U64(_) => 19,
        }
    }

    /// The value as an integer, when it is one (floats are not converted).
    pub fn as_i64(&self) -> Option<i64> {
        Some(match *self {
            Value::I8(v) => i64::from(v),
            Value::I16(v) => i64::from(v),
            Value::I32(v) => i64::from(v),
            Value::I64(v) => v,
            Value::U8(v) => i64::from(v),
            Value::U16(v) => i64::from(v),
            Value::U32(v) => i64::from(v),
            Value::U64(v) => i64::try_from(v).ok()?,
            _ => return None,
        })
    }

    /// The value as a float, widened to `f64` exactly (an `f32` keeps its float32 value, as
    /// numpy's float32 → Python float does); integers convert.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(f64::from(v)),
            Value::F64(v) => Some(v),
            Value::Str(_) => None,
            _ => self.as_i64().map(|i| i as f64),
        }
    }
}

/// A DMAP array: its dimensions and its values, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    /// The dimensions (one for the fitacf arrays), slowest-varying first: the reverse of the
    /// order on the wire, so they are the numpy shape that darn-dmap (and so the original
    /// server) gives, and [`Array::values`] are row-major over them.
    pub dims: Vec<u32>,
    /// The elements, all of the array's type.
    pub values: Vec<Value>,
}

/// One decoded record: named scalars and arrays, in record order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record {
    /// `(name, value)` in record order.
    pub scalars: Vec<(String, Value)>,
    /// `(name, array)` in record order.
    pub arrays: Vec<(String, Array)>,
}

impl Record {
    /// The scalar named `name`.
    pub fn scalar(&self, name: &str) -> Option<&Value> {
        self.scalars.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The array named `name`.
    pub fn array(&self, name: &str) -> Option<&Array> {
        self.arrays.iter().find(|(n, _)| n == name).map(|(_, a)| a)
    }
}

/// Decodes one record that spans exactly `bytes` (a connex frame's payload, or one inflated ZMQ
/// message).
pub fn parse(bytes: &[u8]) -> Result<Record, DmapError> {
    let mut r = Reader { bytes, pos: 0 };
    let _code = r.i32("record code")?;
    let size = r.i32("record size")?;
    if usize::try_from(size).ok() != Some(bytes.len()) || bytes.len() < HEADER_BYTES {
        return Err(DmapError::SizeMismatch {
            size,
            actual: bytes.len(),
        });
    }
    let scalar_count = r.count("scalar count", MIN_SCALAR_BYTES)?;
    let array_count = r.count("array count", MIN_ARRAY_BYTES)?;
    let mut record = Record {
        scalars: Vec::with_capacity(scalar_count),
        arrays: Vec::with_capacity(array_count),
    };
    for _ in 0..scalar_count {
        let name = r.name()?;
        let kind = r.kind()?;
        record.scalars.push((name, r.value(kind)?));
    }
    for _ in 0..array_count {
        let name = r.name()?;
        let kind = r.kind()?;
        record.arrays.push((name, r.array(kind)?));
    }
    if r.pos != bytes.len() {
        return Err(DmapError::TrailingBytes {
            offset: r.pos,
            size: bytes.len(),
        });
    }
    Ok(record)
}

/// Decodes back-to-back records (a DMAP file's layout), each one's extent taken from its
/// header; the first malformed record ends the walk with its error.
pub fn parse_all(mut bytes: &[u8]) -> Result<Vec<Record>, DmapError> {
    let mut records = Vec::new();
    while !bytes.is_empty() {
        let mut r = Reader { bytes, pos: 4 };
        let size = r.i32("record size")?;
        let len = usize::try_from(size)
            .ok()
            .filter(|&n| (HEADER_BYTES..=bytes.len()).contains(&n))
            .ok_or(DmapError::SizeMismatch {
                size,
                actual: bytes.len(),
            })?;
        let (one, rest) = bytes.split_at(len);
        records.push(parse(one)?);
        bytes = rest;
    }
    Ok(records)
}

/// Encodes `record` as RST does (`DataMapEncodeBuffer`): for tests, fixtures and test feeds.
/// Each array's type is its first element's (an empty array is written as `int`), dimensions are
/// reversed back to wire order, and a string holding a NUL or a size beyond `i32` produces a
/// record that [`parse`] rejects or reads differently: the caller keeps to what DMAP can say.
pub fn write(record: &Record) -> Vec<u8> {
    let mut out = Vec::new();
    let len32 = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    out.extend_from_slice(&DATACODE.to_le_bytes());
    out.extend_from_slice(&[0; 4]); // size, patched below
    out.extend_from_slice(&len32(record.scalars.len()).to_le_bytes());
    out.extend_from_slice(&len32(record.arrays.len()).to_le_bytes());
    for (name, value) in &record.scalars {
        put_name(&mut out, name);
        out.push(value.type_code());
        put_value(&mut out, value);
    }
    for (name, array) in &record.arrays {
        put_name(&mut out, name);
        out.push(array.values.first().map_or(3, Value::type_code));
        out.extend_from_slice(&len32(array.dims.len()).to_le_bytes());
        for &d in array.dims.iter().rev() {
            out.extend_from_slice(&i32::try_from(d).unwrap_or(i32::MAX).to_le_bytes());
        }
        for v in &array.values {
            put_value(&mut out, v);
        }
    }
    let size = len32(out.len()).to_le_bytes();
    out[4..8].copy_from_slice(&size);
    out
}

fn put_name(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(name.as_bytes());
    out.push(0);
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U8(x) => out.push(*x),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Str(s) => {
            out.extend_from_slice(s);
            out.push(0);
        }
    }
}

/// A DMAP element type, from its type byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    F32,
    F64,
    Str,
}

impl Kind {
    fn from_code(code: u8) -> Option<Kind> {
        Some(match code {
            1 => Kind::I8,
            2 => Kind::I16,
            3 => Kind::I32,
            4 => Kind::F32,
            8 => Kind::F64,
            9 => Kind::Str,
            10 => Kind::I64,
            16 => Kind::U8,
            17 => Kind::U16,
            18 => Kind::U32,
            19 => Kind::U64,
            _ => return None,
        })
    }

    /// Bytes one element takes at least (a string: its NUL).
    fn width(self) -> usize {
        match self {
            Kind::I8 | Kind::U8 | Kind::Str => 1,
            Kind::I16 | Kind::U16 => 2,
            Kind::I32 | Kind::U32 | Kind::F32 => 4,
            Kind::I64 | Kind::U64 | Kind::F64 => 8,
        }
    }
}

/// A cursor over one record's bytes; every read is checked against the end.
struct Reader<'a> {
    /// The record.
    bytes: &'a [u8],
    /// The next byte to read.
    pos: usize,
}

impl<'a> Reader<'a> {
    fn left(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DmapError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let out = end.and_then(|e| self.bytes.get(self.pos..e));
        let out = out.ok_or(DmapError::Truncated {
            what,
            offset: self.pos,
        })?;
        self.pos += n;
        Ok(out)
    }

    fn fixed<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DmapError> {
        let offset = self.pos;
        let b = self.take(N, what)?;
        b.try_into()
            .map_err(|_| DmapError::Truncated { what, offset })
    }

    fn i32(&mut self, what: &'static str) -> Result<i32, DmapError> {
        self.fixed(what).map(i32::from_le_bytes)
    }

    /// A count of items that take at least `min_bytes` each.
    fn count(&mut self, what: &'static str, min_bytes: usize) -> Result<usize, DmapError> {
        let offset = self.pos;
        let count = self.i32(what)?;
        usize::try_from(count)
            .ok()
            .filter(|&n| n <= self.left() / min_bytes)
            .ok_or(DmapError::BadCount {
                what,
                count,
                offset,
            })
    }

    /// Bytes up to the next NUL (excluded); the NUL is consumed.
    fn cstr(&mut self, what: &'static str) -> Result<&'a [u8], DmapError> {
        let offset = self.pos;
        let rest = self.bytes.get(offset..).unwrap_or_default();
        let n = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(DmapError::Unterminated { what, offset })?;
        let s = self.take(n, what)?;
        self.pos += 1;
        Ok(s)
    }

    fn name(&mut self) -> Result<String, DmapError> {
        let offset = self.pos;
        let raw = self.cstr("name")?;
        if raw.len() > MAX_NAME_BYTES {
            return Err(DmapError::BadName { offset });
        }
        let name = std::str::from_utf8(raw).map_err(|_| DmapError::BadName { offset })?;
        Ok(name.to_owned())
    }

    fn kind(&mut self) -> Result<Kind, DmapError> {
        let offset = self.pos;
        let [code] = self.fixed::<1>("type byte")?;
        Kind::from_code(code).ok_or(DmapError::BadType { code, offset })
    }

    fn value(&mut self, kind: Kind) -> Result<Value, DmapError> {
        const W: &str = "value";
        Ok(match kind {
            Kind::I8 => Value::I8(i8::from_le_bytes(self.fixed(W)?)),
            Kind::I16 => Value::I16(i16::from_le_bytes(self.fixed(W)?)),
            Kind::I32 => Value::I32(i32::from_le_bytes(self.fixed(W)?)),
            Kind::I64 => Value::I64(i64::from_le_bytes(self.fixed(W)?)),
            Kind::U8 => Value::U8(u8::from_le_bytes(self.fixed(W)?)),
            Kind::U16 => Value::U16(u16::from_le_bytes(self.fixed(W)?)),
            Kind::U32 => Value::U32(u32::from_le_bytes(self.fixed(W)?)),
            Kind::U64 => Value::U64(u64::from_le_bytes(self.fixed(W)?)),
            Kind::F32 => Value::F32(f32::from_le_bytes(self.fixed(W)?)),
            Kind::F64 => Value::F64(f64::from_le_bytes(self.fixed(W)?)),
            Kind::Str => Value::Str(self.cstr("string")?.to_vec()),
        })
    }

    fn array(&mut self, kind: Kind) -> Result<Array, DmapError> {
        let offset = self.pos;
        let count = self.i32("dimension count")?;
        let ndims = usize::try_from(count)
            .ok()
            .filter(|n| (1..=MAX_DIMS).contains(n))
            .ok_or(DmapError::BadDimCount { count, offset })?;
        let mut dims = Vec::with_capacity(ndims);
        let mut elements: usize = 1;
        for _ in 0..ndims {
            let offset = self.pos;
            let dim = self.i32("dimension")?;
            let d = u32::try_from(dim).map_err(|_| DmapError::BadDim { dim, offset })?;
            let du = usize::try_from(d).map_err(|_| DmapError::BadDim { dim, offset })?;
            elements = elements
                .checked_mul(du)
                .ok_or(DmapError::ArrayTooLarge { offset: self.pos })?;
            dims.push(d);
        }
        if elements > self.left() / kind.width() {
            return Err(DmapError::ArrayTooLarge { offset: self.pos });
        }
        dims.reverse();
        let mut values = Vec::with_capacity(elements);
        for _ in 0..elements {
            values.push(self.value(kind)?);
        }
        Ok(Array { dims, values })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arr(dims: &[u32], values: Vec<Value>) -> Array {
        Array {
            dims: dims.to_vec(),
            values,
        }
    }

    /// One scalar and one array of every type, strings included.
    fn every_type() -> Record {
        let one = |v: Value| (format!("s{}", v.type_code()), v);
        let samples = [
            Value::I8(-7),
            Value::I16(-300),
            Value::I32(-70_000),
            Value::I64(-5_000_000_000),
            Value::U8(250),
            Value::U16(65_000),
            Value::U32(4_000_000_000),
            Value::U64(u64::MAX),
            Value::F32(-2.277_430_5),
            Value::F64(1.0e300),
            Value::Str(b"stereoscan".to_vec()),
        ];
        Record {
            scalars: samples.iter().cloned().map(one).collect(),
            arrays: samples
                .iter()
                .map(|v| {
                    (
                        format!("a{}", v.type_code()),
                        arr(&[2], vec![v.clone(), v.clone()]),
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn every_type_round_trips() {
        let r = every_type();
        let bytes = write(&r);
        assert_eq!(parse(&bytes), Ok(r));
    }

    #[test]
    fn header_and_scalar_layout_is_rst() {
        let r = Record {
            scalars: vec![("bmnum".into(), Value::I16(7))],
            arrays: vec![],
        };
        let mut want = Vec::new();
        want.extend_from_slice(&0x0001_0001_i32.to_le_bytes());
        want.extend_from_slice(&25_i32.to_le_bytes()); // 16 + "bmnum\0" 6 + type 1 + 2
        want.extend_from_slice(&1_i32.to_le_bytes());
        want.extend_from_slice(&0_i32.to_le_bytes());
        want.extend_from_slice(b"bmnum\0\x02\x07\x00");
        assert_eq!(write(&r), want);
        assert_eq!(parse(&want), Ok(r));
    }

    #[test]
    fn strings_in_arrays_are_back_to_back() {
        let r = Record {
            scalars: vec![("empty".into(), Value::Str(Vec::new()))],
            arrays: vec![(
                "names".into(),
                arr(
                    &[3],
                    vec![
                        Value::Str(b"ab".to_vec()),
                        Value::Str(vec![]),
                        Value::Str(b"c".to_vec()),
                    ],
                ),
            )],
        };
        let bytes = write(&r);
        assert!(bytes.ends_with(b"names\0\x09\x01\0\0\0\x03\0\0\0ab\0\0c\0"));
        assert_eq!(parse(&bytes), Ok(r));
    }

    #[test]
    fn multi_dim_dims_are_reversed_from_the_wire() {
        let values = (0..6).map(Value::I32).collect();
        let r = Record {
            scalars: vec![],
            arrays: vec![("m".into(), arr(&[2, 3], values))],
        };
        let bytes = write(&r);
        // On the wire: 2 dims, fastest-varying (3) first.
        assert!(bytes[16..].starts_with(b"m\0\x03\x02\0\0\0\x03\0\0\0\x02\0\0\0"));
        assert_eq!(parse(&bytes), Ok(r));
    }

    #[test]
    fn empty_array_and_empty_record() {
        let r = Record {
            scalars: vec![],
            arrays: vec![("slist".into(), arr(&[0], vec![]))],
        };
        assert_eq!(parse(&write(&r)), Ok(r));
        assert_eq!(parse(&write(&Record::default())), Ok(Record::default()));
    }

    #[test]
    fn parse_all_walks_concatenated_records() {
        let a = every_type();
        let b = Record {
            scalars: vec![("x".into(), Value::U8(1))],
            arrays: vec![],
        };
        let mut bytes = write(&a);
        bytes.extend(write(&b));
        assert_eq!(parse_all(&bytes), Ok(vec![a, b]));
        bytes.push(0);
        assert!(matches!(
            parse_all(&bytes),
            Err(DmapError::Truncated { .. })
        ));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = write(&every_type());
        for n in 0..bytes.len() {
            assert!(parse(&bytes[..n]).is_err(), "prefix of {n} bytes");
        }
    }

    /// `every_type`'s bytes with the header size rewritten to match.
    fn patched(mut bytes: Vec<u8>) -> Vec<u8> {
        let size = i32::try_from(bytes.len()).unwrap_or(i32::MAX).to_le_bytes();
        bytes[4..8].copy_from_slice(&size);
        bytes
    }

    #[test]
    fn size_must_match_the_input() {
        let mut bytes = write(&every_type());
        bytes.push(0);
        assert!(matches!(parse(&bytes), Err(DmapError::SizeMismatch { .. })));
        // The size matches but the fields end early: trailing bytes.
        let bytes = patched(bytes);
        let end = bytes.len() - 1;
        assert_eq!(
            parse(&bytes),
            Err(DmapError::TrailingBytes {
                offset: end,
                size: end + 1
            })
        );
        let mut tiny = write(&Record::default());
        tiny[4..8].copy_from_slice(&8_i32.to_le_bytes());
        assert!(matches!(
            parse(&tiny[..8]),
            Err(DmapError::SizeMismatch { .. })
        ));
    }

    #[test]
    fn lying_counts_are_rejected_before_allocating() {
        let mut bytes = write(&Record::default());
        for (at, count) in [(8, -1), (8, i32::MAX), (12, -5), (12, 1)] {
            let mut b = bytes.clone();
            b[at..at + 4].copy_from_slice(&i32::to_le_bytes(count));
            assert!(matches!(parse(&b), Err(DmapError::BadCount { offset, .. }) if offset == at));
        }
        // One scalar announced, none there beyond 3 bytes of garbage without a NUL.
        bytes.extend_from_slice(b"abc");
        bytes[8..12].copy_from_slice(&1_i32.to_le_bytes());
        let bytes = patched(bytes);
        assert_eq!(
            parse(&bytes),
            Err(DmapError::Unterminated {
                what: "name",
                offset: 16
            })
        );
    }

    fn one_array(dims_wire: &[i32], tail: &[u8]) -> Vec<u8> {
        let mut b = write(&Record::default());
        b[12..16].copy_from_slice(&1_i32.to_le_bytes());
        b.extend_from_slice(b"v\0\x04");
        b.extend_from_slice(&i32::try_from(dims_wire.len()).unwrap_or(0).to_le_bytes());
        for d in dims_wire {
            b.extend_from_slice(&d.to_le_bytes());
        }
        b.extend_from_slice(tail);
        patched(b)
    }

    #[test]
    fn huge_or_negative_dims_are_rejected() {
        let ok = one_array(&[2], &[0; 8]);
        assert!(parse(&ok).is_ok());
        let too_big = one_array(&[3], &[0; 8]);
        assert_eq!(
            parse(&too_big),
            Err(DmapError::ArrayTooLarge { offset: 27 })
        );
        let overflow = one_array(&[i32::MAX, i32::MAX, i32::MAX, i32::MAX], &[0; 8]);
        assert!(matches!(
            parse(&overflow),
            Err(DmapError::ArrayTooLarge { .. })
        ));
        let negative = one_array(&[-1], &[0; 8]);
        assert_eq!(
            parse(&negative),
            Err(DmapError::BadDim {
                dim: -1,
                offset: 23
            })
        );
        let no_dims = one_array(&[], &[0; 8]);
        assert_eq!(
            parse(&no_dims),
            Err(DmapError::BadDimCount {
                count: 0,
                offset: 19
            })
        );
        let many = one_array(&[1; 9], &[0; 4]);
        assert_eq!(
            parse(&many),
            Err(DmapError::BadDimCount {
                count: 9,
                offset: 19
            })
        );
    }

    #[test]
    fn bad_type_byte_is_named() {
        let r = Record {
            scalars: vec![("x".into(), Value::U8(1))],
            arrays: vec![],
        };
        for code in [0_u8, 5, 11, 20, 255] {
            let mut b = write(&r);
            b[18] = code;
            assert_eq!(parse(&b), Err(DmapError::BadType { code, offset: 18 }));
        }
    }

    #[test]
    fn missing_nul_in_a_string_value_or_name() {
        let r = Record {
            scalars: vec![("s".into(), Value::Str(b"abc".to_vec()))],
            arrays: vec![],
        };
        let mut b = write(&r);
        let last = b.len() - 1;
        b[last] = b'd';
        assert_eq!(
            parse(&b),
            Err(DmapError::Unterminated {
                what: "string",
                offset: 19
            })
        );
        let long = "n".repeat(MAX_NAME_BYTES + 1);
        let r = Record {
            scalars: vec![(long, Value::U8(1))],
            arrays: vec![],
        };
        assert_eq!(parse(&write(&r)), Err(DmapError::BadName { offset: 16 }));
        let mut b = write(&Record {
            scalars: vec![("é".into(), Value::U8(1))],
            arrays: vec![],
        });
        b[16] = 0xff;
        assert_eq!(parse(&b), Err(DmapError::BadName { offset: 16 }));
    }

    /// Written by darn-dmap 0.8.2 (PyPI), the reader the original server used, with
    /// `dmap.write_dmap([{"bmnum": np.int16(7), "noise.sky": np.float32(27.5),
    /// "combf": "stereoscan", "stid": np.int32(5), "slist": np.array([3, 10, 42], dtype=np.int16),
    /// "v": np.array([-2.2774305, 7.7225695, 17.72257], dtype=np.float32),
    /// "m": np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int32)}]).hex()`. darn-dmap writes small
    /// integer scalars as `char` (type 1) whatever their numpy type, and `m`'s dimensions
    /// reversed (3, 2) on the wire.
    #[test]
    fn decodes_a_record_written_by_darn_dmap() {
        let hex: String = [
            "01000100930000000400000003000000626d6e756d0001076e6f6973652e736b7900040000dc4163",
            "6f6d6266000973746572656f7363616e0073746964000105736c6973740002010000000300000003",
            "000a002a0076000401000000030000006cc111c04a1ff740d3c78d416d0003020000000300000002",
            "000000010000000200000003000000040000000500000006000000",
        ]
        .concat();
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .filter_map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
            .collect();
        assert_eq!(bytes.len(), 147);
        let want = Record {
            scalars: vec![
                ("bmnum".into(), Value::I8(7)),
                ("noise.sky".into(), Value::F32(27.5)),
                ("combf".into(), Value::Str(b"stereoscan".to_vec())),
                ("stid".into(), Value::I8(5)),
            ],
            arrays: vec![
                (
                    "slist".into(),
                    arr(&[3], vec![Value::I16(3), Value::I16(10), Value::I16(42)]),
                ),
                (
                    "v".into(),
                    arr(
                        &[3],
                        [-2.277_430_5_f32, 7.722_569_5, 17.722_57]
                            .map(Value::F32)
                            .to_vec(),
                    ),
                ),
                ("m".into(), arr(&[2, 3], (1..=6).map(Value::I32).collect())),
            ],
        };
        assert_eq!(parse(&bytes), Ok(want.clone()));
        assert_eq!(write(&want), bytes);
    }
}
