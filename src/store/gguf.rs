//! GGUF: reader (v2/v3, split files) and streaming writer.
//!
//! Layout and rules must agree with llama.cpp `ggml/include/gguf.h` and
//! `ggml/src/gguf.cpp`, and with gguf-py `gguf/gguf_reader.py`,
//! `gguf_writer.py`, `constants.py`: magic `GGUF`, u32 version, u64 tensor
//! and KV counts, typed KVs, tensor infos (name, n_dims ≤ 4, `ne[]`
//! innermost first, ggml type, offset relative to the data section), zero
//! padding to `general.alignment` (default 32), then tensor data, each
//! tensor padded to the alignment.
//!
//! Why our own code rather than gguf-rs-lib: that crate refuses metadata keys
//! with hyphens (real architectures such as `command-r` use them), reads only
//! v3, and cannot stream tensor data from a memory map; candle's writer emits
//! v2 and needs every tensor in memory. GGUF is small enough to own.
//!
//! Metadata values (type tags, compact arrays, the key map) are in
//! [`value`], re-exported here.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::atomic::{AtomicFile, TensorSequence};
use super::{
    checked_numel, clip, present, DType, ModelFile, Result, StoreError, TensorInfo,
    MAX_TENSORS_PER_FILE,
};
use crate::quant::ftype::{ModelFacts, TypeRuleError};
use crate::quant::GgmlType;

/// `GGUF` read as a little-endian u32.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// Version written by llmtool (and by current llama.cpp).
pub const VERSION: u32 = 3;
/// `GGUF_DEFAULT_ALIGNMENT`.
pub const DEFAULT_ALIGNMENT: u32 = 32;
/// `GGML_MAX_DIMS`.
pub const MAX_DIMS: usize = 4;
/// `GGML_MAX_NAME` is 64 including the terminating NUL.
pub const MAX_NAME_LEN: usize = 63;
/// Most metadata keys a file may hold: real files hold under a hundred
/// (per-layer values are arrays), and each key costs about a hundred bytes
/// of memory beyond its file bytes.
pub const MAX_KEYS: u64 = 1 << 16;
/// Key holding the alignment.
pub const KEY_ALIGNMENT: &str = "general.alignment";
/// Split-file keys (`llama-gguf-split`): u16, u16, i32.
pub const KEY_SPLIT_NO: &str = "split.no";
pub const KEY_SPLIT_COUNT: &str = "split.count";
pub const KEY_SPLIT_TENSORS: &str = "split.tensors.count";

mod value;
use value::Scalar;
pub use value::{Array, Metadata, Strings, Value, ValueType};

