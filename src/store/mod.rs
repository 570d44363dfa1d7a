//! The shared tensor store: every subcommand reads and writes model tensors
//! through this module.
//!
//! * [`Model::open`] resolves a model spec (HF directory, sharded index,
//!   single `.safetensors`, `.gguf` or split GGUF, Hub repo id in the local
//!   cache) and memory-maps its files. Only headers are parsed; tensor bytes
//!   are touched when a caller asks for them, so opening a 30 GB model costs
//!   a few MB of RSS.
//! * [`TensorInfo`] describes one tensor in **torch order** (outermost
//!   dimension first) whatever the container: GGUF's reversed `ne[]` is
//!   flipped on read, as gguf-py's reader does.
//! * [`Model::bytes`] borrows raw bytes zero-copy; [`Model::read_f32`] and
//!   [`Model::read_rows_f32`] dequantize through [`crate::quant`].
//! * Writers ([`safetensors::ShardedWriter`], [`gguf::GgufWriter`]) stream
//!   tensor by tensor into temporary files beside the destination and rename
//!   them into place only when complete ([`atomic`]).

pub mod atomic;
pub mod card;
pub mod gguf;
pub mod hf_cache;
pub mod hfdir;
pub mod safetensors;
mod source;

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use rayon::prelude::*;

use crate::quant::{self, GgmlType, QuantError};

pub use source::{resolve, Resolved};

/// Errors of the tensor store. Every message names the file, and the tensor
/// when one is involved, so that a user can find what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The operating system refused an operation on `path`.
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is malformed (bad header, truncated, lying offsets, ...).
    #[error("{}: {msg}", .path.display())]
    Invalid { path: PathBuf, msg: String },
    /// One tensor's description in the file is malformed.
    #[error("{}: tensor '{tensor}': {msg}", .path.display())]
    InvalidTensor {
        path: PathBuf,
        tensor: String,
        msg: String,
    },
    /// The model spec does not name anything we can open.
    #[error("{0}")]
    NotFound(String),
    /// A well-formed input that llmtool refuses (pickle checkpoints, ...).
    #[error("{}: {msg}", .path.display())]
    Unsupported { path: PathBuf, msg: String },
    /// No tensor of that name in the model.
    #[error("no tensor named '{0}' in the model")]
    NoSuchTensor(String),
    /// A tensor could not be converted to f32.
    #[error("tensor '{tensor}': {source}")]
    Dequant { tensor: String, source: QuantError },
    /// A tensor could not be encoded in its output type.
    #[error("tensor '{tensor}': {source}")]
    Encode { tensor: String, source: QuantError },
    /// A writer was used against its plan (wrong order, wrong length).
    #[error("{}: {msg}", .path.display())]
    Write { path: PathBuf, msg: String },
    /// A tensor being produced holds NaN or Inf.
    #[error("tensor '{tensor}': element {index} is {value}; refusing to write NaN/Inf")]
    NonFinite {
        tensor: String,
        index: u64,
        value: f32,
    },
    /// A finite value beyond the range of the 16-bit intermediate file a
    /// GGUF quantization reproduces.
    #[error(
        "tensor '{tensor}': element {index} is {value}, beyond {ty}'s range; llama.cpp's \
         pipeline (convert_hf_to_gguf.py, then llama-quantize), whose {ty} intermediate this \
         quantization reproduces, would store inf there. Quantize through an F32 GGUF instead \
         (`llmtool quantize f32 MODEL --out M.gguf`, then quantize M.gguf)"
    )]
    Overflow16 {
        tensor: String,
        index: u64,
        value: f32,
        ty: &'static str,
    },
    /// The user pressed Ctrl-C (or the process got SIGTERM); outputs were removed.
    #[error("{0}")]
    Interrupted(#[from] crate::cancel::Interrupted),
}

