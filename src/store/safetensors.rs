//! safetensors: header parsing with strict validation, sharded indexes, and
//! a streaming sharded writer.
//!
//! Layout (must agree with `safetensors/src/tensor.rs` of huggingface/safetensors):
//! an 8-byte little-endian header length N, N bytes of UTF-8 JSON mapping
//! tensor names to `{"dtype", "shape", "data_offsets": [begin, end]}` (offsets
//! relative to the end of the header) plus an optional `__metadata__`
//! string map, then the data. The reference reader requires the tensors to
//! cover the data section exactly, without gaps or overlaps; so do we.
//!
//! Sharding and the index file follow transformers' `save_pretrained`
//! (`model-00001-of-00003.safetensors`, `model.safetensors.index.json` with
//! `metadata.total_size` and a sorted `weight_map`).
//!
//! Why not the `safetensors` crate for this: its reader's errors do not name
//! the tensor or the expected size, and its writer holds a whole tensor set
//! and picks its own order. The header is small; we parse and write it
//! ourselves and stream the data (the crate is used in tests as a
//! cross-check that what we write is what the reference reads).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::de::DeserializeSeed;

use super::atomic::{self, AtomicFile, TensorSequence};
use super::{
    checked_numel, clip, present, read_json, DType, ModelFile, Result, StoreError, TensorInfo,
};

/// Largest header the reference implementation accepts (`MAX_HEADER_SIZE`).
pub const MAX_HEADER_SIZE: u64 = 100_000_000;
/// Name of the sharded index file written by transformers.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// Name of an unsharded model file.
pub const SINGLE_FILE: &str = "model.safetensors";
/// transformers' default `max_shard_size` ("5GB", decimal).
pub const DEFAULT_MAX_SHARD_SIZE: u64 = 5_000_000_000;

mod header;
use header::Entries;
pub use header::{MAX_DIMS, MAX_METADATA_ENTRIES, MAX_NAME_LEN};

/// A parsed safetensors header.
#[derive(Debug)]
pub struct Header {
    /// Tensors in data order, with absolute file offsets.
    pub tensors: Vec<TensorInfo>,
    /// The `__metadata__` map.
    pub metadata: BTreeMap<String, String>,
}

/// Parses and validates the header of a safetensors file held in `data`.
/// `file` is the index recorded in each [`TensorInfo`].
pub fn parse_header(path: &Path, data: &[u8], file: usize) -> Result<Header> {
    let len = data.len() as u64;
    if len < 8 {
        return Err(StoreError::invalid(
            path,
            format!("file is {len} bytes, too short for the 8-byte safetensors header length (truncated or not a safetensors file)"),
        ));
    }
    let n = u64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
    if n > MAX_HEADER_SIZE {
        return Err(StoreError::invalid(
            path,
            format!("header length field says {n} bytes, over the {MAX_HEADER_SIZE}-byte limit (corrupt, or not a safetensors file)"),
        ));
    }
    if n > len - 8 {
        return Err(StoreError::invalid(
            path,
            format!(
                "header length field says {n} bytes but only {} follow (file truncated?)",
                len - 8
            ),
        ));
    }
    let header_end = 8 + n;
    let text = std::str::from_utf8(&data[8..header_end as usize]).map_err(|e| {
        StoreError::invalid(
            path,
            format!(
                "header is not valid UTF-8 (at header byte {})",
                e.valid_up_to()
            ),
        )
    })?;
    let mut fault = None;
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = Entries {
        path,
        fault: &mut fault,
    }
    .deserialize(&mut de)
    .and_then(|h| de.end().map(|()| h));
    let (entries, metadata) = match (parsed, fault) {
        (Ok(h), _) => h,
        (Err(_), Some(fault)) => return Err(fault),
        (Err(e), None) => {
            return Err(StoreError::invalid(
                path,
                format!("header is not a valid JSON object: {e}"),
            ))
        }
    };
    let data_len = len - header_end;

    let mut seen = HashSet::with_capacity(entries.len());
    for (name, _) in &entries {
        if !seen.insert(name.as_str()) {
            return Err(StoreError::tensor(
                path,
                name,
                "appears twice in the header",
            ));
        }
    }
    let mut tensors = Vec::with_capacity(entries.len());
    for (name, raw) in entries {
        let dtype = raw
            .dtype
            .0
            .map_err(|d| StoreError::tensor(path, &name, format!("unknown dtype '{d}'")))?;
        if raw.shape.count > MAX_DIMS {
            return Err(StoreError::tensor(
                path,
                &name,
                format!(
                    "its shape has {} dimensions, over llmtool's limit of {MAX_DIMS}",
                    raw.shape.count
                ),
            ));
        }
        let shape = raw.shape.dims;
        let expected = checked_numel(&shape)
            .and_then(|n| dtype.bytes_for(n))
            .ok_or_else(|| StoreError::tensor(path, &name, format!("shape {shape:?} overflows")))?;
        let (begin, end) = raw.data_offsets;
        if end < begin {
            return Err(StoreError::tensor(
                path,
                &name,
                format!("data_offsets [{begin}, {end}] end before they begin"),
            ));
        }
        if end - begin != expected {
            return Err(StoreError::tensor(
                path,
                &name,
                format!(
                    "{dtype} {shape:?} needs {expected} bytes but data_offsets [{begin}, {end}] span {}",
                    end - begin
                ),
            ));
        }
        if end > data_len {
            return Err(StoreError::tensor(
                path,
                &name,
                format!("data_offsets [{begin}, {end}] run past the data section of {data_len} bytes (file truncated?)"),
            ));
        }
        tensors.push(TensorInfo {
            name,
            dtype,
            shape,
            file,
            offset: header_end + begin,
            len: expected,
        });
    }
    check_packing(path, &mut tensors, header_end, len)?;
    Ok(Header { tensors, metadata })
}

