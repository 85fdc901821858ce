//! The body of every response confab serves: whole (`Body::new`, nearly everything) or streamed
//! from a channel (`Body::stream`: a recording download, read from disk a chunk at a time so a
//! large file never sits in memory).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};

pub struct Body(Kind);

enum Kind {
    Whole(Option<Bytes>),
    Stream(tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>),
}

impl Body {
    pub fn new(bytes: Bytes) -> Body {
        Body(Kind::Whole(Some(bytes).filter(|b| !b.is_empty())))
    }

    /// A body whose chunks arrive on `rx` (an error ends the response abruptly, as a reset).
    pub fn stream(rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>) -> Body {
        Body(Kind::Stream(rx))
    }
}

#[cfg(test)]
impl Body {
    /// A whole body's bytes (tests of routes; a stream reads as empty).
    pub fn whole(&self) -> Bytes {
        match &self.0 {
            Kind::Whole(b) => b.clone().unwrap_or_default(),
            Kind::Stream(_) => Bytes::new(),
        }
    }
}

impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Body {
        Body::new(Bytes::from(v))
    }
}

impl Default for Body {
    fn default() -> Body {
        Body(Kind::Whole(None))
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Body {
        Body::new(b)
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match &mut self.0 {
            Kind::Whole(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::Stream(rx) => rx
                .poll_recv(cx)
                .map(|chunk| chunk.map(|c| c.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.0, Kind::Whole(None))
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Whole(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Stream(_) => SizeHint::default(),
        }
    }
}
