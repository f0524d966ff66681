//! Sizes as people write them in flags, the config file and budget attributes.

use thiserror::Error;

/// A size that could not be read.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("{0}")]
pub struct SizeError(String);

/// Parse a size: plain bytes, or a number with a unit — `KiB`/`MiB`/`GiB`/`TiB` (also `K`,
/// `M`, `G`, `T`, powers of 1024) or `KB`/`MB`/`GB`/`TB` (powers of 1000). `1.5GiB` is allowed.
pub fn parse(s: &str) -> Result<u64, SizeError> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = (&t[..split], t[split..].trim());
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(SizeError(format!("size {s:?}: unknown unit {unit:?} (use bytes, KiB, MiB, GiB, TiB)"))),
    };
    let bad = || SizeError(format!("size {s:?}: not a number of bytes (e.g. 256MiB, 10GiB, 1048576)"));
    if num.is_empty() {
        return Err(bad());
    }
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(mult).ok_or_else(bad);
    }
    let f: f64 = num.parse().map_err(|_| bad())?;
    let v = f * mult as f64;
    if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(v as u64)
}

#[cfg(test)]
mod tests {
    use super::parse as parse_size;

    #[test]
    fn sizes_parse_with_units_and_refuse_garbage() {
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_size("256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_size("10GiB").unwrap(), 10 << 30);
        assert_eq!(parse_size("10 gib").unwrap(), 10 << 30);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size("2MB").unwrap(), 2_000_000);
        for bad in ["", "MiB", "12 parsecs", "-1", "1e3", "99999999999TiB", "1.2.3"] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
    }
}