/// Sorts tensors by offset and checks they tile `[header_end, file_len)`
/// exactly, as the reference reader requires.
fn check_packing(
    path: &Path,
    tensors: &mut [TensorInfo],
    header_end: u64,
    file_len: u64,
) -> Result<()> {
    tensors.sort_by_key(|t| (t.offset, t.len));
    let mut pos = header_end;
    let mut prev: Option<&TensorInfo> = None;
    for t in tensors.iter() {
        if t.offset < pos {
            let p = prev.expect("only a later tensor can start before pos");
            return Err(StoreError::tensor(
                path,
                &t.name,
                format!(
                    "its bytes {}..{} overlap tensor '{}' ({}..{}) (offsets relative to the data section)",
                    t.offset - header_end,
                    t.offset + t.len - header_end,
                    clip(&p.name),
                    p.offset - header_end,
                    p.offset + p.len - header_end
                ),
            ));
        }
        if t.offset > pos {
            return Err(StoreError::tensor(
                path,
                &t.name,
                format!(
                    "starts at data offset {} but the previous tensor ends at {}: safetensors requires tensors packed without gaps",
                    t.offset - header_end,
                    pos - header_end
                ),
            ));
        }
        pos = t.offset + t.len;
        prev = Some(t);
    }
    if pos != file_len {
        return Err(StoreError::invalid(
            path,
            format!(
                "{} bytes after the last tensor are not described by the header",
                file_len - pos
            ),
        ));
    }
    Ok(())
}

/// Opens safetensors files (with their index, for sharded models).
pub(crate) fn open_all(
    files: &[PathBuf],
    index: Option<&Path>,
) -> Result<(Vec<ModelFile>, Vec<TensorInfo>)> {
    let mut opened = Vec::with_capacity(files.len());
    let mut tensors = Vec::new();
    for (i, p) in files.iter().enumerate() {
        let f = ModelFile::open(p)?;
        tensors.extend(parse_header(p, f.data(), i)?.tensors);
        opened.push(f);
    }
    if let Some(index) = index {
        check_index(index, &opened, &tensors)?;
    }
    Ok((opened, tensors))
}

