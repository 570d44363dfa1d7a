//! Model cards: the `README.md` of a model directory, YAML front matter
//! (the metadata the Hugging Face Hub reads: `base_model`, `library_name`,
//! `tags`, …) followed by Markdown. Every writer of a card builds it here,
//! so the front matter is always well-formed and the provenance lines read
//! the same.
//!
//! Upstream: the Hub's model card metadata
//! (huggingface_hub `repocard_data.py`, `ModelCardData`).

/// What a card's `base_model` names for the model the user gave as
/// `spec` (opened at `root`): the Hub repo id when there is one (the spec
/// itself, or the `models--ORG--NAME` folder of a cache snapshot), else the
/// directory's name. Never a local absolute path, which means nothing on the
/// Hub and leaks the user's file layout.
pub fn base_model_id(spec: &str, root: &std::path::Path) -> String {
    if super::hf_cache::is_repo_id(spec) && !std::path::Path::new(spec).exists() {
        return spec.split_once('@').map_or(spec, |(id, _)| id).to_string();
    }
    let abs = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let cached = abs.ancestors().find_map(|a| {
        let repo = a.file_name()?.to_str()?.strip_prefix("models--")?;
        let (org, name) = repo.split_once("--")?;
        Some(format!("{org}/{name}"))
    });
    cached.unwrap_or_else(|| {
        abs.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| spec.to_string())
    })
}

/// A card being built: front matter entries in order, then the body.
#[derive(Debug, Default)]
pub struct ModelCard {
    front: String,
    body: String,
}

impl ModelCard {
    pub fn new() -> ModelCard {
        ModelCard::default()
    }

    /// `key: value` with a plain YAML scalar (a word such as `transformers`).
    pub fn field(&mut self, key: &str, value: &str) -> &mut Self {
        self.front += &format!("{key}: {value}\n");
        self
    }

    /// `key: "text"`, quoted (paths and names may hold YAML syntax).
    pub fn text(&mut self, key: &str, value: &str) -> &mut Self {
        self.field(key, &quote(value))
    }

    /// `key:` followed by `- item` lines.
    pub fn list(&mut self, key: &str, items: &[&str]) -> &mut Self {
        self.front += &format!("{key}:\n");
        for i in items {
            self.front += &format!("- {i}\n");
        }
        self
    }

    /// `key:` followed by one mapping per record (`- a: x` / `  b: y`);
    /// values are written as given.
    pub fn records(&mut self, key: &str, records: &[Vec<(&str, String)>]) -> &mut Self {
        self.front += &format!("{key}:\n");
        for r in records {
            for (i, (k, v)) in r.iter().enumerate() {
                self.front += &format!("{}{k}: {v}\n", if i == 0 { "- " } else { "  " });
            }
        }
        self
    }

    /// Front matter lines kept verbatim from an earlier card.
    pub fn raw(&mut self, yaml: &str) -> &mut Self {
        self.front += yaml;
        if !yaml.ends_with('\n') {
            self.front.push('\n');
        }
        self
    }

    /// Appends Markdown to the body.
    pub fn body(&mut self, markdown: &str) -> &mut Self {
        self.body += markdown;
        self
    }

    /// The provenance block every llmtool card ends with.
    pub fn made_with(&mut self, command: &str) -> &mut Self {
        self.body += &format!("Made with:\n\n```sh\n{command}\n```\n");
        self
    }

    /// The file's text.
    pub fn render(&self) -> String {
        format!("---\n{}---\n\n{}", self.front, self.body)
    }
}

/// A YAML double-quoted scalar (JSON string syntax is valid YAML).
pub fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_model_is_a_repo_id_or_a_directory_name() {
        let tmp = tempfile::tempdir().unwrap();
        let snap = tmp
            .path()
            .join("hub/models--Qwen--Qwen2.5-7B/snapshots/abc");
        std::fs::create_dir_all(&snap).unwrap();
        assert_eq!(
            base_model_id("Qwen/Qwen2.5-7B@main", &snap),
            "Qwen/Qwen2.5-7B"
        );
        assert_eq!(
            base_model_id(snap.to_str().unwrap(), &snap),
            "Qwen/Qwen2.5-7B"
        );
        let own = tmp.path().join("spinoza-merged");
        std::fs::create_dir(&own).unwrap();
        assert_eq!(base_model_id(own.to_str().unwrap(), &own), "spinoza-merged");
    }

    #[test]
    fn front_matter_then_body() {
        let mut c = ModelCard::new();
        c.text("base_model", "a: b")
            .field("library_name", "transformers")
            .list("tags", &["llmtool", "lora"])
            .records(
                "adapters",
                &[vec![("path", quote("x")), ("weight", "1".into())]],
            )
            .body("# T\n\n")
            .made_with("llmtool x");
        assert_eq!(
            c.render(),
            "---\nbase_model: \"a: b\"\nlibrary_name: transformers\ntags:\n- llmtool\n- lora\n\
             adapters:\n- path: \"x\"\n  weight: 1\n---\n\n# T\n\nMade with:\n\n```sh\nllmtool x\n```\n"
        );
    }
}
