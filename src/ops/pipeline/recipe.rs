//! The recipe of `llmtool run`: its TOML schema (version 1), and the
//! validation of everything in it before any step runs: format names and
//! their options (against [`crate::ops::quantize::FORMATS`], the list
//! `quantize` itself takes), adapter paths, blend weights, the Hub
//! pattern's placeholders, the GPUs (against the `vram-plan` catalog), the
//! evaluation text and the resource limits. Every error names the recipe
//! file, line and column (toml's spans, [`toml::Spanned`] for what is
//! checked after parsing) and, for a misspelt name, the nearest known one.
//!
//! Upstream anchor: mergekit's YAML merge recipes (`mergekit/config.py`:
//! one file, validated whole by pydantic before a tensor is read).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::model::adapter::Adapter;
use crate::ops::quantize::{self, FormatName, Target};
use crate::ops::vram::{self, catalog, request};
use crate::store::{DType, Model};

/// The schema version this build reads.
pub const VERSION: u32 = 1;

/// Placeholders a Hub repo pattern may use.
pub const PLACEHOLDERS: &[&str] = &["adapter", "base", "format"];

/// Evaluation metrics a recipe may ask for.
pub const METRICS: &[&str] = &["ppl", "kld"];

/// Options each kind of format takes (`[formats.NAME]` keys).
const GGUF_OPTIONS: &[&str] = &[];
const BNB_OPTIONS: &[&str] = &["blocksize", "double_quant", "skip"];
const CALIBRATED_OPTIONS: &[&str] = &[
    "bits",
    "group_size",
    "calib",
    "calib_samples",
    "calib_seqlen",
];

/// Recipe errors, each at its place in the file; all of them are reported
/// at once.
#[derive(Debug, thiserror::Error)]
#[error("{}", .errors.iter().map(|e| e.display(.file)).collect::<Vec<_>>().join("\n"))]
pub struct RecipeError {
    pub file: PathBuf,
    pub errors: Vec<Located>,
}

/// One error: 1-based line and column, and the message.
#[derive(Debug, Clone)]
pub struct Located {
    pub line: usize,
    pub col: usize,
    pub msg: String,
}

