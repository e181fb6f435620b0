//! [`Mux`]: one lock session's socket, shared by tokio-postgres (start-up, set-up, the
//! heartbeat) and pals' own statements ([`Mux::call`]), which the caller's task writes and
//! whose answers it reads itself: no channel to a connection task, no hop to another thread.
//!
//! The socket is registered with the library's runtime (it is opened there), so a locker
//! still outlives its callers' runtimes; a caller on another runtime (or a blocking caller)
//! is woken by that runtime's reactor through the waker the socket is polled with
//! ([`Wakers`]), which wakes whoever waits on the socket.
//!
//! Answers come in the order requests were written. Once [`Mux::track`] is called (after
//! start-up), every request written is booked in `owed` with who will read its answer (each
//! ends with one `ReadyForQuery`): tokio-postgres' (one per `Sync` or `Query` it writes) or a
//! call's. Whoever reads the socket routes each whole message to its owner; asynchronous
//! messages (notices, notifications, parameter changes) and anything owed to nobody go to
//! tokio-postgres. While a call is in flight, tokio-postgres' side is not armed on the socket
//! (its reads would contend with the caller's): the caller reads, and hands tokio-postgres
//! what is its own.

use std::collections::VecDeque;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::frame::{self, Answer, Reply};

/// A byte stream a session runs on: a TCP or Unix socket, or TLS over one.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A session's byte stream, whichever it is.
pub(crate) struct Socket(pub(crate) Box<dyn Io>);

impl AsyncRead for Socket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

/// One session's socket, shared: see the module doc.
pub(crate) struct Mux {
    state: Mutex<State>,
    wakers: Arc<Wakers>,
}

/// Who reads the answer to a request written on the socket.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// tokio-postgres.
    Driver,
    /// The call in this slot.
    Call(usize),
    /// A call whose caller went away: its answer is read and dropped.
    Dropped,
}

struct State {
    /// `None` while a TLS handshake has the socket.
    io: Option<Socket>,
    /// Set once the socket ended (`Some(None)`: closed, `Some(Some(kind))`: an I/O error).
    ended: Option<Option<io::ErrorKind>>,
    /// Requests are booked (see the module doc); before, bytes pass through as they are.
    tracking: bool,
    /// Bytes read, not yet routed (a message's beginning).
    input: Vec<u8>,
    /// Bytes for tokio-postgres, from `for_driver_at` on.
    for_driver: Vec<u8>,
    for_driver_at: usize,
    /// tokio-postgres' bytes written, not yet a whole message.
    driver_partial: Vec<u8>,
    /// Bytes to write, from `output_at` on.
    output: Vec<u8>,
    output_at: usize,
    owed: VecDeque<Owner>,
    /// The calls' answers, by slot.
    slots: Vec<Slot>,
    /// Calls in flight whose callers still wait.
    live_calls: usize,
    /// tokio-postgres' reader, when it waits for bytes.
    driver_waker: Option<Waker>,
    /// The call whose task is reading the socket now.
    pumping: Option<usize>,
}

#[derive(Default)]
struct Slot {
    in_use: bool,
    reply: Reply,
    done: bool,
    waker: Option<Waker>,
}

/// The wakers of those who wait on the socket; the socket is polled with a waker that wakes
/// them all (one registration per direction can hold only one waker).
#[derive(Default)]
struct Wakers(Mutex<Vec<Waker>>);

impl Wakers {
    fn add(&self, waker: &Waker) {
        let mut wakers = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !wakers.iter().any(|w| w.will_wake(waker)) {
            wakers.push(waker.clone());
        }
    }

    fn remove(&self, waker: &Waker) {
        let mut wakers = self.0.lock().unwrap_or_else(|e| e.into_inner());
        wakers.retain(|w| !w.will_wake(waker));
    }
}