/// The shard files an index names, in sorted order, each checked to exist.
pub(crate) fn index_shards(index: &Path) -> Result<Vec<PathBuf>> {
    let map = weight_map(index)?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut shards: Vec<&String> = map.values().collect();
    shards.sort();
    shards.dedup();
    let mut out = Vec::with_capacity(shards.len());
    for s in shards {
        if s.contains('/') || s.contains('\\') || s.starts_with("..") {
            return Err(StoreError::invalid(
                index,
                format!(
                    "weight_map names shard '{}', which is not a plain file name",
                    clip(s)
                ),
            ));
        }
        let p = dir.join(s);
        // Absent only: a shard that is there but no regular file is named
        // as such when it is opened.
        if !present(&p) {
            let user = map
                .iter()
                .find(|(_, f)| *f == s)
                .map(|(t, _)| t.as_str())
                .unwrap_or("");
            return Err(StoreError::invalid(
                index,
                format!("weight_map names shard '{}' (for tensor '{}' among others) but {} does not exist; download the missing shard", clip(s), clip(user), p.display()),
            ));
        }
        out.push(p);
    }
    if out.is_empty() {
        return Err(StoreError::invalid(index, "weight_map is empty"));
    }
    Ok(out)
}

fn weight_map(index: &Path) -> Result<BTreeMap<String, String>> {
    let v = read_json(index)?;
    let map = v
        .get("weight_map")
        .ok_or_else(|| StoreError::invalid(index, "no \"weight_map\" object"))?;
    serde_json::from_value(map.clone()).map_err(|e| {
        StoreError::invalid(
            index,
            format!("\"weight_map\" must map tensor names to shard file names: {e}"),
        )
    })
}

fn check_index(index: &Path, files: &[ModelFile], tensors: &[TensorInfo]) -> Result<()> {
    let map = weight_map(index)?;
    let mut where_is: HashMap<&str, &Path> = HashMap::with_capacity(tensors.len());
    for t in tensors {
        where_is.insert(&t.name, &files[t.file].path);
    }
    for (name, shard) in &map {
        match where_is.get(name.as_str()) {
            None => {
                return Err(StoreError::invalid(
                    index,
                    format!(
                        "weight_map says tensor '{}' is in '{}', but no shard holds it",
                        clip(name),
                        clip(shard)
                    ),
                ))
            }
            Some(p) if p.file_name().and_then(|f| f.to_str()) != Some(shard.as_str()) => {
                return Err(StoreError::invalid(
                    index,
                    format!(
                        "weight_map says tensor '{}' is in '{}', but it is in {}",
                        clip(name),
                        clip(shard),
                        p.display()
                    ),
                ))
            }
            Some(_) => {}
        }
    }
    if let Some(t) = tensors.iter().find(|t| !map.contains_key(&t.name)) {
        return Err(StoreError::tensor(
            &files[t.file].path,
            &t.name,
            format!("is not listed in {}'s weight_map", index.display()),
        ));
    }
    Ok(())
}

/// A tensor a writer will write: its name, dtype and torch-order shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafetensorsTensor {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<u64>,
}

impl From<&TensorInfo> for SafetensorsTensor {
    fn from(t: &TensorInfo) -> Self {
        SafetensorsTensor {
            name: t.name.clone(),
            dtype: t.dtype,
            shape: t.shape.clone(),
        }
    }
}

struct Shard {
    name: String,
    /// Range into the writer's plan.
    first: usize,
    end: usize,
}

/// Streams tensors into `model.safetensors`, or into
/// `model-0000i-of-0000n.safetensors` shards plus `model.safetensors.index.json`
/// when they exceed `max_shard_size`. Headers are computed up front from the
/// plan; tensors are then written one at a time, in plan order, so memory
/// holds at most the tensor the caller is producing.
///
/// Every file is a temporary until [`ShardedWriter::finish`]; dropping the
/// writer early (error, Ctrl-C) deletes them.
pub struct ShardedWriter {
    dir: PathBuf,
    plan: Vec<(SafetensorsTensor, u64)>,
    shards: Vec<Shard>,
    metadata: BTreeMap<String, String>,
    sequence: TensorSequence,
    current: Option<AtomicFile>,
    done: Vec<AtomicFile>,
    /// Write the index even for a single `model.safetensors`.
    always_index: bool,
}

