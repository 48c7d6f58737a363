//! The shard a process is: `--shard K/N`, or read from the engine it runs under
//! (`--shard-from-env [N]`).
//!
//! Rules, first match wins:
//! 1. `FANOUT_SHARD_INDEX` (1-based; a GitHub Actions matrix sets it) with `FANOUT_SHARD_COUNT`
//!    or `N`.
//! 2. Slurm: `SLURM_ARRAY_TASK_ID`; the shard is `(ID - SLURM_ARRAY_TASK_MIN) /
//!    SLURM_ARRAY_TASK_STEP + 1` (MIN 0 and STEP 1 when unset), the count
//!    `SLURM_ARRAY_TASK_COUNT`, else `N`, else `FANOUT_SHARD_COUNT`.
//! 3. Kubernetes Indexed Job: `JOB_COMPLETION_INDEX` (0-based) + 1, the count `N` or
//!    `FANOUT_SHARD_COUNT` (the Job's `completions`).
//!
//! An `N` that disagrees with the count the engine gives is an error, as is no index at all.

use std::fmt;

/// A shard: `index` in `1..=count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ShardError {
    #[error("--shard {0:?}: expected K/N with 1 <= K <= N (e.g. 2/4)")]
    Syntax(String),
    #[error("--shard-from-env: no shard index in the environment (set FANOUT_SHARD_INDEX, or run under a Slurm array (SLURM_ARRAY_TASK_ID) or a Kubernetes Indexed Job (JOB_COMPLETION_INDEX))")]
    NoIndex,
    #[error("--shard-from-env: {source_name} gives the index but no shard count: pass it as --shard-from-env N or set FANOUT_SHARD_COUNT")]
    NoCount { source_name: &'static str },
    #[error("--shard-from-env: {name}={value:?} is not a number")]
    NotANumber { name: &'static str, value: String },
    #[error("--shard-from-env: {0}")]
    Range(String),
}

impl Shard {
    pub fn new(index: u32, count: u32) -> Option<Shard> {
        (count >= 1 && (1..=count).contains(&index)).then_some(Shard { index, count })
    }

    /// `K/N` as typed on the command line.
    pub fn parse(raw: &str) -> Result<Shard, ShardError> {
        let bad = || ShardError::Syntax(raw.to_string());
        let (k, n) = raw.trim().split_once('/').ok_or_else(bad)?;
        let k: u32 = k.trim().parse().map_err(|_| bad())?;
        let n: u32 = n.trim().parse().map_err(|_| bad())?;
        Shard::new(k, n).ok_or_else(bad)
    }

    /// The shard the engine's environment names (see the module's rules); `count` is the `N`
    /// of `--shard-from-env N`.
    pub fn from_env(
        count: Option<u32>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Shard, ShardError> {
        let num = |name: &'static str| -> Result<Option<i64>, ShardError> {
            match env(name).filter(|v| !v.trim().is_empty()) {
                None => Ok(None),
                Some(v) => v
                    .trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| ShardError::NotANumber { name, value: v }),
            }
        };
        let fanout_count = num("FANOUT_SHARD_COUNT")?;
        let (index, engine_count, source_name) = if let Some(i) = num("FANOUT_SHARD_INDEX")? {
            (i, fanout_count, "FANOUT_SHARD_INDEX")
        } else if let Some(id) = num("SLURM_ARRAY_TASK_ID")? {
            let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            let step = num("SLURM_ARRAY_TASK_STEP")?.unwrap_or(1).max(1);
            let n = num("SLURM_ARRAY_TASK_COUNT")?;
            ((id - min) / step + 1, n, "SLURM_ARRAY_TASK_ID")
        } else if let Some(i) = num("JOB_COMPLETION_INDEX")? {
            (i + 1, None, "JOB_COMPLETION_INDEX")
        } else {
            return Err(ShardError::NoIndex);
        };
        let total = match (engine_count, count) {
            (Some(e), Some(n)) if e != i64::from(n) => {
                return Err(ShardError::Range(format!(
                    "the engine says {e} shards but the command line says {n}"
                )))
            }
            (Some(e), _) => e,
            (None, Some(n)) => i64::from(n),
            (None, None) => fanout_count.ok_or(ShardError::NoCount { source_name })?,
        };
        let fits = |v: i64| u32::try_from(v).ok();
        fits(index)
            .zip(fits(total))
            .and_then(|(k, n)| Shard::new(k, n))
            .ok_or_else(|| {
                ShardError::Range(format!(
                    "{source_name} makes shard {index} of {total}, outside 1..={total}"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |n| pairs.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone())
    }

    #[test]
    fn k_of_n_is_parsed_and_checked() {
        assert_eq!(Shard::parse("2/4"), Ok(Shard { index: 2, count: 4 }));
        for bad in ["0/4", "5/4", "4", "a/b", "1/0", ""] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn each_engine_is_read() {
        let s = |p: &[(&str, &str)], n| Shard::from_env(n, &env(p));
        let gha = [("FANOUT_SHARD_INDEX", "3"), ("FANOUT_SHARD_COUNT", "8")];
        assert_eq!(s(&gha, None), Ok(Shard { index: 3, count: 8 }));
        let slurm0 = [
            ("SLURM_ARRAY_TASK_ID", "0"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ];
        assert_eq!(s(&slurm0, None), Ok(Shard { index: 1, count: 4 }));
        let slurm1 = [
            ("SLURM_ARRAY_TASK_ID", "4"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ];
        assert_eq!(s(&slurm1, None), Ok(Shard { index: 4, count: 4 }));
        let k8s = [("JOB_COMPLETION_INDEX", "0")];
        assert_eq!(s(&k8s, Some(3)), Ok(Shard { index: 1, count: 3 }));
    }

    #[test]
    fn missing_or_contradicting_counts_are_errors() {
        let s = |p: &[(&str, &str)], n| Shard::from_env(n, &env(p));
        assert_eq!(s(&[], None), Err(ShardError::NoIndex));
        assert!(matches!(
            s(&[("JOB_COMPLETION_INDEX", "2")], None),
            Err(ShardError::NoCount { .. })
        ));
        assert!(s(&[("JOB_COMPLETION_INDEX", "5")], Some(3)).is_err());
        let slurm = [
            ("SLURM_ARRAY_TASK_ID", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ];
        assert!(s(&slurm, Some(5)).is_err());
        assert!(s(&[("FANOUT_SHARD_INDEX", "x")], Some(2)).is_err());
    }
}