/// Bounds-checked little-endian reader over an untrusted header.
struct Cursor<'a> {
    path: &'a Path,
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        let left = (self.data.len() - self.pos) as u64;
        if n > left {
            return Err(StoreError::invalid(
                self.path,
                format!(
                    "truncated: {} needs {n} bytes at offset {} but the file has {left} left",
                    what(),
                    self.pos
                ),
            ));
        }
        let s = &self.data[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }
    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        self.scalar(what)
    }
    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        self.scalar(what)
    }
    /// A string borrowed from the header.
    fn str(&mut self, what: &dyn Fn() -> String) -> Result<&'a str> {
        let n = self.u64(what)?;
        let at = self.pos;
        let bytes = self.take(n, what)?;
        std::str::from_utf8(bytes).map_err(|e| {
            StoreError::invalid(
                self.path,
                format!(
                    "{} is not valid UTF-8 (byte {} of the string at offset {at})",
                    what(),
                    e.valid_up_to()
                ),
            )
        })
    }
    /// Checks that `count` items of at least `min` bytes each can still fit,
    /// so a lying count cannot make us allocate without bound.
    fn check_count(&self, count: u64, min: u64, what: &dyn Fn() -> String) -> Result<()> {
        let left = (self.data.len() - self.pos) as u64;
        if count.checked_mul(min).is_none_or(|need| need > left) {
            return Err(StoreError::invalid(
                self.path,
                format!(
                    "{} claims {count} items, more than the {left} remaining bytes can hold (corrupt or truncated)",
                    what()
                ),
            ));
        }
        Ok(())
    }
    fn scalar<T: Scalar>(&mut self, what: &dyn Fn() -> String) -> Result<T> {
        Ok(T::from_le(self.take(T::SIZE as u64, what)?))
    }
    /// `n` scalars, whose bytes [`Cursor::check_count`] has seen are there.
    fn scalars<T: Scalar>(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<Vec<T>> {
        let bytes = self.take(n * T::SIZE as u64, what)?;
        Ok(bytes.chunks_exact(T::SIZE).map(T::from_le).collect())
    }
    fn bools(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<Vec<bool>> {
        let at = self.pos;
        let bytes = self.take(n, what)?;
        match bytes.iter().position(|&b| b > 1) {
            None => Ok(bytes.iter().map(|&b| b == 1).collect()),
            Some(i) => Err(StoreError::invalid(
                self.path,
                format!(
                    "{} is a bool with byte value {} at offset {} (must be 0 or 1)",
                    what(),
                    bytes[i],
                    at + i
                ),
            )),
        }
    }
    fn value(&mut self, ty: ValueType, what: &dyn Fn() -> String) -> Result<Value> {
        Ok(match ty {
            ValueType::Uint8 => Value::U8(self.scalar(what)?),
            ValueType::Int8 => Value::I8(self.scalar(what)?),
            ValueType::Uint16 => Value::U16(self.scalar(what)?),
            ValueType::Int16 => Value::I16(self.scalar(what)?),
            ValueType::Uint32 => Value::U32(self.scalar(what)?),
            ValueType::Int32 => Value::I32(self.scalar(what)?),
            ValueType::Float32 => Value::F32(self.scalar(what)?),
            ValueType::Bool => Value::Bool(self.bools(1, what)?[0]),
            ValueType::String => Value::String(self.str(what)?.to_string()),
            ValueType::Uint64 => Value::U64(self.scalar(what)?),
            ValueType::Int64 => Value::I64(self.scalar(what)?),
            ValueType::Float64 => Value::F64(self.scalar(what)?),
            ValueType::Array => Value::Array(self.array(what)?),
        })
    }
    fn array(&mut self, what: &dyn Fn() -> String) -> Result<Array> {
        let et = self.u32(what)?;
        let et = ValueType::from_id(et).ok_or_else(|| {
            StoreError::invalid(
                self.path,
                format!("{} has unknown element type {et}", what()),
            )
        })?;
        let n = self.u64(what)?;
        self.check_count(n, et.min_size(), what)?;
        Ok(match et {
            ValueType::Uint8 => Array::U8(self.scalars(n, what)?),
            ValueType::Int8 => Array::I8(self.scalars(n, what)?),
            ValueType::Uint16 => Array::U16(self.scalars(n, what)?),
            ValueType::Int16 => Array::I16(self.scalars(n, what)?),
            ValueType::Uint32 => Array::U32(self.scalars(n, what)?),
            ValueType::Int32 => Array::I32(self.scalars(n, what)?),
            ValueType::Float32 => Array::F32(self.scalars(n, what)?),
            ValueType::Bool => Array::Bool(self.bools(n, what)?),
            ValueType::String => {
                let mut items = Strings::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.str(what)?);
                }
                Array::String(items)
            }
            ValueType::Uint64 => Array::U64(self.scalars(n, what)?),
            ValueType::Int64 => Array::I64(self.scalars(n, what)?),
            ValueType::Float64 => Array::F64(self.scalars(n, what)?),
            ValueType::Array => {
                return Err(StoreError::invalid(
                    self.path,
                    format!("{} is a nested array, which llama.cpp rejects", what()),
                ))
            }
        })
    }
}

/// A parsed GGUF file: metadata and tensors with absolute offsets.
#[derive(Debug)]
pub struct Parsed {
    pub metadata: Metadata,
    pub tensors: Vec<TensorInfo>,
    /// Absolute offset of the data section.
    pub data_offset: u64,
}

