//! The byte pump of one direction of a connection.
//!
//! With no active fault the direction runs a fast path: one large buffer,
//! one read, one write, and a wake-up when the fault set changes. With
//! faults it reads timestamped chunks into a bounded queue through its
//! [`Chain`] and writes each queued item when its time comes. Both paths
//! wait on the fault board, so a fault added or removed applies at once, and
//! every wait is interruptible. A FIN from the source is passed on as a
//! half-close; the other direction keeps flowing.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::Ordering;
use tokio::time::Instant;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::sync::watch;

use super::{DirStats, ProxyStats};
use crate::faults::Direction;
use crate::faults::chain::{Chain, ChainKey, FaultBoard, Item, Payload};

/// Fast-path buffer: large enough that bulk transfers need few syscalls.
const FAST_BUF: usize = 64 * 1024;
/// Faulted-path read size: Toxiproxy reads at most 32 KiB per chunk, and
/// faults such as `slicer` act per chunk, so keep its granularity.
const CHUNK: usize = 32 * 1024;
/// Queue bound in items (Toxiproxy's latency buffer holds 1024 chunks).
const MAX_ITEMS: usize = 1024;
/// Queue bound in bytes: a held or slowed direction stops reading here, so
/// the sender sees back-pressure instead of shakedown growing without bound.
const MAX_QUEUED_BYTES: usize = 8 * 1024 * 1024;

/// Which peer an I/O error came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The client that connected to the proxy.
    Client,
    /// The upstream server.
    Upstream,
}

/// How a direction ended.
#[derive(Debug)]
pub enum Outcome {
    /// The source closed and the FIN was passed on.
    Finished,
    /// A fault closes the connection.
    Close,
    /// A fault resets the connection.
    Reset,
    /// A peer failed.
    Failed(Side, io::Error),
}

/// Everything one direction needs to know about its place.
pub struct PumpCtx<'a> {
    /// The proxy's live faults.
    pub board: &'a FaultBoard,
    /// Seeded identity of this direction.
    pub key: ChainKey,
    /// The proxy's live counters.
    pub stats: &'a ProxyStats,
}

fn sides(dir: Direction) -> (Side, Side) {
    match dir {
        Direction::Upstream => (Side::Client, Side::Upstream),
        Direction::Downstream => (Side::Upstream, Side::Client),
    }
}

/// Full reads in a row after which a direction counts as bulk and moves to
/// `splice`: a request/response protocol rarely fills 64 KiB twice running.
const BULK_AFTER: u32 = 4;