impl Located {
    /// `FILE:LINE:COL: message`, or `FILE: message` where no place applies
    /// (line 0: the file itself could not be read).
    fn display(&self, file: &Path) -> String {
        if self.line == 0 {
            format!("{}: {}", file.display(), self.msg)
        } else {
            format!(
                "{}:{}:{}: {}",
                file.display(),
                self.line,
                self.col,
                self.msg
            )
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    version: Spanned<u32>,
    out: Option<Spanned<String>>,
    base: RawBase,
    adapters: BTreeMap<Spanned<String>, RawAdapter>,
    formats: BTreeMap<Spanned<String>, BTreeMap<Spanned<String>, Spanned<toml::Value>>>,
    eval: Option<RawEval>,
    #[serde(default)]
    vram: RawVram,
    hub: Option<RawHub>,
    #[serde(default)]
    resources: RawResources,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBase {
    model: Spanned<String>,
    name: Option<Spanned<String>>,
    dtype: Option<Spanned<String>>,
    tokenizer_from: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdapter {
    path: Option<Spanned<String>>,
    blend: Option<Spanned<String>>,
    weight: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEval {
    text: Spanned<String>,
    #[serde(default = "default_eval_ctx")]
    ctx: usize,
    max_chunks: Option<usize>,
    #[serde(default = "default_metrics")]
    metrics: Vec<Spanned<String>>,
}

fn default_eval_ctx() -> usize {
    128
}

fn default_metrics() -> Vec<Spanned<String>> {
    METRICS
        .iter()
        .map(|m| Spanned::new(0..0, m.to_string()))
        .collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVram {
    #[serde(default = "default_gpus")]
    gpus: Vec<Spanned<String>>,
    #[serde(default = "default_vram_ctx")]
    ctx: u64,
}

impl Default for RawVram {
    fn default() -> Self {
        RawVram {
            gpus: default_gpus(),
            ctx: default_vram_ctx(),
        }
    }
}

fn default_gpus() -> Vec<Spanned<String>> {
    ["T4", "A10G"]
        .iter()
        .map(|g| Spanned::new(0..0, g.to_string()))
        .collect()
}

fn default_vram_ctx() -> u64 {
    4096
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHub {
    repo: Spanned<String>,
    #[serde(default)]
    private: bool,
    #[serde(default = "default_revision")]
    revision: String,
}

fn default_revision() -> String {
    "main".into()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawResources {
    jobs: Option<Spanned<usize>>,
    memory_budget: Option<Spanned<String>>,
    threads: Option<usize>,
}

/// A validated recipe, paths resolved.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// The recipe file.
    pub file: PathBuf,
    /// Where every output goes (`out`, relative to the recipe; default
    /// `llmtool-out` beside it).
    pub out: PathBuf,
    pub base: Base,
    pub adapters: Vec<AdapterSpec>,
    pub formats: Vec<FormatSpec>,
    pub eval: Option<EvalSpec>,
    pub vram: VramSpec,
    pub hub: Option<HubSpec>,
    pub resources: Resources,
}

#[derive(Debug, Clone)]
pub struct Base {
    /// The path opened (a Hub id or catalog name already resolved).
    pub path: PathBuf,
    /// What the recipe (or `--base`) says, for cards.
    pub label: String,
    /// `{base}` in Hub names and file names.
    pub name: String,
    /// dtype of the merged (and, from a GGUF, converted) model.
    pub dtype: DType,
    /// The base is a GGUF: it is converted to Hugging Face form first.
    pub is_gguf: bool,
    /// A GGUF whose `tokenizer.*` keys the GGUF formats take (default: the
    /// base when it is a GGUF).
    pub tokenizer_from: Option<PathBuf>,
}

/// One adapter (or blend) of the recipe: the adapters merged, with weights.
#[derive(Debug, Clone)]
pub struct AdapterSpec {
    pub name: String,
    pub parts: Vec<(PathBuf, f64)>,
}

/// One output format and its options.
#[derive(Debug, Clone)]
pub struct FormatSpec {
    pub format: &'static FormatName,
    pub options: FormatOptions,
}

/// Options of a format, as `quantize` takes them (defaults: `quantize`'s).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FormatOptions {
    pub blocksize: Option<usize>,
    pub double_quant: Option<bool>,
    pub skip: Vec<String>,
    pub bits: Option<u8>,
    pub group_size: Option<i64>,
    pub calib: Option<PathBuf>,
    pub calib_samples: Option<usize>,
    pub calib_seqlen: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct EvalSpec {
    pub text: PathBuf,
    pub ctx: usize,
    pub max_chunks: Option<usize>,
    pub ppl: bool,
    pub kld: bool,
}

#[derive(Debug, Clone)]
pub struct VramSpec {
    pub gpus: Vec<String>,
    pub ctx: u64,
}

#[derive(Debug, Clone)]
pub struct HubSpec {
    /// `org/{adapter}-{base}-{format}`.
    pub pattern: String,
    pub private: bool,
    pub revision: String,
}

impl HubSpec {
    /// The repo id for one adapter and format.
    pub fn repo(&self, adapter: &str, base: &str, format: &str) -> String {
        self.pattern
            .replace("{adapter}", adapter)
            .replace("{base}", base)
            .replace("{format}", format)
    }
}

#[derive(Debug, Clone)]
pub struct Resources {
    /// Steps run at once.
    pub jobs: usize,
    /// Bytes the running steps' estimated peaks may add up to.
    pub memory_budget: u64,
    /// Worker threads of the operations (default: the machine's cores).
    pub threads: Option<usize>,
}

/// Memory budget when the recipe gives none.
pub const DEFAULT_MEMORY_BUDGET: &str = "4GiB";

/// How a recipe's names outside the file are found.
pub struct Resolve<'a> {
    /// `--base`: replaces the recipe's base model (a path relative to the
    /// working directory, a Hub id or a catalog name).
    pub base: Option<String>,
    /// Turns a base or an adapter that is no local path (a Hub repo id, a
    /// catalog name) into one (the command line downloads it into the HF
    /// cache).
    pub remote: &'a dyn Fn(&str) -> Result<String, String>,
}

/// Reads and validates the recipe at `file`.
pub fn load(file: &Path, resolve: &Resolve) -> Result<Recipe, RecipeError> {
    let text = std::fs::read_to_string(file).map_err(|e| RecipeError {
        file: file.to_path_buf(),
        errors: vec![Located {
            line: 0,
            col: 0,
            msg: format!("cannot read the recipe: {e}"),
        }],
    })?;
    parse(file, &text, resolve)
}

/// Validates `text`, the recipe at `file` (relative paths in it are
/// relative to `file`'s directory).
pub fn parse(file: &Path, text: &str, resolve: &Resolve) -> Result<Recipe, RecipeError> {
    let mut v = Validator {
        text,
        errors: Vec::new(),
    };
    let raw: Raw = match toml::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            let msg = with_suggestion(e.message());
            v.at(e.span().unwrap_or(0..0), msg);
            return Err(v.into_error(file));
        }
    };
    let dir = file.parent().unwrap_or(Path::new("")).to_path_buf();
    let recipe = v.recipe(raw, file, &dir, resolve);
    match recipe {
        Some(r) if v.errors.is_empty() => Ok(r),
        _ => Err(v.into_error(file)),
    }
}

struct Validator<'t> {
    text: &'t str,
    errors: Vec<Located>,
}

impl Validator<'_> {
    fn at(&mut self, span: std::ops::Range<usize>, msg: String) {
        let before = &self.text[..span.start.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        self.errors.push(Located { line, col, msg });
    }

    fn into_error(self, file: &Path) -> RecipeError {
        RecipeError {
            file: file.to_path_buf(),
            errors: self.errors,
        }
    }

    /// A path in the recipe, relative to its directory; `dir/../x` is
    /// written `x` (reports and cards show these paths).
    fn path(dir: &Path, s: &str) -> PathBuf {
        use std::path::Component;
        let mut out = PathBuf::new();
        for c in dir.join(s).components() {
            match c {
                Component::ParentDir
                    if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
                {
                    out.pop();
                }
                Component::CurDir => {}
                c => out.push(c),
            }
        }
        if out.as_os_str().is_empty() {
            out.push(".");
        }
        out
    }

    fn recipe(&mut self, raw: Raw, file: &Path, dir: &Path, resolve: &Resolve) -> Option<Recipe> {
        if *raw.version.get_ref() != VERSION {
            self.at(
                raw.version.span(),
                format!(
                    "recipe version {} is not one this llmtool reads; write version = {VERSION}",
                    raw.version.get_ref()
                ),
            );
        }
        let out = match &raw.out {
            Some(o) => Self::path(dir, o.get_ref()),
            None => Self::path(dir, "llmtool-out"),
        };
        let base = self.base(&raw.base, dir, resolve);
        let adapters = self.adapters(&raw.adapters, dir, resolve);
        let formats = self.formats(&raw.formats, dir);
        let eval = raw.eval.as_ref().and_then(|e| self.eval(e, dir));
        let vram = self.vram(&raw.vram);
        let hub = raw.hub.as_ref().and_then(|h| self.hub(h));
        if let (Some(h), Some(b)) = (&hub, &base) {
            self.hub_names(h, raw.hub.as_ref()?, b, &adapters, &formats);
        }
        let resources = self.resources(&raw.resources);
        if raw.adapters.is_empty() {
            self.at(0..0, "the recipe has no [adapters]: name at least one, e.g. `kant = { path = \"adapters/kant\" }`".into());
        }
        if raw.formats.is_empty() {
            self.at(
                0..0,
                "the recipe has no [formats]: add one, e.g. `[formats.q4_k_m]`".into(),
            );
        }
        Some(Recipe {
            file: file.to_path_buf(),
            out,
            base: base?,
            adapters,
            formats,
            eval,
            vram,
            hub,
            resources,
        })
    }

    fn base(&mut self, b: &RawBase, dir: &Path, resolve: &Resolve) -> Option<Base> {
        let (label, local) = match &resolve.base {
            Some(s) => (s.clone(), PathBuf::from(s)),
            None => (
                b.model.get_ref().clone(),
                Self::path(dir, b.model.get_ref()),
            ),
        };
        let path = if local.exists() {
            local
        } else {
            match (resolve.remote)(&label) {
                Ok(p) => PathBuf::from(p),
                Err(e) => {
                    self.at(b.model.span(), format!("base model '{label}': {e}"));
                    return None;
                }
            }
        };
        let model = match Model::open(&path.to_string_lossy()) {
            Ok(m) => m,
            Err(e) => {
                self.at(b.model.span(), format!("cannot open the base model: {e}"));
                return None;
            }
        };
        let dtype = match &b.dtype {
            None => DType::BF16,
            Some(d) => match d.get_ref().as_str() {
                "bf16" => DType::BF16,
                "f16" => DType::F16,
                "f32" => DType::F32,
                other => {
                    let hint = suggest(other, &["bf16", "f16", "f32"]);
                    self.at(
                        d.span(),
                        format!("dtype `{other}` is not one of bf16, f16, f32{hint}"),
                    );
                    DType::BF16
                }
            },
        };
        let is_gguf = model.gguf.is_some();
        let tokenizer_from = match &b.tokenizer_from {
            Some(t) => {
                let p = Self::path(dir, t.get_ref());
                if !p.is_file() {
                    self.at(t.span(), format!("tokenizer_from: no file {}", p.display()));
                }
                Some(p)
            }
            None => is_gguf.then(|| path.clone()),
        };
        let name = match &b.name {
            Some(n) => n.get_ref().clone(),
            None => default_base_name(&label),
        };
        Some(Base {
            path,
            label,
            name,
            dtype,
            is_gguf,
            tokenizer_from,
        })
    }

    fn adapters(
        &mut self,
        raw: &BTreeMap<Spanned<String>, RawAdapter>,
        dir: &Path,
        resolve: &Resolve,
    ) -> Vec<AdapterSpec> {
        // In file order, so reports follow the recipe.
        let mut entries: Vec<(&Spanned<String>, &RawAdapter)> = raw.iter().collect();
        entries.sort_by_key(|(k, _)| k.span().start);
        let mut plain: BTreeMap<String, (PathBuf, bool)> = BTreeMap::new();
        let mut out = Vec::new();
        for (name, a) in &entries {
            self.name(name, "adapter");
            let Some(p) = &a.path else { continue };
            let mut path = Self::path(dir, p.get_ref());
            if !path.exists() {
                // Not a directory beside the recipe: a Hub repo id, fetched
                // into the HF cache (a mistyped path fails here by name).
                match (resolve.remote)(p.get_ref()) {
                    Ok(local) => path = PathBuf::from(local),
                    Err(e) => {
                        self.at(p.span(), format!("adapter `{}`: {e}", name.get_ref()));
                        plain.insert(name.get_ref().clone(), (path, false));
                        continue;
                    }
                }
            }
            let ok = match Adapter::open(&path) {
                Ok(_) => true,
                Err(e) => {
                    self.at(p.span(), format!("adapter `{}`: {e}", name.get_ref()));
                    false
                }
            };
            plain.insert(name.get_ref().clone(), (path, ok));
        }
        let names: Vec<&str> = plain.keys().map(String::as_str).collect();
        for (name, a) in entries {
            let weight = a.weight.as_ref().map_or(1.0, |w| *w.get_ref());
            if let Some(w) = &a.weight {
                if !w.get_ref().is_finite() {
                    self.at(w.span(), "weight must be a finite number".into());
                }
            }
            match (&a.path, &a.blend) {
                (Some(_), Some(b)) => self.at(
                    b.span(),
                    format!(
                        "adapter `{}` has both `path` and `blend`; give one",
                        name.get_ref()
                    ),
                ),
                (None, None) => self.at(
                    name.span(),
                    format!(
                        "adapter `{}` needs `path = \"DIR\"` (a PEFT adapter) or `blend = \"a:0.7,b:0.3\"`",
                        name.get_ref()
                    ),
                ),
                (Some(_), None) => {
                    if let Some((path, true)) = plain.get(name.get_ref()) {
                        out.push(AdapterSpec {
                            name: name.get_ref().clone(),
                            parts: vec![(path.clone(), weight)],
                        });
                    }
                }
                (None, Some(b)) => {
                    if let Some(parts) = self.blend(b, &plain, &names) {
                        out.push(AdapterSpec {
                            name: name.get_ref().clone(),
                            parts,
                        });
                    }
                }
            }
        }
        out
    }

    /// `kant:0.7,hume:0.3`: adapters of this recipe (with a `path`) and weights.
    fn blend(
        &mut self,
        b: &Spanned<String>,
        plain: &BTreeMap<String, (PathBuf, bool)>,
        names: &[&str],
    ) -> Option<Vec<(PathBuf, f64)>> {
        let mut parts = Vec::new();
        let mut ok = true;
        for item in b.get_ref().split(',').map(str::trim) {
            let Some((n, w)) = item.rsplit_once(':') else {
                self.at(
                    b.span(),
                    format!(
                        "blend `{}`: `{item}` has no weight; write NAME:WEIGHT pairs separated by commas, with a decimal point (e.g. `kant:0.7,hume:0.3`)",
                        b.get_ref()
                    ),
                );
                ok = false;
                continue;
            };
            let weight = match w.trim().parse::<f64>() {
                Ok(w) if w.is_finite() => w,
                _ => {
                    self.at(
                        b.span(),
                        format!(
                            "blend `{}`: `{w}` is not a weight; write NAME:WEIGHT with a number, e.g. `{}:0.5`",
                            b.get_ref(),
                            n.trim()
                        ),
                    );
                    ok = false;
                    continue;
                }
            };
            match plain.get(n.trim()) {
                Some((path, adapter_ok)) => {
                    ok &= adapter_ok;
                    parts.push((path.clone(), weight));
                }
                None => {
                    let hint = suggest(n.trim(), names);
                    self.at(
                        b.span(),
                        format!(
                            "blend `{}`: no adapter `{}` with a path in this recipe{hint}",
                            b.get_ref(),
                            n.trim()
                        ),
                    );
                    ok = false;
                }
            }
        }
        (ok && !parts.is_empty()).then_some(parts)
    }

    /// Names become directory names and Hub repo names: letters, digits,
    /// `-`, `_`, `.`.
    fn name(&mut self, n: &Spanned<String>, what: &str) {
        let s = n.get_ref();
        if s.is_empty()
            || s.starts_with('.')
            || !s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            self.at(
                n.span(),
                format!("{what} name `{s}`: use letters, digits, `-`, `_` and `.` (it names directories and Hub repos)"),
            );
        }
    }

    fn formats(
        &mut self,
        raw: &BTreeMap<Spanned<String>, BTreeMap<Spanned<String>, Spanned<toml::Value>>>,
        dir: &Path,
    ) -> Vec<FormatSpec> {
        let mut entries: Vec<_> = raw.iter().collect();
        entries.sort_by_key(|(k, _)| k.span().start);
        let known: Vec<&str> = quantize::FORMATS.iter().map(|f| f.name).collect();
        let mut out = Vec::new();
        for (name, opts) in entries {
            let Some(format) = quantize::format(name.get_ref()) else {
                self.unknown_format(name, &known);
                continue;
            };
            if let Some(options) = self.format_options(format, opts, dir) {
                out.push(FormatSpec { format, options });
            }
        }
        out
    }

    fn unknown_format(&mut self, name: &Spanned<String>, known: &[&str]) {
        let n = name.get_ref();
        // A format llmtool knows as a deployment target (vram-plan) but
        // whose quantizer is not in this build.
        let msg = match vram::DeployFormat::parse(n) {
            Ok(d) => format!(
                "format `{n}`: `quantize` cannot make {} in this build (vram-plan only plans it); formats it makes: {}",
                d.name(),
                known.join(", ")
            ),
            Err(_) => format!(
                "unknown format `{n}`{}; formats this build makes: {}",
                suggest(n, known),
                known.join(", ")
            ),
        };
        self.at(name.span(), msg);
    }

    fn format_options(
        &mut self,
        f: &FormatName,
        opts: &BTreeMap<Spanned<String>, Spanned<toml::Value>>,
        dir: &Path,
    ) -> Option<FormatOptions> {
        let allowed = match f.target {
            Target::Gguf(_) => GGUF_OPTIONS,
            Target::Bnb(_) => BNB_OPTIONS,
            Target::Gptq | Target::Awq => CALIBRATED_OPTIONS,
        };
        let mut o = FormatOptions::default();
        let mut ok = true;
        for (k, v) in opts {
            let key = k.get_ref().as_str();
            if !allowed.contains(&key) {
                let list = if allowed.is_empty() {
                    "it takes none".to_string()
                } else {
                    format!("it takes {}", allowed.join(", "))
                };
                self.at(
                    k.span(),
                    format!(
                        "format `{}` has no option `{key}`{}; {list}",
                        f.name,
                        suggest(key, allowed)
                    ),
                );
                ok = false;
                continue;
            }
            let value = v.get_ref();
            let int = value.as_integer();
            let bad = |what: &str| format!("`{key}` must be {what}");
            let err = match key {
                "blocksize" => set_usize(&mut o.blocksize, int)
                    .then_some(())
                    .ok_or(bad("a positive integer")),
                "calib_samples" => set_usize(&mut o.calib_samples, int)
                    .then_some(())
                    .ok_or(bad("a positive integer")),
                "calib_seqlen" => set_usize(&mut o.calib_seqlen, int)
                    .then_some(())
                    .ok_or(bad("a positive integer")),
                "double_quant" => value
                    .as_bool()
                    .map(|b| o.double_quant = Some(b))
                    .ok_or(bad("true or false")),
                "bits" => match int {
                    Some(b @ (4 | 8)) => {
                        o.bits = Some(b as u8);
                        Ok(())
                    }
                    _ => Err(bad("4 or 8")),
                },
                "group_size" => match int {
                    Some(g) if g == -1 || g > 0 => {
                        o.group_size = Some(g);
                        Ok(())
                    }
                    _ => Err(bad("a positive group size or -1")),
                },
                "skip" => value
                    .as_array()
                    .and_then(|a| {
                        a.iter()
                            .map(|s| s.as_str().map(str::to_string))
                            .collect::<Option<Vec<_>>>()
                    })
                    .map(|s| o.skip = s)
                    .ok_or(bad("a list of module names")),
                "calib" => match value.as_str() {
                    Some(s) => {
                        let p = Self::path(dir, s);
                        if p.is_file() {
                            o.calib = Some(p);
                            Ok(())
                        } else {
                            Err(format!("calib: no file {}", p.display()))
                        }
                    }
                    None => Err(bad("a file path")),
                },
                _ => unreachable!("every allowed option is handled"),
            };
            if let Err(m) = err {
                self.at(v.span(), m);
                ok = false;
            }
        }
        ok.then_some(o)
    }

    fn eval(&mut self, e: &RawEval, dir: &Path) -> Option<EvalSpec> {
        let text = Self::path(dir, e.text.get_ref());
        if !text.is_file() {
            self.at(
                e.text.span(),
                format!("evaluation text: no file {}", text.display()),
            );
        }
        if e.ctx < 4 {
            self.at(
                e.text.span(),
                format!("eval ctx {} is too small; use at least 4", e.ctx),
            );
        }
        let (mut ppl, mut kld) = (false, false);
        for m in &e.metrics {
            match m.get_ref().as_str() {
                "ppl" => ppl = true,
                "kld" => kld = true,
                other => self.at(
                    m.span(),
                    format!(
                        "unknown metric `{other}`{}; metrics: {}",
                        suggest(other, METRICS),
                        METRICS.join(", ")
                    ),
                ),
            }
        }
        Some(EvalSpec {
            text,
            ctx: e.ctx,
            max_chunks: e.max_chunks,
            ppl,
            kld,
        })
    }

    fn vram(&mut self, v: &RawVram) -> VramSpec {
        let gpus = request::gpu_catalog(None).unwrap_or_default();
        let names: Vec<&str> = gpus.iter().map(|g| g.name.as_str()).collect();
        for g in &v.gpus {
            if let Err(e) = catalog::parse_setups(g.get_ref(), &gpus) {
                self.at(g.span(), format!("{e}{}", suggest(g.get_ref(), &names)));
            }
        }
        VramSpec {
            gpus: v.gpus.iter().map(|g| g.get_ref().clone()).collect(),
            ctx: v.ctx,
        }
    }

    fn hub(&mut self, h: &RawHub) -> Option<HubSpec> {
        let p = h.repo.get_ref();
        let mut rest = p.as_str();
        let mut ok = true;
        while let Some(i) = rest.find('{') {
            let Some(j) = rest[i..].find('}') else {
                self.at(h.repo.span(), format!("repo `{p}`: `{{` without `}}`"));
                return None;
            };
            let name = &rest[i + 1..i + j];
            if !PLACEHOLDERS.contains(&name) {
                self.at(
                    h.repo.span(),
                    format!(
                        "repo `{p}`: unknown placeholder `{{{name}}}`{}; placeholders: {{adapter}}, {{base}}, {{format}}",
                        suggest(name, PLACEHOLDERS)
                    ),
                );
                ok = false;
            }
            rest = &rest[i + j + 1..];
        }
        ok.then(|| HubSpec {
            pattern: p.clone(),
            private: h.private,
            revision: h.revision.clone(),
        })
    }

    /// Every repo id the pattern makes must be a valid one.
    fn hub_names(
        &mut self,
        h: &HubSpec,
        raw: &RawHub,
        base: &Base,
        adapters: &[AdapterSpec],
        formats: &[FormatSpec],
    ) {
        for a in adapters {
            for f in formats {
                let id = h.repo(&a.name, &base.name, f.format.name);
                if let Err(e) = crate::hub::repo::RepoId::parse(&id) {
                    self.at(
                        raw.repo.span(),
                        format!("repo `{id}` (from `{}`): {e}", h.pattern),
                    );
                    return;
                }
            }
        }
    }

    fn resources(&mut self, r: &RawResources) -> Resources {
        let jobs = r.jobs.as_ref().map_or(1, |j| *j.get_ref());
        if jobs == 0 {
            if let Some(j) = &r.jobs {
                self.at(j.span(), "jobs must be at least 1".into());
            }
        }
        let budget = match &r.memory_budget {
            None => crate::units::parse_size(DEFAULT_MEMORY_BUDGET),
            Some(m) => {
                let b = crate::units::parse_size(m.get_ref());
                if b.is_none() {
                    self.at(
                        m.span(),
                        format!(
                            "memory_budget `{}` is not a size; write e.g. \"4GiB\" or \"8GB\"",
                            m.get_ref()
                        ),
                    );
                }
                b
            }
        };
        Resources {
            jobs: jobs.max(1),
            memory_budget: budget.unwrap_or(u64::MAX),
            threads: r.threads,
        }
    }
}

fn set_usize(slot: &mut Option<usize>, v: Option<i64>) -> bool {
    match v {
        Some(n) if n > 0 => {
            *slot = Some(n as usize);
            true
        }
        _ => false,
    }
}

/// `{base}` when the recipe names none: the model's file or directory name
/// without its extension, lower case (`SmolLM2-135M-Instruct.Q4_1.gguf` →
/// `smollm2-135m-instruct`), or a repo id's name.
fn default_base_name(label: &str) -> String {
    let last = label
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(label);
    let stem = last
        .strip_suffix(".gguf")
        .or_else(|| last.strip_suffix(".safetensors"))
        .unwrap_or(last);
    // A GGUF's quantization suffix (`.Q4_1`, `.F16`) is not the model's name.
    let stem = match stem.rsplit_once('.') {
        Some((s, q)) if q.starts_with(['Q', 'F', 'B', 'I']) && q.len() <= 8 => s,
        _ => stem,
    };
    stem.to_ascii_lowercase()
}

/// Levenshtein distance.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// `"; did you mean `x`?"` for the nearest of `known` within a third of
/// the word's length (at least 2 edits), else nothing.
pub fn suggest(word: &str, known: &[&str]) -> String {
    let w = word.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (distance(&w, &k.to_ascii_lowercase()), k))
        .filter(|(d, _)| *d <= (word.len() / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| format!("; did you mean `{k}`?"))
        .unwrap_or_default()
}

/// serde's "unknown field `x`, expected one of `a`, `b`" gets the nearest
/// of the expected names.
fn with_suggestion(msg: &str) -> String {
    let msg = msg.trim_end();
    let Some(rest) = msg.strip_prefix("unknown field `") else {
        return msg.to_string();
    };
    let Some((field, expected)) = rest.split_once('`') else {
        return msg.to_string();
    };
    let known: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    format!("{msg}{}", suggest(field, &known))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_are_near_names() {
        assert_eq!(
            suggest("q4_k_n", &["q4_k_m", "q8_0", "nf4"]),
            "; did you mean `q4_k_m`?"
        );
        assert_eq!(suggest("zzzzzz", &["q4_k_m", "q8_0"]), "");
        assert_eq!(
            with_suggestion("unknown field `jbos`, expected one of `jobs`, `memory_budget`, `threads`"),
            "unknown field `jbos`, expected one of `jobs`, `memory_budget`, `threads`; did you mean `jobs`?"
        );
    }

    #[test]
    fn recipe_paths_are_written_plainly() {
        let p = |d: &str, s: &str| Validator::path(Path::new(d), s);
        assert_eq!(
            p("examples/demo", "../../target/x"),
            PathBuf::from("target/x")
        );
        assert_eq!(p("", "./a"), PathBuf::from("a"));
        assert_eq!(p("a", ".."), PathBuf::from("."));
        assert_eq!(p("../a", "../../b"), PathBuf::from("../../b"));
        assert_eq!(p("/r", "/abs/x"), PathBuf::from("/abs/x"));
    }

    #[test]
    fn base_names_drop_extensions() {
        assert_eq!(
            default_base_name("/x/SmolLM2-135M-Instruct.Q4_1.gguf"),
            "smollm2-135m-instruct"
        );
        assert_eq!(default_base_name("Qwen/Qwen2.5-7B"), "qwen2.5-7b");
    }
}
