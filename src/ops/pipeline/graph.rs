//! The steps a recipe expands to, their dependencies, outputs and input
//! keys, and the stamps that say a step is done.
//!
//! (convert the base, when it is a GGUF) → merge per adapter → quantize per
//! adapter × format → eval, vram → card → push. A step's key is the sha256
//! of what it was made from: its kind and options, the identity of the
//! files it reads from outside the run (sha256 of files up to 64 MiB; size
//! and modification time of larger ones, where hashing a multi-GB base on
//! every run would cost more than the check saves) and the keys of the
//! steps it depends on, so a change anywhere upstream changes every key
//! below it. A finished step writes its output atomically, then its stamp
//! (`OUT/.llmtool/steps/<id>.json`: key, seconds, result); a step is up to
//! date when its stamp holds its key and its output exists. The stamp is
//! written last, so a crash leaves at worst an output without a stamp,
//! which the next run remakes.
//!
//! Upstream anchor: make's and CI caches' content keys (GitHub Actions'
//! `hashFiles`), and mergekit's one-directory-per-merge outputs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::recipe::{AdapterSpec, FormatSpec, Recipe};
use crate::ops::quantize::Target;
use crate::ops::{Error, Result};
use crate::store::{hex, Model};

/// Files larger than this are identified by size and mtime, not hashed.
pub const HASH_LIMIT: u64 = 64 << 20;

/// What a step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Action {
    /// The GGUF base to a Hugging Face directory (merge needs one).
    Convert,
    Merge {
        adapter: usize,
    },
    Quantize {
        adapter: usize,
        format: usize,
    },
    Eval {
        adapter: usize,
        format: usize,
    },
    Vram {
        adapter: usize,
        format: usize,
    },
    Card {
        adapter: usize,
        format: usize,
    },
    Push {
        adapter: usize,
        format: usize,
    },
}

impl Action {
    pub fn kind(self) -> &'static str {
        match self {
            Action::Convert => "convert",
            Action::Merge { .. } => "merge",
            Action::Quantize { .. } => "quantize",
            Action::Eval { .. } => "eval",
            Action::Vram { .. } => "vram",
            Action::Card { .. } => "card",
            Action::Push { .. } => "push",
        }
    }

    /// (adapter, format) indices the step belongs to.
    pub fn row(self) -> (Option<usize>, Option<usize>) {
        match self {
            Action::Convert => (None, None),
            Action::Merge { adapter } => (Some(adapter), None),
            Action::Quantize { adapter, format }
            | Action::Eval { adapter, format }
            | Action::Vram { adapter, format }
            | Action::Card { adapter, format }
            | Action::Push { adapter, format } => (Some(adapter), Some(format)),
        }
    }
}

/// One step of the graph.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// `merge/kant`, `quantize/kant/q4_k_m`…
    pub id: String,
    pub action: Action,
    /// Indices of the steps this one reads.
    pub deps: Vec<usize>,
    /// What it writes (a directory or file; none for `vram` and `push`,
    /// whose result lives in the stamp).
    pub output: Option<PathBuf>,
    /// sha256 of its inputs and options.
    pub key: String,
    /// Estimated peak memory, bytes.
    pub memory: u64,
    /// Its stamp holds `key` and its output exists.
    pub up_to_date: bool,
}

/// The expanded recipe.
#[derive(Debug)]
pub struct Graph {
    pub recipe: Recipe,
    pub steps: Vec<Step>,
}

/// What a finished step leaves beside the outputs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stamp {
    pub step: String,
    pub key: String,
    pub llmtool: String,
    pub seconds: f64,
    /// The step's numbers (sizes, eval, VRAM rows, Hub URL) for the report.
    pub result: serde_json::Value,
}

/// Which adapters, formats and steps a run covers.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only these adapters (`--only`); empty: all.
    pub adapters: Vec<String>,
    /// Only these formats (`--format`); empty: all.
    pub formats: Vec<String>,
    /// No push steps (`--no-push`).
    pub no_push: bool,
}

/// Paths inside the output directory.
pub struct Layout<'a>(pub &'a Path);

impl Layout<'_> {
    pub fn base_hf(&self) -> PathBuf {
        self.0.join("base-hf")
    }
    pub fn merged(&self, a: &AdapterSpec) -> PathBuf {
        self.0.join("merged").join(&a.name)
    }
    /// The artifact directory of one adapter × format (model, eval json, card).
    pub fn artifact(&self, a: &AdapterSpec, f: &FormatSpec) -> PathBuf {
        self.0.join(&a.name).join(f.format.name)
    }
    pub fn stamps(&self) -> PathBuf {
        self.0.join(".llmtool").join("steps")
    }
    pub fn stamp(&self, id: &str) -> PathBuf {
        self.stamps()
            .join(format!("{}.json", id.replace('/', "--")))
    }
}

/// Name of the eval results file in an artifact directory (where `push`'s
/// card looks: `eval*.json`).
pub fn eval_file(kld: bool) -> &'static str {
    if kld {
        "eval-kld.json"
    } else {
        "eval-ppl.json"
    }
}