impl StoreError {
    /// `Ok` when every value is finite, else [`StoreError::NonFinite`] for
    /// the first one that is not; `first` is the index of `values[0]` in
    /// `tensor`.
    pub(crate) fn check_finite(tensor: &str, first: u64, values: &[f32]) -> Result<()> {
        match values.iter().position(|v| !v.is_finite()) {
            None => Ok(()),
            Some(i) => Err(StoreError::NonFinite {
                tensor: tensor.to_string(),
                index: first + i as u64,
                value: values[i],
            }),
        }
    }

    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
    pub(crate) fn invalid(path: &Path, msg: impl Into<String>) -> Self {
        StoreError::Invalid {
            path: path.to_path_buf(),
            msg: msg.into(),
        }
    }
    /// A malformed tensor description; the name is [`clip`]ped, since an
    /// untrusted header may hold a name of megabytes.
    pub(crate) fn tensor(path: &Path, tensor: &str, msg: impl Into<String>) -> Self {
        StoreError::InvalidTensor {
            path: path.to_path_buf(),
            tensor: clip(tensor).into_owned(),
            msg: msg.into(),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Characters of an untrusted name or value that messages quote.
const CLIP_CHARS: usize = 80;

/// `s` as an error message quotes it: whole when short, else its first
/// [`CLIP_CHARS`] characters and "…", so that a hostile header cannot
/// make one line of stderr megabytes long.
pub(crate) fn clip(s: &str) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(CLIP_CHARS) {
        None => s.into(),
        Some((end, _)) => format!("{}…", &s[..end]).into(),
    }
}

/// Most tensors one file may declare. Real checkpoints hold at most tens of
/// thousands per file (a 235B MoE with unstacked experts has about 37,000
/// in all its shards together); a header declaring more is corrupt or
/// hostile, and each tensor costs a few hundred bytes of memory to hold.
pub const MAX_TENSORS_PER_FILE: u64 = 1 << 18;

/// Element type of a stored tensor: the safetensors dtypes plus GGML's block
/// types. GGUF's plain types (F32, F16, BF16, I8…F64) map to the plain
/// variants so that one model compares equal whatever its container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    Bool,
    U8,
    I8,
    F8E4M3,
    F8E5M2,
    I16,
    U16,
    F16,
    BF16,
    I32,
    U32,
    F32,
    F64,
    I64,
    U64,
    /// A GGML block-quantized type (Q4_K, Q8_0, ...).
    Ggml(GgmlType),
}

/// safetensors dtype spellings (`safetensors/src/tensor.rs`, `Dtype`), with
/// their element sizes in bytes.
const SAFETENSORS_DTYPES: &[(&str, DType, u64)] = &[
    ("BOOL", DType::Bool, 1),
    ("U8", DType::U8, 1),
    ("I8", DType::I8, 1),
    ("F8_E4M3", DType::F8E4M3, 1),
    ("F8_E5M2", DType::F8E5M2, 1),
    ("I16", DType::I16, 2),
    ("U16", DType::U16, 2),
    ("F16", DType::F16, 2),
    ("BF16", DType::BF16, 2),
    ("I32", DType::I32, 4),
    ("U32", DType::U32, 4),
    ("F32", DType::F32, 4),
    ("F64", DType::F64, 8),
    ("I64", DType::I64, 8),
    ("U64", DType::U64, 8),
];

impl DType {
    /// Parses a safetensors dtype string.
    pub fn from_safetensors(s: &str) -> Option<DType> {
        SAFETENSORS_DTYPES
            .iter()
            .find(|(n, _, _)| *n == s)
            .map(|r| r.1)
    }

    /// The safetensors spelling, or `None` for GGML block types.
    pub fn safetensors_name(self) -> Option<&'static str> {
        SAFETENSORS_DTYPES.iter().find(|r| r.1 == self).map(|r| r.0)
    }

    /// Maps a GGML type onto the store's dtype (plain types become plain).
    pub fn from_ggml(t: GgmlType) -> DType {
        match t {
            GgmlType::F32 => DType::F32,
            GgmlType::F16 => DType::F16,
            GgmlType::BF16 => DType::BF16,
            GgmlType::I8 => DType::I8,
            GgmlType::I16 => DType::I16,
            GgmlType::I32 => DType::I32,
            GgmlType::I64 => DType::I64,
            GgmlType::F64 => DType::F64,
            other => DType::Ggml(other),
        }
    }

