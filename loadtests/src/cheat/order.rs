//! Admission order against arrival order as Kendall's tau with ties, the most
//! people inside at once as the visitors saw it, and request latency percentiles.
//!
//! A pair of people is tied (and left out of tau) when their arrivals are within one
//! tick of each other, or when both were admitted within the same tick (counted from
//! the run's start), or both never were. Of the other pairs, a pair is concordant when
//! the one who arrived first was admitted first. Tau is `(C − D) / (C + D)`: 1.0 means
//! nobody who arrived a tick or more after someone else got in a tick or more before
//! them. Someone never admitted counts as admitted after everyone who was.

use super::people::{Outcome, Person, Sample};
use serde::Serialize;

/// Pair counts and tau.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Tau {
    /// Pairs in the same order both ways.
    pub concordant: u64,
    /// Pairs in opposite orders.
    pub discordant: u64,
    /// Pairs tied on either side.
    pub tied: u64,
    /// `(C − D) / (C + D)`; none without an untied pair.
    pub tau: Option<f64>,
}

/// Kendall's tau of `x` against `y` over the pairs neither `x_tied` nor `y_tied`;
/// `discord(i, j)` is told each discordant pair (`x[i] < x[j]`).
pub fn kendall(
    x: &[f64],
    y: &[f64],
    x_tied: impl Fn(f64, f64) -> bool,
    y_tied: impl Fn(f64, f64) -> bool,
    mut discord: impl FnMut(usize, usize),
) -> Tau {
    let mut t = Tau::default();
    for i in 0..x.len() {
        for j in i + 1..x.len() {
            if x_tied(x[i], x[j]) || y_tied(y[i], y[j]) {
                t.tied += 1;
            } else if (x[i] < x[j]) == (y[i] < y[j]) {
                t.concordant += 1;
            } else {
                t.discordant += 1;
                if x[i] < x[j] {
                    discord(i, j);
                } else {
                    discord(j, i);
                }
            }
        }
    }
    let n = t.concordant + t.discordant;
    t.tau = (n > 0).then(|| (t.concordant as f64 - t.discordant as f64) / n as f64);
    t
}

/// Arrival times within `tick` of each other are ties.
pub fn within(tick: f64) -> impl Fn(f64, f64) -> bool {
    move |a, b| (a - b).abs() < tick
}

/// Admission times in the same `tick` (from the start) are ties; so are two never.
pub fn same_tick(tick: f64) -> impl Fn(f64, f64) -> bool {
    move |a, b| (a.is_infinite() && b.is_infinite()) || (a / tick).floor() == (b / tick).floor()
}

/// One side of a discordant pair.
#[derive(Debug, Clone, Serialize)]
pub struct Who {
    /// Person index (and address).
    pub id: usize,
    /// Arrival, seconds after the start.
    pub arrived_s: f64,
    /// Ticket number.
    pub ticket: Option<u64>,
    /// Admission, seconds after the start.
    pub admitted_s: Option<f64>,
    /// The instance whose answer let them in.
    pub via: Option<usize>,
}

/// Someone who arrived first and was admitted later than someone else.
#[derive(Debug, Clone, Serialize)]
pub struct Discord {
    /// The earlier arrival.
    pub first: Who,
    /// The later arrival, admitted first.
    pub second: Who,
}

/// The order of the whole line.
#[derive(Debug, Clone, Serialize)]
pub struct OrderReport {
    /// The tick, milliseconds.
    pub tick_ms: f64,
    /// People, and of them admitted.
    pub people: usize,
    /// See `people`.
    pub admitted: usize,
    /// Admission order against arrival order: the figure.
    pub arrival_admission: Tau,
    /// Ticket numbers against arrival order (the numbering; people with a number).
    pub arrival_ticket: Tau,
    /// Admission order against ticket numbers (the front; people with a number).
    pub ticket_admission: Tau,
    /// The worst discordant pairs of the figure (at most [`MAX_SHOWN`]), the longest
    /// admission inversion first.
    pub discordant: Vec<Discord>,
}

/// Discordant pairs kept in the report.
pub const MAX_SHOWN: usize = 5;

fn who(id: usize, o: &Outcome) -> Who {
    Who {
        id,
        arrived_s: o.arrived_s,
        ticket: o.ticket,
        admitted_s: o.admitted_s,
        via: o.admitted_via,
    }
}

