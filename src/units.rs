//! Sizes and counts as people write and read them: the one size parser
//! every flag uses (`--max-shard-size`, `--vram`, GPU sizes) and the
//! formatting of bytes and parameter counts in reports.
//!
//! Parsing follows transformers' `convert_file_size_to_int`
//! (`utils/hub.py`): `5GB` is 5·10⁹ bytes, `5GiB` is 5·2³⁰, a bare number is
//! bytes. The one-letter `K`/`M`/`G`/`T` (nvidia-smi, `ls -h`) are binary.

/// Parses a size such as `5GB`, `2GiB`, `500 MB`, `16G` or `1024` (bytes).
/// Returns `None` for anything else, and for sizes below one byte.
pub fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num.trim().parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        "K" | "KIB" => 1 << 10,
        "M" | "MIB" => 1 << 20,
        "G" | "GIB" => 1 << 30,
        "T" | "TIB" => 1 << 40,
        _ => return None,
    };
    let v = num * mult as f64;
    (v.is_finite() && v >= 1.0 && v < u64::MAX as f64).then_some(v as u64)
}

/// Formats a byte count with binary units (as llama.cpp prints MiB).
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

/// Formats a parameter count (135.0M, 14.77B).
pub fn human_count(n: u64) -> String {
    let v = n as f64;
    if v >= 1e9 {
        format!("{:.2}B", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}K", v / 1e3)
    } else {
        n.to_string()
    }
}

/// Bytes as GiB with two decimals (the VRAM tables' unit).
pub fn gib(b: u64) -> String {
    format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16G"), Some(16 << 30));
        assert_eq!(parse_size("15360MiB"), Some(15360 << 20));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("1e30TB"), None);
        assert_eq!(human_bytes(1536), "1.50 KiB");
        assert_eq!(human_count(135_000_000), "135.0M");
        assert_eq!(gib(3 << 29), "1.50 GiB");
    }
}