    /// The GGML type with the same layout, if GGUF can store this dtype.
    pub fn to_ggml(self) -> Option<GgmlType> {
        Some(match self {
            DType::F32 => GgmlType::F32,
            DType::F16 => GgmlType::F16,
            DType::BF16 => GgmlType::BF16,
            DType::I8 => GgmlType::I8,
            DType::I16 => GgmlType::I16,
            DType::I32 => GgmlType::I32,
            DType::I64 => GgmlType::I64,
            DType::F64 => GgmlType::F64,
            DType::Ggml(t) => t,
            _ => return None,
        })
    }

    /// Elements per block (1 for plain types).
    pub fn block_size(self) -> u64 {
        match self {
            DType::Ggml(t) => t.block_size(),
            _ => 1,
        }
    }

    /// Bytes needed for `n` elements; `None` when `n` is not a whole number
    /// of blocks or the size overflows.
    pub fn bytes_for(self, n: u64) -> Option<u64> {
        match self {
            DType::Ggml(t) => t.bytes_for(n),
            plain => SAFETENSORS_DTYPES
                .iter()
                .find(|r| r.1 == plain)
                .and_then(|r| n.checked_mul(r.2)),
        }
    }

    /// `values` encoded as this dtype into `out` (replaced; little-endian;
    /// f16/bf16 round to nearest even, as torch does), in parallel. Only
    /// F32, F16 and BF16: writers check output dtypes before streaming
    /// starts.
    pub fn encode_f32s(self, values: &[f32], out: &mut Vec<u8>) {
        const PART: usize = 1 << 16;
        let size = self.bytes_for(1).unwrap_or(0) as usize;
        out.clear();
        out.resize(values.len() * size, 0);
        out.par_chunks_mut(PART * size.max(1))
            .zip(values.par_chunks(PART))
            .for_each(|(o, v)| self.encode_f32s_into(v, o));
    }

    /// [`DType::encode_f32s`] of one slice into `out`, which holds exactly
    /// its bytes.
    pub fn encode_f32s_into(self, values: &[f32], out: &mut [u8]) {
        use half::{bf16, f16};
        match self {
            DType::F32 => out
                .chunks_exact_mut(4)
                .zip(values)
                .for_each(|(o, v)| o.copy_from_slice(&v.to_le_bytes())),
            DType::F16 => out
                .chunks_exact_mut(2)
                .zip(values)
                .for_each(|(o, v)| o.copy_from_slice(&f16::from_f32(*v).to_le_bytes())),
            DType::BF16 => out
                .chunks_exact_mut(2)
                .zip(values)
                .for_each(|(o, v)| o.copy_from_slice(&bf16::from_f32(*v).to_le_bytes())),
            _ => unreachable!("output dtypes are checked before streaming"),
        }
    }

    /// Whether [`Model::read_f32`] can convert this dtype.
    pub fn is_float_readable(self) -> bool {
        self.to_ggml().is_some_and(|t| {
            t.can_dequantize() && !matches!(t, GgmlType::I8 | GgmlType::I16 | GgmlType::I32)
        })
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DType::Ggml(t) => f.write_str(t.name()),
            plain => f.write_str(plain.safetensors_name().unwrap_or("?")),
        }
    }
}

impl serde::Serialize for DType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The container format of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Container {
    Safetensors,
    Gguf,
}

/// One tensor of a model, as described by its file's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: DType,
    /// Torch order: outermost dimension first.
    pub shape: Vec<u64>,
    /// Index into [`Model::files`].
    pub file: usize,
    /// Absolute byte offset in the file.
    pub offset: u64,
    /// Byte length.
    pub len: u64,
}

impl TensorInfo {
    /// Number of elements.
    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }
    /// Number of rows (the outermost dimension; 1 for scalars).
    pub fn rows(&self) -> u64 {
        self.shape.first().copied().unwrap_or(1)
    }
    /// Elements per row (product of the inner dimensions).
    pub fn row_len(&self) -> u64 {
        self.shape.iter().skip(1).product()
    }
}

/// Checked element count of a shape, for validation of untrusted headers.
pub(crate) fn checked_numel(shape: &[u64]) -> Option<u64> {
    shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d))
}

