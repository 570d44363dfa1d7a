//! `lora merge`: W' = W + Σ wᵢ·sᵢ·BᵢAᵢ, streamed tensor by tensor and row
//! chunk by row chunk, so memory holds one chunk of one tensor.
//!
//! Numerics follow PEFT's default (unsafe) merge (`tuners/lora/layer.py`
//! `Linear.merge`, `get_delta_weight`; `variants.py` DoRA): ΔW is computed
//! in f32 as `(B·A)·s`, added to the base in f32, and the sum is rounded
//! once to the output dtype. Several adapters are summed as PEFT's
//! `add_weighted_adapter(combination_type="cat")` followed by a merge would.
//! DoRA: `W' = m / ‖W + ΔW‖_row · (W + ΔW)`, norm over the input dimension.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use rayon::prelude::*;

use crate::model::adapter::{Adapter, ModuleLora};
use crate::ops::Error;
use crate::store::atomic::{self, AtomicDir};
use crate::store::card::{self, ModelCard};
use crate::store::hfdir;
use crate::store::safetensors::{SafetensorsTensor, ShardedWriter};
use crate::store::{Container, DType, Model, StoreError, TensorInfo};

/// One adapter and its weight in the sum.
pub struct WeightedAdapter {
    pub adapter: Adapter,
    pub weight: f64,
}

/// Options of a merge.
pub struct MergeOptions {
    /// Output directory (must not exist, or be empty).
    pub out: PathBuf,
    /// Output dtype; `None` keeps each base tensor's dtype.
    pub dtype: Option<DType>,
    pub max_shard_size: u64,
    /// The command line, recorded in the model card.
    pub command: String,
    /// Label of the base for the model card (what the user typed).
    pub base_label: String,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

/// What a merge did (or, with a dry run, would do).
#[derive(Debug, serde::Serialize)]
pub struct MergeReport {
    pub out: PathBuf,
    pub tensors: usize,
    pub merged_modules: usize,
    pub replaced_tensors: Vec<String>,
    pub untied_embeddings: bool,
    pub bytes: u64,
    pub files: Vec<String>,
    pub warnings: Vec<String>,
}

/// The change applied to one base tensor.
#[derive(Default)]
struct Edit<'a> {
    /// (adapter, module LoRA, weight) triples that add a low-rank delta.
    deltas: Vec<(&'a Adapter, &'a ModuleLora, f64)>,
    /// DoRA magnitude (single adapter only).
    dora: Option<(&'a Adapter, &'a ModuleLora)>,
    /// lora_B biases to add to this (bias) tensor.
    bias_adds: Vec<(&'a Adapter, &'a ModuleLora, f64)>,
    /// Full replacement from an adapter.
    replace: Option<(&'a Adapter, &'a TensorInfo)>,
}

/// Dense f32 matrices of one delta, laid out so that each output row is
/// `Σ_k c[k]·M[k,:]` with `c` a contiguous row of `coef`.
struct Delta {
    /// `[rows, r]`: B for linear layers, Aᵀ for embeddings.
    coef: Vec<f32>,
    /// `[r, cols]`: A for linear layers, Bᵀ for embeddings.
    basis: Vec<f32>,
    r: usize,
    scale: f32,
    weight: f32,
}

fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; m.len()];
    for i in 0..rows {
        for j in 0..cols {
            t[j * rows + i] = m[i * cols + j];
        }
    }
    t
}

