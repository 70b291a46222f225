//! Why the admission layer refused or dropped a request.

/// The `reason` of `floodgate_shed_total`, one source of truth for metrics, errors, logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShedReason {
    /// The queue was full (or a higher class took this request's place in it).
    QueueFull,
    /// Waited `queue_timeout` without a slot.
    QueueTimeout,
    /// Dropped by the CoDel discipline: waited past the short overload timeout.
    Codel,
    /// Every server of the upstream is ejected: failed fast.
    CircuitOpen,
    /// The client went away while queued; nobody is answered.
    ClientGone,
}

impl ShedReason {
    /// Every reason, in metric-array order.
    pub const ALL: [ShedReason; 5] = [
        ShedReason::QueueFull,
        ShedReason::QueueTimeout,
        ShedReason::Codel,
        ShedReason::CircuitOpen,
        ShedReason::ClientGone,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ShedReason::QueueFull => "queue_full",
            ShedReason::QueueTimeout => "queue_timeout",
            ShedReason::Codel => "codel",
            ShedReason::CircuitOpen => "circuit_open",
            ShedReason::ClientGone => "client_gone",
        }
    }

    /// Index into per-reason arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}
