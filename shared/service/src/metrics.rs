//! What both binaries' `/metrics` share: the exposition format and the process series.
//!
//! Each binary keeps its own [`Registry`] (tests run a control plane and several nodes in
//! one process; a global recorder would mix their series). Series that describe state the
//! process already keeps (node counts, buffer backlog, memory) are read when scraped, by a
//! [`Collector`], rather than copied into gauges that could drift from it.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The registry in the OpenMetrics text format (which Prometheus scrapes natively).
pub fn render(registry: &Registry) -> String {
    let mut out = String::with_capacity(4096);
    // Writing to a String cannot fail; an encoder error would be a bug in a collector.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::error!(error = %e, "cannot encode the metrics");
    }
    out
}

/// Histogram buckets for latencies from 50 µs to about 3 s, in seconds.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.000_05, 2.5, 13)
}

/// `process_resident_memory_bytes` (Linux; absent elsewhere), as Prometheus's own client
/// libraries name it.
#[derive(Debug, Default)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(rss) = resident_bytes() {
            let gauge = ConstGauge::new(rss as i64);
            let metric = encoder.encode_descriptor(
                "process_resident_memory_bytes",
                "Resident memory of this process",
                None,
                gauge.metric_type(),
            )?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}

/// Resident set size from `/proc/self/statm` (pages × page size; 4 KiB pages on the
/// platforms we ship, and on ARM64 kernels configured for 64 KiB pages it under-reports).
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Writes a gauge with one series per value of `label`.
pub fn encode_labelled(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &'static str,
    values: &[(String, i64)],
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Gauge,
    )?;
    for (value, n) in values {
        let labels = [(label, value.as_str())];
        let family = metric.encode_family(&labels)?;
        ConstGauge::new(*n).encode(family)?;
    }
    Ok(())
}

/// Writes one unlabelled gauge.
pub fn encode_gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: f64,
) -> Result<(), std::fmt::Error> {
    let gauge = ConstGauge::new(value);
    let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
    gauge.encode(metric)
}

/// Writes one counter (a value the process already counts; its name gets `_total`).
pub fn encode_counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let counter = prometheus_client::metrics::counter::ConstCounter::new(value);
    let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
    counter.encode(metric)
}