impl ShardedWriter {
    /// Plans the shards and checks the plan; nothing touches the disk
    /// until the first tensor is written (so a dry run can ask for
    /// [`ShardedWriter::file_names`]). `metadata` is added to
    /// `__metadata__` beside `format: pt`.
    pub fn create(
        dir: &Path,
        plan: Vec<SafetensorsTensor>,
        max_shard_size: u64,
        metadata: BTreeMap<String, String>,
    ) -> Result<ShardedWriter> {
        let mut names = HashSet::new();
        let mut sized = Vec::with_capacity(plan.len());
        for t in plan {
            if !names.insert(t.name.clone()) {
                return Err(StoreError::Write {
                    path: dir.to_path_buf(),
                    msg: format!("tensor '{}' is planned twice", t.name),
                });
            }
            if t.dtype.safetensors_name().is_none() {
                return Err(StoreError::Write {
                    path: dir.to_path_buf(),
                    msg: format!(
                        "tensor '{}': {} cannot be stored in safetensors",
                        t.name, t.dtype
                    ),
                });
            }
            let len = checked_numel(&t.shape)
                .and_then(|n| t.dtype.bytes_for(n))
                .ok_or_else(|| StoreError::Write {
                    path: dir.to_path_buf(),
                    msg: format!("tensor '{}': shape {:?} overflows", t.name, t.shape),
                })?;
            sized.push((t, len));
        }
        // transformers' rule: start a new shard when the next tensor would
        // push a non-empty shard over the limit.
        let mut bounds = vec![0usize];
        let mut size = 0u64;
        for (i, (_, len)) in sized.iter().enumerate() {
            if size > 0 && size + len > max_shard_size {
                bounds.push(i);
                size = 0;
            }
            size += len;
        }
        bounds.push(sized.len());
        let n = bounds.len() - 1;
        let shards = bounds
            .windows(2)
            .enumerate()
            .map(|(i, w)| Shard {
                name: if n == 1 {
                    SINGLE_FILE.to_string()
                } else {
                    format!("model-{:05}-of-{:05}.safetensors", i + 1, n)
                },
                first: w[0],
                end: w[1],
            })
            .collect();
        let mut metadata = metadata;
        metadata
            .entry("format".into())
            .or_insert_with(|| "pt".into());
        Ok(ShardedWriter {
            dir: dir.to_path_buf(),
            sequence: TensorSequence::new(
                sized.iter().map(|(t, l)| (t.name.clone(), *l)).collect(),
            ),
            plan: sized,
            shards,
            metadata,
            current: None,
            done: Vec::new(),
            always_index: false,
        })
    }

    /// Writes `model.safetensors.index.json` even when everything fits in
    /// one file: loaders of partial checkpoints (a pipeline stage) find
    /// their tensors through the index alone.
    pub fn always_index(mut self) -> ShardedWriter {
        self.always_index = true;
        self
    }

    fn writes_index(&self) -> bool {
        self.always_index || self.shards.len() > 1
    }

