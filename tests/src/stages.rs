//! The service's own histograms (`ims_writer_stage_seconds`, `ims_endpoint_stage_seconds`,
//! `ims_writer_batch_commands`, ...), recorded in process for the benchmarks: a `metrics` recorder
//! that keeps each histogram in an HDR histogram, so that a benchmark can clear them when a phase
//! starts and read its quantiles over exactly that phase. (The Prometheus exporter renders
//! summaries whose quantiles cover a rolling window, not a phase.) Counters and gauges are not
//! kept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;
use metrics::{Counter, Gauge, Key, KeyName, Metadata, Recorder, SharedString, Unit};

/// Values are kept in millionths (microseconds for the `_seconds` histograms), three significant
/// digits, up to 2^40 millionths (18 minutes, or a count of a million).
const SCALE: f64 = 1e6;
const HIGHEST: u64 = 1 << 40;

type Shared = Arc<Mutex<Histogram<u64>>>;

/// The recorder; clones share the histograms.
#[derive(Clone, Debug, Default)]
pub struct StageRecorder {
    /// By the service's own key: the lookup each record makes allocates nothing.
    histograms: Arc<Mutex<HashMap<Key, Shared>>>,
}

/// One histogram's figures over the phase, in its own unit (seconds, or a count).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StageFigures {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// Whether `key` is histogram `name` with label `stage` ("" for none).
fn is(key: &Key, name: &str, stage: &str) -> bool {
    let label = key
        .labels()
        .find(|label| label.key() == "stage")
        .map_or("", |label| label.value());
    key.name() == name && label == stage
}

struct Recording(Shared);

impl metrics::HistogramFn for Recording {
    fn record(&self, value: f64) {
        let scaled = (value * SCALE).round().clamp(1.0, HIGHEST as f64) as u64;
        self.0
            .lock()
            .expect("stage histogram lock")
            .saturating_record(scaled);
    }
}

impl StageRecorder {
    /// Installs a recorder as the process's `metrics` recorder and returns it.
    pub fn install() -> Self {
        let recorder = Self::default();
        metrics::set_global_recorder(recorder.clone())
            .expect("no other metrics recorder is installed");
        recorder
    }

    /// Forgets every value recorded so far: a phase starts.
    pub fn reset(&self) {
        for histogram in self.histograms.lock().expect("stage map lock").values() {
            histogram.lock().expect("stage histogram lock").reset();
        }
    }

    /// The figures of histogram `name` with label `stage` ("" for none), if it was recorded.
    pub fn figures(&self, name: &str, stage: &str) -> Option<StageFigures> {
        let histograms = self.histograms.lock().expect("stage map lock");
        let histogram = histograms
            .iter()
            .find(|(key, _)| is(key, name, stage))?
            .1
            .lock()
            .expect("stage histogram lock");
        let at = |q: f64| histogram.value_at_quantile(q) as f64 / SCALE;
        Some(StageFigures {
            count: histogram.len(),
            mean: histogram.mean() / SCALE,
            p50: at(0.5),
            p99: at(0.99),
            p999: at(0.999),
            max: histogram.max() as f64 / SCALE,
        })
    }
}

impl Recorder for StageRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        Counter::noop()
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> metrics::Histogram {
        let mut histograms = self.histograms.lock().expect("stage map lock");
        let shared = match histograms.get(key) {
            Some(shared) => shared.clone(),
            None => histograms
                .entry(key.clone())
                .or_insert_with(|| {
                    Arc::new(Mutex::new(
                        Histogram::new_with_bounds(1, HIGHEST, 3).expect("valid bounds"),
                    ))
                })
                .clone(),
        };
        metrics::Histogram::from_arc(Arc::new(Recording(shared)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phase_sees_only_its_own_values_by_stage() {
        let recorder = StageRecorder::default();
        metrics::with_local_recorder(&recorder, || {
            metrics::histogram!("ims_writer_stage_seconds", "stage" => "apply").record(5.0);
            recorder.reset();
            for ms in 1..=100u32 {
                metrics::histogram!("ims_writer_stage_seconds", "stage" => "apply")
                    .record(f64::from(ms) / 1e3);
            }
            metrics::histogram!("ims_writer_batch_commands").record(22.0);
        });
        let apply = recorder
            .figures("ims_writer_stage_seconds", "apply")
            .unwrap();
        assert_eq!(apply.count, 100);
        assert!((apply.p50 - 0.050).abs() < 0.001, "{apply:?}");
        assert!((apply.p99 - 0.099).abs() < 0.001, "{apply:?}");
        assert!((apply.max - 0.100).abs() < 0.001, "{apply:?}");
        let batch = recorder.figures("ims_writer_batch_commands", "").unwrap();
        assert_eq!((batch.count, batch.max.round()), (1, 22.0));
        assert_eq!(recorder.figures("ims_writer_stage_seconds", "flush"), None);
    }
}
