//! The watch on parked accepts: one `poll(2)` over every parked socket
//! notices a peer that left (FIN, reset) and frees its candidate.

use crate::relay::shared::Context;
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// The longest one poll waits before the parked set is read again, so an
/// accept parked meanwhile is watched within this, and its peer's leaving is
/// noticed well within a second.
pub const WATCH_ROUND: Duration = Duration::from_millis(250);

/// Runs until shutdown: each round takes the parked sockets, polls them all
/// at once for at most [`WATCH_ROUND`], and removes those whose peer left.
/// A poll returns as soon as one peer leaves, so a burst of dead accepts is
/// cleared as fast as it comes.
pub fn run(ctx: Arc<Context>) {
    while !ctx.stopping() {
        match round(&ctx, WATCH_ROUND) {
            Some(_) => {}
            // Nothing parked, or the poll failed (out of memory for its set,
            // most likely): look again next round.
            None => {
                if ctx.wait_stop(WATCH_ROUND) {
                    return;
                }
            }
        }
    }
}

/// Removes at once the parked accepts whose peers have left, without
/// waiting: for an accept that finds the cap reached. Returns how many.
pub fn reclaim(ctx: &Context) -> usize {
    round(ctx, Duration::ZERO).unwrap_or(0)
}

/// One round: polls every parked socket for at most `limit` and removes
/// those whose peer left. `None` when nothing is parked or the poll failed.
fn round(ctx: &Context, limit: Duration) -> Option<usize> {
    let parked: Vec<_> = ctx
        .table
        .parked_sockets()
        .into_iter()
        .filter_map(|p| p.killer.socket().map(|sock| (p, sock)))
        .collect();
    if parked.is_empty() {
        return None;
    }
    let socks: Vec<&TcpStream> = parked.iter().map(|(_, sock)| &**sock).collect();
    let gone = match crate::relay::socket::poll_gone(&socks, limit) {
        Ok(gone) => gone,
        Err(e) => {
            crate::warn!("cannot poll {} parked accept(s): {e}", socks.len());
            return None;
        }
    };
    let mut removed = 0;
    for i in gone {
        let (dead, _) = &parked[i];
        if let Some(victim) = ctx.table.remove_dead(dead) {
            crate::info!(
                association:% = dead.association,
                candidate:% = dead.candidate;
                "parked accept closed: its peer left"
            );
            victim.kill();
            removed += 1;
        }
    }
    if removed > 0 {
        ctx.metrics
            .parked_gone
            .fetch_add(removed as u64, Ordering::Relaxed);
    }
    Some(removed)
}