/// One memory-mapped file of a model.
pub struct ModelFile {
    pub path: PathBuf,
    pub size: u64,
    map: Option<Mmap>,
}

impl ModelFile {
    /// Opens and maps `path`. Empty files are not mapped (mmap refuses them).
    pub(crate) fn open(path: &Path) -> Result<ModelFile> {
        regular_file(path)?;
        let file = File::open(path).map_err(|e| StoreError::io(path, e))?;
        let size = file.metadata().map_err(|e| StoreError::io(path, e))?.len();
        let map = if size == 0 {
            None
        } else {
            // SAFETY: the map is read-only; as with every mmap-based model
            // loader, a file truncated by another process while mapped is
            // outside what we can defend against.
            Some(unsafe { Mmap::map(&file) }.map_err(|e| StoreError::io(path, e))?)
        };
        Ok(ModelFile {
            path: path.to_path_buf(),
            size,
            map,
        })
    }

    /// The whole file's bytes.
    pub fn data(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }
}

impl fmt::Debug for ModelFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelFile")
            .field("path", &self.path)
            .field("size", &self.size)
            .finish()
    }
}

/// An opened model: its files, tensor table and configuration.
#[derive(Debug)]
pub struct Model {
    /// What the user named, resolved to a path.
    pub root: PathBuf,
    pub container: Container,
    pub files: Vec<ModelFile>,
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
    /// `config.json` beside the weights, when present.
    pub config: Option<serde_json::Value>,
    /// GGUF metadata (of the first shard for split files).
    pub gguf: Option<gguf::Metadata>,
}

impl Model {
    /// Opens a model from a spec: a directory, a `.safetensors`, an index
    /// `.json`, a `.gguf` (first shard of a split), or a Hub repo id
    /// (`org/name`, `org/name@revision`) found in the local Hugging Face cache.
    pub fn open(spec: &str) -> Result<Model> {
        let resolved = resolve(spec)?;
        Self::open_resolved(resolved)
    }

    /// Opens a model from an already resolved source.
    pub fn open_resolved(r: Resolved) -> Result<Model> {
        let config = match &r.config {
            Some(p) => match read_json(p)? {
                // Every reader indexes it by key; an array or a number
                // would silently read as "nothing declared".
                c @ serde_json::Value::Object(_) => Some(c),
                other => {
                    return Err(StoreError::invalid(
                        p,
                        format!(
                            "expected a JSON object of hyperparameters, found {}; \
                             restore the model's original config.json",
                            json_kind(&other)
                        ),
                    ))
                }
            },
            None => None,
        };
        let (container, files, tensors, gguf) = match r.kind {
            source::Files::Safetensors { files, index } => {
                let (files, tensors) = safetensors::open_all(&files, index.as_deref())?;
                (Container::Safetensors, files, tensors, None)
            }
            source::Files::Gguf { shards } => {
                let (files, tensors, meta) = gguf::open_all(&shards)?;
                (Container::Gguf, files, tensors, Some(meta))
            }
        };
        Self::from_parts(r.root, container, files, tensors, config, gguf)
    }

    fn from_parts(
        root: PathBuf,
        container: Container,
        files: Vec<ModelFile>,
        tensors: Vec<TensorInfo>,
        config: Option<serde_json::Value>,
        gguf: Option<gguf::Metadata>,
    ) -> Result<Model> {
        let mut by_name = HashMap::with_capacity(tensors.len());
        for (i, t) in tensors.iter().enumerate() {
            if by_name.insert(t.name.clone(), i).is_some() {
                return Err(StoreError::tensor(
                    &files[t.file].path,
                    &t.name,
                    "appears twice in the model (duplicate tensor name)",
                ));
            }
        }
        Ok(Model {
            root,
            container,
            files,
            tensors,
            by_name,
            config,
            gguf,
        })
    }

    /// All tensors, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// Looks a tensor up by name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// Looks a tensor up by name, or errors naming it.
    pub fn get(&self, name: &str) -> Result<&TensorInfo> {
        self.tensor(name)
            .ok_or_else(|| StoreError::NoSuchTensor(name.to_string()))
    }