/// Parses and validates a GGUF file held in `data`. `file` is the index
/// recorded in each [`TensorInfo`].
pub fn parse(path: &Path, data: &[u8], file: usize) -> Result<Parsed> {
    let mut c = Cursor { path, data, pos: 0 };
    let magic = c.take(4, &|| "the GGUF magic".into())?;
    if magic != MAGIC {
        return Err(StoreError::invalid(
            path,
            format!("not a GGUF file: magic bytes are {magic:02x?}, expected \"GGUF\""),
        ));
    }
    let version = c.u32(&|| "the version".into())?;
    if version & 0xFFFF == 0 && version != 0 {
        return Err(StoreError::invalid(
            path,
            "big-endian GGUF files are not supported; convert it on a little-endian machine",
        ));
    }
    if version != 2 && version != 3 {
        return Err(StoreError::invalid(
            path,
            format!("GGUF version {version} is not supported (llmtool reads versions 2 and 3)"),
        ));
    }
    let n_tensors = c.u64(&|| "the tensor count".into())?;
    let n_kv = c.u64(&|| "the metadata count".into())?;
    if n_kv > MAX_KEYS {
        return Err(StoreError::invalid(
            path,
            format!("the metadata count is {n_kv}, over llmtool's limit of {MAX_KEYS} keys (corrupt or hostile file)"),
        ));
    }
    // A key is at least its length, a type and a one-byte value.
    c.check_count(n_kv, 8 + 4 + 1, &|| "the metadata count".into())?;
    let mut entries = Vec::with_capacity(n_kv as usize);
    let mut index = HashMap::with_capacity(n_kv as usize);
    for i in 0..n_kv {
        let key = c.str(&|| format!("metadata key #{i}"))?;
        let what = || format!("metadata '{}'", clip(key));
        if key.is_empty() {
            return Err(StoreError::invalid(
                path,
                format!("metadata key #{i} is empty"),
            ));
        }
        if index.insert(key.to_string(), entries.len()).is_some() {
            return Err(StoreError::invalid(
                path,
                format!("metadata key '{}' appears twice", clip(key)),
            ));
        }
        let ty = c.u32(&what)?;
        let ty = ValueType::from_id(ty).ok_or_else(|| {
            StoreError::invalid(path, format!("{} has unknown value type {ty}", what()))
        })?;
        let v = c.value(ty, &what)?;
        entries.push((key.to_string(), v));
    }
    let metadata = Metadata::from_parts(version, entries, index);
    let alignment = match metadata.get(KEY_ALIGNMENT) {
        None => DEFAULT_ALIGNMENT,
        Some(Value::U32(a)) if *a > 0 && a.is_power_of_two() => *a,
        Some(v) => {
            let found = match v {
                Value::Array(_) => "an ARRAY".to_string(),
                v => format!("{} {}", v.value_type(), v.to_json()),
            };
            return Err(StoreError::invalid(
                path,
                format!("{KEY_ALIGNMENT} must be a UINT32 power of two, found {found}"),
            ));
        }
    } as u64;

    if n_tensors > MAX_TENSORS_PER_FILE {
        return Err(StoreError::invalid(
            path,
            format!("the tensor count is {n_tensors}, over llmtool's limit of {MAX_TENSORS_PER_FILE} tensors per file (corrupt or hostile file)"),
        ));
    }
    // A tensor info is at least its name's length, n_dims, one dimension,
    // the type and the offset.
    c.check_count(n_tensors, 8 + 4 + 8 + 4 + 8, &|| "the tensor count".into())?;
    let mut infos = Vec::with_capacity(n_tensors as usize);
    let mut names = HashSet::with_capacity(n_tensors as usize);
    for i in 0..n_tensors {
        let name = c.str(&|| format!("tensor name #{i}"))?;
        let what = || format!("tensor info of '{}'", clip(name));
        if name.len() > MAX_NAME_LEN {
            return Err(StoreError::tensor(
                path,
                name,
                format!(
                    "its name is {} bytes long; GGUF allows at most {MAX_NAME_LEN} (GGML_MAX_NAME)",
                    name.len()
                ),
            ));
        }
        if !names.insert(name) {
            return Err(StoreError::tensor(
                path,
                name,
                "appears twice in the tensor infos",
            ));
        }
        let n_dims = c.u32(&what)? as usize;
        if n_dims > MAX_DIMS {
            return Err(StoreError::tensor(
                path,
                name,
                format!("has {n_dims} dimensions; GGUF allows at most {MAX_DIMS}"),
            ));
        }
        let mut ne = Vec::with_capacity(n_dims);
        for _ in 0..n_dims {
            ne.push(c.u64(&what)?);
        }
        let ty_id = c.u32(&what)?;
        let offset = c.u64(&what)?;
        let ty = GgmlType::from_id(ty_id).ok_or_else(|| {
            StoreError::tensor(path, name, format!("has unknown ggml type id {ty_id}"))
        })?;
        if ne.iter().any(|&d| d > i64::MAX as u64) {
            return Err(StoreError::tensor(
                path,
                name,
                format!("dimension out of range in ne {ne:?}"),
            ));
        }
        if let Some(&ne0) = ne.first() {
            if ne0 % ty.block_size() != 0 {
                return Err(StoreError::tensor(
                    path,
                    name,
                    format!(
                        "ne[0] = {ne0} is not a multiple of {ty}'s block size {}",
                        ty.block_size()
                    ),
                ));
            }
        }
        let len = checked_numel(&ne)
            .and_then(|n| ty.bytes_for(n))
            .ok_or_else(|| {
                StoreError::tensor(path, name, format!("size of ne {ne:?} overflows"))
            })?;
        if offset % alignment != 0 {
            return Err(StoreError::tensor(
                path,
                name,
                format!("data offset {offset} is not a multiple of the alignment {alignment}"),
            ));
        }
        let mut shape = ne;
        shape.reverse();
        infos.push((name.to_string(), DType::from_ggml(ty), shape, offset, len));
    }
    let data_offset = if n_tensors > 0 {
        (c.pos as u64).div_ceil(alignment) * alignment
    } else {
        c.pos as u64
    };
    let file_len = data.len() as u64;
    let mut tensors = Vec::with_capacity(infos.len());
    for (name, dtype, shape, rel, len) in infos {
        let end = data_offset
            .checked_add(rel)
            .and_then(|a| a.checked_add(len));
        match end {
            Some(end) if end <= file_len => {}
            _ => {
                return Err(StoreError::tensor(
                    path,
                    &name,
                    format!(
                        "data at offset {rel} (+{len} bytes) runs past the end of the {file_len}-byte file (truncated?)"
                    ),
                ))
            }
        }
        tensors.push(TensorInfo {
            name,
            dtype,
            shape,
            file,
            offset: data_offset + rel,
            len,
        });
    }
    check_overlaps(path, &tensors)?;
    Ok(Parsed {
        metadata,
        tensors,
        data_offset,
    })
}

