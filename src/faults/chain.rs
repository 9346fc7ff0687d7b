//! The chain of faults acting on one direction of one connection.
//!
//! A direction reads chunks from its source, passes each through the active
//! faults in creation order, and queues the resulting [`Item`]s; each item
//! carries the instant at which it may be written. Faults are plain
//! functions of (item, state) → items, so their timing is exact and can be
//! tested without sockets; the pump (`proxy::pump`) owns the waiting.
//!
//! [`FaultBoard`] is the live fault set of one proxy: the control plane swaps
//! in a new [`FaultSet`] and bumps a version; every live connection wakes on
//! the version, reloads the set and rebuilds its chains, keeping per-fault
//! state (byte counts, toxicity draws) for faults that are still there.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use tokio::sync::watch;

use super::random::{self, FaultRng};
use super::{Direction, Fault, FaultSpec};

/// What a queued item does when its time comes.
#[derive(Debug)]
pub enum Payload {
    /// Bytes to write.
    Data(Bytes),
    /// End of stream: half-close the destination (FIN).
    Eof,
    /// A fault closes the whole connection.
    Close,
    /// A fault resets the whole connection (RST both ways).
    Reset,
}

/// A payload and the instant it may be delivered.
#[derive(Debug)]
pub struct Item {
    /// Not before this instant.
    pub at: Instant,
    /// What to deliver.
    pub payload: Payload,
}

impl Item {
    /// Whether the item is part of the byte stream (data or its end), as
    /// opposed to a control action produced by a fault.
    pub fn is_stream(&self) -> bool {
        matches!(self.payload, Payload::Data(_) | Payload::Eof)
    }
}

/// Per-connection-direction scratch state of one fault. Each kind uses the
/// fields it needs; the state lives as long as the fault stays on the chain.
#[derive(Debug, Default)]
pub struct StageState {
    /// Earliest time for the next output (bandwidth, slicer).
    pub next: Option<Instant>,
    /// A timer: when it passes the fault acts (timeout).
    pub deadline: Option<Instant>,
    /// The fault has acted once (reset_peer, limit_data).
    pub fired: bool,
    /// A running count (limit_data bytes).
    pub count: u64,
}

/// A fault on the live board: its spec plus an identity that survives
/// updates, so connections keep its state when only attributes change.
#[derive(Debug)]
pub struct ActiveFault {
    /// Assigned when the fault is added; kept by updates.
    pub uid: u64,
    /// What the fault is.
    pub spec: FaultSpec,
    /// When the fault removes itself (a TTL set through the API).
    pub expires: Option<Instant>,
    /// Matches and injections of a PostgreSQL fault, across sessions.
    pub hits: Arc<super::query::FaultHits>,
}

/// The faults of one proxy, per direction, in creation order.
#[derive(Debug, Default, Clone)]
pub struct FaultSet {
    /// Client-to-server chain.
    pub upstream: Vec<Arc<ActiveFault>>,
    /// Server-to-client chain.
    pub downstream: Vec<Arc<ActiveFault>>,
}

impl FaultSet {
    /// The chain of one direction.
    pub fn direction(&self, dir: Direction) -> &Vec<Arc<ActiveFault>> {
        match dir {
            Direction::Upstream => &self.upstream,
            Direction::Downstream => &self.downstream,
        }
    }

    /// The chain of one direction, to change it.
    pub fn direction_mut(&mut self, dir: Direction) -> &mut Vec<Arc<ActiveFault>> {
        match dir {
            Direction::Upstream => &mut self.upstream,
            Direction::Downstream => &mut self.downstream,
        }
    }

    /// Every fault: upstream chain first, then downstream (Toxiproxy's order).
    pub fn iter(&self) -> impl Iterator<Item = &Arc<ActiveFault>> {
        self.upstream.iter().chain(self.downstream.iter())
    }

    /// Whether a new connection is refused: a `refuse` fault whose toxicity
    /// draw for this connection hits. Returns that fault's kind index.
    pub fn refuses(&self, proxy_seed: u64, conn: u64) -> Option<usize> {
        self.iter()
            .find(|f| {
                matches!(f.spec.fault, Fault::Refuse(_))
                    && random::toxicity_draw(proxy_seed, conn, f.spec.direction, &f.spec.name)
                        < f.spec.toxicity
            })
            .map(|f| f.spec.fault.kind_index())
    }

    /// Whether no fault at all is configured (the fast path for new
    /// connections needs no chain).
    pub fn is_empty(&self) -> bool {
        self.upstream.is_empty() && self.downstream.is_empty()
    }
}

/// The live fault set of one proxy, read lock-free by the data path.
#[derive(Debug)]
pub struct FaultBoard {
    set: ArcSwap<FaultSet>,
    version: watch::Sender<u64>,
    writer: Mutex<()>,
}

impl Default for FaultBoard {
    fn default() -> Self {
        Self {
            set: ArcSwap::from_pointee(FaultSet::default()),
            version: watch::Sender::new(0),
            writer: Mutex::new(()),
        }
    }
}