/// Checks the adapters against the base and builds the per-tensor edits.
fn edits<'a>(
    base: &Model,
    adapters: &'a [WeightedAdapter],
    warnings: &mut Vec<String>,
) -> Result<(HashMap<String, Edit<'a>>, bool), Error> {
    let mut edits: HashMap<String, Edit<'a>> = HashMap::new();
    let tied = base.tensor("lm_head.weight").is_none()
        && base.tensor("model.embed_tokens.weight").is_some();
    let mut untie = false;
    let mut missing = Vec::new();
    let dora_any = adapters
        .iter()
        .any(|a| a.adapter.modules.values().any(|m| m.magnitude.is_some()));
    if dora_any && (adapters.len() > 1 || adapters[0].weight != 1.0) {
        return Err(Error::Refused(
            "DoRA adapters cannot be merged in a weighted sum: PEFT cannot express it exactly (its norm depends on the sum); merge them one at a time".into(),
        ));
    }
    for wa in adapters {
        let a = &wa.adapter;
        let path = a.weights_path.display();
        if a.config.fan_in_fan_out {
            // PEFT resets the flag for torch Linear layers (every target of
            // llama/mistral/qwen2) before building them; only GPT-2's Conv1D
            // keeps it. The adapter's tensors are therefore plain Linear LoRA.
            warnings.push(format!("{path}: fan_in_fan_out is true but every target is a Linear layer; PEFT ignores it for Linear layers, and so does this merge"));
        }
        for (module, m) in &a.modules {
            let wname = format!("{module}.weight");
            let Some(w) = base.tensor(&wname) else {
                missing.push(format!("{wname} (from {path})"));
                continue;
            };
            let (lora_a, lora_b) = (
                m.a.as_ref().expect("validated"),
                m.b.as_ref().expect("validated"),
            );
            let (rows, cols) = match w.shape[..] {
                [r, c] => (r, c),
                _ => {
                    return Err(Error::Refused(format!(
                    "{path}: module '{module}': base tensor {wname} has shape {:?}, not a matrix",
                    w.shape
                )))
                }
            };
            // Linear: A [r, in=cols], B [out=rows, r]. Embedding: A [r, rows],
            // B [cols, r], and ΔW = (B·A)ᵀ.
            let (want_a, want_b) = if m.embedding {
                (rows, cols)
            } else {
                (cols, rows)
            };
            if lora_a.shape[1] != want_a || lora_b.shape[0] != want_b {
                return Err(Error::Refused(format!(
                    "{path}: module '{module}': lora_A {:?} / lora_B {:?} do not fit base {wname} {:?} (expected lora_A [r, {want_a}], lora_B [{want_b}, r]); was the adapter trained on another base size?",
                    lora_a.shape, lora_b.shape, w.shape
                )));
            }
            if let Some(mag) = &m.magnitude {
                // DoRA normalises each output row of a Linear, and each
                // embedding dimension (a column of the table) of an Embedding.
                let want = if m.embedding { cols } else { rows };
                if mag.shape != [want] {
                    return Err(Error::Refused(format!("{path}: module '{module}': lora_magnitude_vector {:?} does not match the {want} {} of {wname}", mag.shape, if m.embedding { "columns" } else { "output rows" })));
                }
                edits.entry(wname).or_default().dora = Some((a, m));
            } else {
                edits
                    .entry(wname)
                    .or_default()
                    .deltas
                    .push((a, m, wa.weight));
            }
            if let Some(bb) = &m.b_bias {
                let bname = format!("{module}.bias");
                match base.tensor(&bname) {
                    Some(bt) if bt.shape == bb.shape => {
                        edits.entry(bname).or_default().bias_adds.push((a, m, wa.weight));
                    }
                    Some(bt) => return Err(Error::Refused(format!("{path}: module '{module}': lora_B.bias {:?} does not match {bname} {:?}", bb.shape, bt.shape))),
                    None => return Err(Error::Refused(format!("{path}: module '{module}' has lora_bias but the base has no {bname} to add it to"))),
                }
            }
            if tied && module == "model.embed_tokens" {
                warnings.push("the adapter changes the tied token embeddings; the output head changes with them, as in PEFT's merged model".into());
            }
        }
        for (name, t) in &a.replacements {
            match base.tensor(name) {
                Some(bt) if bt.shape == t.shape => {}
                None if tied && name == "lm_head.weight" => untie = true,
                Some(bt) => {
                    return Err(Error::Refused(format!(
                        "{path}: replacement tensor {name} {:?} does not match the base's {:?}",
                        t.shape, bt.shape
                    )))
                }
                None => {
                    missing.push(format!("{name} (modules_to_save/bias from {path})"));
                    continue;
                }
            }
            let e = edits.entry(name.clone()).or_default();
            if e.replace.is_some() {
                return Err(Error::Refused(format!(
                    "two adapters replace {name} (modules_to_save); merge them separately"
                )));
            }
            e.replace = Some((a, t));
        }
        if wa.weight != 1.0 && !a.replacements.is_empty() {
            warnings.push(format!("{path}: modules_to_save tensors are copied as they are; the weight {} applies only to LoRA deltas", wa.weight));
        }
    }
    if !missing.is_empty() {
        return Err(Error::Refused(format!(
            "the adapter targets tensors the base does not have (an adapter for another architecture?): {}",
            missing.join(", ")
        )));
    }
    for (name, e) in &edits {
        if e.replace.is_some() && (!e.deltas.is_empty() || e.dora.is_some()) {
            return Err(Error::Refused(format!(
                "{name} is both replaced (modules_to_save) and LoRA-adapted"
            )));
        }
    }
    Ok((edits, untie))
}