    /// The files this writer will produce, in order.
    pub fn file_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.shards.iter().map(|s| s.name.clone()).collect();
        if self.writes_index() {
            v.push(INDEX_FILE.to_string());
        }
        v
    }

    /// Total tensor bytes the writer will write.
    pub fn total_size(&self) -> u64 {
        self.plan.iter().map(|(_, l)| l).sum()
    }

    fn header(&self, shard: &Shard) -> Vec<u8> {
        let mut obj = serde_json::Map::new();
        obj.insert(
            "__metadata__".into(),
            serde_json::to_value(&self.metadata).expect("string map"),
        );
        let mut off = 0u64;
        for (t, len) in &self.plan[shard.first..shard.end] {
            obj.insert(
                t.name.clone(),
                serde_json::json!({
                    "dtype": t.dtype.safetensors_name(),
                    "shape": t.shape,
                    "data_offsets": [off, off + len],
                }),
            );
            off += len;
        }
        let mut json = serde_json::to_vec(&obj).expect("header serializes");
        // The reference writer pads the header with spaces to 8 bytes so the
        // data section is aligned.
        json.resize(json.len().div_ceil(8) * 8, b' ');
        let mut out = (json.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&json);
        out
    }

    /// Writes the next tensor of the plan; `name` and the byte length must match it.
    pub fn write_tensor(&mut self, name: &str, data: &[u8]) -> Result<()> {
        self.write_tensor_with(name, |sink| sink(data))
    }

    /// Writes the next tensor of the plan in pieces: `produce` is called
    /// once with a sink that appends bytes, so a caller can stream a large
    /// tensor row chunk by row chunk. The pieces must add up to exactly the
    /// planned length.
    pub fn write_tensor_with(
        &mut self,
        name: &str,
        produce: impl FnOnce(&mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()>,
    ) -> Result<()> {
        let len = self.sequence.expect(&self.dir, name)?;
        let next = self.sequence.next();
        let si = self
            .shards
            .iter()
            .position(|s| next < s.end)
            .expect("next is in a shard");
        if self.current.is_none() {
            atomic::ensure_dir(&self.dir)?;
            let shard = &self.shards[si];
            let mut f = AtomicFile::create(&self.dir.join(&shard.name))?;
            f.write_all(&self.header(shard))?;
            self.current = Some(f);
        }
        let f = self.current.as_mut().expect("opened above");
        self.sequence.write(f, &self.dir, name, len, produce)?;
        if self.sequence.next() == self.shards[si].end {
            self.done.push(self.current.take().expect("open shard"));
        }
        Ok(())
    }

    /// Writes the next tensor of the plan as `model` stores `t`, its bytes
    /// copied 16 MiB at a time, and lets the map release them.
    pub fn copy_tensor(&mut self, model: &super::Model, t: &TensorInfo) -> Result<()> {
        self.write_tensor_with(&t.name, |sink| {
            for c in model.bytes(t).chunks(16 << 20) {
                sink(c)?;
            }
            Ok(())
        })?;
        model.release(t);
        Ok(())
    }

    /// Checks every tensor was written, renames the shards into place and
    /// writes the index last. Returns the final paths.
    pub fn finish(mut self) -> Result<Vec<PathBuf>> {
        self.sequence.check_complete(&self.dir)?;
        // An empty plan still produces a valid (empty) model.safetensors.
        if self.plan.is_empty() {
            atomic::ensure_dir(&self.dir)?;
            let mut f = AtomicFile::create(&self.dir.join(&self.shards[0].name))?;
            f.write_all(&self.header(&self.shards[0]))?;
            self.done.push(f);
        }
        let done = std::mem::take(&mut self.done);
        let mut paths = Vec::with_capacity(done.len() + 1);
        for f in done {
            paths.push(f.commit()?);
        }
        if self.writes_index() {
            let mut weight_map = BTreeMap::new();
            for s in &self.shards {
                for (t, _) in &self.plan[s.first..s.end] {
                    weight_map.insert(t.name.clone(), s.name.clone());
                }
            }
            let total: u64 = self.plan.iter().map(|(_, l)| l).sum();
            let index =
                serde_json::json!({"metadata": {"total_size": total}, "weight_map": weight_map});
            let mut text = serde_json::to_string_pretty(&index).expect("index serializes");
            text.push('\n');
            paths.push(atomic::write_file(
                &self.dir.join(INDEX_FILE),
                text.as_bytes(),
            )?);
        }
        Ok(paths)
    }
}

/// Streams every tensor of `model` (which must hold safetensors dtypes)
/// into a new sharded set in `dir`, in the model's tensor order.
pub fn write_model(
    model: &super::Model,
    dir: &Path,
    max_shard_size: u64,
    metadata: BTreeMap<String, String>,
) -> Result<Vec<PathBuf>> {
    let plan = model
        .tensors()
        .iter()
        .map(SafetensorsTensor::from)
        .collect();
    let mut w = ShardedWriter::create(dir, plan, max_shard_size, metadata)?;
    for t in model.tensors() {
        w.write_tensor(&t.name, model.bytes(t))?;
    }
    w.finish()
}