/// Runs one direction until it ends. `src` is read, `dst` written.
pub async fn pump(src: &mut ReadHalf<'_>, dst: &mut WriteHalf<'_>, ctx: PumpCtx<'_>) -> Outcome {
    let (src_side, dst_side) = sides(ctx.key.dir);
    let dir_stats: &DirStats = ctx.stats.dir(ctx.key.dir);
    let count = |n: usize| {
        dir_stats.received.fetch_add(n as u64, Ordering::Relaxed);
        dir_stats.sent.fetch_add(n as u64, Ordering::Relaxed);
    };
    let activated = |i: usize| ctx.stats.activated(i);
    let mut changes: watch::Receiver<u64> = ctx.board.subscribe();
    changes.mark_unchanged();
    let mut chain = Chain::new(ctx.key);
    if let Some(item) = chain.rebuild(
        ctx.board.snapshot().direction(ctx.key.dir),
        Instant::now(),
        &activated,
    ) {
        return control(item);
    }
    let mut fast_buf: Vec<u8> = Vec::new();
    let mut read_buf = BytesMut::new();
    let mut queue: VecDeque<Item> = VecDeque::new();
    let mut queued_bytes = 0usize;
    let mut reading = true;
    let mut full_reads = 0u32;
    let mut pipe: Option<super::splice::Pipe> = None;

    loop {
        // One wake-up registration per fault-set version, kept across reads:
        // the hot path never re-registers with the board.
        let changed = changes.changed();
        tokio::pin!(changed);
        let event = loop {
            if reading && queue.is_empty() && chain.is_passthrough() {
                if let Some(p) = &pipe {
                    // Bulk fast path: socket -> pipe -> socket, in the kernel.
                    tokio::select! {
                        biased;
                        r = &mut changed => break r,
                        r = src.as_ref().readable() => if let Err(e) = r {
                            return Outcome::Failed(src_side, e);
                        },
                    }
                    let n = match p.fill(src.as_ref()) {
                        Ok(0) => return finish(dst, dst_side).await,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        Err(e) => return Outcome::Failed(src_side, e),
                    };
                    let mut left = n;
                    while left > 0 {
                        if let Err(e) = dst.as_ref().writable().await {
                            return Outcome::Failed(dst_side, e);
                        }
                        match p.drain(dst.as_ref(), left) {
                            Ok(m) => left -= m,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                            Err(e) => return Outcome::Failed(dst_side, e),
                        }
                    }
                    count(n);
                    continue;
                }
                // Fast path: one buffer, one read, one write.
                if fast_buf.is_empty() {
                    fast_buf = vec![0u8; FAST_BUF];
                }
                let n = tokio::select! {
                    biased;
                    r = &mut changed => break r,
                    r = src.read(&mut fast_buf) => match r {
                        Ok(n) => n,
                        Err(e) => return Outcome::Failed(src_side, e),
                    },
                };
                if n == 0 {
                    return finish(dst, dst_side).await;
                }
                if let Err(e) = dst.write_all(&fast_buf[..n]).await {
                    return Outcome::Failed(dst_side, e);
                }
                count(n);
                if n == FAST_BUF {
                    full_reads += 1;
                    if full_reads >= BULK_AFTER {
                        // Bulk: switch to splice (stay on copies if no pipe).
                        pipe = super::splice::Pipe::new().ok();
                        if pipe.is_some() {
                            ctx.stats.spliced.fetch_add(1, Ordering::Relaxed);
                            fast_buf = Vec::new();
                        }
                    }
                } else {
                    full_reads = 0;
                }
                continue;
            }

            // Faulted path: first deliver what is due.
            let now = Instant::now();
            if !chain.holds() {
                while queue.front().is_some_and(|i| i.at <= now) {
                    let Some(item) = queue.pop_front() else { break };
                    match item.payload {
                        Payload::Data(bytes) => {
                            queued_bytes -= bytes.len();
                            if let Err(e) = dst.write_all(&bytes).await {
                                return Outcome::Failed(dst_side, e);
                            }
                            dir_stats
                                .sent
                                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                        }
                        Payload::Eof => return finish(dst, dst_side).await,
                        Payload::Close => return Outcome::Close,
                        Payload::Reset => return Outcome::Reset,
                    }
                }
            }
            let next_item = if chain.holds() {
                None
            } else {
                queue.front().map(|i| i.at)
            };
            let wake = match (next_item, chain.deadline()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let room = queue.len() < MAX_ITEMS && queued_bytes < MAX_QUEUED_BYTES;
            if read_buf.capacity() < CHUNK / 2 {
                read_buf.reserve(CHUNK);
            }
            tokio::select! {
                biased;
                r = &mut changed => break r,
                _ = sleep_until(wake), if wake.is_some() => {
                    if let Some(item) = chain.on_timer(Instant::now()) {
                        return control(item);
                    }
                }
                r = src.read_buf(&mut read_buf), if reading && room => {
                    let now = Instant::now();
                    match r {
                        Ok(0) => {
                            reading = false;
                            chain.feed(Item { at: now, payload: Payload::Eof }, now, &mut queue);
                        }
                        Ok(n) => {
                            dir_stats.received.fetch_add(n as u64, Ordering::Relaxed);
                            let data = read_buf.split().freeze();
                            let before = queue.len();
                            chain.feed(Item { at: now, payload: Payload::Data(data) }, now, &mut queue);
                            queued_bytes += queue
                                .iter()
                                .skip(before)
                                .map(|i| match &i.payload { Payload::Data(d) => d.len(), _ => 0 })
                                .sum::<usize>();
                        }
                        Err(e) => return Outcome::Failed(src_side, e),
                    }
                }
            }
        };

        // The fault set changed.
        if event.is_err() {
            // The proxy is gone; the session is being cancelled.
            std::future::pending::<()>().await;
        }
        let now = Instant::now();
        let set = ctx.board.snapshot();
        if let Some(item) = chain.rebuild(set.direction(ctx.key.dir), now, &activated) {
            return control(item);
        }
        // Flush what the faults held: stream items are due at once; control
        // actions already scheduled keep their time.
        for item in queue.iter_mut().filter(|i| i.is_stream()) {
            item.at = item.at.min(now);
        }
    }
}

async fn finish<W: AsyncWrite + Unpin + ?Sized>(dst: &mut W, side: Side) -> Outcome {
    match dst.shutdown().await {
        Ok(()) => Outcome::Finished,
        Err(e) => Outcome::Failed(side, e),
    }
}

fn control(item: Item) -> Outcome {
    match item.payload {
        Payload::Reset => Outcome::Reset,
        _ => Outcome::Close,
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}