fn check_overlaps(path: &Path, tensors: &[TensorInfo]) -> Result<()> {
    let mut order: Vec<&TensorInfo> = tensors.iter().filter(|t| t.len > 0).collect();
    order.sort_by_key(|t| t.offset);
    for w in order.windows(2) {
        if w[1].offset < w[0].offset + w[0].len {
            return Err(StoreError::tensor(
                path,
                &w[1].name,
                format!(
                    "its bytes {}..{} overlap tensor '{}' ({}..{})",
                    w[1].offset,
                    w[1].offset + w[1].len,
                    clip(&w[0].name),
                    w[0].offset,
                    w[0].offset + w[0].len
                ),
            ));
        }
    }
    Ok(())
}

/// If `path` is shard 1 of a split (`PREFIX-00001-of-0000N.gguf`), the paths
/// of all N shards (as `llama_split_path` names them).
pub fn split_paths(path: &Path) -> Option<Vec<PathBuf>> {
    let name = path.file_name()?.to_str()?;
    let stem = name.strip_suffix(".gguf")?;
    let (prefix, rest) = stem.rsplit_once("-of-")?;
    let (prefix, no) = prefix.rsplit_once('-')?;
    if no.len() != 5
        || rest.len() != 5
        || !no.bytes().all(|b| b.is_ascii_digit())
        || !rest.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let count: u32 = rest.parse().ok()?;
    let dir = path.parent().unwrap_or(Path::new(""));
    Some(
        (1..=count)
            .map(|i| dir.join(format!("{prefix}-{i:05}-of-{count:05}.gguf")))
            .collect(),
    )
}

