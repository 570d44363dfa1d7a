//! A Hugging Face safetensors model cut per pipeline stage:
//! `DIR/stage-K-of-N/` holds the decoder layers of stage K (the token
//! embedding with the first, the final norm and `lm_head` with the last),
//! its own `model.safetensors.index.json` whose `weight_map` lists exactly
//! those tensors, and config.json and the tokenizer files copied, for
//! engines that load partial checkpoints (each pipeline rank reads the
//! weights of its own layers).
//!
//! A tied head (no `lm_head.weight`; transformers ties it to
//! `model.embed_tokens.weight`) needs the embedding on the last stage too,
//! so that stage holds a copy of it: it computes the logits.

use std::collections::BTreeMap;
use std::path::Path;

use super::{assign, dry_run, layer_count, planned, stage_ranges, SplitOptions, SplitReport};
use crate::model::arch::{role, Role};
use crate::ops::Result;
use crate::progress;
use crate::store::atomic::AtomicDir;
use crate::store::safetensors::{SafetensorsTensor, ShardedWriter, DEFAULT_MAX_SHARD_SIZE};
use crate::store::{hfdir, Model, StoreError, TensorInfo};

/// Writes one directory per stage of `counts` layers into `opts.out`.
pub(super) fn split(model: &Model, counts: &[u64], opts: &SplitOptions) -> Result<SplitReport> {
    let tensors = model.tensors();
    let ranges = stage_ranges(counts, layer_count(tensors))?;
    let n = ranges.len();
    let piece = assign(tensors, &ranges);
    let mut stages: Vec<Vec<&TensorInfo>> = (0..n)
        .map(|k| {
            tensors
                .iter()
                .zip(&piece)
                .filter(|(_, &p)| p == k)
                .map(|(t, _)| t)
                .collect()
        })
        .collect();
    let mut warnings = Vec::new();
    let has_head = tensors.iter().any(|t| role(&t.name) == Role::LmHead);
    let embed = tensors.iter().find(|t| role(&t.name) == Role::Embed);
    if let (false, Some(e), true) = (has_head, embed, n > 1) {
        stages[n - 1].push(e);
        warnings.push(format!(
            "tied head: the last stage also holds '{}', which transformers ties to lm_head \
             (tie_word_embeddings)",
            e.name
        ));
    }
    let names: Vec<String> = (1..=n).map(|k| format!("stage-{k}-of-{n}")).collect();
    let planned = planned(model, opts, &stages, &names);
    if opts.dry_run {
        return dry_run(opts, planned, warnings);
    }
    let src_dir = hfdir::source_dir(model);
    let dir = AtomicDir::create(&opts.out)?;
    let total = stages.iter().flatten().map(|t| t.len).sum();
    let bar = progress::bytes_bar(opts.progress, total, "splitting");
    let mut files = Vec::new();
    for (stage, name) in stages.iter().zip(&names) {
        let sdir = dir.path().join(name);
        std::fs::create_dir(&sdir).map_err(|e| StoreError::Io {
            path: opts.out.join(name),
            source: e,
        })?;
        let plan = stage.iter().map(|&t| SafetensorsTensor::from(t)).collect();
        let mut w = ShardedWriter::create(&sdir, plan, DEFAULT_MAX_SHARD_SIZE, BTreeMap::new())?
            .always_index();
        for t in stage {
            bar.set_message(t.name.clone());
            w.copy_tensor(model, t)?;
            bar.inc(t.len);
        }
        w.finish()?;
        copy_config(&src_dir, &sdir)?;
        hfdir::copy_side_files(model, &sdir)?;
        let mut listed: Vec<String> = std::fs::read_dir(&sdir)
            .map_err(|e| StoreError::Io {
                path: sdir.clone(),
                source: e,
            })?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        listed.sort();
        files.extend(listed.into_iter().map(|f| format!("{name}/{f}")));
    }
    bar.finish_and_clear();
    let manifest = planned.write(dir.path(), files, opts.progress)?;
    dir.commit()?;
    Ok(SplitReport {
        out: opts.out.clone(),
        dry_run: false,
        manifest,
        warnings,
    })
}

/// Copies config.json as it is: every stage describes the whole model
/// (engines read the layer count from it and pick their range).
fn copy_config(src_dir: &Path, dir: &Path) -> Result<(), StoreError> {
    let src = src_dir.join("config.json");
    if src.is_file() {
        std::fs::copy(&src, dir.join("config.json")).map_err(|e| StoreError::Io {
            path: src,
            source: e,
        })?;
    }
    Ok(())
}