impl Wake for Wakers {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Waking only schedules: nothing here takes this lock again. (Drained in place, the
        // list keeps its capacity: no allocation per wake.)
        let mut wakers = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for waker in wakers.drain(..) {
            waker.wake();
        }
    }
}

/// A call got no answer: the socket ended (or failed) before it came.
#[derive(Debug)]
pub(crate) struct Ended;

impl Mux {
    pub(crate) fn new(io: Socket) -> Arc<Mux> {
        Arc::new(Mux {
            state: Mutex::new(State {
                io: Some(io),
                ended: None,
                tracking: false,
                input: Vec::new(),
                for_driver: Vec::new(),
                for_driver_at: 0,
                driver_partial: Vec::new(),
                output: Vec::new(),
                output_at: 0,
                owed: VecDeque::new(),
                slots: Vec::new(),
                live_calls: 0,
                driver_waker: None,
                pumping: None,
            }),
            wakers: Arc::new(Wakers::default()),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(any(feature = "rustls", feature = "native-tls"))]
    /// Takes the socket out (for a TLS handshake on it).
    pub(crate) fn take_io(&self) -> Option<Socket> {
        self.state().io.take()
    }

    #[cfg(any(feature = "rustls", feature = "native-tls"))]
    /// Puts a socket back (the TLS stream over the one taken).
    pub(crate) fn put_io(&self, io: Socket) {
        let mut state = self.state();
        state.io = Some(io);
        wake(&mut state.driver_waker);
    }

    /// Closes the socket: what is in flight fails, and the server ends the session.
    pub(crate) fn shut(&self) {
        let mut state = self.state();
        state.io = None;
        if state.ended.is_none() {
            self.end(&mut state, None);
        }
    }

    /// Starts booking requests: call once start-up and set-up are done, with nothing in
    /// flight.
    pub(crate) fn track(&self) {
        let mut state = self.state();
        debug_assert!(state.input.is_empty() && state.driver_partial.is_empty());
        state.tracking = true;
    }

    /// tokio-postgres' side of the socket, the stream it is given.
    pub(crate) fn driver_side(self: &Arc<Self>) -> DriverSide {
        DriverSide(Arc::clone(self))
    }

    /// Writes `request` (whole messages, ending with one `Sync` or `Query`) and reads its
    /// answer. Dropped before the answer, the answer is read by whoever reads next.
    /// `request` appends the request to what is to be written (no copy, no allocation).
    pub(crate) async fn call(
        &self,
        request: impl FnOnce(&mut Vec<u8>),
        want_rows: bool,
    ) -> Result<Answer, Ended> {
        let slot = self.begin(request, want_rows)?;
        let mut call = Call { mux: self, slot };
        std::future::poll_fn(|cx| call.poll(cx)).await
    }

    /// Books the call and writes its request (as far as the socket takes it now).
    fn begin(&self, request: impl FnOnce(&mut Vec<u8>), want_rows: bool) -> Result<usize, Ended> {
        let mut state = self.state();
        if state.ended.is_some() {
            return Err(Ended);
        }
        debug_assert!(state.tracking, "calls come after set-up");
        let slot = match state.slots.iter().position(|slot| !slot.in_use) {
            Some(free) => free,
            None => {
                state.slots.push(Slot::default());
                state.slots.len() - 1
            }
        };
        let entry = &mut state.slots[slot];
        entry.in_use = true;
        entry.done = false;
        entry.reply.reset(want_rows);
        state.owed.push_back(Owner::Call(slot));
        request(&mut state.output);
        if state.live_calls == 0 {
            // tokio-postgres' side stops watching the socket while calls run.
            if let Some(waker) = &state.driver_waker {
                self.wakers.remove(waker);
            }
        }
        state.live_calls += 1;
        Ok(slot)
    }

    /// Writes what is to be written and reads what has come, routing it; until the socket
    /// would block, which leaves the shared waker registered.
    fn pump(&self, state: &mut State) {
        let waker = Waker::from(Arc::clone(&self.wakers));
        let mut cx = Context::from_waker(&waker);
        let mut chunk = [MaybeUninit::<u8>::uninit(); 4096];
        loop {
            let Some(io) = state.io.as_mut() else { return };
            if state.ended.is_some() {
                return;
            }
            let mut progress = false;
            while state.output_at < state.output.len() {
                match Pin::new(&mut *io).poll_write(&mut cx, &state.output[state.output_at..]) {
                    Poll::Ready(Ok(0)) => return self.end(state, Some(io::ErrorKind::WriteZero)),
                    Poll::Ready(Ok(n)) => state.output_at += n,
                    Poll::Ready(Err(error)) => return self.end(state, Some(error.kind())),
                    Poll::Pending => break,
                }
            }
            if state.output_at == state.output.len() {
                state.output.clear();
                state.output_at = 0;
                if let Poll::Ready(Err(error)) = Pin::new(&mut *io).poll_flush(&mut cx) {
                    return self.end(state, Some(error.kind()));
                }
            }
            let mut buf = ReadBuf::uninit(&mut chunk);
            match Pin::new(&mut *io).poll_read(&mut cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return self.end(state, None),
                Poll::Ready(Ok(())) => {
                    self.route(state, buf.filled());
                    progress = true;
                }
                Poll::Ready(Err(error)) => return self.end(state, Some(error.kind())),
                Poll::Pending => {}
            }
            if !progress {
                return;
            }
        }
    }

    /// Routes bytes read to their owners, whole message by whole message.
    fn route(&self, state: &mut State, bytes: &[u8]) {
        if !state.tracking {
            state.for_driver.extend_from_slice(bytes);
            wake(&mut state.driver_waker);
            return;
        }
        state.input.extend_from_slice(bytes);
        let mut at = 0;
        let (mut to_driver, mut answered) = (false, false);
        while let Some(len) = frame::whole(&state.input[at..]) {
            let message = &state.input[at..at + len];
            at += len;
            let tag = message[0];
            let owner = state.owed.front().copied();
            match owner {
                Some(Owner::Call(slot)) if !frame::is_async(tag) => {
                    state.slots[slot].reply.read(message);
                }
                Some(Owner::Dropped) if !frame::is_async(tag) => {}
                _ => {
                    state.for_driver.extend_from_slice(message);
                    to_driver = true;
                }
            }
            if tag == frame::READY && owner.is_some() {
                state.owed.pop_front();
                answered = true;
                if let Some(Owner::Call(slot)) = owner {
                    let slot = &mut state.slots[slot];
                    slot.done = true;
                    wake(&mut slot.waker);
                }
            }
        }
        state.input.drain(..at);
        if to_driver {
            wake(&mut state.driver_waker);
        }
        if answered {
            Self::hand_reading(state);
        }
    }

    /// The call that reads the socket: the first in `owed` (the answers before it are read
    /// on its way); `None`: tokio-postgres' side reads.
    fn reader(state: &State) -> Option<usize> {
        state.owed.iter().find_map(|owner| match owner {
            Owner::Call(slot) => Some(*slot),
            _ => None,
        })
    }

    /// Wakes whoever reads the socket now that the answer it read is in: only the reader
    /// is woken by the socket (not every caller waiting: no herd), the others by their
    /// answers.
    fn hand_reading(state: &mut State) {
        match Self::reader(state) {
            Some(slot) if state.pumping == Some(slot) => {}
            Some(slot) => {
                if let Some(waker) = &state.slots[slot].waker {
                    waker.wake_by_ref();
                }
            }
            None if !state.owed.is_empty() => wake(&mut state.driver_waker),
            None => {}
        }
    }

    /// The socket ended: calls in flight fail, tokio-postgres reads the end.
    fn end(&self, state: &mut State, error: Option<io::ErrorKind>) {
        state.ended = Some(error);
        for slot in &mut state.slots {
            wake(&mut slot.waker);
        }
        wake(&mut state.driver_waker);
    }

    /// A call's answer has been taken, or its caller went away.
    fn finish(&self, slot: usize) {
        let mut state = self.state();
        let state = &mut *state;
        let entry = &mut state.slots[slot];
        let abandoned = !entry.done && state.ended.is_none();
        if abandoned {
            // Still owed: its answer is read and dropped when it comes.
            if let Some(owner) = state.owed.iter_mut().find(|o| **o == Owner::Call(slot)) {
                *owner = Owner::Dropped;
            }
        }
        entry.in_use = false;
        entry.waker = None;
        state.live_calls -= 1;
        if abandoned && state.live_calls > 0 {
            Self::hand_reading(state); // it may have been the reader
        }
        if state.live_calls == 0 {
            // tokio-postgres' side watches the socket again, or reads what a dropped call
            // left. Its waker is listed first, then the socket polled until it would block:
            // what came in between is read now, and what comes later wakes it.
            if let Some(waker) = state.driver_waker.clone() {
                if state.owed.is_empty() {
                    self.wakers.add(&waker);
                    self.pump(state);
                } else {
                    waker.wake();
                }
            }
        }
    }
}

fn wake(waker: &mut Option<Waker>) {
    if let Some(waker) = waker.take() {
        waker.wake();
    }
}

/// A call in flight; dropped, it gives its slot back.
struct Call<'a> {
    mux: &'a Mux,
    slot: usize,
}

impl Call<'_> {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<Answer, Ended>> {
        let mut state = self.mux.state();
        let state = &mut *state;
        loop {
            // The reader is listed for the socket's wake-up before it reads: an event between
            // its read and its listing would wake nobody.
            let reader = Mux::reader(state) == Some(self.slot);
            if reader {
                self.mux.wakers.add(cx.waker());
            }
            // Only the reader reads and writes: the others' requests wait in the output for
            // its next turn (when an answer comes), so that calls in flight together go out
            // together and never queue on this lock behind one another's syscalls.
            if reader && !state.slots[self.slot].done && state.ended.is_none() {
                state.pumping = Some(self.slot);
                self.mux.pump(state);
                state.pumping = None;
            }
            let slot = &mut state.slots[self.slot];
            if slot.done || state.ended.is_some() {
                if reader {
                    self.mux.wakers.remove(cx.waker());
                }
                return Poll::Ready(match slot.done || slot.reply.failed() {
                    // (After the end, a FATAL error that came before it is the answer.)
                    true => Ok(slot.reply.take()),
                    false => Err(Ended),
                });
            }
            match &slot.waker {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                _ => slot.waker = Some(cx.waker().clone()),
            }
            if reader || Mux::reader(state) != Some(self.slot) {
                return Poll::Pending;
            }
            // It became the reader (the calls before it are done): listed now, it reads.
        }
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        self.mux.finish(self.slot);
    }
}