    /// The raw bytes of a tensor, borrowed from the memory map.
    pub fn bytes(&self, t: &TensorInfo) -> &[u8] {
        // Offsets were validated against the file size when it was opened.
        &self.files[t.file].data()[t.offset as usize..(t.offset + t.len) as usize]
    }

    /// Drops a tensor's pages from this process's mapping once a streaming
    /// pass is done with them, so that resident memory stays bounded by the
    /// tensors in flight rather than growing with the model (mapped file
    /// pages count toward RSS). Reading the tensor again faults the pages
    /// back in from the page cache.
    pub fn release(&self, t: &TensorInfo) {
        if let Some(map) = &self.files[t.file].map {
            // SAFETY: the mapping is read-only; MADV_DONTNEED on it only
            // discards our page-table entries, and later reads fault the
            // same file contents back in.
            let _ = unsafe {
                map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    t.offset as usize,
                    t.len as usize,
                )
            };
        }
    }

    /// Total bytes of all model files on disk.
    pub fn bytes_on_disk(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// Reads a whole tensor as f32.
    pub fn read_f32(&self, t: &TensorInfo) -> Result<Vec<f32>> {
        self.read_rows_f32(t, 0..t.rows())
    }

    /// Reads rows `rows` (of the outermost dimension) of a tensor as f32.
    /// Large reads are split across rayon's threads.
    pub fn read_rows_f32(&self, t: &TensorInfo, rows: Range<u64>) -> Result<Vec<f32>> {
        let (ty, layout) = self.row_layout(t, &rows)?;
        let dequant = |src: &[u8], dst: &mut [f32]| {
            quant::dequantize(ty, src, dst).map_err(|source| StoreError::Dequant {
                tensor: t.name.clone(),
                source,
            })
        };
        let Some((src, row_bytes)) = layout else {
            let mut out = vec![0f32; t.numel() as usize];
            dequant(self.bytes(t), &mut out)?;
            return Ok(out);
        };
        let row_len = t.row_len() as usize;
        let mut out = vec![0f32; src.len() / row_bytes * row_len];
        // Chunks of about 1M elements keep threads busy without tiny tasks.
        let rows_per_chunk = (1 << 20) / row_len + 1;
        out.par_chunks_mut(rows_per_chunk * row_len)
            .zip(src.par_chunks(rows_per_chunk * row_bytes))
            .try_for_each(|(dst, src)| dequant(src, dst))?;
        Ok(out)
    }

    /// Decodes rows `rows` of a tensor to f32 one row at a time, in
    /// parallel, and calls `f(row, values, out_row)` with the row's index in
    /// the tensor and its equal share of `out`; returns `f`'s results in row
    /// order, or the error of the first row that failed. Unlike [`Model::read_rows_f32`] no f32 buffer the size of the
    /// rows is made (nor zeroed), and each row is still in cache when `f`
    /// runs.
    pub fn map_rows_f32<T: Send>(
        &self,
        t: &TensorInfo,
        rows: Range<u64>,
        out: &mut [u8],
        f: impl Fn(u64, &mut [f32], &mut [u8]) -> Result<T> + Sync,
    ) -> Result<Vec<T>> {
        let (ty, layout) = self.row_layout(t, &rows)?;
        let n_rows = (rows.end - rows.start) as usize;
        let path = &self.files[t.file].path;
        let (Some((src, row_bytes)), true) = (layout, n_rows > 0 && out.len() % n_rows == 0) else {
            return Err(StoreError::tensor(
                path,
                &t.name,
                format!(
                    "rows {}..{} cannot be mapped one by one into {} bytes",
                    rows.start,
                    rows.end,
                    out.len()
                ),
            ));
        };
        let out_row = (out.len() / n_rows).max(1);
        let row_len = t.row_len() as usize;
        src.par_chunks(row_bytes)
            .zip(out.par_chunks_mut(out_row))
            .enumerate()
            .map_init(
                || vec![0f32; row_len],
                |buf, (i, (s, o))| {
                    quant::dequantize(ty, s, buf).map_err(|source| StoreError::Dequant {
                        tensor: t.name.clone(),
                        source,
                    })?;
                    f(rows.start + i as u64, buf, o)
                },
            )
            .collect::<Vec<Result<T>>>()
            // The first failing row in order, so errors do not depend on
            // scheduling.
            .into_iter()
            .collect()
    }

    /// The element type of `t` and, when `rows` can be read row by row,
    /// their bytes and the bytes per row (`None`: a 1-D block-quantized or
    /// empty tensor read whole).
    fn row_layout(&self, t: &TensorInfo, rows: &Range<u64>) -> Result<(GgmlType, RowBytes<'_>)> {
        let path = &self.files[t.file].path;
        if rows.start > rows.end || rows.end > t.rows() {
            return Err(StoreError::tensor(
                path,
                &t.name,
                format!(
                    "row range {}..{} is outside its {} rows",
                    rows.start,
                    rows.end,
                    t.rows()
                ),
            ));
        }
        let ty = match t.dtype.to_ggml() {
            Some(ty) if t.dtype.is_float_readable() => ty,
            _ => {
                return Err(StoreError::tensor(
                    path,
                    &t.name,
                    format!("dtype {} cannot be read as f32", t.dtype),
                ))
            }
        };
        let row_bytes = match t.dtype.bytes_for(t.row_len()) {
            Some(b) if b > 0 => b as usize,
            // A 1-D block-quantized tensor (or an empty one) is one row of
            // blocks: only a whole read makes sense.
            _ if *rows == (0..t.rows()) => return Ok((ty, None)),
            _ => {
                return Err(StoreError::tensor(
                    path,
                    &t.name,
                    format!(
                        "rows of {:?} are not whole {} blocks; read the whole tensor",
                        t.shape, t.dtype
                    ),
                ))
            }
        };
        let n_rows = (rows.end - rows.start) as usize;
        let start = rows.start as usize * row_bytes;
        Ok((
            ty,
            Some((&self.bytes(t)[start..start + n_rows * row_bytes], row_bytes)),
        ))
    }
}

