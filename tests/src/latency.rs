//! Latency figures for the benchmarks: an HDR histogram (microseconds, 3 significant digits), so
//! percentiles come from a well-kept implementation rather than a sort and an index.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Latencies recorded by a benchmark.
#[derive(Debug, Clone)]
pub struct Latencies(Histogram<u64>);

/// The longest latency told apart from longer ones: a minute, in microseconds. Fixed bounds,
/// because adding auto-resizing histograms of different ranges loses the larger values.
const LATENCY_MAX_MICROS: u64 = 60_000_000;

impl Default for Latencies {
    fn default() -> Self {
        Self(
            Histogram::new_with_bounds(1, LATENCY_MAX_MICROS, 3)
                .expect("valid bounds and precision"),
        )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_of_several_clients_add_up() {
        let mut all = Latencies::default();
        for client in 0..3u64 {
            let mut one = Latencies::default();
            for i in 0..100u64 {
                one.record(Duration::from_micros(1000 + 30 * i + client));
            }
            all.add(&one);
        }
        assert_eq!(all.count(), 300);
        assert!(
            (all.quantile_ms(0.5) - 2.5).abs() < 0.1,
            "{}",
            all.quantile_ms(0.5)
        );
        assert!(all.max_ms() > 3.9 && all.mean_ms() > 2.0);
    }
}