/// The GGUF file name in an artifact directory.
pub fn gguf_name(recipe: &Recipe, a: &AdapterSpec, f: &FormatSpec) -> String {
    format!(
        "{}-{}-{}.gguf",
        a.name,
        recipe.base.name,
        f.format.name.to_ascii_uppercase()
    )
}

/// Identity of an input file: its sha256, or size and mtime above
/// [`HASH_LIMIT`].
fn identity(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::Refused(format!("cannot read {}: {e}", path.display())))?;
    if meta.len() <= HASH_LIMIT {
        return Ok(crate::store::sha256_file(path, &|_| {})?);
    }
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    Ok(format!("size {} mtime {mtime}", meta.len()))
}

/// Identities of every file of a model (its weights, config, tokenizer)
/// or adapter directory, or of one file.
fn identities(path: &Path) -> Result<Vec<(String, String)>> {
    let mut files = Vec::new();
    if path.is_dir() {
        let rd = std::fs::read_dir(path)
            .map_err(|e| Error::Refused(format!("cannot read {}: {e}", path.display())))?;
        for e in rd.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            // Cards do not change what a model computes.
            if p.is_file() && !name.starts_with('.') && name != "README.md" {
                files.push(p);
            }
        }
    } else {
        files.push(path.to_path_buf());
    }
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let id = identity(&p)?;
            Ok((
                p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                id,
            ))
        })
        .collect()
}

fn key(parts: &serde_json::Value) -> String {
    hex(&Sha256::digest(parts.to_string().as_bytes()))
}

/// Reads a stamp, if there is a readable one.
pub fn read_stamp(path: &Path) -> Option<Stamp> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Model sizes behind the memory estimates, from the base's tensor table.
struct Sizes {
    /// Parameters.
    params: u64,
    /// Elements of the largest tensor.
    largest: u64,
    vocab: u64,
}

const MIB: u64 = 1 << 20;
/// What every step holds besides its data: code, allocator, rayon stacks.
const FIXED: u64 = 64 * MIB;

impl Sizes {
    fn of(m: &Model) -> Sizes {
        let params = m.tensors().iter().map(|t| t.numel()).sum();
        let largest = m.tensors().iter().map(|t| t.numel()).max().unwrap_or(0);
        let vocab = m
            .tensors()
            .iter()
            .filter(|t| t.name.contains("embed_tokens") || t.name.contains("token_embd"))
            .map(|t| t.rows())
            .max()
            .unwrap_or(0);
        Sizes {
            params,
            largest,
            vocab,
        }
    }

    /// Estimated peak of one step (docs/PIPELINE.md, "Memory"): streaming
    /// writers hold about three f32 copies of the largest tensor (read,
    /// converted, encoded); GPTQ/AWQ add a layer's Hessians and the
    /// calibration activations (bounded here by eight copies); eval maps
    /// both models' weights (pages count as resident once touched) and keeps
    /// two rows of logits per position of a chunk.
    fn memory(&self, action: Action, recipe: &Recipe) -> u64 {
        let tensor = self.largest * 4;
        let bf16 = self.params * 2;
        match action {
            Action::Convert | Action::Merge { .. } => FIXED + 3 * tensor,
            Action::Quantize { format, .. } => match recipe.formats[format].format.target {
                Target::Gptq | Target::Awq => FIXED + 8 * tensor + bf16,
                _ => FIXED + 3 * tensor,
            },
            Action::Eval { .. } => {
                let ctx = recipe.eval.as_ref().map_or(0, |e| e.ctx as u64);
                FIXED + 2 * bf16 + 2 * ctx * self.vocab * 4
            }
            Action::Vram { .. } | Action::Card { .. } | Action::Push { .. } => FIXED,
        }
    }
}