/// Opens a GGUF model of one or several shards and merges their tensors.
pub(crate) fn open_all(shards: &[PathBuf]) -> Result<(Vec<ModelFile>, Vec<TensorInfo>, Metadata)> {
    let mut files = Vec::with_capacity(shards.len());
    let mut tensors = Vec::new();
    let mut first_meta = None;
    for (i, p) in shards.iter().enumerate() {
        // Only absence means a missing shard; anything else that is there
        // but no regular file is for ModelFile::open to name.
        if !present(p) {
            return Err(StoreError::NotFound(format!(
                "{}: split shard {} of {} is missing",
                p.display(),
                i + 1,
                shards.len()
            )));
        }
        let f = ModelFile::open(p)?;
        let parsed = parse(p, f.data(), i)?;
        if shards.len() > 1 {
            let no = parsed.metadata.get(KEY_SPLIT_NO);
            if no.and_then(Value::as_u64) != Some(i as u64) {
                return Err(StoreError::invalid(
                    p,
                    format!("{KEY_SPLIT_NO} is {no:?}, expected {i} for this shard"),
                ));
            }
            let count = parsed.metadata.get(KEY_SPLIT_COUNT).and_then(Value::as_u64);
            if count != Some(shards.len() as u64) {
                return Err(StoreError::invalid(
                    p,
                    format!("{KEY_SPLIT_COUNT} is {count:?}, expected {}", shards.len()),
                ));
            }
        }
        tensors.extend(parsed.tensors);
        files.push(f);
        if first_meta.is_none() {
            first_meta = Some(parsed.metadata);
        }
    }
    let meta = first_meta.unwrap_or_default();
    if shards.len() > 1 {
        if let Some(total) = meta.u64(KEY_SPLIT_TENSORS) {
            if total != tensors.len() as u64 {
                return Err(StoreError::invalid(
                    &shards[0],
                    format!(
                        "{KEY_SPLIT_TENSORS} says {total} tensors but the shards hold {}",
                        tensors.len()
                    ),
                ));
            }
        }
    }
    Ok((files, tensors, meta))
}

/// `llama-quantize`'s type rules read their facts from GGUF metadata; the
/// rules themselves ([`crate::quant::ftype`]) know nothing of files.
impl ModelFacts {
    /// Reads the facts from GGUF metadata (`general.architecture`,
    /// `ARCH.block_count`, `ARCH.expert_count`, `ARCH.attention.head_count`
    /// and `head_count_kv`). Head counts stored per layer (arrays) count as
    /// 0, which only matters for the 70B rule.
    pub fn from_gguf(meta: &Metadata) -> Result<ModelFacts, TypeRuleError> {
        let missing = |key: String| TypeRuleError::MissingKey { key };
        let arch = meta
            .str("general.architecture")
            .ok_or_else(|| missing("general.architecture".into()))?
            .to_string();
        let key = |k: &str| format!("{arch}.{k}");
        let u32_of = |k: &str| meta.u64(&key(k)).map(|v| v.min(u64::from(u32::MAX)) as u32);
        let n_layer = u32_of("block_count").ok_or_else(|| missing(key("block_count")))?;
        let n_head = u32_of("attention.head_count").unwrap_or(0);
        Ok(ModelFacts {
            n_layer,
            n_expert: u32_of("expert_count").unwrap_or(0),
            n_head,
            n_head_kv: u32_of("attention.head_count_kv").unwrap_or(n_head),
            arch,
        })
    }
}

/// A tensor the GGUF writer will write: name, type and torch-order shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufTensor {
    pub name: String,
    pub ty: GgmlType,
    /// Torch order (outermost first); written reversed as `ne[]`.
    pub shape: Vec<u64>,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::String(s) => put_str(out, s),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Array(a) => {
            out.extend_from_slice(&(a.item_type() as u32).to_le_bytes());
            out.extend_from_slice(&(a.len() as u64).to_le_bytes());
            fn put_all<T: Scalar>(out: &mut Vec<u8>, items: &[T]) {
                items.iter().for_each(|x| x.put(out));
            }
            match a {
                Array::U8(v) => out.extend_from_slice(v),
                Array::I8(v) => put_all(out, v),
                Array::U16(v) => put_all(out, v),
                Array::I16(v) => put_all(out, v),
                Array::U32(v) => put_all(out, v),
                Array::I32(v) => put_all(out, v),
                Array::F32(v) => put_all(out, v),
                Array::Bool(v) => out.extend(v.iter().map(|&b| b as u8)),
                Array::String(v) => v.iter().for_each(|s| put_str(out, s)),
                Array::U64(v) => put_all(out, v),
                Array::I64(v) => put_all(out, v),
                Array::F64(v) => put_all(out, v),
            }
        }
    }
}

/// Streams a GGUF v3 file: the header (metadata, tensor infos, offsets) is
/// computed from the plan up front, then tensor data is written one tensor
/// at a time in plan order, each zero-padded to the alignment, exactly the
/// layout llama.cpp's strict offset check expects. The file is a temporary
/// until [`GgufWriter::finish`].
pub struct GgufWriter {
    out: AtomicFile,
    sequence: TensorSequence,
    alignment: u64,
}

