//! The process's own figures on the metrics endpoint, read from `/proc/self` at each scrape:
//! the names the Prometheus client libraries use for process metrics (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes` and the rest), plus the anonymous resident memory (the heap,
//! which grows with the store: see the README's Performance section) and the peak resident
//! memory, for capacity planning.
//!
//! Linux only; elsewhere, or when `/proc` cannot be read, the scrape leaves them out and still
//! answers.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// One reading of the process's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessFigures {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    /// Resident anonymous memory (`RssAnon`): the heap and other private memory, not files.
    pub resident_anonymous_bytes: Option<u64>,
    /// The most resident memory since the start (`VmHWM`).
    pub resident_peak_bytes: Option<u64>,
    pub virtual_bytes: u64,
    pub threads: u64,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub start_time_seconds: Option<f64>,
}

impl ProcessFigures {
    /// This process's figures now; `None` where `/proc/self` cannot be read.
    #[cfg(target_os = "linux")]
    pub fn read() -> Option<ProcessFigures> {
        use procfs::process::{LimitValue, Process};
        let me = Process::myself().ok()?;
        let stat = me.stat().ok()?;
        let status = me.status().ok();
        let ticks = procfs::ticks_per_second() as f64;
        let kib = |value: Option<u64>| value.map(|kib| kib * 1024);
        Some(ProcessFigures {
            cpu_seconds: (stat.utime + stat.stime) as f64 / ticks,
            resident_bytes: stat.rss * procfs::page_size(),
            resident_anonymous_bytes: kib(status.as_ref().and_then(|status| status.rssanon)),
            resident_peak_bytes: kib(status.as_ref().and_then(|status| status.vmhwm)),
            virtual_bytes: stat.vsize,
            threads: u64::try_from(stat.num_threads).unwrap_or(0),
            open_fds: me.fd_count().ok().map(|n| n as u64),
            max_fds: me
                .limits()
                .ok()
                .and_then(|limits| match limits.max_open_files.soft_limit {
                    LimitValue::Value(n) => Some(n),
                    LimitValue::Unlimited => None,
                }),
            start_time_seconds: procfs::boot_time_secs()
                .ok()
                .map(|boot| boot as f64 + stat.starttime as f64 / ticks),
        })
    }

    #[cfg(not(target_os = "linux"))]
    pub fn read() -> Option<ProcessFigures> {
        None
    }
}

/// Registered with an unprefixed registry: the standard names carry no `popmaster_` prefix.
#[derive(Debug, Default)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        match ProcessFigures::read() {
            Some(figures) => encode_figures(&figures, encoder),
            None => Ok(()),
        }
    }
}

/// Writes one metric and its descriptor.
fn encode_one(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    metric: &impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    metric.encode(encoder.encode_descriptor(name, help, unit, metric.metric_type())?)
}