/// Expands `recipe` into steps (restricted to `sel`) and works out which
/// are up to date.
pub fn expand(recipe: Recipe, sel: &Selection) -> Result<Graph> {
    for a in &sel.adapters {
        if !recipe.adapters.iter().any(|x| &x.name == a) {
            let names: Vec<&str> = recipe.adapters.iter().map(|x| x.name.as_str()).collect();
            return Err(Error::Refused(format!(
                "--only {a}: the recipe has no adapter `{a}`{}; adapters: {}",
                super::recipe::suggest(a, &names),
                names.join(", ")
            )));
        }
    }
    for f in &sel.formats {
        if !recipe.formats.iter().any(|x| x.format.name == f) {
            let names: Vec<&str> = recipe.formats.iter().map(|x| x.format.name).collect();
            return Err(Error::Refused(format!(
                "--format {f}: the recipe has no format `{f}`{}; formats: {}",
                super::recipe::suggest(f, &names),
                names.join(", ")
            )));
        }
    }
    let base = Model::open(&recipe.base.path.to_string_lossy())?;
    let sizes = Sizes::of(&base);
    drop(base);
    let layout = Layout(&recipe.out);
    let version = env!("CARGO_PKG_VERSION");
    let mut steps: Vec<Step> = Vec::new();
    let push = |steps: &mut Vec<Step>,
                id: String,
                action,
                deps: Vec<usize>,
                output,
                parts: serde_json::Value| {
        let mut all = serde_json::json!({"step": id, "llmtool": version, "inputs": parts});
        let dep_keys: Vec<&str> = deps
            .iter()
            .map(|&d: &usize| steps[d].key.as_str())
            .collect();
        all["deps"] = serde_json::json!(dep_keys);
        let key = key(&all);
        let memory = sizes.memory(action, &recipe);
        steps.push(Step {
            id,
            action,
            deps,
            output,
            key,
            memory,
            up_to_date: false,
        });
        steps.len() - 1
    };
    let base_id = identities(&recipe.base.path)?;
    let convert = recipe.base.is_gguf.then(|| {
        push(
            &mut steps,
            "convert/base".into(),
            Action::Convert,
            vec![],
            Some(layout.base_hf()),
            serde_json::json!({"base": base_id, "dtype": format!("{:?}", recipe.base.dtype)}),
        )
    });
    let tokenizer_id = match &recipe.base.tokenizer_from {
        Some(t) => Some(identities(t)?),
        None => None,
    };
    let text_id = match &recipe.eval {
        Some(e) => Some(identities(&e.text)?),
        None => None,
    };
    for (ai, a) in recipe.adapters.iter().enumerate() {
        if !sel.adapters.is_empty() && !sel.adapters.contains(&a.name) {
            continue;
        }
        let mut parts = Vec::new();
        for (p, w) in &a.parts {
            parts.push(serde_json::json!({"adapter": identities(p)?, "weight": w}));
        }
        let merge = push(
            &mut steps,
            format!("merge/{}", a.name),
            Action::Merge { adapter: ai },
            convert.into_iter().collect(),
            Some(layout.merged(a)),
            serde_json::json!({
                "base": if convert.is_some() { serde_json::Value::Null } else { serde_json::json!(base_id) },
                "adapters": parts,
                "dtype": format!("{:?}", recipe.base.dtype),
            }),
        );
        for (fi, f) in recipe.formats.iter().enumerate() {
            if !sel.formats.is_empty() && !sel.formats.iter().any(|x| x == f.format.name) {
                continue;
            }
            let tail = format!("{}/{}", a.name, f.format.name);
            let artifact = layout.artifact(a, f);
            let quantize = push(
                &mut steps,
                format!("quantize/{tail}"),
                Action::Quantize {
                    adapter: ai,
                    format: fi,
                },
                vec![merge],
                Some(artifact.clone()),
                serde_json::json!({
                    "format": f.format.name,
                    "options": f.options,
                    "tokenizer_from": tokenizer_id,
                    "file": gguf_name(&recipe, a, f),
                }),
            );
            let mut card_deps = vec![quantize];
            if let Some(e) = &recipe.eval {
                card_deps.push(push(
                    &mut steps,
                    format!("eval/{tail}"),
                    Action::Eval {
                        adapter: ai,
                        format: fi,
                    },
                    vec![merge, quantize],
                    Some(artifact.join(eval_file(e.kld))),
                    serde_json::json!({
                        "text": text_id,
                        "ctx": e.ctx,
                        "max_chunks": e.max_chunks,
                        "ppl": e.ppl,
                        "kld": e.kld,
                    }),
                ));
            }
            card_deps.push(push(
                &mut steps,
                format!("vram/{tail}"),
                Action::Vram {
                    adapter: ai,
                    format: fi,
                },
                vec![quantize],
                None,
                serde_json::json!({"gpus": recipe.vram.gpus, "ctx": recipe.vram.ctx}),
            ));
            let repo = recipe
                .hub
                .as_ref()
                .map(|h| h.repo(&a.name, &recipe.base.name, f.format.name));
            let card = push(
                &mut steps,
                format!("card/{tail}"),
                Action::Card {
                    adapter: ai,
                    format: fi,
                },
                card_deps,
                Some(artifact.join("README.md")),
                serde_json::json!({"repo": repo, "gpus": recipe.vram.gpus, "ctx": recipe.vram.ctx}),
            );
            if let (Some(h), false) = (&recipe.hub, sel.no_push) {
                push(
                    &mut steps,
                    format!("push/{tail}"),
                    Action::Push {
                        adapter: ai,
                        format: fi,
                    },
                    vec![card],
                    None,
                    serde_json::json!({
                        "repo": repo,
                        "private": h.private,
                        "revision": h.revision,
                        "endpoint": std::env::var("HF_ENDPOINT").unwrap_or_default(),
                    }),
                );
            }
        }
    }
    // A push without a token would fail after everything else ran.
    let pushes = steps
        .iter()
        .any(|s| matches!(s.action, Action::Push { .. }));
    if pushes && !crate::hub::Hub::from_env(None)?.has_token() {
        return Err(Error::Refused(format!(
            "{}: [hub] pushes, but no Hub token was found (HF_TOKEN, HF_TOKEN_PATH, $HF_HOME/token); set one, or run with --no-push",
            recipe.file.display()
        )));
    }
    for s in &mut steps {
        s.up_to_date = read_stamp(&layout.stamp(&s.id)).is_some_and(|st| st.key == s.key)
            && s.output.as_ref().is_none_or(|o| o.exists());
    }
    Ok(Graph { recipe, steps })
}
