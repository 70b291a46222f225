//! What the proof-of-work step costs the gateway: verifications per second on one core
//! (accepted, and refused for a bad signature), and what solving costs natively.
//!
//!     cargo run --release --example waiting_room_pow

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use floodgate::waiting_room::pow::{self, ProofOfWork};
use floodgate::waiting_room::token::Keys;

const N: usize = 20_000;

fn main() {
    let keys = Keys::new(vec![b"an example signing key, 32 bytes".to_vec()]).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    // Solving cost does not change verifying cost: solve cheap ones to have many.
    let easy = ProofOfWork::new(6, None);
    let answers: Vec<String> = (0..N)
        .map(|_| pow::solve(&easy.challenge(&keys, "sale", now)).unwrap())
        .collect();
    let t = Instant::now();
    for a in &answers {
        assert!(easy.verify(&keys, "sale", a, now + 1).is_ok());
    }
    report("accepted (signature, work, replay table)", t.elapsed());
    let t = Instant::now();
    let leaked = answers
        .iter()
        .filter(|a| easy.verify(&keys, "sale", a, now + 1).is_ok())
        .count();
    report("refused as replayed", t.elapsed());
    println!(
        "  replays accepted: {leaked} of {N} ({} live challenges in a table of {})",
        N,
        pow::REPLAY_SLOTS
    );
    let forged: Vec<String> = answers
        .iter()
        .map(|a| a.replacen(".6.", ".5.", 1))
        .collect();
    let t = Instant::now();
    for a in &forged {
        assert!(easy.verify(&keys, "sale", a, now + 1).is_err());
    }
    report("refused for a bad signature", t.elapsed());

    let real = ProofOfWork::new(pow::DEFAULT_DIFFICULTY, None);
    let rounds = 20;
    let t = Instant::now();
    for _ in 0..rounds {
        pow::solve(&real.challenge(&keys, "sale", now)).unwrap();
    }
    println!(
        "solving at the default {} bits natively: {:.1} ms on average over {rounds}",
        pow::DEFAULT_DIFFICULTY,
        t.elapsed().as_secs_f64() * 1000.0 / rounds as f64
    );
}

fn report(what: &str, took: Duration) {
    let per = took.as_secs_f64() / N as f64;
    println!(
        "{what}: {:.2} µs per answer, {:.0} per second on one core",
        per * 1e6,
        1.0 / per
    );
}