fn load_delta(a: &Adapter, m: &ModuleLora, weight: f64) -> Result<Delta, StoreError> {
    let (ta, tb) = (
        m.a.as_ref().expect("validated"),
        m.b.as_ref().expect("validated"),
    );
    let av = a.weights.read_f32(ta)?;
    let bv = a.weights.read_f32(tb)?;
    let r = m.rank as usize;
    let (a_rows, a_cols) = (ta.shape[0] as usize, ta.shape[1] as usize);
    let b_rows = tb.shape[0] as usize;
    let (coef, basis) = if m.embedding {
        // ΔW = (B·A)ᵀ: row i of W is Σ_k A[k,i]·B[:,k].
        (transpose(&av, a_rows, a_cols), transpose(&bv, b_rows, r))
    } else {
        (bv, av)
    };
    Ok(Delta {
        coef,
        basis,
        r,
        scale: m.scaling as f32,
        weight: weight as f32,
    })
}

/// Adds `weight · s · (c·M)` of each delta to a chunk of rows starting at `row0`.
fn apply_deltas(chunk: &mut [f32], cols: usize, row0: usize, deltas: &[Delta]) {
    chunk.par_chunks_mut(cols).enumerate().for_each_init(
        || vec![0f32; cols],
        |tmp, (i, row)| apply_deltas_row(row, row0 + i, deltas, tmp),
    );
}

/// Adds `weight · s · (c·M)` of each delta to row `r`; `tmp` is scratch of
/// the row's length.
fn apply_deltas_row(row: &mut [f32], r: usize, deltas: &[Delta], tmp: &mut [f32]) {
    let cols = row.len();
    for d in deltas {
        tmp.iter_mut().for_each(|x| *x = 0.0);
        let c = &d.coef[r * d.r..(r + 1) * d.r];
        for (k, &ck) in c.iter().enumerate() {
            let m = &d.basis[k * cols..(k + 1) * cols];
            for (t, &mk) in tmp.iter_mut().zip(m) {
                *t += ck * mk;
            }
        }
        if d.weight == 1.0 {
            for (w, t) in row.iter_mut().zip(tmp.iter()) {
                *w += *t * d.scale;
            }
        } else {
            for (w, t) in row.iter_mut().zip(tmp.iter()) {
                *w += d.weight * (*t * d.scale);
            }
        }
    }
}