/// Some rows' bytes and the bytes per row, when rows can be read one by one.
type RowBytes<'a> = Option<(&'a [u8], usize)>;

/// `Ok` when `path` (followed through symlinks) is a regular file; else
/// an error saying what it is. Checked before opening: opening a FIFO
/// blocks until a writer comes, and a directory or device is no model file.
pub(crate) fn regular_file(path: &Path) -> Result<()> {
    let t = std::fs::metadata(path)
        .map_err(|e| StoreError::io(path, e))?
        .file_type();
    if t.is_file() {
        return Ok(());
    }
    let what = if t.is_dir() {
        "a directory"
    } else {
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileTypeExt;
            if t.is_fifo() {
                "a FIFO"
            } else if t.is_char_device() || t.is_block_device() {
                "a device"
            } else {
                "a socket"
            }
        }
        #[cfg(not(unix))]
        "something else"
    };
    Err(StoreError::Unsupported {
        path: path.to_path_buf(),
        msg: format!("is {what}, not a regular file; model files must be regular files"),
    })
}

/// Whether anything is at `p` at all: a directory, FIFO, dangling symlink or
/// symlink loop of the name is opened (and refused, saying what it is)
/// rather than reported missing.
pub(crate) fn present(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

/// What a JSON value is, for messages.
pub(crate) fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Reads and parses a JSON file, naming it in errors.
/// Lower-case hex of a digest, as cards, the Hub and GGUF metadata write it.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 of a file, streamed in 1 MiB blocks; `read` hears each block's
/// length (a progress bar); stops at Ctrl-C.
pub fn sha256_file(path: &Path, read: &dyn Fn(u64)) -> Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = File::open(path).map_err(|e| StoreError::io(path, e))?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        crate::cancel::check()?;
        let n = f.read(&mut buf).map_err(|e| StoreError::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        read(n as u64);
    }
    Ok(hex(&h.finalize()))
}

pub(crate) fn read_json(path: &Path) -> Result<serde_json::Value> {
    regular_file(path)?;
    let text = std::fs::read(path).map_err(|e| StoreError::io(path, e))?;
    serde_json::from_slice(&text)
        .map_err(|e| StoreError::invalid(path, format!("malformed JSON: {e}")))
}
