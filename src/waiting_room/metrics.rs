//! Waiting-room metric families (registered once per process) and per-room children.

use prometheus::{
    GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

/// Predicted-minus-actual wait, seconds: symmetric around zero, from "spot on" to
/// "ten minutes off" either way.
const ERROR_BUCKETS: &[f64] = &[
    -600.0, -120.0, -60.0, -30.0, -10.0, -5.0, -2.0, -1.0, 0.0, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
    120.0, 600.0,
];

/// The families, labelled by `room` only.
pub struct Families {
    waiting: IntGaugeVec,
    active: IntGaugeVec,
    admitted: IntCounterVec,
    issued: IntCounterVec,
    skipped: IntCounterVec,
    expected_wait: GaugeVec,
    estimate_error: HistogramVec,
    revoked: IntCounterVec,
    replays: IntCounterVec,
}

/// Why a pass was revoked (the `reason` label).
pub const REVOKE_REASONS: [&str; 3] = ["origin_end", "shared_request_rate", "shared_prefixes"];

impl Families {
    /// Creates the families and registers them in `registry`.
    pub fn register(registry: &Registry) -> Families {
        let g = |n: &str, h: &str| IntGaugeVec::new(Opts::new(n, h), &["room"]).expect("metric");
        let c = |n: &str, h: &str| IntCounterVec::new(Opts::new(n, h), &["room"]).expect("metric");
        let f = Families {
            waiting: g(
                "floodgate_waiting_room_waiting",
                "Visitors holding a ticket not yet admitted",
            ),
            active: g(
                "floodgate_waiting_room_active",
                "Shoppers inside: live passes plus admitted places not yet claimed",
            ),
            admitted: c(
                "floodgate_waiting_room_admitted_total",
                "Places admitted from the line",
            ),
            issued: c(
                "floodgate_waiting_room_tickets_issued_total",
                "Tickets handed out",
            ),
            skipped: c(
                "floodgate_waiting_room_abandoned_skipped_total",
                "Places skipped because nobody holding them was still polling",
            ),
            expected_wait: GaugeVec::new(
                Opts::new(
                    "floodgate_waiting_room_expected_wait_seconds",
                    "Expected wait for a visitor arriving now, from the measured admission rate",
                ),
                &["room"],
            )
            .expect("metric"),
            estimate_error: HistogramVec::new(
                HistogramOpts::new(
                    "floodgate_waiting_room_estimate_error_seconds",
                    "Wait predicted at ticket issue minus actual wait, for admitted visitors",
                )
                .buckets(ERROR_BUCKETS.to_vec()),
                &["room"],
            )
            .expect("metric"),
            revoked: IntCounterVec::new(
                Opts::new(
                    "floodgate_waiting_room_passes_revoked_total",
                    "Passes revoked: ended by the origin, or used past a sharing limit",
                ),
                &["room", "reason"],
            )
            .expect("metric"),
            replays: c(
                "floodgate_waiting_room_ticket_replays_total",
                "Tickets presented again after being exchanged for a pass (refused)",
            ),
        };
        for m in [
            Box::new(f.waiting.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(f.active.clone()),
            Box::new(f.admitted.clone()),
            Box::new(f.issued.clone()),
            Box::new(f.skipped.clone()),
            Box::new(f.expected_wait.clone()),
            Box::new(f.estimate_error.clone()),
            Box::new(f.revoked.clone()),
            Box::new(f.replays.clone()),
        ] {
            registry.register(m).expect("metric registered once");
        }
        f
    }

    /// Pre-resolved children for one room.
    pub fn room(&self, room: &str) -> RoomMetrics {
        RoomMetrics {
            waiting: self.waiting.with_label_values(&[room]),
            active: self.active.with_label_values(&[room]),
            admitted: self.admitted.with_label_values(&[room]),
            issued: self.issued.with_label_values(&[room]),
            skipped: self.skipped.with_label_values(&[room]),
            expected_wait: self.expected_wait.with_label_values(&[room]),
            estimate_error: self.estimate_error.with_label_values(&[room]),
            revoked: REVOKE_REASONS.map(|r| self.revoked.with_label_values(&[room, r])),
            replays: self.replays.with_label_values(&[room]),
        }
    }
}

/// Metric handles of one room.
#[derive(Clone)]
pub struct RoomMetrics {
    /// Waiting visitors.
    pub waiting: IntGauge,
    /// Active shoppers.
    pub active: IntGauge,
    /// Admitted places.
    pub admitted: IntCounter,
    /// Tickets issued.
    pub issued: IntCounter,
    /// Places skipped.
    pub skipped: IntCounter,
    /// Expected wait for a new arrival.
    pub expected_wait: prometheus::Gauge,
    /// Predicted minus actual wait.
    pub estimate_error: Histogram,
    /// Passes revoked, by [`REVOKE_REASONS`].
    pub revoked: [IntCounter; 3],
    /// Redeemed tickets presented again.
    pub replays: IntCounter,
}

impl RoomMetrics {
    /// Counts one revocation for `reason` (one of [`REVOKE_REASONS`]).
    pub fn revoked(&self, reason: &str) {
        if let Some(i) = REVOKE_REASONS.iter().position(|r| *r == reason) {
            self.revoked[i].inc();
        }
    }
}