/// Streams one output tensor through `sink`.
fn write_tensor(
    t: &TensorInfo,
    source: &TensorInfo,
    source_model: &Model,
    out_dtype: DType,
    edit: Option<&Edit>,
    sink: &mut dyn FnMut(&[u8]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let plain = edit.is_none_or(|e| e.replace.is_some());
    if plain && source.dtype == out_dtype {
        for chunk in source_model.bytes(source).chunks(16 << 20) {
            sink(chunk)?;
        }
        return Ok(());
    }
    let edit = edit.filter(|e| e.replace.is_none());
    let mut sources = edit.map(|e| e.deltas.clone()).unwrap_or_default();
    if let Some((a, m)) = edit.and_then(|e| e.dora) {
        sources.push((a, m, 1.0));
    }
    let deltas: Vec<Delta> = sources
        .iter()
        .map(|(a, m, w)| load_delta(a, m, *w))
        .collect::<Result<_, _>>()?;
    let dora = match edit.and_then(|e| e.dora) {
        Some((a, m)) => Some((
            a.weights.read_f32(m.magnitude.as_ref().expect("dora"))?,
            m.embedding,
        )),
        None => None,
    };
    let bias_adds: Vec<(Vec<f32>, f32, f32)> = match edit {
        Some(e) => e
            .bias_adds
            .iter()
            .map(|(a, m, w)| {
                Ok((
                    a.weights.read_f32(m.b_bias.as_ref().expect("bias"))?,
                    m.scaling as f32,
                    *w as f32,
                ))
            })
            .collect::<Result<_, StoreError>>()?,
        None => vec![],
    };
    let rows = source.rows() as usize;
    let cols = source.row_len().max(1) as usize;
    let rows_per_chunk = ((4 << 20) / cols).max(1);
    // W + Σ ΔW for rows r0..r1, in f32.
    let updated = |r0: usize, r1: usize| -> Result<Vec<f32>, StoreError> {
        let mut chunk = if rows == 0 {
            vec![]
        } else {
            source_model.read_rows_f32(source, r0 as u64..r1 as u64)?
        };
        apply_deltas(&mut chunk, cols, r0, &deltas);
        Ok(chunk)
    };
    // DoRA on an Embedding scales each column by magnitude / ‖column‖,
    // which needs a first pass over all rows (still one chunk at a time).
    let column_factors = match &dora {
        Some((mag, true)) => {
            let mut sq = vec![0f64; cols];
            let mut r0 = 0;
            while r0 < rows {
                let r1 = (r0 + rows_per_chunk).min(rows);
                for row in updated(r0, r1)?.chunks(cols) {
                    for (acc, &x) in sq.iter_mut().zip(row) {
                        *acc += (x as f64) * (x as f64);
                    }
                }
                r0 = r1;
            }
            Some(
                mag.iter()
                    .zip(&sq)
                    .map(|(&m, &q)| m / q.sqrt() as f32)
                    .collect::<Vec<f32>>(),
            )
        }
        _ => None,
    };
    // Rows r0..r1 of the output tensor, encoded; each row is decoded,
    // updated, checked and encoded in one parallel pass.
    let size = out_dtype.bytes_for(1).unwrap_or(0) as usize;
    let produce = |r0: usize, r1: usize| -> Result<Vec<u8>, StoreError> {
        if rows == 0 {
            return Ok(Vec::new());
        }
        let mut bytes = vec![0u8; (r1 - r0) * cols * size];
        source_model.map_rows_f32(source, r0 as u64..r1 as u64, &mut bytes, |r, x, o| {
            let r = r as usize;
            if !deltas.is_empty() {
                apply_deltas_row(x, r, &deltas, &mut vec![0f32; cols]);
            }
            match (&dora, &column_factors) {
                (_, Some(factors)) => x.iter_mut().zip(factors).for_each(|(x, f)| *x *= f),
                (Some((mag, false)), None) => {
                    let norm = x
                        .iter()
                        .map(|&v| (v as f64) * (v as f64))
                        .sum::<f64>()
                        .sqrt() as f32;
                    let factor = mag[r] / norm;
                    x.iter_mut().for_each(|v| *v *= factor);
                }
                _ => {}
            }
            for (b, s, w) in &bias_adds {
                for (v, bv) in x.iter_mut().zip(&b[r * cols..]) {
                    *v += if *w == 1.0 { bv * s } else { w * (bv * s) };
                }
            }
            StoreError::check_finite(&t.name, (r * cols) as u64, x)?;
            out_dtype.encode_f32s_into(x, o);
            Ok(())
        })?;
        Ok(bytes)
    };
    let n = rows.max(1).div_ceil(rows_per_chunk);
    crate::stream::pipelined(
        n,
        |i| {
            produce(
                i * rows_per_chunk,
                ((i + 1) * rows_per_chunk).min(rows.max(1)),
            )
        },
        sink,
    )
}

fn model_card(opts: &MergeOptions, adapters: &[WeightedAdapter], sums: &[String]) -> String {
    let records: Vec<Vec<(&str, String)>> = adapters
        .iter()
        .zip(sums)
        .map(|(wa, sum)| {
            vec![
                ("path", card::quote(&wa.adapter.dir.display().to_string())),
                ("sha256", sum.clone()),
                ("weight", wa.weight.to_string()),
            ]
        })
        .collect();
    let mut table =
        String::from("| adapter | weight | sha256 of adapter_model.safetensors |\n|---|---|---|\n");
    for (wa, sum) in adapters.iter().zip(sums) {
        table += &format!(
            "| `{}` | {} | `{sum}` |\n",
            wa.adapter.dir.display(),
            wa.weight
        );
    }
    // One base plus adapters is a fine-tune of the base for the Hub
    // (`merge` is for several base models).
    ModelCard::new()
        .text("base_model", &opts.base_label)
        .field("base_model_relation", "finetune")
        .field("library_name", "transformers")
        .field("pipeline_tag", "text-generation")
        .list("tags", &["llmtool", "lora", "merge"])
        .records("adapters", &records)
        .body(&format!(
            "# Merged model\n\nBase `{}` merged with {} LoRA adapter(s) by llmtool {}.\n\n{table}\n",
            opts.base_label,
            adapters.len(),
            env!("CARGO_PKG_VERSION")
        ))
        .made_with(&opts.command)
        .body("\nLoad with `AutoModelForCausalLM.from_pretrained(\"<this directory>\")`.\n")
        .render()
}

/// Merges `adapters` into `base` and writes an HF model directory at
/// `opts.out`, or only plans it when `dry_run`.
pub fn merge(
    base: &Model,
    adapters: &[WeightedAdapter],
    opts: &MergeOptions,
    dry_run: bool,
) -> Result<MergeReport, Error> {
    if base.container != Container::Safetensors {
        return Err(Error::Refused(format!(
            "{0}: the base must be a Hugging Face safetensors model (got a GGUF); convert it \
             first: `llmtool convert {0} --out DIR`, then merge into DIR",
            base.root.display()
        )));
    }
    crate::model::check::not_prequantized(base, "lora merge")?;
    let Some(config) = base.config.clone() else {
        return Err(Error::Refused(format!(
            "{}: the base has no config.json",
            base.root.display()
        )));
    };
    if adapters.is_empty() {
        return Err(Error::Refused("no --adapter given".into()));
    }
    if let Some(d) = opts.dtype {
        if !matches!(d, DType::F32 | DType::F16 | DType::BF16) {
            return Err(Error::Refused(format!(
                "--dtype {d} is not an output dtype (f32, f16, bf16)"
            )));
        }
    }
    let mut warnings = Vec::new();
    let archs: Vec<&str> = config["architectures"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    for wa in adapters {
        let class = wa
            .adapter
            .config
            .auto_mapping
            .as_ref()
            .and_then(|m| m["base_model_class"].as_str());
        if let Some(class) = class {
            if !archs.is_empty() && !archs.contains(&class) {
                return Err(Error::Refused(format!(
                    "{}: the adapter was trained on a {class}, but the base is {}; use the base it was trained on",
                    wa.adapter.dir.display(),
                    archs.join(", ")
                )));
            }
        }
        if let Some(b) = &wa.adapter.config.base_model_name_or_path {
            let tail = |s: &str| {
                s.trim_end_matches('/')
                    .rsplit('/')
                    .next()
                    .unwrap_or("")
                    .to_ascii_lowercase()
            };
            if !b.is_empty() && tail(b) != tail(&opts.base_label) {
                warnings.push(format!(
                    "{}: trained on base '{b}', merging into '{}'",
                    wa.adapter.dir.display(),
                    opts.base_label
                ));
            }
        }
    }
    let (edits, untie) = edits(base, adapters, &mut warnings)?;
    let out_dtype = |t: &TensorInfo| -> Result<DType, Error> {
        match (opts.dtype, t.dtype) {
            (Some(d), DType::F32 | DType::F16 | DType::BF16) => Ok(d),
            (_, d @ (DType::F32 | DType::F16 | DType::BF16)) => Ok(d),
            (_, d) => Err(Error::Refused(format!(
                "base tensor {} has dtype {d}; merging needs float weights",
                t.name
            ))),
        }
    };
    // Output layout: the base's tensors in file order, plus an untied head.
    let mut tensors: Vec<(TensorInfo, &TensorInfo, &Model)> = Vec::new();
    for t in base.tensors() {
        let e = edits.get(&t.name);
        match e.and_then(|e| e.replace) {
            Some((a, src)) => tensors.push((t.clone(), src, &a.weights)),
            None => tensors.push((t.clone(), t, base)),
        }
    }
    if untie {
        let (a, src) = edits["lm_head.weight"]
            .replace
            .expect("untie comes from a replacement");
        let mut t = src.clone();
        t.name = "lm_head.weight".into();
        tensors.push((t, src, &a.weights));
    }
    let plan_list: Vec<SafetensorsTensor> = tensors
        .iter()
        .map(|(t, _, _)| {
            Ok(SafetensorsTensor {
                name: t.name.clone(),
                dtype: out_dtype(t)?,
                shape: t.shape.clone(),
            })
        })
        .collect::<Result<_, Error>>()?;
    let total: u64 = plan_list
        .iter()
        .map(|p| p.dtype.bytes_for(p.shape.iter().product()).unwrap_or(0))
        .sum();
    let merged_modules = edits
        .values()
        .filter(|e| !e.deltas.is_empty() || e.dora.is_some())
        .count();
    let replaced: Vec<String> = {
        let mut v: Vec<String> = edits
            .iter()
            .filter(|(_, e)| e.replace.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        v.sort();
        v
    };

    // Write into a hidden sibling directory; rename it into place at the end.
    let out = &opts.out;
    AtomicDir::check_dest(out)?;
    let files =
        ShardedWriter::create(out, plan_list.clone(), opts.max_shard_size, BTreeMap::new())?
            .file_names();
    let report = |files: Vec<String>| MergeReport {
        out: out.clone(),
        tensors: plan_list.len(),
        merged_modules,
        replaced_tensors: replaced.clone(),
        untied_embeddings: untie,
        bytes: total,
        files,
        warnings: warnings.clone(),
    };
    if dry_run {
        return Ok(report(files));
    }
    let tmp = AtomicDir::create(out)?;
    let mut w = ShardedWriter::create(
        tmp.path(),
        plan_list.clone(),
        opts.max_shard_size,
        BTreeMap::new(),
    )?;
    let bar = crate::progress::bytes_bar(opts.progress, total, "merging");
    for ((t, src, src_model), p) in tensors.iter().zip(&plan_list) {
        bar.set_message(t.name.clone());
        w.write_tensor_with(&t.name, |sink| {
            let mut counted = |b: &[u8]| {
                bar.inc(b.len() as u64);
                sink(b)
            };
            write_tensor(t, src, src_model, p.dtype, edits.get(&t.name), &mut counted)
        })?;
        src_model.release(src);
    }
    w.finish()?;
    bar.finish_and_clear();

    // config.json: dtype and tying as the merged weights are.
    let mut config = config;
    if let Some(d) = opts.dtype {
        let torch = match d {
            DType::F32 => "float32",
            DType::F16 => "float16",
            _ => "bfloat16",
        };
        for key in ["torch_dtype", "dtype"] {
            if config.get(key).is_some() || key == "torch_dtype" {
                config[key] = torch.into();
            }
        }
    }
    if untie {
        config["tie_word_embeddings"] = false.into();
        if let Some(tc) = config.get_mut("text_config") {
            tc["tie_word_embeddings"] = false.into();
        }
    }
    let dir = tmp.path();
    hfdir::write_config(dir, &config)?;
    hfdir::copy_side_files(base, dir)?;
    let sums: Vec<String> = adapters
        .iter()
        .map(|a| crate::store::sha256_file(&a.adapter.weights_path, &|_| {}))
        .collect::<Result<_, _>>()?;
    atomic::write_file(
        &dir.join("README.md"),
        model_card(opts, adapters, &sums).as_bytes(),
    )?;
    let names = tmp.commit()?;
    Ok(report(names))
}
