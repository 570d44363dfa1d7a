//! GGUF shards as llama.cpp's `tools/gguf-split/gguf-split.cpp` writes
//! them, and their merge as its `--merge` writes it.
//!
//! What that file does, and so what we do:
//! * Shard `i` of `n` is `PREFIX-{i:05}-of-{n:05}.gguf` (`llama_split_path`).
//! * The first shard holds every metadata key of the input, the others
//!   none; then each gets `split.no` (u16), `split.tensors.count` (i32, the
//!   model's total) and `split.count` (u16), in that order: `gguf_set_val`
//!   removes a key and appends it, and `split.count` is set a second time
//!   once the number of shards is known.
//! * `--split-max-size`: a new shard starts when the current one's tensor
//!   bytes, each padded to 32, plus the next tensor's would exceed the
//!   limit (metadata is not counted). `--split-max-tensors N`: a new shard
//!   every N tensors. Tensors keep the input's order.
//! * Alignment is always 32 (`gguf_init_empty`), whatever
//!   `general.alignment` says; an input with another alignment would give
//!   shards whose key contradicts their layout, so we refuse it.
//! * `--merge`: the first shard's keys with `split.count` set to 0 (removed
//!   and appended last), every shard's tensors in shard order.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{
    assign, dry_run, layer_count, planned, stage_ranges, SplitMode, SplitOptions, SplitReport,
};
use crate::ops::{Error, Result};
use crate::progress;
use crate::store::atomic::AtomicDir;
use crate::store::gguf::{
    GgufTensor, GgufWriter, Value, DEFAULT_ALIGNMENT, KEY_SPLIT_COUNT, KEY_SPLIT_NO,
    KEY_SPLIT_TENSORS,
};
use crate::store::{Container, Model, TensorInfo};
use crate::units::human_bytes;

/// What `fragment merge` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct MergeReport {
    pub out: PathBuf,
    pub shards: Vec<PathBuf>,
    pub tensors: usize,
    pub bytes: u64,
}

/// Writes the GGUF shards of `model` into `opts.out` with the manifest.
pub(super) fn split(model: &Model, opts: &SplitOptions) -> Result<SplitReport> {
    let meta = gguf_meta(model)?;
    let tensors = model.tensors();
    let groups = match &opts.mode {
        SplitMode::MaxSize(limit) => by_size(model, *limit)?,
        SplitMode::MaxTensors(n) => by_count(tensors.len(), *n)?,
        SplitMode::ByLayer(counts) => {
            let ranges = stage_ranges(counts, layer_count(tensors))?;
            let piece = assign(tensors, &ranges);
            (0..ranges.len())
                .map(|k| (0..tensors.len()).filter(|&i| piece[i] == k).collect())
                .collect()
        }
    };
    let n = groups.len();
    if n > u16::MAX as usize {
        return Err(Error::Refused(format!(
            "the limit gives {n} shards; split.count is a u16, so at most {}. Raise the limit",
            u16::MAX
        )));
    }
    let prefix = prefix_of(&model.root);
    let names: Vec<String> = (1..=n)
        .map(|i| format!("{prefix}-{i:05}-of-{n:05}.gguf"))
        .collect();
    let shards: Vec<Vec<&TensorInfo>> = groups
        .iter()
        .map(|g| g.iter().map(|&i| &tensors[i]).collect())
        .collect();
    let planned = planned(model, opts, &shards, &names);
    if opts.dry_run {
        return dry_run(opts, planned, Vec::new());
    }
    let dir = AtomicDir::create(&opts.out)?;
    let total: u64 = tensors.iter().map(|t| t.len).sum();
    let bar = progress::bytes_bar(opts.progress, total, "splitting");
    let others: Vec<(String, Value)> = meta
        .entries()
        .iter()
        .filter(|(k, _)| ![KEY_SPLIT_NO, KEY_SPLIT_COUNT, KEY_SPLIT_TENSORS].contains(&k.as_str()))
        .cloned()
        .collect();
    for (k, (shard, name)) in shards.iter().zip(&names).enumerate() {
        let mut kv = if k == 0 { others.clone() } else { Vec::new() };
        kv.push((KEY_SPLIT_NO.into(), Value::U16(k as u16)));
        kv.push((KEY_SPLIT_TENSORS.into(), Value::I32(tensors.len() as i32)));
        kv.push((KEY_SPLIT_COUNT.into(), Value::U16(n as u16)));
        write_gguf(model, &dir.path().join(name), kv, shard, &bar)?;
    }
    bar.finish_and_clear();
    let manifest = planned.write(dir.path(), names, opts.progress)?;
    dir.commit()?;
    Ok(SplitReport {
        out: opts.out.clone(),
        dry_run: false,
        manifest,
        warnings: Vec::new(),
    })
}

