//! GGUF metadata values: the type tags, scalar values, compact arrays and
//! the key/value map a file's header holds and the writer is given.

use std::collections::HashMap;
use std::fmt;

use super::{DEFAULT_ALIGNMENT, KEY_ALIGNMENT, VERSION};

/// `gguf_type`: the type tag of a metadata value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ValueType {
    Uint8 = 0,
    Int8 = 1,
    Uint16 = 2,
    Int16 = 3,
    Uint32 = 4,
    Int32 = 5,
    Float32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    Uint64 = 10,
    Int64 = 11,
    Float64 = 12,
}

impl ValueType {
    /// Every type, indexed by its id.
    const BY_ID: [ValueType; 13] = {
        use ValueType::*;
        [
            Uint8, Int8, Uint16, Int16, Uint32, Int32, Float32, Bool, String, Array, Uint64, Int64,
            Float64,
        ]
    };

    pub(super) fn from_id(id: u32) -> Option<ValueType> {
        Self::BY_ID.get(id as usize).copied()
    }

    /// Encoded size of one scalar of this type (strings and arrays: their
    /// smallest possible encoding, used to bound untrusted counts).
    pub(super) fn min_size(self) -> u64 {
        use ValueType::*;
        match self {
            Uint8 | Int8 | Bool => 1,
            Uint16 | Int16 => 2,
            Uint32 | Int32 | Float32 => 4,
            Uint64 | Int64 | Float64 | String => 8,
            Array => 12,
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    U64(u64),
    I64(i64),
    F64(f64),
    Array(Array),
}

/// A metadata array, stored compactly: one typed vector per element type,
/// strings as one buffer and their ends ([`Strings`]). A boxed [`Value`]
/// per item cost about 32 bytes of memory per byte of a `UINT8` array; this
/// costs one to two. Arrays are homogeneous and never nested (llama.cpp
/// rejects nested arrays), which this type makes impossible to build.
#[derive(Debug, Clone, PartialEq)]
pub enum Array {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    String(Strings),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
}

impl Array {
    /// The type tag of the elements.
    pub fn item_type(&self) -> ValueType {
        match self {
            Array::U8(_) => ValueType::Uint8,
            Array::I8(_) => ValueType::Int8,
            Array::U16(_) => ValueType::Uint16,
            Array::I16(_) => ValueType::Int16,
            Array::U32(_) => ValueType::Uint32,
            Array::I32(_) => ValueType::Int32,
            Array::F32(_) => ValueType::Float32,
            Array::Bool(_) => ValueType::Bool,
            Array::String(_) => ValueType::String,
            Array::U64(_) => ValueType::Uint64,
            Array::I64(_) => ValueType::Int64,
            Array::F64(_) => ValueType::Float64,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Array::U8(v) => v.len(),
            Array::I8(v) => v.len(),
            Array::U16(v) => v.len(),
            Array::I16(v) => v.len(),
            Array::U32(v) => v.len(),
            Array::I32(v) => v.len(),
            Array::F32(v) => v.len(),
            Array::Bool(v) => v.len(),
            Array::String(v) => v.len(),
            Array::U64(v) => v.len(),
            Array::I64(v) => v.len(),
            Array::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i` as a scalar value.
    pub fn get(&self, i: usize) -> Option<Value> {
        Some(match self {
            Array::U8(v) => Value::U8(*v.get(i)?),
            Array::I8(v) => Value::I8(*v.get(i)?),
            Array::U16(v) => Value::U16(*v.get(i)?),
            Array::I16(v) => Value::I16(*v.get(i)?),
            Array::U32(v) => Value::U32(*v.get(i)?),
            Array::I32(v) => Value::I32(*v.get(i)?),
            Array::F32(v) => Value::F32(*v.get(i)?),
            Array::Bool(v) => Value::Bool(*v.get(i)?),
            Array::String(v) => Value::String(v.get(i)?.to_string()),
            Array::U64(v) => Value::U64(*v.get(i)?),
            Array::I64(v) => Value::I64(*v.get(i)?),
            Array::F64(v) => Value::F64(*v.get(i)?),
        })
    }

    /// The elements as scalar values, made one at a time.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Value> + '_ {
        (0..self.len()).map(|i| self.get(i).expect("index below len"))
    }

    /// The strings of a string array.
    pub fn strings(&self) -> Option<&Strings> {
        match self {
            Array::String(s) => Some(s),
            _ => None,
        }
    }

    /// Every element as f64, for numeric arrays (see [`Value::as_f64`]).
    pub fn to_f64s(&self) -> Option<Vec<f64>> {
        self.iter().map(|v| v.as_f64()).collect()
    }
}

/// The strings of a string array: their bytes in one buffer, and where each
/// ends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Strings {
    text: String,
    ends: Vec<usize>,
}

impl Strings {
    pub(super) fn with_capacity(n: usize) -> Strings {
        Strings {
            text: String::new(),
            ends: Vec::with_capacity(n),
        }
    }

    pub fn push(&mut self, s: &str) {
        self.text.push_str(s);
        self.ends.push(self.text.len());
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// String `i`.
    pub fn get(&self, i: usize) -> Option<&str> {
        let end = *self.ends.get(i)?;
        let start = i.checked_sub(1).map_or(0, |p| self.ends[p]);
        Some(&self.text[start..end])
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        (0..self.len()).map(|i| self.get(i).expect("index below len"))
    }
}

impl<S: AsRef<str>> FromIterator<S> for Strings {
    fn from_iter<I: IntoIterator<Item = S>>(items: I) -> Strings {
        let mut out = Strings::default();
        for s in items {
            out.push(s.as_ref());
        }
        out
    }
}

/// The numeric element types, read and written little-endian.
pub(super) trait Scalar: Copy {
    const SIZE: usize;
    fn from_le(bytes: &[u8]) -> Self;
    fn put(self, out: &mut Vec<u8>);
}

macro_rules! scalar {
    ($($t:ty),*) => {$(
        impl Scalar for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            fn from_le(bytes: &[u8]) -> Self {
                <$t>::from_le_bytes(bytes.try_into().expect("SIZE bytes"))
            }
            fn put(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
scalar!(u8, i8, u16, i16, u32, i32, f32, u64, i64, f64);

impl Value {
    /// The type tag this value is written with.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::Uint8,
            Value::I8(_) => ValueType::Int8,
            Value::U16(_) => ValueType::Uint16,
            Value::I16(_) => ValueType::Int16,
            Value::U32(_) => ValueType::Uint32,
            Value::I32(_) => ValueType::Int32,
            Value::F32(_) => ValueType::Float32,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::U64(_) => ValueType::Uint64,
            Value::I64(_) => ValueType::Int64,
            Value::F64(_) => ValueType::Float64,
            Value::Array(_) => ValueType::Array,
        }
    }

    /// Any integer value as u64 (negative values give `None`).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any numeric value as f64.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            // Widen through the shortest decimal form, so that an f32 1e-5
            // reads as 1e-5 rather than 9.999999747378752e-6.
            Value::F32(v) => v.to_string().parse().ok(),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64).or(match *self {
                Value::I8(v) => Some(v.into()),
                Value::I16(v) => Some(v.into()),
                Value::I32(v) => Some(v.into()),
                Value::I64(v) => Some(v as f64),
                _ => None,
            }),
        }
    }

    /// The string, for string values.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// A JSON rendering (for manifests and `--json` output).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            Value::U8(v) => json!(v),
            Value::I8(v) => json!(v),
            Value::U16(v) => json!(v),
            Value::I16(v) => json!(v),
            Value::U32(v) => json!(v),
            Value::I32(v) => json!(v),
            Value::F32(v) => json!(v),
            Value::Bool(v) => json!(v),
            Value::String(v) => json!(v),
            Value::U64(v) => json!(v),
            Value::I64(v) => json!(v),
            Value::F64(v) => json!(v),
            Value::Array(Array::String(s)) => s.iter().collect(),
            Value::Array(a) => a.iter().map(|v| v.to_json()).collect(),
        }
    }
}

/// GGUF metadata: key/value pairs in file order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata {
    pub version: u32,
    entries: Vec<(String, Value)>,
    index: HashMap<String, usize>,
}

impl Metadata {
    /// Builds metadata from entries (the writer's input).
    pub fn new(entries: Vec<(String, Value)>) -> Metadata {
        let index = entries
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (k.clone(), i))
            .collect();
        Metadata {
            version: VERSION,
            entries,
            index,
        }
    }
    /// Metadata as the reader found it: `index` maps each key of
    /// `entries` to its position.
    pub(super) fn from_parts(
        version: u32,
        entries: Vec<(String, Value)>,
        index: HashMap<String, usize>,
    ) -> Metadata {
        Metadata {
            version,
            entries,
            index,
        }
    }
    /// Looks a key up.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }
    /// All entries, in file order.
    pub fn entries(&self) -> &[(String, Value)] {
        &self.entries
    }
    /// A string value.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }
    /// An integer value of any width.
    pub fn u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(Value::as_u64)
    }
    /// A numeric value.
    pub fn f64(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(Value::as_f64)
    }
    /// `general.alignment`, or the default.
    pub fn alignment(&self) -> u32 {
        self.get(KEY_ALIGNMENT)
            .and_then(|v| match v {
                Value::U32(a) => Some(*a),
                _ => None,
            })
            .unwrap_or(DEFAULT_ALIGNMENT)
    }
}