impl GgufWriter {
    /// Validates the plan and writes the header to a temporary beside `dest`.
    pub fn create(
        dest: &Path,
        metadata: &[(String, Value)],
        tensors: Vec<GgufTensor>,
    ) -> Result<GgufWriter> {
        let bad = |msg: String| StoreError::Write {
            path: dest.to_path_buf(),
            msg,
        };
        let mut keys = HashSet::new();
        let mut alignment = DEFAULT_ALIGNMENT as u64;
        for (k, v) in metadata {
            if k.is_empty() || !keys.insert(k.as_str()) {
                return Err(bad(format!("metadata key '{k}' is empty or repeated")));
            }
            if k == KEY_ALIGNMENT {
                match v {
                    Value::U32(a) if *a > 0 && a.is_power_of_two() => alignment = *a as u64,
                    _ => {
                        return Err(bad(format!(
                            "{KEY_ALIGNMENT} must be a UINT32 power of two"
                        )))
                    }
                }
            }
        }
        let mut names = HashSet::new();
        let mut plan = Vec::with_capacity(tensors.len());
        let mut hdr = Vec::new();
        hdr.extend_from_slice(&MAGIC);
        hdr.extend_from_slice(&VERSION.to_le_bytes());
        hdr.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        hdr.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
        for (k, v) in metadata {
            put_str(&mut hdr, k);
            hdr.extend_from_slice(&(v.value_type() as u32).to_le_bytes());
            put_value(&mut hdr, v);
        }
        let mut offset = 0u64;
        for t in tensors {
            if t.name.is_empty() || t.name.len() > MAX_NAME_LEN || !names.insert(t.name.clone()) {
                return Err(bad(format!(
                    "tensor name '{}' is empty, repeated or longer than {MAX_NAME_LEN} bytes",
                    t.name
                )));
            }
            if t.shape.len() > MAX_DIMS {
                return Err(bad(format!(
                    "tensor '{}' has more than {MAX_DIMS} dimensions",
                    t.name
                )));
            }
            let ne0 = t.shape.last().copied().unwrap_or(1);
            let len = checked_numel(&t.shape)
                .filter(|_| ne0 % t.ty.block_size() == 0)
                .and_then(|n| t.ty.bytes_for(n))
                .ok_or_else(|| {
                    bad(format!(
                        "tensor '{}': shape {:?} does not fit {} blocks of {} along its last dimension",
                        t.name,
                        t.shape,
                        t.ty,
                        t.ty.block_size()
                    ))
                })?;
            put_str(&mut hdr, &t.name);
            hdr.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
            for d in t.shape.iter().rev() {
                hdr.extend_from_slice(&d.to_le_bytes());
            }
            hdr.extend_from_slice(&t.ty.id().to_le_bytes());
            hdr.extend_from_slice(&offset.to_le_bytes());
            offset += len.div_ceil(alignment) * alignment;
            plan.push((t.name, len));
        }
        if !plan.is_empty() {
            hdr.resize(
                (hdr.len() as u64).div_ceil(alignment) as usize * alignment as usize,
                0,
            );
        }
        let mut out = AtomicFile::create(dest)?;
        out.write_all(&hdr)?;
        Ok(GgufWriter {
            out,
            sequence: TensorSequence::new(plan),
            alignment,
        })
    }

    /// Writes the next tensor's bytes; name and length must match the plan.
    pub fn write_tensor(&mut self, name: &str, data: &[u8]) -> Result<()> {
        self.write_tensor_with(name, |sink| sink(data))
    }

    /// Writes the next tensor from pieces: `produce` calls the sink as many
    /// times as it likes, so a tensor never has to be whole in memory. Name
    /// and total length must match the plan.
    pub fn write_tensor_with(
        &mut self,
        name: &str,
        produce: impl FnOnce(&mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()>,
    ) -> Result<()> {
        let dest = self.out.dest().to_path_buf();
        let len = self.sequence.expect(&dest, name)?;
        self.sequence
            .write(&mut self.out, &dest, name, len, produce)?;
        let pad = len.div_ceil(self.alignment) * self.alignment - len;
        self.out.write_zeros(pad)
    }

    /// Checks all tensors were written and renames the file into place.
    pub fn finish(self) -> Result<PathBuf> {
        self.sequence.check_complete(self.out.dest())?;
        self.out.commit()
    }
}
