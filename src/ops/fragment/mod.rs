//! `llmtool fragment`: a model cut into pieces that separate hosts load, and
//! the manifest that proves each piece arrived intact.
//!
//! * [`shards`]: GGUF shards exactly as llama.cpp's
//!   `tools/gguf-split/gguf-split.cpp` writes them (names
//!   `PREFIX-00001-of-0000N.gguf`, metadata in the first shard only, the
//!   `split.no` / `split.tensors.count` / `split.count` keys in that order,
//!   its size and tensor-count rules), cut by layer ranges too, and their
//!   merge (byte-identical to `llama-gguf-split --merge`).
//! * [`stages`]: a Hugging Face safetensors model cut per pipeline stage,
//!   one directory per stage holding only its layers, with an index.
//! * [`manifest`]: `fragments.json` (every file's size and sha256, how the
//!   model was split, the placement plan it was made for) and `verify`.
//! * [`plan`]: which layers go to which device of which host, over
//!   `vram-plan`'s memory model, and the commands that start the pipeline.
//!
//! This module owns the cut (which tensor goes where); the files are
//! written through the store's streaming writers ([`GgufWriter`],
//! [`ShardedWriter`]) inside an [`AtomicDir`], so an error or Ctrl-C
//! leaves nothing that looks finished.
//!
//! [`GgufWriter`]: crate::store::gguf::GgufWriter
//! [`ShardedWriter`]: crate::store::safetensors::ShardedWriter
//! [`AtomicDir`]: crate::store::atomic::AtomicDir

pub mod manifest;
pub mod plan;
pub mod shards;
pub mod stages;

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::Serialize;

use crate::model::arch::{layer_of, role, Role};
use crate::ops::{Error, Result};
use crate::store::{Container, Model, TensorInfo};

pub use manifest::{verify, FileCheck, FileStatus, Manifest, VerifyReport, MANIFEST_FILE};
pub use shards::{merge, MergeReport};

/// How to cut the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SplitMode {
    /// GGUF shards of at most this many tensor bytes (each tensor counted
    /// padded to 32 bytes, metadata not counted: `--split-max-size`).
    MaxSize(u64),
    /// GGUF shards of at most this many tensors (`--split-max-tensors`).
    MaxTensors(u64),
    /// Consecutive decoder-layer counts per piece (see [`stage_ranges`]).
    ByLayer(Vec<u64>),
}

/// What `fragment split` writes.
#[derive(Debug, Clone)]
pub struct SplitOptions {
    /// The output directory (absent or empty).
    pub out: PathBuf,
    pub mode: SplitMode,
    pub progress: bool,
    /// Check everything and report the pieces without writing.
    pub dry_run: bool,
    /// The placement plan the pieces are for, recorded in the manifest.
    pub plan: Option<serde_json::Value>,
}

/// Decoder layers `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct LayerRange {
    pub first: u64,
    pub last: u64,
}

impl LayerRange {
    fn contains(&self, layer: u64) -> bool {
        (self.first..=self.last).contains(&layer)
    }
}

/// What `fragment split` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct SplitReport {
    pub out: PathBuf,
    /// Nothing was written; the manifest lists no files.
    pub dry_run: bool,
    pub manifest: Manifest,
    pub warnings: Vec<String>,
}

/// Splits `model` into `opts.out`: GGUF shards for a GGUF model, one
/// directory per stage for a safetensors model (which only `ByLayer` cuts).
pub fn split(model: &Model, opts: &SplitOptions) -> Result<SplitReport> {
    match model.container {
        Container::Gguf => shards::split(model, opts),
        Container::Safetensors => match &opts.mode {
            SplitMode::ByLayer(counts) => stages::split(model, counts, opts),
            _ => Err(Error::Refused(format!(
                "{}: a safetensors model; --max-size and --max-tensors cut GGUF files as \
                 llama-gguf-split does. Split a Hugging Face model per pipeline stage with \
                 --by-layer COUNTS",
                model.root.display()
            ))),
        },
    }
}

/// The number of decoder layers the tensor names show (highest index + 1).
pub fn layer_count(tensors: &[TensorInfo]) -> u64 {
    tensors
        .iter()
        .filter_map(|t| layer_of(&t.name))
        .max()
        .map_or(0, |l| l + 1)
}

/// The layer range of each piece from consecutive layer counts (`10,10,10`
/// over 30 layers → 0..=9, 10..=19, 20..=29). Refuses an empty list, a
/// zero count, more pieces than layers and counts that do not add up to
/// `n_layers`.
pub fn stage_ranges(counts: &[u64], n_layers: u64) -> Result<Vec<LayerRange>> {
    if counts.is_empty() {
        return Err(Error::Refused(
            "no layer counts given; pass one count per piece, e.g. --by-layer 10,10,10".into(),
        ));
    }
    if n_layers == 0 {
        return Err(Error::Refused(
            "the model has no decoder layers (no blk.N.* or model.layers.N.* tensors) to cut by"
                .into(),
        ));
    }
    if counts.len() as u64 > n_layers {
        return Err(Error::Refused(format!(
            "{} pieces but the model has only {n_layers} layers; every piece needs at least one",
            counts.len()
        )));
    }
    if let Some(i) = counts.iter().position(|&c| c == 0) {
        return Err(Error::Refused(format!(
            "layer count #{} is 0; every piece needs at least one layer",
            i + 1
        )));
    }
    let sum = counts.iter().try_fold(0u64, |a, &c| a.checked_add(c));
    if sum != Some(n_layers) {
        let shown = counts
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join("+");
        return Err(Error::Refused(format!(
            "layer counts {shown} do not add up to the model's {n_layers} layers"
        )));
    }
    let mut first = 0;
    Ok(counts
        .iter()
        .map(|&c| {
            let r = LayerRange {
                first,
                last: first + c - 1,
            };
            first += c;
            r
        })
        .collect())
}

