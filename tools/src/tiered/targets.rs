//! The targets the tiered benchmark checks, and their verdicts.

use serde::Serialize;

/// Published by SlateDB for uniform cold gets on S3, as a point of comparison.
pub const REFERENCE: &str = "SlateDB, cold uniform gets on S3: p50 25.5 ms, p99 66 ms";

/// Share of absent-key lookups allowed to cost a GET: the goal is none, but each table's bloom
/// filter lets about 1% through.
pub const ABSENT_GETS_ALLOWED: f64 = 0.02;

/// What the targets are judged on.
#[derive(Debug, Clone, Copy)]
pub struct Measurements {
    /// Latency injected into every GET, in ms.
    pub injected_ms: f64,
    pub cold_gets_per_read: f64,
    pub absent_gets_per_read: f64,
    pub cold_p50_ms: f64,
    pub cold_p99_ms: f64,
    pub warm_memory_p99_ms: f64,
    /// `None` when the disk cache is off.
    pub warm_disk_p99_ms: Option<f64>,
}

/// One target and whether the run met it.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// What is measured.
    pub target: &'static str,
    /// The goal, as people say it.
    pub goal: String,
    /// The largest measured value that meets it.
    pub limit: f64,
    pub measured: f64,
    pub unit: &'static str,
    pub met: bool,
}

fn at_most(
    target: &'static str,
    goal: String,
    limit: f64,
    measured: f64,
    unit: &'static str,
) -> Verdict {
    Verdict {
        target,
        goal,
        limit,
        measured,
        unit,
        // A small tolerance, so that exactly 1.0 GET per read computed by division is not
        // missed by a rounding error.
        met: measured <= limit + 1e-9,
    }
}

/// The verdicts of every target that applies to `m`.
pub fn evaluate(m: &Measurements) -> Vec<Verdict> {
    let l = m.injected_ms;
    let mut v = vec![
        at_most(
            "GETs per cold read",
            "<= 1.0 on average".into(),
            1.0,
            m.cold_gets_per_read,
            "GETs",
        ),
        at_most(
            "GETs per absent read",
            format!("0 (bloom false positives ~1%: met if <= {ABSENT_GETS_ALLOWED})"),
            ABSENT_GETS_ALLOWED,
            m.absent_gets_per_read,
            "GETs",
        ),
        at_most(
            "cold p50",
            format!("<= GET latency + 2 ms = {:.1} ms", l + 2.0),
            l + 2.0,
            m.cold_p50_ms,
            "ms",
        ),
        at_most(
            "cold p99",
            format!("<= 2 x GET latency + 5 ms = {:.1} ms", 2.0 * l + 5.0),
            2.0 * l + 5.0,
            m.cold_p99_ms,
            "ms",
        ),
        at_most(
            "warm-memory p99",
            "<= 1 ms".into(),
            1.0,
            m.warm_memory_p99_ms,
            "ms",
        ),
    ];
    if let Some(p99) = m.warm_disk_p99_ms {
        v.push(at_most("warm-disk p99", "<= 1 ms".into(), 1.0, p99, "ms"));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Measurements {
        Measurements {
            injected_ms: 20.0,
            cold_gets_per_read: 0.97,
            absent_gets_per_read: 0.011,
            cold_p50_ms: 21.0,
            cold_p99_ms: 44.0,
            warm_memory_p99_ms: 0.05,
            warm_disk_p99_ms: Some(0.4),
        }
    }

    fn verdict(v: &[Verdict], target: &str) -> bool {
        v.iter().find(|x| x.target == target).expect(target).met
    }

    #[test]
    fn limits_follow_the_injected_latency() {
        let v = evaluate(&base());
        assert_eq!(v.len(), 6);
        assert!(v.iter().all(|x| x.met), "{v:?}");
        let limit = |t: &str| v.iter().find(|x| x.target == t).unwrap().limit;
        assert_eq!(limit("cold p50"), 22.0);
        assert_eq!(limit("cold p99"), 45.0);

        // Just over each bound misses it.
        let mut m = base();
        m.cold_p50_ms = 22.01;
        m.cold_p99_ms = 45.01;
        m.cold_gets_per_read = 1.001;
        m.absent_gets_per_read = 0.021;
        m.warm_memory_p99_ms = 1.2;
        m.warm_disk_p99_ms = Some(3.0);
        let v = evaluate(&m);
        assert!(v.iter().all(|x| !x.met), "{v:?}");
    }

    #[test]
    fn exact_bounds_are_met_and_no_disk_cache_drops_its_target() {
        let mut m = base();
        m.injected_ms = 0.0;
        m.cold_gets_per_read = 2000.0 / 2000.0;
        m.cold_p50_ms = 2.0;
        m.cold_p99_ms = 5.0;
        m.warm_disk_p99_ms = None;
        let v = evaluate(&m);
        assert_eq!(v.len(), 5);
        assert!(verdict(&v, "GETs per cold read"));
        assert!(verdict(&v, "cold p50") && verdict(&v, "cold p99"));
    }
}
