//! The Prometheus series of API.md, kept in memory and rendered in the text
//! exposition format. Counters only grow; the queue gauge is read from the
//! store at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use fedid_domain::key_directory::{FetchOutcome, KeyFetchObserver};
use fedid_domain::services::{DeliveryObserver, FederationGauges};

const BUCKETS: [f64; 12] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (bucket, count) in BUCKETS.iter().zip(self.counts.iter_mut()) {
            if seconds <= *bucket {
                *count += 1;
            }
        }
        self.sum += seconds;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bucket, count) in BUCKETS.iter().zip(self.counts.iter()) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bucket}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", self.count);
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

#[derive(Debug, Default)]
struct Series {
    requests: BTreeMap<(String, String, u16), u64>,
    request_duration: BTreeMap<String, Histogram>,
    inbox: BTreeMap<String, u64>,
    deliveries: BTreeMap<&'static str, u64>,
    delivery_duration: Histogram,
    key_fetches: BTreeMap<&'static str, u64>,
    connections_refused: u64,
}

#[derive(Debug, Default)]
pub struct Metrics {
    series: Mutex<Series>,
}

/// The `# HELP` and `# TYPE` lines of a series.
fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn escape(label: &str) -> String {
    label.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Metrics {
    fn with<T>(&self, f: impl FnOnce(&mut Series) -> T) -> T {
        f(&mut self.series.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        self.with(|s| {
            *s.requests
                .entry((route.to_owned(), method.to_owned(), status))
                .or_default() += 1;
            s.request_duration.entry(route.to_owned()).or_default().observe(seconds);
        });
    }

    /// A connection shut down for being over its address's limit.
    pub fn connection_refused(&self) {
        self.with(|s| s.connections_refused += 1);
    }

    /// One envelope answered by the inbox, by code (`accepted`, `duplicate` or the error code).
    pub fn inbox(&self, code: &str) {
        self.with(|s| *s.inbox.entry(code.to_owned()).or_default() += 1);
    }

    pub fn render(&self, gauges: Option<FederationGauges>) -> String {
        let mut out = String::new();
        self.with(|s| {
            header(
                &mut out,
                "fedid_http_requests_total",
                "counter",
                "HTTP requests answered, by route template, method and status.",
            );
            for ((route, method, status), n) in &s.requests {
                let _ = writeln!(
                    out,
                    "fedid_http_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {n}",
                    escape(route)
                );
            }
            header(
                &mut out,
                "fedid_http_request_duration_seconds",
                "histogram",
                "Time to answer HTTP requests, by route template.",
            );
            for (route, h) in &s.request_duration {
                h.render(
                    &mut out,
                    "fedid_http_request_duration_seconds",
                    &format!("route=\"{}\"", escape(route)),
                );
            }
            header(
                &mut out,
                "fedid_inbox_envelopes_total",
                "counter",
                "Envelopes answered by the inbox, by outcome code.",
            );
            for (code, n) in &s.inbox {
                let _ = writeln!(out, "fedid_inbox_envelopes_total{{code=\"{}\"}} {n}", escape(code));
            }
            header(
                &mut out,
                "fedid_deliveries_total",
                "counter",
                "Outbound envelope deliveries, by outcome.",
            );
            for (outcome, n) in &s.deliveries {
                let _ = writeln!(out, "fedid_deliveries_total{{outcome=\"{outcome}\"}} {n}");
            }
            header(
                &mut out,
                "fedid_delivery_duration_seconds",
                "histogram",
                "Time taken by outbound deliveries.",
            );
            s.delivery_duration
                .render(&mut out, "fedid_delivery_duration_seconds", "");
            header(
                &mut out,
                "fedid_key_fetches_total",
                "counter",
                "Remote key lookups, by outcome.",
            );
            for (outcome, n) in &s.key_fetches {
                let _ = writeln!(out, "fedid_key_fetches_total{{outcome=\"{outcome}\"}} {n}");
            }
            header(
                &mut out,
                "fedid_connections_refused_total",
                "counter",
                "Connections shut down for being over their address's limit.",
            );
            let _ = writeln!(out, "fedid_connections_refused_total {}", s.connections_refused);
        });
        if let Some(gauges) = gauges {
            header(
                &mut out,
                "fedid_revocations_queued",
                "gauge",
                "Revocations queued for delivery, all users.",
            );
            let _ = writeln!(out, "fedid_revocations_queued {}", gauges.queued);
            header(
                &mut out,
                "fedid_revocations_scheduled",
                "gauge",
                "Queued revocations the server retries by itself (long-lived REVOKEs).",
            );
            let _ = writeln!(out, "fedid_revocations_scheduled {}", gauges.scheduled);
            header(
                &mut out,
                "fedid_peer_domains",
                "gauge",
                "Peer domains delivered to, by state (healthy, failing, unreachable).",
            );
            for (state, n) in gauges.peer_domains {
                let _ = writeln!(out, "fedid_peer_domains{{state=\"{}\"}} {n}", state.as_str());
            }
            header(
                &mut out,
                "fedid_key_log_conflicts",
                "gauge",
                "Key-log conflicts recorded for the operator (fedid-server federation conflicts).",
            );
            let _ = writeln!(out, "fedid_key_log_conflicts {}", gauges.key_log_conflicts);
        }
        out
    }
}

impl DeliveryObserver for Metrics {
    fn delivery(&self, delivered: bool, seconds: f64) {
        self.with(|s| {
            *s.deliveries
                .entry(if delivered { "delivered" } else { "failed" })
                .or_default() += 1;
            s.delivery_duration.observe(seconds);
        });
    }
}

impl KeyFetchObserver for Metrics {
    fn key_fetch(&self, outcome: FetchOutcome) {
        self.with(|s| *s.key_fetches.entry(outcome.as_str()).or_default() += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_has_help_and_type_lines() {
        let metrics = Metrics::default();
        metrics.request("/healthz", "GET", 200, 0.001);
        let text = metrics.render(Some(FederationGauges {
            queued: 0,
            scheduled: 0,
            key_log_conflicts: 0,
            peer_domains: [
                (fedid_domain::PeerDomainState::Healthy, 0),
                (fedid_domain::PeerDomainState::Failing, 0),
                (fedid_domain::PeerDomainState::Unreachable, 0),
            ],
        }));
        let typed: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        assert!(typed.len() >= 8);
        for name in typed {
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
        }
    }
}