impl FaultBoard {
    /// The current set (an `Arc` load: no lock).
    pub fn snapshot(&self) -> Arc<FaultSet> {
        self.set.load_full()
    }

    /// A receiver that wakes when the set changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Changes the set: `f` edits a copy, which is published atomically, and
    /// live connections are woken. Writers are serialised; readers never wait.
    pub fn update<R>(&self, f: impl FnOnce(&mut FaultSet) -> R) -> R {
        let _guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = FaultSet::clone(&self.set.load());
        let r = f(&mut next);
        self.set.store(Arc::new(next));
        self.version.send_modify(|v| *v += 1);
        r
    }
}

struct Stage {
    fault: Arc<ActiveFault>,
    draw: f32,
    state: StageState,
}

impl Stage {
    fn active(&self) -> bool {
        self.draw < self.fault.spec.toxicity
    }
}

/// Identity of a connection direction, for seeded decisions.
#[derive(Clone, Copy, Debug)]
pub struct ChainKey {
    /// The proxy's seed.
    pub proxy_seed: u64,
    /// The connection's number on its proxy (accept order).
    pub conn: u64,
    /// Which direction.
    pub dir: Direction,
}

/// The faults acting on one connection direction, with their state.
pub struct Chain {
    key: ChainKey,
    stages: Vec<Stage>,
    rng: FaultRng,
    scratch: Vec<Item>,
}

impl Chain {
    /// An empty chain for one connection direction.
    pub fn new(key: ChainKey) -> Self {
        Self {
            key,
            stages: Vec::new(),
            rng: random::direction_rng(key.proxy_seed, key.conn, key.dir),
            scratch: Vec::new(),
        }
    }

    /// Brings the chain in line with `faults`, keeping the state of faults
    /// still present; `activated` is told the kind index of each fault that
    /// newly acts here. Returns a control item when a removed fault must end
    /// the connection (a `timeout` that dropped data).
    pub fn rebuild(
        &mut self,
        faults: &[Arc<ActiveFault>],
        now: Instant,
        activated: &dyn Fn(usize),
    ) -> Option<Item> {
        let mut old = std::mem::take(&mut self.stages);
        for fault in faults {
            if !fault.spec.fault.is_byte_fault() {
                continue;
            }
            let stage = match old.iter().position(|s| s.fault.uid == fault.uid) {
                Some(i) => {
                    let mut s = old.swap_remove(i);
                    let changed = s.fault.spec.fault != fault.spec.fault;
                    s.fault = fault.clone();
                    if changed && let Fault::Timeout(t) = &fault.spec.fault {
                        t.arm(&mut s.state, now);
                    }
                    s
                }
                None => {
                    let mut s = Stage {
                        fault: fault.clone(),
                        draw: random::toxicity_draw(
                            self.key.proxy_seed,
                            self.key.conn,
                            self.key.dir,
                            &fault.spec.name,
                        ),
                        state: StageState::default(),
                    };
                    if let Fault::Timeout(t) = &fault.spec.fault {
                        t.arm(&mut s.state, now);
                    }
                    if s.active() {
                        activated(fault.spec.fault.kind_index());
                    }
                    s
                }
            };
            self.stages.push(stage);
        }
        let dropped_data = old
            .iter()
            .any(|s| s.active() && matches!(s.fault.spec.fault, Fault::Timeout(_)));
        dropped_data.then_some(Item {
            at: now,
            payload: Payload::Close,
        })
    }

    /// True when no active fault changes the bytes: the fast path may run.
    pub fn is_passthrough(&self) -> bool {
        self.stages
            .iter()
            .all(|s| !s.active() || matches!(s.fault.spec.fault, Fault::Noop(_)))
    }

    /// True while an active `blackhole` holds the direction.
    pub fn holds(&self) -> bool {
        self.stages
            .iter()
            .any(|s| s.active() && matches!(&s.fault.spec.fault, Fault::Blackhole(b) if b.holds()))
    }

    /// The earliest timer of an active fault.
    pub fn deadline(&self) -> Option<Instant> {
        self.stages
            .iter()
            .filter(|s| s.active())
            .filter_map(|s| s.state.deadline)
            .min()
    }

    /// Fires timers that are due; returns a control item to act on.
    pub fn on_timer(&mut self, now: Instant) -> Option<Item> {
        for s in self
            .stages
            .iter_mut()
            .filter(|s| s.draw < s.fault.spec.toxicity)
        {
            if s.state.deadline.is_some_and(|d| d <= now) {
                s.state.deadline = None;
                return Some(Item {
                    at: now,
                    payload: Payload::Close,
                });
            }
        }
        None
    }