/// The piece each tensor goes to: a layer's tensors to the piece holding
/// that layer, the token embedding to the first, the final norm and the
/// output head to the last; any other tensor to the first piece when it
/// comes before every layer tensor in `tensors`' order, else to the last
/// (GGUF's order: `rope_freqs` before the layers, extras after them).
fn assign(tensors: &[TensorInfo], ranges: &[LayerRange]) -> Vec<usize> {
    let last = ranges.len() - 1;
    let mut seen_layer = false;
    tensors
        .iter()
        .map(|t| match layer_of(&t.name) {
            Some(l) => {
                seen_layer = true;
                ranges.iter().position(|r| r.contains(l)).unwrap_or(last)
            }
            None => match role(&t.name) {
                Role::Embed => 0,
                Role::LmHead | Role::FinalNorm => last,
                _ if seen_layer => last,
                _ => 0,
            },
        })
        .collect()
}

/// The layer range of each piece, where it is one: the piece holds every
/// tensor it has of layers `first..=last`, all of them, and no other piece
/// holds any of those layers. Pieces cut by size or tensor count from a
/// file whose tensors are not in layer order (`blk.1`, `blk.10`, …) get
/// none.
/// The manifest a split into `pieces` named `names` will write (hashes
/// filled in as the files are written).
fn planned(
    model: &Model,
    opts: &SplitOptions,
    pieces: &[Vec<&TensorInfo>],
    names: &[String],
) -> manifest::Manifest {
    let parts = pieces
        .iter()
        .zip(names)
        .zip(layer_ranges(pieces))
        .map(|((piece, name), layers)| manifest::Part {
            path: name.clone(),
            layers,
            tensors: piece.len(),
            bytes: piece.iter().map(|t| t.len).sum(),
        })
        .collect();
    manifest::Manifest::planned(model, opts, parts)
}

/// What `--dry-run` reports: the planned pieces, once the destination is
/// known to be writable.
fn dry_run(
    opts: &SplitOptions,
    manifest: manifest::Manifest,
    warnings: Vec<String>,
) -> Result<SplitReport> {
    crate::store::atomic::AtomicDir::check_dest(&opts.out)?;
    Ok(SplitReport {
        out: opts.out.clone(),
        dry_run: true,
        manifest,
        warnings,
    })
}

fn layer_ranges(pieces: &[Vec<&TensorInfo>]) -> Vec<Option<LayerRange>> {
    let sets: Vec<BTreeSet<u64>> = pieces
        .iter()
        .map(|p| p.iter().filter_map(|t| layer_of(&t.name)).collect())
        .collect();
    sets.iter()
        .enumerate()
        .map(|(k, set)| {
            let (&first, &last) = (set.first()?, set.last()?);
            let whole = set.len() as u64 == last - first + 1;
            let alone = sets
                .iter()
                .enumerate()
                .all(|(j, other)| j == k || other.range(first..=last).next().is_none());
            (whole && alone).then_some(LayerRange { first, last })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_the_counts() {
        let r = stage_ranges(&[10, 12, 8], 30).unwrap();
        assert_eq!(
            r,
            vec![
                LayerRange { first: 0, last: 9 },
                LayerRange {
                    first: 10,
                    last: 21
                },
                LayerRange {
                    first: 22,
                    last: 29
                }
            ]
        );
    }

    #[test]
    fn bad_counts_are_refused_with_the_reason() {
        let msg = |c: &[u64], n| stage_ranges(c, n).unwrap_err().to_string();
        assert!(msg(&[10, 10], 30).contains("10+10 do not add up to the model's 30"));
        assert!(msg(&[10, 0, 20], 30).contains("#2 is 0"));
        assert!(msg(&[1, 1, 1], 2).contains("3 pieces but the model has only 2"));
        assert!(msg(&[], 2).contains("no layer counts"));
        assert!(msg(&[u64::MAX, 2], 30).contains("do not add up"));
    }

    #[test]
    fn layer_names_in_both_namings() {
        assert_eq!(layer_of("blk.12.attn_q.weight"), Some(12));
        assert_eq!(layer_of("model.layers.3.mlp.up_proj.weight"), Some(3));
        assert_eq!(layer_of("token_embd.weight"), None);
        assert_eq!(layer_of("blk.x.attn_q.weight"), None);
    }
}
