//! The reaper thread: expires unselected associations, removes ended ones and
//! closes idle pairs, waking often enough for the shortest configured time.

use crate::relay::shared::Context;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The reaper never sleeps longer than this, nor shorter than [`MIN_TICK`].
pub const MAX_TICK: Duration = Duration::from_secs(1);
/// See [`MAX_TICK`].
pub const MIN_TICK: Duration = Duration::from_millis(10);

/// How often the per-client rate buckets that are full again are forgotten:
/// a pass is linear in the clients tracked, so not on every tick.
pub const LIMITS_SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// How often the reaper wakes: a quarter of the shortest timeout it enforces,
/// so nothing outlives its timeout by more than a quarter.
pub fn tick(ctx: &Context) -> Duration {
    let c = ctx.config();
    let mut shortest = c.association_ttl.min(c.ended_retention.max(MIN_TICK));
    if !c.idle_timeout.is_zero() {
        shortest = shortest.min(c.idle_timeout);
    }
    (shortest / 4).clamp(MIN_TICK, MAX_TICK)
}

/// Runs until shutdown.
pub fn run(ctx: Arc<Context>) {
    let tick = tick(&ctx);
    let mut limits_swept = Instant::now();
    while !ctx.wait_stop(tick) {
        if limits_swept.elapsed() >= LIMITS_SWEEP_INTERVAL {
            limits_swept = Instant::now();
            ctx.limits.sweep(limits_swept);
        }
        let c = ctx.config();
        let sweep = ctx.table.sweep(
            Instant::now(),
            c.association_ttl,
            c.idle_timeout,
            c.ended_retention,
        );
        for id in &sweep.expired {
            crate::info!(
                association:% = id;
                "expired: no candidate selected within {:?}",
                c.association_ttl
            );
        }
        for id in &sweep.ended {
            crate::debug!(association:% = id; "removed: its relays have ended");
        }
        if sweep.idle_closed > 0 {
            crate::info!(
                pairs:% = name_pairs(&sweep.idle_pairs),
                idle_timeout = c.idle_timeout.as_secs_f64();
                "closed {} pair(s) idle for {:?}",
                sweep.idle_closed,
                c.idle_timeout
            );
        }
        ctx.metrics
            .associations_expired
            .fetch_add(sweep.expired.len() as u64, Ordering::Relaxed);
        ctx.metrics
            .idle_closed
            .fetch_add(sweep.idle_closed as u64, Ordering::Relaxed);
        for victim in sweep.victims {
            victim.kill();
        }
    }
}

/// The most pairs one idle-timeout line names; the rest are counted.
const NAMED_PAIRS: usize = 16;

/// `ASSOCIATION/CANDIDATE,...` for the idle-timeout line (each pair's own
/// `pair closed` line follows with its conn ids and byte counts).
fn name_pairs(pairs: &[(uuid::Uuid, uuid::Uuid)]) -> String {
    let mut names: Vec<String> = pairs
        .iter()
        .take(NAMED_PAIRS)
        .map(|(a, c)| format!("{a}/{c}"))
        .collect();
    if pairs.len() > NAMED_PAIRS {
        names.push(format!("and {} more", pairs.len() - NAMED_PAIRS));
    }
    names.join(",")
}
