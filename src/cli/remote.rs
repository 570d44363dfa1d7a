//! MODEL and ADAPTER arguments that name something on the Hub: a catalog
//! name (`qwen2.5-14b`, as `vram-plan --list` shows them) becomes its repo
//! id, and a repo id (`org/name`, `org/name@revision`, `org/name:Q4_K_M`)
//! not found as a local path is fetched into the Hugging Face cache
//! ([`crate::hub::download`]) and opened from there. Every command opens
//! its models through here, so they all accept the same forms.

use std::io::IsTerminal;

use anyhow::{Context, Result};

use crate::hub::download::{self, Need, Spec};
use crate::hub::Hub;
use crate::ops::vram::catalog;
use crate::store::{hf_cache, Model};

/// The local path (or unchanged spec) to open for `spec`, downloading
/// what `need` asks for when it is on the Hub.
pub fn local(spec: &str, need: Need) -> Result<String> {
    let path = std::path::Path::new(spec);
    // A mistyped local path must not turn into a Hub request: model file
    // names and paths under an existing directory stay local.
    let local_looking = path.extension().is_some_and(|e| {
        ["gguf", "safetensors", "json", "bin", "pt", "pth"]
            .contains(&e.to_string_lossy().to_ascii_lowercase().as_str())
    }) || path
        .parent()
        .is_some_and(|p| !p.as_os_str().is_empty() && p.is_dir());
    if path.exists() || local_looking {
        return Ok(spec.to_string());
    }
    let named = catalog::find_model(spec)
        .filter(|_| !spec.contains('/'))
        .map(|m| m.repo);
    let id = named.as_deref().unwrap_or(spec);
    let Some(parsed) = Spec::parse(id) else {
        return Ok(spec.to_string());
    };
    let parsed = parsed?;
    let hub = Hub::from_env(None)?;
    let show = std::io::stderr().is_terminal();
    let bar = crate::progress::bytes_bar(show, 0, "downloading");
    bar.set_message(parsed.repo.to_string());
    let fetched =
        download::fetch(&hub, &parsed, need, &hf_cache::cache_dir(), &bar).with_context(|| {
            format!(
                "'{spec}' is no local path, and fetching {id} from {} failed",
                hub.endpoint()
            )
        })?;
    bar.finish_and_clear();
    Ok(fetched.model.to_string_lossy().into_owned())
}

/// Opens `spec` as [`local`] finds it.
pub fn open(spec: &str) -> Result<Model> {
    let path = local(spec, Need::Weights)?;
    Model::open(&path).with_context(|| format!("cannot open model '{spec}'"))
}
