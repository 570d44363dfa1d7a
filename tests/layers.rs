//! The layering rule of docs/ARCHITECTURE.md, checked over the source:
//! a module may use its own layer and the layers below it, never one above.

use std::path::Path;

/// Top-level modules of the library, lowest layer first.
const LAYERS: &[&[&str]] = &[
    &["cancel", "progress", "stream", "units"],
    &["quant"],
    &["store"],
    &["hub"],
    &["model"],
    &["ops"],
    &["cli"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rs_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn no_module_uses_a_layer_above_it() {
    let src = crate::common::repo().join("src");
    let mut files = Vec::new();
    rs_files(&src, &mut files);
    let mut bad = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if top == "lib" || top == "main" {
            continue;
        }
        let own = layer_of(&top).unwrap_or_else(|| panic!("src/{top} is in no layer of LAYERS"));
        let text = std::fs::read_to_string(f).unwrap();
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for (pos, _) in code.match_indices("crate::") {
                let rest = &code[pos + 7..];
                // `crate::{a, b::c}` names several modules.
                let names: Vec<&str> = match rest.strip_prefix('{') {
                    Some(group) => group.split(',').collect(),
                    None => vec![rest],
                };
                for name in names {
                    let used: String = name
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if layer_of(&used).is_some_and(|l| l > own) {
                        bad.push(format!("{}:{}: {top} uses {used}", rel.display(), i + 1));
                    }
                }
            }
        }
    }
    assert!(bad.is_empty(), "upward dependencies:\n{}", bad.join("\n"));
}

#[test]
fn every_module_is_in_a_layer() {
    let lib = std::fs::read_to_string(crate::common::repo().join("src/lib.rs")).unwrap();
    for line in lib.lines() {
        if let Some(m) = line.strip_prefix("pub mod ") {
            let m = m.trim_end_matches(';');
            assert!(
                layer_of(m).is_some(),
                "src/lib.rs declares {m}, which LAYERS lacks"
            );
        }
    }
}
