//! Server choice within an upstream: round robin or least requests in flight.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::Server;
use crate::config::Balance;

/// Picks a server for each request; lock-free.
#[derive(Debug)]
pub struct Balancer {
    kind: Balance,
    next: AtomicUsize,
}

impl Balancer {
    /// A balancer of the given kind.
    pub fn new(kind: Balance) -> Self {
        Balancer {
            kind,
            next: AtomicUsize::new(0),
        }
    }

    /// The index of the server to use next.
    pub fn pick(&self, servers: &[Server]) -> usize {
        let n = servers.len();
        if n <= 1 {
            return 0;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        match self.kind {
            Balance::RoundRobin => start,
            Balance::LeastInFlight => {
                // Scan from the round-robin position so ties rotate instead of always
                // landing on the first server.
                let mut best = start;
                let mut best_load = servers[start].in_flight.load(Ordering::Relaxed);
                for k in 1..n {
                    let i = (start + k) % n;
                    let load = servers[i].in_flight.load(Ordering::Relaxed);
                    if load < best_load {
                        best = i;
                        best_load = load;
                    }
                }
                best
            }
        }
    }

    /// Like [`Balancer::pick`], among the servers `ok` accepts; `None` if it accepts none.
    pub fn pick_among(&self, servers: &[Server], ok: impl Fn(usize) -> bool) -> Option<usize> {
        let n = servers.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n.max(1);
        let mut best: Option<(usize, i64)> = None;
        for k in 0..n {
            let i = (start + k) % n;
            if !ok(i) {
                continue;
            }
            match self.kind {
                Balance::RoundRobin => return Some(i),
                Balance::LeastInFlight => {
                    let load = servers[i].in_flight.load(Ordering::Relaxed);
                    if best.map_or(true, |(_, b)| load < b) {
                        best = Some((i, load));
                    }
                }
            }
        }
        best.map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicI64;

    fn servers(loads: &[i64]) -> Vec<Server> {
        loads
            .iter()
            .enumerate()
            .map(|(i, l)| Server {
                authority: format!("127.0.0.1:{}", 3000 + i).parse().unwrap(),
                in_flight: AtomicI64::new(*l),
            })
            .collect()
    }

    #[test]
    fn round_robin_visits_each_server_in_turn() {
        let b = Balancer::new(Balance::RoundRobin);
        let s = servers(&[0, 0, 0]);
        let picks: Vec<usize> = (0..6).map(|_| b.pick(&s)).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn pick_among_skips_the_servers_it_is_told_to() {
        let b = Balancer::new(Balance::RoundRobin);
        let s = servers(&[0, 0, 0]);
        let picks: Vec<Option<usize>> = (0..4).map(|_| b.pick_among(&s, |i| i != 1)).collect();
        assert!(
            picks.iter().all(|p| matches!(p, Some(0) | Some(2))),
            "{picks:?}"
        );
        assert_eq!(b.pick_among(&s, |_| false), None);
    }

    #[test]
    fn least_in_flight_prefers_the_idle_server() {
        let b = Balancer::new(Balance::LeastInFlight);
        let s = servers(&[5, 0, 7]);
        for _ in 0..5 {
            assert_eq!(b.pick(&s), 1);
        }
    }
}