/// tokio-postgres' side of a [`Mux`]: the stream its connection reads and writes.
pub(crate) struct DriverSide(Arc<Mux>);

impl AsyncRead for DriverSide {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mux = &self.0;
        let mut state = mux.state();
        let state = &mut *state;
        loop {
            if state.for_driver_at < state.for_driver.len() {
                let ready = &state.for_driver[state.for_driver_at..];
                let n = ready.len().min(buf.remaining());
                buf.put_slice(&ready[..n]);
                state.for_driver_at += n;
                if state.for_driver_at == state.for_driver.len() {
                    state.for_driver.clear();
                    state.for_driver_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            match state.ended {
                Some(None) => return Poll::Ready(Ok(())),
                Some(Some(kind)) => return Poll::Ready(Err(kind.into())),
                None => {}
            }
            state.driver_waker = Some(cx.waker().clone());
            if state.live_calls > 0 || state.io.is_none() {
                return Poll::Pending; // the callers read, and route what is its own
            }
            // Listed before it reads (see `Call::poll`).
            mux.wakers.add(cx.waker());
            let before = (state.for_driver.len(), state.ended.is_some());
            mux.pump(state);
            if (state.for_driver.len(), state.ended.is_some()) == before {
                return Poll::Pending;
            }
        }
    }
}

impl AsyncWrite for DriverSide {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mux = &self.0;
        let mut state = mux.state();
        let state = &mut *state;
        if let Some(ended) = state.ended {
            return Poll::Ready(Err(ended.unwrap_or(io::ErrorKind::BrokenPipe).into()));
        }
        if !state.tracking {
            state.output.extend_from_slice(data);
        } else {
            let State {
                driver_partial,
                output,
                owed,
                ..
            } = state;
            driver_partial.extend_from_slice(data);
            let mut at = 0;
            while let Some(len) = frame::whole(&driver_partial[at..]) {
                if frame::ends_request(driver_partial[at]) {
                    owed.push_back(Owner::Driver);
                }
                at += len;
            }
            output.extend_from_slice(&driver_partial[..at]);
            driver_partial.drain(..at);
        }
        let _ = cx;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mux = &self.0;
        let mut state = mux.state();
        let state = &mut *state;
        if state.io.is_none() {
            state.driver_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        if state.output_at < state.output.len() {
            mux.pump(state);
        }
        if let Some(ended) = state.ended {
            return Poll::Ready(Err(ended.unwrap_or(io::ErrorKind::BrokenPipe).into()));
        }
        if state.output_at < state.output.len() {
            mux.wakers.add(cx.waker());
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::task::Waker;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixStream;

    use super::*;
    use crate::connection::frame::Value;

    /// A message as the server sends it.
    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    /// A one-value row, the value's bytes given.
    fn row(value: &[u8]) -> Vec<u8> {
        let mut body = 1u16.to_be_bytes().to_vec();
        body.extend_from_slice(&(value.len() as u32).to_be_bytes());
        body.extend_from_slice(value);
        message(b'D', &body)
    }

    fn ready() -> Vec<u8> {
        message(b'Z', b"I")
    }

    /// A tracked mux over one end of a socket pair; the other end plays the server.
    fn pair() -> (Arc<Mux>, UnixStream) {
        let (ours, server) = UnixStream::pair().unwrap();
        let mux = Mux::new(Socket(Box::new(ours)));
        mux.track();
        (mux, server)
    }

    /// Reads what the client wrote until `count` requests (Sync or Query) are in.
    async fn requests(server: &mut UnixStream, count: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            let mut seen = 0;
            let mut rest = &got[..];
            while let Some(len) = frame::whole(rest) {
                seen += usize::from(frame::ends_request(rest[0]));
                rest = &rest[len..];
            }
            if seen >= count {
                return got;
            }
            let n = server.read(&mut buf).await.unwrap();
            assert!(n > 0, "the client closed");
            got.extend_from_slice(&buf[..n]);
        }
    }

    fn execute(out: &mut Vec<u8>) {
        frame::execute(out, "s", &["1"]);
    }

    #[tokio::test]
    async fn a_call_reads_its_own_answer() {
        let (mux, mut server) = pair();
        let call = mux.call(execute, false);
        let serve = async {
            let request = requests(&mut server, 1).await;
            assert_eq!(request[0], b'B');
            let mut answer = message(b'2', b"");
            answer.extend(row(&[1]));
            answer.extend(message(b'C', b"SELECT 1\0"));
            answer.extend(ready());
            server.write_all(&answer).await.unwrap();
        };
        let (answer, ()) = tokio::join!(call, serve);
        assert_eq!(answer.unwrap().value, Value::Bool(true));
    }

    #[tokio::test]
    async fn answers_go_to_their_owners_in_the_order_of_the_requests() {
        let (mux, mut server) = pair();
        let mut driver = mux.driver_side();
        let mut query = Vec::new();
        frame::query(&mut query, "SELECT 'driver'");
        driver.write_all(&query).await.unwrap();
        driver.flush().await.unwrap();
        let call = mux.call(execute, false);
        let driver_answer = [row(b"driver"), ready()].concat();
        let serve = async {
            requests(&mut server, 2).await;
            let notice = message(b'N', b"Mnotice\0\0");
            let answer = [
                driver_answer.clone(),
                notice.clone(),
                row(&7i64.to_be_bytes()),
                ready(),
            ];
            server.write_all(&answer.concat()).await.unwrap();
            notice
        };
        let (answer, notice) = tokio::join!(call, serve);
        assert_eq!(answer.unwrap().value, Value::Int(7));
        // The driver gets its answer, and the notice (asynchronous: the driver's, wherever
        // it comes), in the order they came.
        let want = [driver_answer, notice].concat();
        let mut got = vec![0u8; want.len()];
        driver.read_exact(&mut got).await.unwrap();
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn the_answer_of_a_call_whose_caller_went_away_is_read_and_dropped() {
        let (mux, mut server) = pair();
        {
            let abandoned = std::pin::pin!(mux.call(execute, false));
            let mut cx = Context::from_waker(Waker::noop());
            assert!(
                abandoned.poll(&mut cx).is_pending(),
                "written, not answered"
            );
        }
        let next = mux.call(execute, false);
        let serve = async {
            requests(&mut server, 2).await;
            let answer = [row(&[1]), ready(), row(&9i64.to_be_bytes()), ready()];
            server.write_all(&answer.concat()).await.unwrap();
        };
        let (answer, ()) = tokio::join!(next, serve);
        assert_eq!(answer.unwrap().value, Value::Int(9));
    }

    #[tokio::test]
    async fn an_error_answer_is_kept_whole() {
        let (mux, mut server) = pair();
        let call = mux.call(execute, false);
        let serve = async {
            requests(&mut server, 1).await;
            let error = message(b'E', b"SERROR\0C57014\0Mcanceled\0\0");
            server.write_all(&[error, ready()].concat()).await.unwrap();
        };
        let (answer, ()) = tokio::join!(call, serve);
        let answer = answer.unwrap();
        assert_eq!(
            answer.error.as_deref(),
            Some(&b"SERROR\0C57014\0Mcanceled\0\0"[..])
        );
    }

    #[tokio::test]
    async fn a_closed_socket_fails_the_calls_in_flight_and_ends_the_drivers_stream() {
        let (mux, mut server) = pair();
        let call = mux.call(execute, false);
        let serve = async {
            requests(&mut server, 1).await;
            drop(server);
        };
        let (answer, ()) = tokio::join!(call, serve);
        assert!(answer.is_err(), "no answer came");
        let mut driver = mux.driver_side();
        let mut buf = [0u8; 8];
        assert_eq!(
            driver.read(&mut buf).await.unwrap(),
            0,
            "the driver reads the end"
        );
        assert!(
            mux.call(execute, false).await.is_err(),
            "a later call fails at once"
        );
    }

    #[tokio::test]
    async fn a_fatal_error_before_the_end_is_the_calls_answer() {
        let (mux, mut server) = pair();
        let call = mux.call(execute, false);
        let serve = async {
            requests(&mut server, 1).await;
            let fatal = message(b'E', b"SFATAL\0C57P01\0Mterminating\0\0");
            server.write_all(&fatal).await.unwrap();
            drop(server);
        };
        let (answer, ()) = tokio::join!(call, serve);
        let answer = answer.expect("the error says why");
        assert!(answer.failed());
    }

    #[tokio::test]
    async fn shut_closes_the_socket() {
        let (mux, mut server) = pair();
        mux.shut();
        let mut buf = [0u8; 8];
        assert_eq!(
            server.read(&mut buf).await.unwrap(),
            0,
            "the server sees the end"
        );
        assert!(mux.call(execute, false).await.is_err());
    }
}