/// Merges a split GGUF (opened from its first shard) into `out`.
pub fn merge(model: &Model, out: &Path, show_progress: bool) -> Result<MergeReport> {
    let meta = gguf_meta(model)?;
    let first = &model.files[0].path;
    match meta.u64(KEY_SPLIT_COUNT) {
        None => {
            return Err(Error::Refused(format!(
                "{}: not a split GGUF (no {KEY_SPLIT_COUNT} key); there is nothing to merge",
                first.display()
            )))
        }
        Some(c) if c != model.files.len() as u64 => {
            return Err(Error::Refused(format!(
            "{}: {KEY_SPLIT_COUNT} is {c}; pass the first shard, named PREFIX-00001-of-{c:05}.gguf",
            first.display()
        )))
        }
        Some(_) => {}
    }
    if out.exists() {
        return Err(Error::Refused(format!(
            "{}: output file exists; choose another --out or remove it",
            out.display()
        )));
    }
    let mut kv: Vec<(String, Value)> = meta
        .entries()
        .iter()
        .filter(|(k, _)| k != KEY_SPLIT_COUNT)
        .cloned()
        .collect();
    // llama-gguf-split sets split.count to 0 so that its output is not
    // taken for a split again.
    kv.push((KEY_SPLIT_COUNT.into(), Value::U16(0)));
    let tensors: Vec<&TensorInfo> = model.tensors().iter().collect();
    let bytes = tensors.iter().map(|t| t.len).sum();
    let bar = progress::bytes_bar(show_progress, bytes, "merging");
    write_gguf(model, out, kv, &tensors, &bar)?;
    bar.finish_and_clear();
    Ok(MergeReport {
        out: out.to_path_buf(),
        shards: model.files.iter().map(|f| f.path.clone()).collect(),
        tensors: tensors.len(),
        bytes,
    })
}

/// The GGUF metadata of `model`, refusing what llama-gguf-split would
/// write wrongly.
fn gguf_meta(model: &Model) -> Result<&crate::store::gguf::Metadata> {
    let (Container::Gguf, Some(meta)) = (model.container, model.gguf.as_ref()) else {
        return Err(Error::Refused(format!(
            "{}: not a GGUF model; GGUF shards are cut from and merged into .gguf files",
            model.root.display()
        )));
    };
    if meta.alignment() != DEFAULT_ALIGNMENT {
        return Err(Error::Refused(format!(
            "{}: general.alignment is {}; llama.cpp's split files are always aligned to {DEFAULT_ALIGNMENT}, \
             so shards of this file would contradict their own header",
            model.root.display(),
            meta.alignment()
        )));
    }
    Ok(meta)
}

