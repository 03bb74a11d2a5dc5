//! Latency figures for the benchmarks: an HDR histogram (microseconds, 3 significant digits), so
//! percentiles come from a well-kept implementation rather than a sort and an index.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Latencies recorded by a benchmark.
#[derive(Debug, Clone)]
pub struct Latencies(Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        Self(Histogram::new(3).expect("3 significant digits is a valid precision"))
    }
}

impl Latencies {
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.0.saturating_record(micros);
    }

    /// Adds another benchmark client's latencies.
    pub fn add(&mut self, other: &Latencies) {
        self.0
            .add(&other.0)
            .expect("histograms of the same precision add up");
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The latency at quantile `q` (0.5 for the median), in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.0.value_at_quantile(q) as f64 / 1e3
    }

    pub fn max_ms(&self) -> f64 {
        self.0.max() as f64 / 1e3
    }

    pub fn mean_ms(&self) -> f64 {
        self.0.mean() / 1e3
    }
}