/// The line's order, `tick` in seconds; people who arrived in the pre-queue are one
/// tie on the arrival side (their order is drawn by lot).
pub fn order(lived: &[(Person, Outcome)], tick: f64) -> OrderReport {
    let arrival: Vec<f64> = lived
        .iter()
        .map(|(_, o)| if o.prequeue { -1.0 } else { o.arrived_s })
        .collect();
    let admission: Vec<f64> = lived
        .iter()
        .map(|(_, o)| o.admitted_s.unwrap_or(f64::INFINITY))
        .collect();
    let mut pairs = Vec::new();
    let arrival_admission = kendall(
        &arrival,
        &admission,
        within(tick),
        same_tick(tick),
        |i, j| pairs.push((i, j)),
    );
    pairs.sort_by(|a, b| {
        let gap = |&(i, j): &(usize, usize)| admission[i] - admission[j];
        gap(b).total_cmp(&gap(a))
    });
    let discordant = pairs
        .iter()
        .take(MAX_SHOWN)
        .map(|&(i, j)| Discord {
            first: who(lived[i].0.id, &lived[i].1),
            second: who(lived[j].0.id, &lived[j].1),
        })
        .collect();
    let numbered: Vec<usize> = (0..lived.len())
        .filter(|&i| lived[i].1.ticket.is_some())
        .collect();
    let pick = |v: &[f64]| numbered.iter().map(|&i| v[i]).collect::<Vec<_>>();
    let tickets: Vec<f64> = numbered
        .iter()
        .map(|&i| lived[i].1.ticket.unwrap_or(0) as f64)
        .collect();
    let equal = |a: f64, b: f64| a == b;
    OrderReport {
        tick_ms: tick * 1000.0,
        people: lived.len(),
        admitted: lived.iter().filter(|(_, o)| o.admitted_s.is_some()).count(),
        arrival_admission,
        arrival_ticket: kendall(&pick(&arrival), &tickets, within(tick), equal, |_, _| {}),
        ticket_admission: kendall(
            &tickets,
            &pick(&admission),
            equal,
            same_tick(tick),
            |_, _| {},
        ),
        discordant,
    }
}

/// The most people inside at once as the visitors saw it: from the answer that let
/// each in to the shop's answer ending the session (or their last answer). The
/// gateway counted each of them inside for at least that long (the pass exists
/// before its answer is sent and is revoked before the end answer is), so this is a
/// lower bound of the room's true count.
pub fn inside_max(lived: &[(Person, Outcome)]) -> u64 {
    let mut events: Vec<(f64, i64)> = Vec::new();
    for (_, o) in lived {
        if let Some(a) = o.admitted_s {
            events.push((a, 1));
            events.push((o.left_s.unwrap_or(o.last_s).max(a), -1));
        }
    }
    // Leaves before entries at one instant: a lower bound.
    events.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut now, mut max) = (0i64, 0i64);
    for (_, d) in events {
        now += d;
        max = max.max(now);
    }
    max as u64
}

/// Percentiles of one kind of request.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Pct {
    /// Requests answered.
    pub count: usize,
    /// Median, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// Slowest, milliseconds.
    pub max_ms: f64,
}

/// Nearest-rank percentiles.
pub fn pct(mut ms: Vec<f32>) -> Pct {
    if ms.is_empty() {
        return Pct::default();
    }
    ms.sort_by(f32::total_cmp);
    let at = |q: f64| f64::from(ms[((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1]);
    Pct {
        count: ms.len(),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        max_ms: at(1.0),
    }
}

/// Visitors' request latencies.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    /// Every answered visitor request.
    pub all: Pct,
    /// Status polls (answered by the gateway itself).
    pub polls: Pct,
    /// Page loads (waiting pages, and the shop's pages once inside).
    pub pages: Pct,
}

/// Latency of every answered request the people made.
pub fn latency(lived: &[(Person, Outcome)]) -> Latency {
    let all = || lived.iter().flat_map(|(_, o)| o.samples.iter());
    let of = |f: fn(&Sample) -> bool| pct(all().filter(|s| f(s)).map(|s| s.ms).collect());
    Latency {
        all: of(|_| true),
        polls: of(|s| s.poll),
        pages: of(|s| !s.poll),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tau_counts_pairs_and_leaves_ties_out() {
        let never = f64::INFINITY;
        // Arrivals 0, 1, 2, 3 s; admissions 5, 6, 6.01 (same tick), never.
        let t = kendall(
            &[0.0, 1.0, 2.0, 3.0],
            &[5.0, 6.0, 6.01, never],
            within(0.05),
            same_tick(0.05),
            |_, _| {},
        );
        assert_eq!((t.concordant, t.discordant, t.tied), (5, 0, 1));
        assert_eq!(t.tau, Some(1.0));
        // The second arrival admitted before the first: one discordant pair, told.
        let mut told = Vec::new();
        let t = kendall(
            &[0.0, 1.0, 1.02],
            &[7.0, 5.0, 6.0],
            within(0.05),
            same_tick(0.05),
            |i, j| told.push((i, j)),
        );
        assert_eq!((t.concordant, t.discordant, t.tied), (0, 2, 1));
        assert_eq!(t.tau, Some(-1.0));
        assert_eq!(told, [(0, 1), (0, 2)]);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let p = pct((1..=100).map(|x| x as f32).collect());
        assert_eq!(
            (p.p50_ms, p.p99_ms, p.max_ms, p.count),
            (50.0, 99.0, 100.0, 100)
        );
        assert_eq!(pct(Vec::new()).count, 0);
    }
}