/// Streams one GGUF file: `kv`, then `tensors` copied from `model`.
fn write_gguf(
    model: &Model,
    dest: &Path,
    kv: Vec<(String, Value)>,
    tensors: &[&TensorInfo],
    bar: &indicatif::ProgressBar,
) -> Result<PathBuf> {
    let plan = tensors
        .iter()
        .map(|t| {
            let ty = t.dtype.to_ggml().ok_or_else(|| {
                Error::Refused(format!("tensor '{}': {} has no GGUF type", t.name, t.dtype))
            })?;
            Ok(GgufTensor {
                name: t.name.clone(),
                ty,
                shape: t.shape.clone(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut w = GgufWriter::create(dest, &kv, plan)?;
    for t in tensors {
        bar.set_message(t.name.clone());
        w.write_tensor_with(&t.name, |sink| {
            for c in model.bytes(t).chunks(16 << 20) {
                sink(c)?;
                bar.inc(c.len() as u64);
            }
            Ok(())
        })?;
        model.release(t);
    }
    Ok(w.finish()?)
}

/// A tensor's bytes as llama-gguf-split counts them: padded to 32.
fn padded(t: &TensorInfo) -> u64 {
    t.len.div_ceil(DEFAULT_ALIGNMENT as u64) * DEFAULT_ALIGNMENT as u64
}

/// `--split-max-size`: llama-gguf-split's rule, after refusing a tensor
/// that no shard can hold (llama.cpp only notices that for the first one).
fn by_size(model: &Model, limit: u64) -> Result<Vec<Vec<usize>>> {
    let tensors = model.tensors();
    if let Some(t) = tensors.iter().find(|t| padded(t) > limit) {
        let need = tensors.iter().map(padded).max().unwrap_or(0);
        return Err(Error::Refused(format!(
            "{}: tensor '{}' is {} bytes ({}), more than --max-size {limit} bytes ({}); \
             no shard can hold it. Raise --max-size to at least {need} bytes (the largest tensor)",
            model.root.display(),
            t.name,
            padded(t),
            human_bytes(padded(t)),
            human_bytes(limit),
        )));
    }
    let mut groups: Vec<Vec<usize>> = vec![Vec::new()];
    let mut size = 0u64;
    for (i, t) in tensors.iter().enumerate() {
        let n = padded(t);
        if size + n > limit {
            groups.push(Vec::new());
            size = n;
        } else {
            size += n;
        }
        groups.last_mut().expect("one group").push(i);
    }
    Ok(groups)
}

/// `--split-max-tensors`: a new shard every `n` tensors.
fn by_count(len: usize, n: u64) -> Result<Vec<Vec<usize>>> {
    if n == 0 {
        return Err(Error::Refused("--max-tensors must be at least 1".into()));
    }
    let idx: Vec<usize> = (0..len).collect();
    let chunks: Vec<Vec<usize>> = idx
        .chunks(usize::try_from(n).unwrap_or(usize::MAX))
        .map(<[usize]>::to_vec)
        .collect();
    Ok(if chunks.is_empty() {
        vec![Vec::new()]
    } else {
        chunks
    })
}

/// The shards' name prefix: the input's file name without `.gguf`, and
/// without `-0000i-of-0000N` when the input is itself a shard.
fn prefix_of(root: &Path) -> String {
    let name = root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let stem = name.strip_suffix(".gguf").unwrap_or(&name);
    match crate::store::gguf::split_paths(root) {
        Some(_) => stem
            .rsplit_once("-of-")
            .and_then(|(p, _)| p.rsplit_once('-'))
            .map_or(stem, |(p, _)| p)
            .to_string(),
        None => stem.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_drops_the_shard_suffix() {
        assert_eq!(prefix_of(Path::new("/m/SmolLM2.Q4_1.gguf")), "SmolLM2.Q4_1");
        assert_eq!(prefix_of(Path::new("m/x-00001-of-00003.gguf")), "x");
    }

    #[test]
    fn tensor_count_cuts_every_n() {
        assert_eq!(
            by_count(5, 2).unwrap(),
            vec![vec![0, 1], vec![2, 3], vec![4]]
        );
        assert!(by_count(5, 0).is_err());
    }
}