fn encode_figures(figures: &ProcessFigures, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
    encode_one(
        &mut encoder,
        "process_cpu",
        "Total user and system CPU time spent in seconds",
        Some(&Unit::Seconds),
        &ConstCounter::new(figures.cpu_seconds),
    )?;
    let gauges: [(&str, &str, Option<Unit>, Option<u64>); 7] = [
        (
            "process_resident_memory",
            "Resident memory size in bytes",
            Some(Unit::Bytes),
            Some(figures.resident_bytes),
        ),
        (
            "process_resident_anonymous_memory",
            "Resident anonymous memory in bytes (RssAnon: the heap; it grows with the store)",
            Some(Unit::Bytes),
            figures.resident_anonymous_bytes,
        ),
        (
            "process_resident_memory_max",
            "The most resident memory since the start, in bytes (VmHWM)",
            Some(Unit::Bytes),
            figures.resident_peak_bytes,
        ),
        (
            "process_virtual_memory",
            "Virtual memory size in bytes",
            Some(Unit::Bytes),
            Some(figures.virtual_bytes),
        ),
        (
            "process_threads",
            "Number of OS threads in the process",
            None,
            Some(figures.threads),
        ),
        (
            "process_open_fds",
            "Number of open file descriptors",
            None,
            figures.open_fds,
        ),
        (
            "process_max_fds",
            "Maximum number of open file descriptors",
            None,
            figures.max_fds,
        ),
    ];
    for (name, help, unit, value) in gauges {
        if let Some(value) = value {
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            encode_one(&mut encoder, name, help, unit.as_ref(), &gauge)?;
        }
    }
    if let Some(started) = figures.start_time_seconds {
        encode_one(
            &mut encoder,
            "process_start_time",
            "Start time of the process since the Unix epoch in seconds",
            Some(&Unit::Seconds),
            &ConstGauge::new(started),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::prometheus_text;
    use prometheus_client::registry::Registry;

    #[track_caller]
    fn value_of(text: &str, name: &str) -> f64 {
        let line = text
            .lines()
            .find(|line| line.split(' ').next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"));
        line.rsplit(' ').next().expect("a value").parse().expect("a number")
    }

    #[test]
    fn figures_are_encoded_under_the_standard_names() {
        let figures = ProcessFigures {
            cpu_seconds: 12.5,
            resident_bytes: 300 << 20,
            resident_anonymous_bytes: Some(200 << 20),
            resident_peak_bytes: None,
            virtual_bytes: 1 << 30,
            threads: 17,
            open_fds: Some(40),
            max_fds: Some(1024),
            start_time_seconds: Some(1_700_000_000.5),
        };
        #[derive(Debug)]
        struct Fixed(ProcessFigures);
        impl Collector for Fixed {
            fn encode(&self, encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
                encode_figures(&self.0, encoder)
            }
        }
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Fixed(figures)));
        let mut text = String::new();
        prometheus_text::encode(&mut text, &registry).expect("encodes");
        assert_eq!(value_of(&text, "process_cpu_seconds_total"), 12.5);
        assert!(text.contains("# TYPE process_cpu_seconds_total counter"), "{text}");
        assert!(text.lines().any(|line| line == "process_threads 17"), "{text}");
        assert_eq!(value_of(&text, "process_resident_memory_bytes"), (300 << 20) as f64);
        assert_eq!(
            value_of(&text, "process_resident_anonymous_memory_bytes"),
            (200 << 20) as f64
        );
        assert_eq!(value_of(&text, "process_virtual_memory_bytes"), (1u64 << 30) as f64);
        assert_eq!(value_of(&text, "process_threads"), 17.0);
        assert_eq!(value_of(&text, "process_open_fds"), 40.0);
        assert_eq!(value_of(&text, "process_max_fds"), 1024.0);
        assert_eq!(value_of(&text, "process_start_time_seconds"), 1_700_000_000.5);
        // A figure that could not be read is left out, not shown as 0.
        assert!(!text.contains("process_resident_memory_max_bytes"), "{text}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_reads_its_own_figures() {
        let before = ProcessFigures::read().expect("/proc/self is readable on Linux");
        let held: Vec<u8> = std::hint::black_box(vec![1; 32 << 20]);
        let after = ProcessFigures::read().expect("readable");
        std::hint::black_box(&held);
        assert!(after.resident_bytes >= 32 << 20, "{after:?}");
        assert!(
            after.resident_anonymous_bytes.expect("RssAnon") >= 32 << 20,
            "{after:?}"
        );
        // Not compared with resident_bytes: /proc/self/stat and /proc/self/status read the
        // kernel's per-thread memory counters at different moments.
        assert!(after.resident_peak_bytes.expect("VmHWM") >= 32 << 20, "{after:?}");
        assert!(after.virtual_bytes >= after.resident_bytes);
        assert!(after.threads >= 1);
        assert!(after.open_fds.expect("fd count") >= 3, "{after:?}");
        assert!(after.cpu_seconds >= before.cpu_seconds);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs_f64();
        let started = after.start_time_seconds.expect("start time");
        assert!(
            started <= now + 2.0 && started > now - 86_400.0 * 365.0,
            "{started} against {now}"
        );
    }
}
