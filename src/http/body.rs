//! The body of every response an HTTP proxy sends.
//!
//! One type for the three sources (the upstream's streamed body, an
//! injected answer, shakedown's own 502/504) so the server has a single
//! body type and no per-request boxing. Upstream frames are passed on as
//! they arrive, never collected. Two faults act here:
//!
//! - `http_throttle`: data is cut into pieces of at most 100 ms worth and
//!   each piece leaves when the previous one would have finished at `rate`,
//!   on an absolute timeline (as `bandwidth` does), so timer error does not
//!   accumulate;
//! - `http_reset`: after `after_bytes` body bytes the connection is reset
//!   (HTTP/1: through [`super::io::ConnIo`]'s switch; HTTP/2: the stream is
//!   reset, the connection's other streams carry on).
//!
//! When the body ends (or is dropped, e.g. the client went away), the
//! request's full response time is recorded.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::proxy::ProxyShared;

/// Throttle pieces carry at most this much time's worth of data, so a
/// slow rate still flows smoothly (as `bandwidth`).
const PIECE: Duration = Duration::from_millis(100);

/// Why a response body failed.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The upstream's body failed mid-stream.
    #[error("upstream body failed: {0}")]
    Upstream(#[from] hyper::Error),
    /// An `http_reset` fault ended the stream.
    #[error("stream reset by an http_reset fault")]
    Injected,
}

enum Inner {
    Upstream(Incoming),
    Full(Option<Bytes>),
}

/// How `http_reset` ends a response.
pub enum ResetMode {
    /// HTTP/1: throw the connection's switch (the whole connection goes).
    Connection(Arc<AtomicBool>),
    /// HTTP/2: fail the stream (RST_STREAM), the connection stays.
    Stream,
}

struct Reset {
    left: u64,
    fired: bool,
    mode: ResetMode,
}

struct Throttle {
    /// Bytes per second.
    rate: u64,
    pending: Bytes,
    current: Option<Bytes>,
    next: Option<Instant>,
    sleep: Pin<Box<Sleep>>,
}

impl Throttle {
    fn new(rate: u64) -> Self {
        Self {
            rate,
            pending: Bytes::new(),
            current: None,
            next: None,
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
        }
    }

    /// The next piece once it is due; `Ready(None)` when nothing is held.
    fn poll_piece(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        loop {
            if self.current.is_some() {
                ready!(self.sleep.as_mut().poll(cx));
                return Poll::Ready(self.current.take());
            }
            if self.pending.is_empty() {
                return Poll::Ready(None);
            }
            let max = ((self.rate as u128 * PIECE.as_nanos()) / 1_000_000_000).max(1) as usize;
            let piece = self.pending.split_to(self.pending.len().min(max));
            let now = Instant::now();
            let start = self.next.map_or(now, |n| n.max(now));
            let due = start
                + Duration::from_nanos(
                    (piece.len() as u128 * 1_000_000_000 / u128::from(self.rate)) as u64,
                );
            self.next = Some(due);
            self.sleep.as_mut().reset(due);
            self.current = Some(piece);
        }
    }
}

/// Records the full response time once, at the end or on drop.
struct Done {
    proxy: Arc<ProxyShared>,
    route: usize,
    started: Instant,
}

/// A response body; see the module docs.
pub struct ProxyBody {
    inner: Inner,
    throttle: Option<Box<Throttle>>,
    reset: Option<Reset>,
    done: Option<Done>,
}

impl ProxyBody {
    /// An upstream body passed through.
    pub fn upstream(body: Incoming) -> Self {
        Self {
            inner: Inner::Upstream(body),
            throttle: None,
            reset: None,
            done: None,
        }
    }

    /// A whole body made here (an injected answer, a 502/504).
    pub fn full(data: Bytes) -> Self {
        Self {
            inner: Inner::Full((!data.is_empty()).then_some(data)),
            throttle: None,
            reset: None,
            done: None,
        }
    }

    /// Limits the body to `rate` bytes per second (0: no limit).
    pub fn throttle(mut self, rate: u64) -> Self {
        if rate > 0 {
            self.throttle = Some(Box::new(Throttle::new(rate)));
        }
        self
    }

    /// Resets after `after_bytes` body bytes.
    pub fn reset_after(mut self, after_bytes: u64, mode: ResetMode) -> Self {
        self.reset = Some(Reset {
            left: after_bytes,
            fired: after_bytes == 0,
            mode,
        });
        self
    }

    /// Records the response time of the request in the proxy's HTTP
    /// observations when the body ends.
    pub fn observed(mut self, proxy: Arc<ProxyShared>, route: usize, started: Instant) -> Self {
        self.done = Some(Done {
            proxy,
            route,
            started,
        });
        self
    }

    fn finish(&mut self, reset: bool) {
        if let Some(d) = self.done.take()
            && let Some(http) = d.proxy.http.as_deref()
        {
            http.stats.completed(d.route, d.started.elapsed(), reset);
        }
    }

    /// Applies the reset budget to a data frame about to go out.
    fn deliver(&mut self, mut data: Bytes) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Some(r) = &mut self.reset {
            let len = data.len() as u64;
            if len >= r.left {
                data.truncate(r.left as usize);
                r.left = 0;
                r.fired = true;
            } else {
                r.left -= len;
            }
        }
        Poll::Ready(Some(Ok(Frame::data(data))))
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        self.finish(false);
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        loop {
            if let Some(r) = &this.reset
                && r.fired
            {
                let stream = match &r.mode {
                    ResetMode::Connection(switch) => {
                        switch.store(true, Ordering::Relaxed);
                        false
                    }
                    ResetMode::Stream => true,
                };
                this.finish(true);
                // HTTP/1: stay pending; hyper's next flush trips the switch
                // and drops the connection. HTTP/2: fail the stream.
                return if stream {
                    Poll::Ready(Some(Err(BodyError::Injected)))
                } else {
                    Poll::Pending
                };
            }
            if let Some(t) = &mut this.throttle
                && let Some(piece) = ready!(t.poll_piece(cx))
            {
                return this.deliver(piece);
            }
            let frame = match &mut this.inner {
                Inner::Upstream(b) => ready!(Pin::new(b).poll_frame(cx)),
                Inner::Full(b) => b.take().map(|d| Ok(Frame::data(d))),
            };
            match frame {
                None => {
                    if let Some(r) = &mut this.reset {
                        // Shorter than `after_bytes`: the end never comes.
                        r.fired = true;
                        continue;
                    }
                    this.finish(false);
                    return Poll::Ready(None);
                }
                Some(Err(e)) => {
                    this.finish(false);
                    return Poll::Ready(Some(Err(BodyError::Upstream(e))));
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        if let Some(t) = &mut this.throttle {
                            t.pending = data;
                            continue;
                        }
                        return this.deliver(data);
                    }
                    Err(trailers) => return Poll::Ready(Some(Ok(trailers))),
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        if self.reset.is_some()
            || self
                .throttle
                .as_ref()
                .is_some_and(|t| !t.pending.is_empty() || t.current.is_some())
        {
            return false;
        }
        match &self.inner {
            Inner::Upstream(b) => b.is_end_stream(),
            Inner::Full(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        if self.reset.is_some() {
            return SizeHint::default();
        }
        match &self.inner {
            Inner::Upstream(b) => b.size_hint(),
            Inner::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}
