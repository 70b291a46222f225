//! Cost of the admission controller on the hot path: an uncontended slot, and a slot
//! passed through a queue of contending tasks. Run: `cargo bench --bench admission`.

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};

use floodgate::admission::{Admission, AdmissionMetrics, Priority, Settings};
use floodgate::config::admission::AdmissionTuning;
use floodgate::config::Concurrency;
use floodgate::metrics::Metrics;

fn admission(limit: usize) -> Arc<Admission> {
    let metrics = Metrics::new();
    let settings = Settings {
        max_concurrency: Concurrency::Fixed(limit),
        queue_size: 100_000,
        queue_timeout: Duration::from_secs(30),
        tuning: AdmissionTuning {
            codel_target: Duration::from_millis(50),
            codel_interval: Duration::from_millis(500),
            overload_queue_delay: Duration::from_millis(5),
            min_concurrency: 1,
            max_concurrency_limit: 1000,
        },
    };
    Admission::new(settings, AdmissionMetrics::new(&metrics, "bench"))
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let free = admission(64);
    c.bench_function("acquire_release_uncontended", |b| {
        b.to_async(&rt).iter(|| {
            let a = free.clone();
            async move { drop(a.acquire(Priority::Normal).await.unwrap()) }
        })
    });

    // 256 tasks through 8 slots: every acquire but the first 8 goes through the queue.
    let tight = admission(8);
    c.bench_function("queue_256_tasks_through_8_slots", |b| {
        b.to_async(&rt).iter(|| {
            let a = tight.clone();
            async move {
                let tasks: Vec<_> = (0..256)
                    .map(|i| {
                        let a = a.clone();
                        let class = [Priority::Low, Priority::Normal, Priority::High][i % 3];
                        tokio::spawn(async move {
                            let p = a.acquire(class).await.unwrap();
                            tokio::task::yield_now().await;
                            drop(p);
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
            }
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
