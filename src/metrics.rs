//! What kiln counts, for `/metrics` in the Prometheus text format (the
//! `prometheus` crate; its 0.0.4 text is what `promtool check metrics` and
//! every scraper read): a leaf every layer may bump, importing nothing of
//! kiln. Counters and histograms are bumped where things happen; gauges of
//! state (machines, leases, bootstrap) are set from the brain at each scrape
//! (`edge::http`). Names and units follow Prometheus's conventions.

use std::sync::LazyLock;

use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    pub dhcp_received: IntCounterVec,
    pub dhcp_sent: IntCounterVec,
    pub dhcp_decisions: IntCounterVec,
    pub dhcp_leases: IntGaugeVec,
    pub tftp_transfers: IntCounterVec,
    pub tftp_bytes: IntCounter,
    pub http_requests: IntCounterVec,
    pub asset_bytes: IntCounter,
    pub configs: IntCounterVec,
    pub events: IntCounterVec,
    pub events_dropped: IntCounterVec,
    pub kmsg_lines: IntCounterVec,
    pub store_commit_seconds: Histogram,
    pub store_batch_size: Histogram,
    pub machine_state: IntGaugeVec,
    pub bootstrap_state: IntGaugeVec,
    pub store_available: IntGaugeVec,
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help).namespace("kiln"), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    let _ = r.register(Box::new(c.clone()));
    c
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help).namespace("kiln"), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    let _ = r.register(Box::new(g.clone()));
    g
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(
        HistogramOpts::new(name, help)
            .namespace("kiln")
            .buckets(buckets),
    )
    .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    let _ = r.register(Box::new(h.clone()));
    h
}

fn plain(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::with_opts(Opts::new(name, help).namespace("kiln"))
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    let _ = r.register(Box::new(c.clone()));
    c
}

fn build() -> Metrics {
    let r = Registry::new();
    let secs = exponential_buckets(0.0001, 2.0, 16).unwrap_or_default();
    let sizes = exponential_buckets(1.0, 2.0, 12).unwrap_or_default();
    Metrics {
        dhcp_received: counter(
            &r,
            "dhcp_packets_received_total",
            "DHCP packets decoded, by message type and socket (dhcp: port 67, proxy: 4011).",
            &["message_type", "mode"],
        ),
        dhcp_sent: counter(
            &r,
            "dhcp_packets_sent_total",
            "DHCP replies sent, by message type and socket.",
            &["message_type", "mode"],
        ),
        dhcp_decisions: counter(
            &r,
            "dhcp_decisions_total",
            "What kiln decided for each DHCP request: answered, or ignored and why.",
            &["decision", "reason"],
        ),
        dhcp_leases: gauge(
            &r,
            "dhcp_leases",
            "Addresses of each dynamic range, by state (bound, free).",
            &["range", "state"],
        ),
        tftp_transfers: counter(
            &r,
            "tftp_transfers_total",
            "TFTP read requests, by result (ok, not_found, refused, failed, busy: left unanswered at the transfer cap).",
            &["result"],
        ),
        tftp_bytes: plain(&r, "tftp_sent_bytes_total", "TFTP payload bytes sent."),
        http_requests: counter(
            &r,
            "http_requests_total",
            "HTTP requests, by route and status.",
            &["route", "status"],
        ),
        asset_bytes: plain(
            &r,
            "http_asset_sent_bytes_total",
            "Boot asset bytes sent over HTTP (the responses' lengths).",
        ),
        configs: counter(
            &r,
            "configs_total",
            "Machine configs served and refused, by reason.",
            &["result", "reason"],
        ),
        events: counter(
            &r,
            "events_total",
            "Talos events accepted from machines, by type.",
            &["type"],
        ),
        events_dropped: counter(
            &r,
            "events_dropped_total",
            "Talos events dropped, by reason.",
            &["reason"],
        ),
        kmsg_lines: counter(&r, "kmsg_lines_total", "Kernel log lines from machines, by result (stored, refused connection, malformed, not_stored).", &["result"]),
        store_commit_seconds: histogram(
            &r,
            "store_commit_seconds",
            "Time to make one batch of store writes durable.",
            secs,
        ),
        store_batch_size: histogram(
            &r,
            "store_lease_batch_size",
            "Writes (lease decisions, lifecycle notes, boot tokens, ...) made durable by one group commit.",
            sizes,
        ),
        machine_state: gauge(
            &r,
            "machine_state",
            "1 for each machine's current lifecycle state, 0 for the others.",
            &["cluster", "machine", "state"],
        ),
        bootstrap_state: gauge(
            &r,
            "cluster_bootstrap_state",
            "1 for each cluster's bootstrap state (pending, decided, done), 0 for the others.",
            &["cluster", "state"],
        ),
        store_available: gauge(
            &r,
            "store_available",
            "1 while the store takes writes (with etcd: a quorum answered within the fence time), 0 while kiln is fenced.",
            &["backend"],
        ),
        registry: r,
    }
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(build);

/// One DHCP packet in (`mode`: the socket, `dhcp` or `proxy`).
pub fn dhcp_received(message_type: &str, mode: &str) {
    METRICS
        .dhcp_received
        .with_label_values(&[&message_type.to_ascii_lowercase(), mode])
        .inc();
}

pub fn dhcp_sent(message_type: &str, mode: &str) {
    METRICS
        .dhcp_sent
        .with_label_values(&[&message_type.to_ascii_lowercase(), mode])
        .inc();
}

pub fn dhcp_decision(decision: &str, reason: &str) {
    METRICS
        .dhcp_decisions
        .with_label_values(&[decision, reason])
        .inc();
}

pub fn tftp_transfer(result: &str, bytes: u64) {
    METRICS.tftp_transfers.with_label_values(&[result]).inc();
    METRICS.tftp_bytes.inc_by(bytes);
}

pub fn http_request(route: &str, status: u16) {
    METRICS
        .http_requests
        .with_label_values(&[route, &status.to_string()])
        .inc();
}

pub fn asset_bytes(n: u64) {
    METRICS.asset_bytes.inc_by(n);
}

pub fn config(result: &str, reason: &str) {
    METRICS.configs.with_label_values(&[result, reason]).inc();
}

pub fn event(kind: &str) {
    METRICS.events.with_label_values(&[kind]).inc();
}

pub fn event_dropped(reason: &str) {
    METRICS.events_dropped.with_label_values(&[reason]).inc();
}

pub fn kmsg_line(result: &str) {
    METRICS.kmsg_lines.with_label_values(&[result]).inc();
}

pub fn store_commit(seconds: f64) {
    METRICS.store_commit_seconds.observe(seconds);
}

/// Whether the store is available (`backend`: redb, etcd).
pub fn store_available(backend: &str, up: bool) {
    METRICS
        .store_available
        .with_label_values(&[backend])
        .set(i64::from(up));
}

/// Writes made durable by one group commit.
pub fn store_batch(jobs: usize) {
    METRICS.store_batch_size.observe(jobs as f64);
}

/// The text exposition, version 0.0.4.
pub fn encode() -> String {
    let mut out = Vec::new();
    let _ = TextEncoder::new().encode(&METRICS.registry.gather(), &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// The content type of [`encode`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
