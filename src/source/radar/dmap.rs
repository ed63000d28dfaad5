//! DMAP records, the self-describing binary format of SuperDARN data (fitacf records here).
//!
//! A record is a header (code, total size, scalar count, array count: little-endian `i32` each),
//! then the scalars (name as a NUL-terminated string, a type byte, the value), then the arrays
//! (name, type byte, dimension count, the dimensions, then the values, row-major). Every number is
//! little-endian.
//!
//! Thread: pure, any thread (a radar feed's thread).
//!
//! TODO(radar feeds): the parser (`parse`) and its fuzz target land with the feed sources; this
//! file holds the decoded types the renderer ([`crate::profile::superdarn`]) reads.

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
    /// The dimensions (one for the fitacf arrays).
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