    /// Passes one item through every active fault, appending the results
    /// to `out` in order.
    pub fn feed(&mut self, item: Item, now: Instant, out: &mut VecDeque<Item>) {
        let mut cur = std::mem::take(&mut self.scratch);
        cur.clear();
        cur.push(item);
        let mut next = Vec::new();
        for stage in self.stages.iter_mut() {
            if stage.draw >= stage.fault.spec.toxicity {
                continue;
            }
            for item in cur.drain(..) {
                apply(stage, item, now, &mut self.rng, &mut next);
            }
            std::mem::swap(&mut cur, &mut next);
        }
        out.extend(cur.drain(..));
        self.scratch = cur;
    }
}

fn apply(stage: &mut Stage, item: Item, now: Instant, rng: &mut FaultRng, out: &mut Vec<Item>) {
    let state = &mut stage.state;
    match &stage.fault.spec.fault {
        // Not byte faults: never on a chain, listed for completeness.
        Fault::Noop(_)
        | Fault::Refuse(_)
        | Fault::QueryLatency(_)
        | Fault::QueryError(_)
        | Fault::Terminate(_)
        | Fault::RejectConnections(_)
        | Fault::StartupLatency(_)
        | Fault::HttpAbort(_)
        | Fault::HttpLatency(_)
        | Fault::HttpThrottle(_)
        | Fault::HttpReset(_) => out.push(item),
        Fault::Latency(f) => f.apply(item, rng, out),
        Fault::Bandwidth(f) => f.apply(item, state, out),
        Fault::SlowClose(f) => f.apply(item, out),
        Fault::Timeout(f) => f.apply(item, state, now, out),
        Fault::ResetPeer(f) => f.apply(item, state, out),
        Fault::Slicer(f) => f.apply(item, state, rng, out),
        Fault::LimitData(f) => f.apply(item, state, out),
        Fault::Blackhole(f) => f.apply(item, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::{Bandwidth, LimitData, Millis};
    use std::time::Duration;

    fn board_with(faults: Vec<Fault>) -> Vec<Arc<ActiveFault>> {
        faults
            .into_iter()
            .enumerate()
            .map(|(i, f)| {
                let mut spec = FaultSpec::new(f, Direction::Downstream);
                spec.name = format!("f{i}");
                Arc::new(ActiveFault {
                    uid: i as u64,
                    spec,
                    expires: None,
                    hits: Default::default(),
                })
            })
            .collect()
    }

    fn key() -> ChainKey {
        ChainKey {
            proxy_seed: 1,
            conn: 0,
            dir: Direction::Downstream,
        }
    }

    fn data(n: usize) -> Payload {
        Payload::Data(Bytes::from(vec![7u8; n]))
    }

    #[test]
    fn bandwidth_schedules_on_an_absolute_timeline() {
        let faults = board_with(vec![Fault::Bandwidth(Bandwidth { rate: 10 })]);
        let mut chain = Chain::new(key());
        let t0 = Instant::now();
        chain.rebuild(&faults, t0, &|_| {});
        let mut out = VecDeque::new();
        // 10 KB/s: 1000 bytes per 100 ms piece; 2500 bytes => 3 pieces.
        chain.feed(
            Item {
                at: t0,
                payload: data(2500),
            },
            t0,
            &mut out,
        );
        let times: Vec<Duration> = out.iter().map(|i| i.at - t0).collect();
        assert_eq!(
            times,
            vec![
                Duration::from_millis(100),
                Duration::from_millis(200),
                Duration::from_millis(250)
            ]
        );
    }

    #[test]
    fn limit_data_truncates_then_closes_and_keeps_count_across_rebuilds() {
        let faults = board_with(vec![Fault::LimitData(LimitData { bytes: 10 })]);
        let mut chain = Chain::new(key());
        let t0 = Instant::now();
        chain.rebuild(&faults, t0, &|_| {});
        let mut out = VecDeque::new();
        chain.feed(
            Item {
                at: t0,
                payload: data(6),
            },
            t0,
            &mut out,
        );
        chain.rebuild(&faults, t0, &|_| {});
        chain.feed(
            Item {
                at: t0,
                payload: data(6),
            },
            t0,
            &mut out,
        );
        let lens: Vec<Option<usize>> = out
            .iter()
            .map(|i| match &i.payload {
                Payload::Data(d) => Some(d.len()),
                _ => None,
            })
            .collect();
        assert_eq!(lens, vec![Some(6), Some(4), None]);
        assert!(matches!(out.back().unwrap().payload, Payload::Close));
    }

    #[test]
    fn removing_an_active_timeout_closes() {
        let faults = board_with(vec![Fault::Timeout(crate::faults::Timeout {
            timeout: Millis::from_ms(0),
        })]);
        let mut chain = Chain::new(key());
        let t0 = Instant::now();
        chain.rebuild(&faults, t0, &|_| {});
        let mut out = VecDeque::new();
        chain.feed(
            Item {
                at: t0,
                payload: data(5),
            },
            t0,
            &mut out,
        );
        assert!(out.is_empty(), "timeout drops data");
        let action = chain.rebuild(&[], t0, &|_| {});
        assert!(matches!(action.map(|i| i.payload), Some(Payload::Close)));
    }
}
